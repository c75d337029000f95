// Managed networks (issue 17, lodge-network(7)) through lodged and lodgectl: a bridge with
// dnsmasq and lodge's nftables table; busybox guests get DHCP leases and each other's names,
// NAT towards an "upstream" namespace made here, static leases, `auto` subnets, delete refused
// while in use, lodged killed with -9, and the port 53 diagnostic. Every bridge, namespace,
// veth and address is made by the test (names carry its pid) and removed; the host sysctls the
// networks turn on (forwarding) are put back.
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "network-fixture.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// The udhcpc script: the lease's address, route and resolver, as Debian's default.script does.
const char* udhcpc_script = R"(#!/bin/sh
case "$1" in
bound|renew)
  busybox ip addr flush dev "$interface" scope global
  busybox ip addr add "$ip/$mask" dev "$interface"
  [ -n "$router" ] && busybox ip route replace default via "${router%% *}" dev "$interface"
  : > /etc/resolv.conf
  [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  ;;
esac
exit 0
)";

class ManagedNetwork : public NetworkFixture {
protected:
    ManagedNetwork() : NetworkFixture("ln") {}
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (sh("command -v dnsmasq nft >/dev/null && echo ok") != "ok\n")
            GTEST_SKIP() << "needs dnsmasq (dnsmasq-base) and nft (nftables)";
        start_lodged();
    }
    // Creates a busybox container with eth0 on `net` and starts it.
    void launch(const std::string& name, const std::string& net, const std::string& extra = "") {
        int st = 0;
        std::string out = ctl("create " + name + " --network " + net, &st);
        ASSERT_EQ(st, 0) << out;
        if (!extra.empty()) {
            out = ctl("device remove " + name + " eth0", &st);
            ASSERT_EQ(st, 0) << out;
            out = ctl("device add " + name + " eth0 nic network=" + net + " " + extra, &st);
            ASSERT_EQ(st, 0) << out;
        }
        out = ctl("start " + name, &st);
        ASSERT_EQ(st, 0) << out;
    }
    // Runs udhcpc in the container; returns the IPv4 address eth0 got ("" if none).
    std::string dhcp(const std::string& name) {
        std::string script = udhcpc_script;
        std::string path = TestRoot::get().dir + "/" + unique_name("udhcpc");
        write_file_atomic(path, script, 0755);
        int st = 0;
        std::string out = sh("cat " + path + " | " + env_path("LODGE_LODGECTL") + " exec " + name +
                                 " -- /bin/sh -c 'cat > /udhcpc.sh; chmod 755 /udhcpc.sh' 2>&1",
                             &st);
        EXPECT_EQ(st, 0) << out;
        ::unlink(path.c_str());
        out = exec(name,
                   "busybox udhcpc -i eth0 -s /udhcpc.sh -q -n -t 30 -T 2 -A 1 -x hostname:" + name,
                   &st);
        if (st != 0)
            return "";
        std::string addr = exec(name, "busybox ip -4 -o addr show dev eth0 scope global");
        auto inet = addr.find("inet ");
        if (inet == std::string::npos)
            return "";
        return addr.substr(inet + 5, addr.find('/', inet) - inet - 5);
    }
    std::string config(const std::string& net, const std::string& key) {
        std::string v = ctl("network get " + net + " " + key);
        return v.substr(0, v.find('\n'));
    }
    static bool in_subnet(const std::string& addr, const std::string& cidr) {
        auto slash = cidr.find('/');
        in_addr a{}, n{};
        if (inet_pton(AF_INET, addr.c_str(), &a) != 1 ||
            inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &n) != 1)
            return false;
        int prefix = std::stoi(cidr.substr(slash + 1));
        uint32_t mask = prefix ? htonl(~uint32_t(0) << (32 - prefix)) : 0;
        return (a.s_addr & mask) == (n.s_addr & mask);
    }
    // lodge's nftables table of this lodged (its own: the state dir is private), as
    // `network info` names it.
    std::string table(const std::string& net) {
        std::string info = ctl("network info " + net);
        auto at = info.find("nftables table inet ");
        return at == std::string::npos ? "lodge"
                                       : info.substr(at + 20, info.find('\n', at) - at - 20);
    }
    static bool dnsmasq_running_for(const std::string& net) {
        // "[n]" keeps the pattern from matching the shell that runs pgrep.
        return sh("pgrep -f -- '[n]etworks/" + net + "/dnsmasq.conf' >/dev/null && echo yes") ==
               "yes\n";
    }
};

