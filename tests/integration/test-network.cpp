// nic devices (CONTRACT §3, runtime.md §5) on real containers driven through lodge-supervisor:
// bridged/p2p/macvlan interfaces inside the container before PID 1 runs, LXD's names, MACs and
// MTUs, traffic between two containers on a private bridge, and no link left in the host
// namespace after stop, SIGKILL of PID 1, guest reboot, a supervisor crash or many cycles.
// Every bridge, dummy and address here is made by the test (names carry its pid); nothing
// leaves the namespaces it creates.
#include "harness.hpp"
#include "nic-shapes.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <iostream>
#include <net/if.h>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// A host link made for one test (`ip link add NAME TYPE`), deleted whatever happens.
class HostLink {
public:
    HostLink(std::string prefix, const std::string& type, const std::string& args = "")
        : name(prefix + std::to_string(::getpid())) {
        int st = 0;
        out = sh("ip link add " + name + " type " + type + " " + args + " 2>&1 && ip link set " +
                     name + " up 2>&1",
                 &st);
        ok = st == 0;
    }
    ~HostLink() { sh("ip link del " + name + " 2>/dev/null"); }
    std::string name, out;
    bool ok = false;
};

std::set<std::string> host_links() {
    std::set<std::string> names;
    std::istringstream in(sh("ip -o link show"));
    std::string line;
    while (std::getline(in, line)) {
        // "7: name@peer: <...>" -> name
        auto a = line.find(": ");
        auto b = line.find_first_of("@:", a + 2);
        if (a != std::string::npos && b != std::string::npos)
            names.insert(line.substr(a + 2, b - a - 2));
    }
    return names;
}

bool host_link_exists(const std::string& name) {
    return !name.empty() && ::if_nametoindex(name.c_str()) != 0;
}

std::string master_of(const std::string& link) {
    std::string target = sh("readlink /sys/class/net/" + link + "/master");
    auto slash = target.rfind('/');
    return slash == std::string::npos ? "" : target.substr(slash + 1, target.size() - slash - 2);
}

std::vector<std::string> host_names(const nlohmann::json& status) {
    std::vector<std::string> out;
    if (status.contains("nics"))
        for (auto& n : status["nics"])
            if (!n["host_name"].get<std::string>().empty())
                out.push_back(n["host_name"]);
    return out;
}

nlohmann::json nic_of(const nlohmann::json& status, const std::string& device) {
    for (auto& n : status.value("nics", nlohmann::json::array()))
        if (n["device"] == device)
            return n;
    return {};
}

// After a supervisor crash nobody unplugs: the kernel removes the veth once the container's
// namespace is gone, in a work queue, and no event reaches us. Poll, bounded.
bool wait_gone(const std::vector<std::string>& names, int seconds) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    for (;;) {
        bool any = std::any_of(names.begin(), names.end(), host_link_exists);
        if (!any)
            return true;
        if (std::chrono::steady_clock::now() > until)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

class Network : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        bridge = std::make_unique<HostLink>("lnbr", "bridge");
        if (!bridge->ok)
            GTEST_SKIP() << "cannot create a bridge: " << bridge->out;
    }
    std::unique_ptr<Container> make(const std::string& base, bool test_init = false,
                                    bool privileged = false) {
        auto c = std::make_unique<Container>(unique_name(base), privileged);
        c->make_busybox(test_init);
        return c;
    }
    void add_bridged(Container& c, const std::string& dev, KeyMap extra = {}) {
        extra["type"] = "nic";
        extra["nictype"] = "bridged";
        extra["parent"] = bridge->name;
        c.config.devices[dev] = extra;
    }
    std::unique_ptr<HostLink> bridge;
};

