// Managed networks (issue 17, lodge-network(7)) through lodged and lodgectl: a bridge with
// dnsmasq and lodge's nftables table; busybox guests get DHCP leases and each other's names,
// NAT towards an "upstream" namespace made here, static leases, `auto` subnets, delete refused
// while in use, lodged killed with -9, and the port 53 diagnostic. Every bridge, namespace,
// veth and address is made by the test (names carry its pid) and removed; the host sysctls the
// networks turn on (forwarding) are put back.
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <arpa/inet.h>
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

std::string sysctl_value(const std::string& path) {
    std::string v;
    read_file(path, v);
    return v.substr(0, v.find('\n'));
}

class ManagedNetwork : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (sh("command -v dnsmasq nft >/dev/null && echo ok") != "ok\n")
            GTEST_SKIP() << "needs dnsmasq (dnsmasq-base) and nft (nftables)";
        forward4 = sysctl_value("/proc/sys/net/ipv4/ip_forward");
        forward6 = sysctl_value("/proc/sys/net/ipv6/conf/all/forwarding");
        bus = std::make_unique<PrivateBus>();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
    }
    void TearDown() override {
        for (auto& n : containers)
            ctl("delete --force " + n);
        for (auto& n : networks)
            ctl("network delete " + n);
        daemon.reset();
        bus.reset();
        for (auto& n : networks) { // whatever a failed test left
            sh("ip link del " + n + " 2>/dev/null");
            sh("pkill -F " + TestRoot::get().dir + "/run/networks/" + n +
               "/dnsmasq.pid 2>/dev/null");
        }
        if (!forward4.empty())
            write_file("/proc/sys/net/ipv4/ip_forward", forward4);
        if (!forward6.empty())
            write_file("/proc/sys/net/ipv6/conf/all/forwarding", forward6);
    }
    // A network name: at most 15 characters (the bridge's name).
    std::string network(const std::string& tag) {
        std::string n = "ln" + tag + std::to_string(::getpid() % 100000);
        networks.push_back(n);
        return n;
    }
    std::string container(const std::string& base) {
        std::string n = unique_name(base);
        containers.push_back(n);
        return n;
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
    std::string exec(const std::string& name, const std::string& cmd, int* st = nullptr) {
        return sh(
            env_path("LODGE_LODGECTL") + " exec " + name + " -- /bin/sh -c '" + cmd + "' 2>&1", st);
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
    static bool dnsmasq_running_for(const std::string& net) {
        // "[n]" keeps the pattern from matching the shell that runs pgrep.
        return sh("pgrep -f -- '[n]etworks/" + net + "/dnsmasq.conf' >/dev/null && echo yes") ==
               "yes\n";
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> containers, networks;
    std::string forward4, forward6;
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
    EXPECT_TRUE(contains(sh("nft list table inet lodge 2>&1"), "fwd." + net));
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

} // namespace