TEST_F(ManagedNetwork, BusyboxGetsALeaseAndNamesResolve) {
    std::string net = network("a");
    int st = 0;
    std::string out = ctl("network create " + net, &st);
    ASSERT_EQ(st, 0) << out;
    std::string subnet = config(net, "ipv4.address");
    EXPECT_NE(subnet, "auto");
    EXPECT_TRUE(contains(subnet, "/24")) << subnet;
    EXPECT_EQ(config(net, "ipv4.nat"), "true");
    EXPECT_TRUE(::if_nametoindex(net.c_str()) != 0);
    EXPECT_TRUE(contains(sh("ip -o addr show dev " + net), subnet)) << sh("ip addr show " + net);
    EXPECT_TRUE(dnsmasq_running_for(net));
    EXPECT_TRUE(contains(sh("nft list table inet " + table(net) + " 2>&1"), "fwd." + net));
    // The state is root-only and holds the concrete subnet.
    std::string state = TestRoot::get().dir + "/state/networks/" + net;
    EXPECT_TRUE(contains(sh("stat -c %a " + state), "700"));
    EXPECT_TRUE(contains(read_text(state + "/config.json"), subnet));

    std::string a = container("nna"), b = container("nnb");
    launch(a, net);
    launch(b, net);
    std::string addr_a = dhcp(a), addr_b = dhcp(b);
    ASSERT_FALSE(addr_a.empty()) << exec(a, "busybox ip addr");
    ASSERT_FALSE(addr_b.empty());
    EXPECT_TRUE(in_subnet(addr_a, subnet)) << addr_a << " " << subnet;
    EXPECT_TRUE(in_subnet(addr_b, subnet)) << addr_b << " " << subnet;
    EXPECT_NE(addr_a, addr_b);
    // IPv6: an address from the network's ULA /64 by SLAAC, from dnsmasq's router advertisements.
    std::string prefix6 = config(net, "ipv6.address");
    prefix6 = prefix6.substr(0, prefix6.find("::") + 1); // "fdxx:xxxx:xxxx:xxxx:"
    EXPECT_TRUE(wait_until(
        [&] { return contains(exec(a, "busybox ip -6 addr show dev eth0 scope global"), prefix6); },
        60))
        << exec(a, "busybox ip -6 addr") << " wanted " << prefix6;

    // lodgectl list shows the addresses; list-leases names both.
    std::string list = ctl("list");
    EXPECT_TRUE(contains(list, addr_a)) << list;
    std::string leases = ctl("network list-leases " + net + " --json");
    EXPECT_TRUE(contains(leases, addr_a) && contains(leases, addr_b)) << leases;
    EXPECT_TRUE(contains(leases, "\"hostname\":\"" + a + "\"")) << leases;

    // Names: b.lodge from a, through the network's dnsmasq.
    out = exec(a, "busybox nslookup " + b + ".lodge", &st);
    EXPECT_TRUE(contains(out, addr_b)) << out;
    out = exec(a, "busybox ping -c 1 -W 5 " + b + ".lodge", &st);
    EXPECT_EQ(st, 0) << out;

    // Delete is refused while a container uses it, names the container and leaves all in place.
    out = ctl("network delete " + net, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "in use")) << out;
    EXPECT_TRUE(contains(out, a)) << out;
    EXPECT_TRUE(::if_nametoindex(net.c_str()) != 0);

    // Once the containers are gone, delete leaves no link, no table rules, no dnsmasq.
    ctl("delete --force " + a + " " + b, &st);
    EXPECT_EQ(st, 0);
    out = ctl("network delete " + net, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(::if_nametoindex(net.c_str()), 0u);
    EXPECT_FALSE(contains(sh("nft list ruleset 2>&1"), net));
    EXPECT_FALSE(dnsmasq_running_for(net));
    EXPECT_FALSE(exists(state));
}