TEST_F(Network, TwoContainersOnABridgeReachEachOther) {
    auto a = make("nping-a"), b = make("nping-b");
    add_bridged(*a, "net");
    add_bridged(*b, "net");
    LODGE_START_OR_SKIP(*a);
    LODGE_START_OR_SKIP(*b);
    for (auto* c : {a.get(), b.get()}) {
        std::string host = nic_of(c->status(), "net")["host_name"];
        EXPECT_EQ(master_of(host), bridge->name) << host;
    }
    int st = 0;
    // No duplicate address detection: the addresses are usable at once (busybox ip has no nodad).
    const std::string no_dad = "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad && ";
    a->exec(no_dad + "ip addr add 169.254.77.1/16 dev eth0 && ip -6 addr add fd77::1/64 dev eth0",
            &st);
    ASSERT_EQ(st, 0);
    b->exec(no_dad + "ip addr add 169.254.77.2/16 dev eth0 && ip -6 addr add fd77::2/64 dev eth0",
            &st);
    ASSERT_EQ(st, 0);
    std::string out = a->exec("ping -c 1 -W 5 169.254.77.2 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    out = b->exec("ping -c 1 -W 5 fd77::1 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(a->stop()["state"], "stopped");
    EXPECT_EQ(b->stop()["state"], "stopped");
}

TEST_F(Network, NamesMacsAndMtusFollowLxd) {
    sh("ip link set " + bridge->name + " mtu 1400");
    auto c = make("nnames");
    add_bridged(*c, "a");
    add_bridged(*c, "b", {{"name", "lan0"}, {"hwaddr", "00:16:3e:aa:bb:cc"}});
    add_bridged(*c, "c", {{"mtu", "1300"}});
    add_bridged(*c, "d", {{"mtu", "1450"}});
    LODGE_START_OR_SKIP(*c);
    auto s = c->status();
    // Names: eth0, eth1... in device order, skipping set names.
    EXPECT_EQ(nic_of(s, "a")["name"], "eth0") << s;
    EXPECT_EQ(nic_of(s, "b")["name"], "lan0") << s;
    EXPECT_EQ(nic_of(s, "c")["name"], "eth1") << s;
    EXPECT_EQ(nic_of(s, "d")["name"], "eth2") << s;
    for (auto dev : {"a", "c", "d"}) {
        auto n = nic_of(s, dev);
        EXPECT_TRUE(is_lxd_mac(n["hwaddr"])) << n;
        EXPECT_TRUE(is_veth_name(n["host_name"])) << n;
        std::string inside = c->exec("cat /sys/class/net/" + n["name"].get<std::string>() +
                                     "/address");
        EXPECT_EQ(inside, n["hwaddr"].get<std::string>() + "\n");
    }
    EXPECT_EQ(c->exec("cat /sys/class/net/lan0/address"), "00:16:3e:aa:bb:cc\n");
    // Up before PID 1 ran (nobody in the guest touched them).
    EXPECT_TRUE(contains(c->exec("ip -o link show eth0"), ",UP")) << c->exec("ip -o link");
    // MTU: the container gets `mtu`, else the parent's; the host end never below the parent.
    auto mtu_in = [&](const char* ifname) {
        return c->exec(std::string("cat /sys/class/net/") + ifname + "/mtu");
    };
    auto mtu_host = [&](const char* dev) {
        return read_text("/sys/class/net/" + nic_of(s, dev)["host_name"].get<std::string>() +
                         "/mtu");
    };
    EXPECT_EQ(mtu_in("eth0"), "1400\n");
    EXPECT_EQ(mtu_host("a"), "1400\n");
    EXPECT_EQ(mtu_in("eth1"), "1300\n");
    EXPECT_EQ(mtu_host("c"), "1400\n");
    EXPECT_EQ(mtu_in("eth2"), "1450\n");
    EXPECT_EQ(mtu_host("d"), "1450\n");
    EXPECT_EQ(read_text("/sys/class/net/" + bridge->name + "/mtu"), "1400\n");
    // Only lo and the four nics are in the container.
    EXPECT_EQ(c->exec("ls /sys/class/net | sort | tr '\\n' ' '"), "eth0 eth1 eth2 lan0 lo ");
    EXPECT_EQ(c->stop()["state"], "stopped");
}

TEST_F(Network, VolatileKeysInTheConfigAreUsed) {
    // lodged persists volatile.<dev>.name/hwaddr; the supervisor starts from them.
    auto c = make("nvolatile");
    add_bridged(*c, "x");
    c->set("volatile.x.name", "eth7");
    c->set("volatile.x.hwaddr", "00:16:3e:12:34:56");
    LODGE_START_OR_SKIP(*c);
    EXPECT_EQ(c->exec("cat /sys/class/net/eth7/address"), "00:16:3e:12:34:56\n");
    EXPECT_EQ(c->stop()["state"], "stopped");
    // The supervisor never writes config.json.
    EXPECT_TRUE(contains(read_text(c->dir + "/config.json"), "eth7"));
}

TEST_F(Network, P2pHostEndLivesExactlyAsLongAsTheContainer) {
    auto c = make("np2p");
    std::string fixed = "lnp" + std::to_string(::getpid());
    c->config.devices["p"] = {{"type", "nic"}, {"nictype", "p2p"}};
    c->config.devices["q"] = {{"type", "nic"}, {"nictype", "p2p"}, {"host_name", fixed}};
    LODGE_START_OR_SKIP(*c);
    auto s = c->status();
    std::string host = nic_of(s, "p")["host_name"];
    EXPECT_TRUE(host_link_exists(host)) << s;
    EXPECT_TRUE(host_link_exists(fixed)) << s;
    EXPECT_EQ(master_of(host), "") << "p2p leaves the host end to the admin";
    EXPECT_TRUE(contains(sh("ip -o link show " + host), ",UP"));
    // The host end works: an address on each side and a ping through the pair.
    int st = 0;
    sh("ip addr add 169.254.78.1/30 dev " + host);
    c->exec("ip addr add 169.254.78.2/30 dev eth0");
    std::string out = c->exec("ping -c 1 -W 5 169.254.78.1 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(c->stop()["state"], "stopped");
    EXPECT_FALSE(host_link_exists(host)) << "host end left after stop";
    EXPECT_FALSE(host_link_exists(fixed)) << "host end left after stop";
    // The fixed host_name is free again: a second start can use it.
    LODGE_START_OR_SKIP(*c);
    EXPECT_TRUE(host_link_exists(fixed));
    EXPECT_EQ(c->stop()["state"], "stopped");
    EXPECT_FALSE(host_link_exists(fixed));
}

TEST_F(Network, MacvlanOnAParentMadeByTheTest) {
    // These machines have no dummy driver: one end of a veth pair serves as the parent.
    HostLink dummy("lnmv", "veth", "peer name lnmp" + std::to_string(::getpid()));
    if (!dummy.ok)
        GTEST_SKIP() << "cannot create a parent link: " << dummy.out;
    auto c = make("nmacvlan");
    c->config.devices["mv"] = {{"type", "nic"},
                               {"nictype", "macvlan"},
                               {"parent", dummy.name},
                               {"name", "mv0"},
                               {"mtu", "1400"}};
    auto before = host_links();
    LODGE_START_OR_SKIP(*c);
    // The host's iproute2 in the container's network namespace (busybox ip has no -d).
    std::string d = sh("nsenter -t " + std::to_string(c->pid()) + " -n ip -d link show mv0");
    EXPECT_TRUE(contains(d, "macvlan mode bridge")) << d;
    EXPECT_TRUE(contains(d, "mtu 1400")) << d;
    auto ether = d.find("link/ether ");
    EXPECT_TRUE(ether != std::string::npos && is_lxd_mac(d.substr(ether + 11, 17))) << d;
    EXPECT_EQ(host_links(), before) << "a macvlan lives only in the container";
    EXPECT_EQ(c->stop()["state"], "stopped");
    EXPECT_EQ(host_links(), before);
}

TEST_F(Network, NothingLeftAfterSigkillRebootOrSupervisorCrash) {
    auto c = make("nkill", true);
    add_bridged(*c, "a");
    c->config.devices["b"] = {{"type", "nic"}, {"nictype", "p2p"}};
    LODGE_START_OR_SKIP(*c);
    // SIGKILL of PID 1: the container stops and its host ends are gone when it says so.
    auto first = host_names(c->status());
    ASSERT_EQ(first.size(), 2u);
    sh("kill -9 " + std::to_string(c->pid()));
    EXPECT_EQ(c->wait()["state"], "stopped");
    for (auto& h : first)
        EXPECT_FALSE(host_link_exists(h)) << h;

    // Guest reboot: new host names, the old ones gone.
    LODGE_START_OR_SKIP(*c);
    c->exec("while ! grep -q ^ready /testinit.log 2>/dev/null; do usleep 10000; done");
    auto boot1 = host_names(c->status());
    c->request("reboot");
    auto s = c->request("wait-boot 2");
    ASSERT_EQ(s["state"], "running") << s;
    auto boot2 = host_names(s);
    ASSERT_EQ(boot2.size(), 2u) << s;
    for (auto& h : boot1) {
        EXPECT_FALSE(host_link_exists(h)) << h;
        EXPECT_EQ(std::count(boot2.begin(), boot2.end(), h), 0) << "host name reused: " << h;
    }
    for (auto& h : boot2)
        EXPECT_TRUE(host_link_exists(h)) << h;
    EXPECT_EQ(master_of(nic_of(s, "a")["host_name"]), bridge->name);

    // Supervisor crash: PID 1 dies with it (parent-death signal), the namespace with PID 1, and
    // the kernel takes the veths with the namespace.
    pid_t sup = s["supervisor_pid"];
    ASSERT_GT(sup, 0);
    ::kill(sup, SIGKILL);
    EXPECT_TRUE(wait_gone(boot2, 180)) << "host ends left after a supervisor crash";
}

TEST_F(Network, HundredCyclesWithFourNicsLeakNoLink) {
    // These machines have no dummy driver: one end of a veth pair serves as the parent.
    HostLink dummy("lnmv", "veth", "peer name lnmp" + std::to_string(::getpid()));
    if (!dummy.ok)
        GTEST_SKIP() << "cannot create a parent link: " << dummy.out;
    auto c = make("ncycles", false, true);
    add_bridged(*c, "a");
    add_bridged(*c, "b", {{"mtu", "1400"}});
    c->config.devices["c"] = {{"type", "nic"}, {"nictype", "p2p"}};
    c->config.devices["d"] = {{"type", "nic"}, {"nictype", "macvlan"}, {"parent", dummy.name}};
    auto before = host_links();
    std::set<std::string> seen;
    for (int i = 0; i < 100; i++) {
        LODGE_START_OR_SKIP(*c);
        auto s = c->status();
        ASSERT_EQ(s["nics"].size(), 4u) << s;
        for (auto& h : host_names(s))
            seen.insert(h);
        auto r = i % 2 ? c->request("stop-force") : c->stop(10);
        ASSERT_EQ(r["state"], "stopped") << "cycle " << i << ": " << r;
        ASSERT_EQ(c->wait()["state"], "stopped");
    }
    EXPECT_EQ(seen.size(), 300u) << "every boot gets new host names";
    auto after = host_links();
    std::vector<std::string> leaked;
    for (auto& h : seen)
        if (after.count(h))
            leaked.push_back(h);
    EXPECT_TRUE(leaked.empty()) << leaked.size() << " host ends leaked, e.g. " << leaked.front();
    EXPECT_EQ(sh("ls /sys/class/net/" + bridge->name + "/brif"), "") << "ports left on the bridge";
    // The whole link list against the one from before. Other engineers' tests may add or remove
    // links on this machine meanwhile, so a difference fails only when it is one of ours.
    std::string diff;
    for (auto& name : after) {
        if (!before.count(name)) {
            diff += " +" + name;
            EXPECT_FALSE(seen.count(name)) << name << " leaked";
        }
    }
    for (auto& name : before)
        if (!after.count(name))
            diff += " -" + name;
    if (!diff.empty())
        std::cerr << "note: host links changed during the test (not ours):" << diff << "\n";
}

TEST_F(Network, HotAddAndRemoveThroughTheControlSocket) {
    auto c = make("nhot");
    LODGE_START_OR_SKIP(*c);
    EXPECT_EQ(c->exec("ls /sys/class/net | tr '\\n' ' '"), "lo ");
    nlohmann::json spec = {{"type", "nic"},
                           {"nictype", "bridged"},
                           {"parent", bridge->name},
                           {"volatile.name", "eth0"},
                           {"volatile.hwaddr", "00:16:3e:01:02:03"}};
    // A device name that also occurs in the verb must not confuse the request parser.
    auto r = c->request("nic-add ic " + spec.dump());
    ASSERT_EQ(r["ok"], true) << r;
    std::string host = r["nic"]["host_name"];
    EXPECT_TRUE(is_veth_name(host)) << r;
    EXPECT_EQ(master_of(host), bridge->name);
    EXPECT_EQ(c->exec("cat /sys/class/net/eth0/address"), "00:16:3e:01:02:03\n");
    EXPECT_TRUE(contains(c->exec("ip -o link show eth0"), ",UP"));
    EXPECT_EQ(c->status()["nics"].size(), 1u);
    EXPECT_TRUE(contains(c->request("nic-add ic " + spec.dump()).value("error", ""),
                         "already plugged"));
    // The guest's own interface names are taken: a second eth0 is refused, nothing left behind.
    auto before = host_links();
    spec["volatile.hwaddr"] = "00:16:3e:01:02:04";
    auto clash = c->request("nic-add other " + spec.dump());
    EXPECT_TRUE(contains(clash.value("error", ""), "\"eth0\" already exists in the container"))
        << clash;
    EXPECT_EQ(host_links(), before);
    // Without a volatile name the supervisor takes the first ethN the container lacks.
    auto unnamed = c->request(R"(nic-add p {"type":"nic","nictype":"p2p"})");
    EXPECT_EQ(unnamed["nic"]["name"], "eth1") << unnamed;
    EXPECT_TRUE(is_lxd_mac(unnamed["nic"].value("hwaddr", ""))) << unnamed;
    EXPECT_EQ(c->request("nic-remove p")["plugged"], true);
    r = c->request("nic-remove ic");
    EXPECT_EQ(r["plugged"], true) << r;
    EXPECT_EQ(c->exec("ls /sys/class/net | tr '\\n' ' '"), "lo ");
    EXPECT_FALSE(host_link_exists(host));
    EXPECT_EQ(c->request("nic-remove ic")["plugged"], false);
    EXPECT_EQ(c->stop()["state"], "stopped");
}

TEST_F(Network, BadDevicesAreRefusedNamingDeviceAndKey) {
    struct Case {
        KeyMap keys;
        std::string expect;
    };
    std::string missing = "lnno" + std::to_string(::getpid());
    std::vector<Case> cases = {
        {{{"type", "nic"}, {"nictype", "bridged"}, {"parent", missing}},
         "Device \"bad\": \"parent\" \"" + missing + "\" does not exist"},
        {{{"type", "nic"}, {"nictype", "bridged"}, {"parent", "lo"}},
         "Device \"bad\": \"parent\" \"lo\" is not a bridge"},
        {{{"type", "nic"}, {"nictype", "ipvlan"}, {"parent", "lo"}}, "\"nictype\" \"ipvlan\""},
        {{{"type", "nic"}, {"nictype", "p2p"}, {"hwaddr", "01:16:3e:00:00:01"}}, "\"hwaddr\""},
        {{{"type", "nic"}, {"nictype", "p2p"}, {"mtu", "9"}}, "\"mtu\""},
        {{{"type", "nic"}, {"nictype", "p2p"}, {"name", "eth0"}},
         "\"name\" \"eth0\" is already used by device \""},
    };
    auto before = host_links();
    for (auto& [keys, expect] : cases) {
        auto c = make("nbad");
        c->config.devices["bad"] = keys;
        c->config.devices["good"] = {{"type", "nic"}, {"nictype", "p2p"}, {"name", "eth0"}};
        std::string error;
        EXPECT_FALSE(c->start(&error)) << expect;
        EXPECT_TRUE(contains(error, "Device \"") && contains(error, expect))
            << "error: " << error << "\nexpected: " << expect;
    }
    EXPECT_EQ(host_links(), before) << "a refused start left links behind";
}

} // namespace