// An "upstream" network namespace reached from the host over a veth pair: with ipv4.nat the
// container's packets arrive there from the host's address, without it from the container's.
class Upstream {
public:
    explicit Upstream(const std::string& tag) {
        unsigned x = static_cast<unsigned>(::getpid()) % 250;
        ns = "lnup" + tag + std::to_string(::getpid());
        host_link = "lnvh" + tag + std::to_string(::getpid() % 100000);
        host_addr = "198.18." + std::to_string(x) + ".1";
        up_addr = "198.18." + std::to_string(x) + ".2";
        int st = 0;
        out = sh("ip netns add " + ns + " && ip link add " + host_link +
                     " type veth peer name up0" + " netns " + ns + " && ip addr add " + host_addr +
                     "/30 dev " + host_link + " && ip link set " + host_link + " up && ip -n " +
                     ns + " addr add " + up_addr + "/30 dev up0 && ip -n " + ns +
                     " link set up0 up && ip -n " + ns + " link set lo up 2>&1",
                 &st);
        ok = st == 0;
    }
    ~Upstream() {
        sh("ip link del " + host_link + " 2>/dev/null; ip netns del " + ns + " 2>/dev/null");
    }
    // Counts echo requests by source in the upstream namespace (nft counters there).
    bool count_sources(const std::string& subnet) {
        int st = 0;
        out = sh("ip netns exec " + ns +
                     " nft -f - <<'EOF' 2>&1\n"
                     "table ip count {\n chain in {\n  type filter hook input priority 0;\n"
                     "  ip saddr " +
                     host_addr +
                     " icmp type echo-request counter\n"
                     "  ip saddr " +
                     subnet + " icmp type echo-request counter\n }\n}\nEOF",
                 &st);
        return st == 0;
    }
    // Packets counted from the host's address (first) and from the container subnet (second).
    std::pair<long, long> counts() {
        std::string rules = sh("ip netns exec " + ns + " nft list chain ip count in");
        std::vector<long> n;
        for (size_t at = rules.find("packets "); at != std::string::npos;
             at = rules.find("packets ", at + 1))
            n.push_back(std::stol(rules.substr(at + 8)));
        return n.size() == 2 ? std::make_pair(n[0], n[1]) : std::make_pair(-1L, -1L);
    }
    std::string ns, host_link, host_addr, up_addr, out;
    bool ok = false;
};

TEST_F(ManagedNetwork, NatShowsTheHostsAddressUpstreamAndNotWithoutIt) {
    Upstream up("n");
    if (!up.ok)
        GTEST_SKIP() << "cannot make a network namespace with a veth pair: " << up.out;
    std::string net = network("n");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string cidr = config(net, "ipv4.address");
    auto slash = cidr.find('/');
    std::string subnet = cidr.substr(0, cidr.rfind('.', slash)) + ".0" + cidr.substr(slash);
    ASSERT_TRUE(up.count_sources(subnet)) << up.out;
    EXPECT_TRUE(contains(ctl("network info " + net), "forwarding.ipv4: enabled"));

    std::string c = container("nnat");
    launch(c, net);
    ASSERT_FALSE(dhcp(c).empty());
    out = exec(c, "busybox ping -c 1 -W 5 " + up.up_addr, &st);
    EXPECT_EQ(st, 0) << out;
    auto [from_host, from_subnet] = up.counts();
    EXPECT_GE(from_host, 1) << sh("ip netns exec " + up.ns + " nft list ruleset");
    EXPECT_EQ(from_subnet, 0);

    out = ctl("network set " + net + " ipv4.nat=false", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(contains(sh("nft list table inet " + table(net)), "masquerade"));
    // The upstream has no route back to the container's subnet: no answer, but the request
    // arrives, from the container's own address.
    exec(c, "busybox ping -c 1 -W 2 " + up.up_addr, &st);
    EXPECT_NE(st, 0);
    auto [host_after, subnet_after] = up.counts();
    EXPECT_EQ(host_after, from_host);
    EXPECT_GE(subnet_after, 1);
}

TEST_F(ManagedNetwork, StaticLeaseIsKeptAcrossRestarts) {
    std::string net = network("s");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string cidr = config(net, "ipv4.address");
    std::string fixed = cidr.substr(0, cidr.rfind('.')) + ".77";
    std::string c = container("nstat");
    launch(c, net, "ipv4.address=" + fixed);
    EXPECT_EQ(dhcp(c), fixed);
    out = ctl("restart " + c + " --timeout 10", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(dhcp(c), fixed);
    std::string leases = ctl("network list-leases " + net);
    EXPECT_TRUE(contains(leases, fixed) && contains(leases, "static")) << leases;

    // An address outside the subnet is refused, naming the device and the key.
    std::string other = container("nstat2");
    ASSERT_EQ(ctl("create " + other, &st), "Created container " + other + "\n");
    out = ctl("device add " + other + " eth0 nic network=" + net + " ipv4.address=192.0.2.9", &st);
    if (st == 0)
        out = ctl("start " + other, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "ipv4.address")) << out;
}

TEST_F(ManagedNetwork, TwoNetworksGetDifferentAutoSubnetsAndNoFreeSubnetIsExplained) {
    std::string n1 = network("x"), n2 = network("y"), n3 = network("z");
    int st = 0;
    std::string out = ctl("network create " + n1, &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("network create " + n2, &st);
    ASSERT_EQ(st, 0) << out;
    std::string s1 = config(n1, "ipv4.address"), s2 = config(n2, "ipv4.address");
    EXPECT_NE(s1.substr(0, s1.rfind('.')), s2.substr(0, s2.rfind('.')));
    EXPECT_NE(config(n1, "ipv6.address"), config(n2, "ipv6.address"));
    std::string list = ctl("network list --json");
    EXPECT_TRUE(contains(list, n1) && contains(list, n2)) << list;

    // A pool whose only /24 is n1's: nothing left for auto, and the error says what to do.
    std::string pool = s1.substr(0, s1.rfind('.')) + ".0/24";
    daemon.reset();
    ::setenv("LODGE_NETWORK_POOL4", pool.c_str(), 1);
    daemon = std::make_unique<Lodged>();
    ::unsetenv("LODGE_NETWORK_POOL4");
    ASSERT_TRUE(daemon->wait_ready());
    out = ctl("network create " + n3, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "No free subnet")) << out;
    EXPECT_TRUE(contains(out, pool)) << out;
    EXPECT_EQ(::if_nametoindex(n3.c_str()), 0u);
    // Bad keys are refused with the key named, and nothing is made.
    out = ctl("network create " + n3 + " ipv4.address=10.0.0.0/24", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "ipv4.address")) << out;
    out = ctl("network create " + n3 + " bridge.mtu=12", &st);
    EXPECT_TRUE(contains(out, "bridge.mtu")) << out;
    EXPECT_EQ(::if_nametoindex(n3.c_str()), 0u);
}

TEST_F(ManagedNetwork, KilledLodgedLeavesNetworksWorkingAndRebuildsWhatIsMissing) {
    std::string net = network("k");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string c = container("nkill");
    launch(c, net);
    ASSERT_FALSE(dhcp(c).empty());
    std::string pid_before =
        sh("cat " + TestRoot::get().dir + "/run/networks/" + net + "/dnsmasq.pid");

    auto leader = nlohmann::json::parse(ctl("list --json"), nullptr, false);
    std::string pid1;
    for (auto& row : leader)
        if (row["name"] == c)
            pid1 = std::to_string(row["leader"].get<int>());
    ASSERT_FALSE(pid1.empty());
    daemon->kill9();
    // dnsmasq outlives lodged: the guest gets a lease meanwhile (entered from the host, as
    // nobody can ask lodged now).
    EXPECT_TRUE(dnsmasq_running_for(net));
    out = sh("nsenter -t " + pid1 +
                 " -a /bin/sh -c 'busybox udhcpc -i eth0 -s /udhcpc.sh -q -n -t 30 -T 2 -A 1' 2>&1",
             &st);
    EXPECT_EQ(st, 0) << out;
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    // The running dnsmasq is adopted, not replaced.
    EXPECT_EQ(sh("cat " + TestRoot::get().dir + "/run/networks/" + net + "/dnsmasq.pid"),
              pid_before);
    EXPECT_TRUE(contains(ctl("network info " + net), "dnsmasq: running"))
        << ctl("network info " + net);

    // dnsmasq killed: lodged starts a new one.
    sh("kill -9 " + pid_before);
    EXPECT_TRUE(wait_until(
        [&] {
            std::string now = sh("cat " + TestRoot::get().dir + "/run/networks/" + net +
                                 "/dnsmasq.pid 2>/dev/null");
            return !now.empty() && now != pid_before && dnsmasq_running_for(net);
        },
        60));
    EXPECT_FALSE(dhcp(c).empty());

    // What a host reboot takes (bridge, table, dnsmasq) comes back when lodged starts.
    ctl("stop --force " + c, &st);
    std::string tbl = table(net);
    daemon->kill9();
    sh("pkill -F " + TestRoot::get().dir + "/run/networks/" + net + "/dnsmasq.pid");
    EXPECT_TRUE(wait_until([&] { return !dnsmasq_running_for(net); }, 30));
    sh("ip link del " + net + "; nft delete table inet " + tbl);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_NE(::if_nametoindex(net.c_str()), 0u);
    EXPECT_TRUE(contains(sh("nft list table inet " + table(net) + " 2>&1"), "fwd." + net));
    EXPECT_TRUE(dnsmasq_running_for(net));
    out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(dhcp(c).empty());
}

TEST_F(ManagedNetwork, Port53TakenGivesTheClearError) {
    // A resolver that holds port 53 on every address (no SO_REUSEADDR, as a system dnsmasq
    // without bind-interfaces does).
    if (!sh("cat /proc/net/udp | awk '$2 ~ /:0035$/'").empty())
        GTEST_SKIP() << "port 53 is already in use on this host";
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(53);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
    std::string net = network("p");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ::close(fd);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Port 53 on ")) << out;
    EXPECT_TRUE(contains(out, "test-managed-ne") ||
                contains(out, "(pid " + std::to_string(getpid()) + ")"))
        << out;
    EXPECT_TRUE(contains(out, "bind-interfaces")) << out;
    // Nothing is left of the network that could not be made.
    EXPECT_EQ(::if_nametoindex(net.c_str()), 0u);
    EXPECT_FALSE(contains(ctl("network list"), net));
}

TEST_F(ManagedNetwork, ForwardPolicyDropIsReported) {
    // A forward chain with policy drop, as Docker leaves; its first rule accepts everything, so
    // nobody's traffic is actually dropped while the test runs.
    std::string table = "lnfwd" + std::to_string(::getpid());
    int st = 0;
    sh("nft -f - <<'EOF'\ntable ip " + table +
           " {\n chain dropper {\n  type filter hook forward "
           "priority 10; policy drop;\n  accept\n }\n}\nEOF",
       &st);
    ASSERT_EQ(st, 0);
    std::string net = network("f");
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    std::string info = ctl("network info " + net);
    sh("nft delete table ip " + table);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "Warning: ")) << out;
    EXPECT_TRUE(contains(out, table) && contains(out, "policy drop")) << out;
    EXPECT_TRUE(contains(out, "iifname " + net + " accept")) << out;
    EXPECT_TRUE(contains(info, table)) << info;
}

TEST_F(ManagedNetwork, DebianWithNetworkdGetsALease) {
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (!tarball || !exists(tarball))
        GTEST_SKIP() << "no Debian rootfs tarball (scripts/test.sh sets LODGE_DEBIAN_TARBALL)";
    std::string net = network("d");
    int st = 0;
    std::string out = ctl("network create " + net, &st);
    ASSERT_EQ(st, 0) << out;
    std::string c = container("ndeb");
    out = ctl("create " + c + " " + tarball + " --network " + net, &st);
    ASSERT_EQ(st, 0) << out;
    std::string rootfs = TestRoot::get().dir + "/state/containers/" + c + "/rootfs";
    write_file_atomic(rootfs + "/etc/systemd/network/50-eth0.network",
                      "[Match]\nName=eth0\n[Network]\nDHCP=yes\n", 0644);
    // This minbase rootfs has no udev, and networkd waits for udev to initialise a link unless
    // /sys is read-only (systemd's container interface); LXD's images ship udev instead.
    if (!exists(rootfs + "/lib/systemd/systemd-udevd")) {
        mkdir_p(rootfs + "/etc/systemd/system/systemd-networkd.service.d");
        write_file_atomic(rootfs + "/etc/systemd/system/systemd-networkd.service.d/no-udev.conf",
                          "[Service]\nReadOnlyPaths=/sys\n", 0644);
    }
    out = sh("systemctl --root=" + rootfs + " enable systemd-networkd.service 2>&1", &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    std::string cidr = config(net, "ipv4.address");
    std::string prefix = cidr.substr(0, cidr.rfind('.') + 1);
    std::string prefix6 = config(net, "ipv6.address");
    prefix6 = prefix6.substr(0, prefix6.find("::") + 1);
    EXPECT_TRUE(wait_until(
        [&] {
            std::string list = ctl("list --json");
            return contains(list, prefix) && contains(list, prefix6);
        },
        180))
        << ctl("list")
        << exec(c, "ls -la /etc/systemd/network; networkctl status eth0; journalctl -b -u "
                   "systemd-networkd --no-pager | tail -20");
}

TEST_F(ManagedNetwork, DefaultNetworkGivesNewContainersEth0) {
    std::string net = network("m"), other = network("o");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none lodge.default=true", &st);
    ASSERT_EQ(st, 0) << out;
    // Only one default.
    out = ctl("network create " + other + " ipv6.address=none lodge.default=true", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "default network already")) << out;
    EXPECT_EQ(::if_nametoindex(other.c_str()), 0u);

    std::string c = container("ndef"), bare = container("nbare");
    out = ctl("create " + c, &st);
    ASSERT_EQ(st, 0) << out;
    std::string devices = ctl("device list " + c + " --json");
    EXPECT_TRUE(contains(devices, "\"network\":\"" + net + "\"")) << devices;
    out = ctl("create " + bare + " --network none", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(contains(ctl("device list " + bare + " --json"), net));
    // A network that does not exist undoes the create.
    std::string lost = container("nlost");
    out = ctl("create " + lost + " --network nosuchnet0", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "nosuchnet0")) << out;
    EXPECT_FALSE(contains(ctl("list -q"), lost));

    out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(dhcp(c).empty());
}

// Changes need io.lodge1.manage: a caller polkit does not authorize (nobody; the private bus
// has no rule for it) cannot create or delete a network; reading is open.
TEST_F(ManagedNetwork, ChangesNeedManageAuthorization) {
    std::string net = network("u");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    auto as_nobody = [](const std::string& cmd, int* status) {
        return sh("setpriv --reuid=65534 --regid=65534 --clear-groups busctl --system call "
                  "io.lodge1 /io/lodge1 io.lodge1.Manager " +
                      cmd + " 2>&1",
                  status);
    };
    std::string other = network("v");
    out = as_nobody("CreateNetwork 'sa{ss}' " + other + " 0", &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_EQ(::if_nametoindex(other.c_str()), 0u);
    out = as_nobody("DeleteNetwork s " + net, &st);
    EXPECT_NE(st, 0) << out;
    out = as_nobody("SetNetworkConfig 'sa{ss}as' " + net + " 1 ipv4.nat false 0", &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_EQ(config(net, "ipv4.nat"), "true");
    EXPECT_NE(::if_nametoindex(net.c_str()), 0u);
    out = as_nobody("ListNetworks", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, net)) << out;
}

} // namespace

namespace {

// launch IMAGE NAME --network NET (and create NAME IMAGE --network NET): eth0 on the network
// before the first start, as `create --network` gives it; a network that does not exist undoes
// the launch.
TEST_F(ManagedNetwork, LaunchFromAnImageJoinsTheNetwork) {
    std::string net = network("l");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string src = TestRoot::get().dir + "/" + unique_name("limg");
    out = sh("set -e; mkdir -p " + src + " && bash " + env_path("LODGE_FIXTURES") +
                 "/make-busybox-rootfs.sh " + src +
                 "/rootfs >/dev/null && printf "
                 "'architecture: x86_64\\ncreation_date: 1700000000\\n' > " +
                 src + "/metadata.yaml && tar -C " + src + " -czf " + src +
                 "/image.tar.gz metadata.yaml rootfs 2>&1",
             &st);
    ASSERT_EQ(st, 0) << out;
    std::string alias = unique_name("netimg");
    out = ctl("image import " + src + "/image.tar.gz --alias " + alias + " -q", &st);
    ASSERT_EQ(st, 0) << out;
    std::string fp = out.substr(0, out.find('\n'));

    std::string c = container("nlaunch");
    out = ctl("launch " + alias + " " + c + " --network " + net, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, "Launched container " + c + "\n");
    std::string devices = ctl("device list " + c + " --json");
    EXPECT_TRUE(contains(devices, "\"network\":\"" + net + "\"")) << devices;
    EXPECT_FALSE(dhcp(c).empty());

    std::string made = container("ncreate");
    out = ctl("create " + made + " " + alias + " --network " + net, &st);
    ASSERT_EQ(st, 0) << out;
    devices = ctl("device list " + made + " --json");
    EXPECT_TRUE(contains(devices, "\"network\":\"" + net + "\"")) << devices;

    std::string lost = container("nlostl");
    out = ctl("launch " + alias + " " + lost + " --network nosuchnet0", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "nosuchnet0")) << out;
    EXPECT_FALSE(contains(ctl("list -q"), lost));
    for (auto& n : {c, made})
        ctl("delete --force " + n);
    ctl("image delete " + fp);
    sh("rm -rf " + src);
}

} // namespace
