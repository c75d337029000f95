// Proxy devices (lodge.conf(5), lodge-network(7)): a server in a busybox container is reached
// from the host's loopback (IPv4 and IPv6) through a forwarder in the container
// (systemd-socket-proxyd, lodge-proxy-udp), and through DNAT rules with nat=true; the forwarder
// or rule goes when the device is removed and when the container stops; bad keys are refused
// with the reason. Two lodged instances keep their nftables tables apart. Every bridge and
// address is made by the test; traffic stays on the host's loopback, the test's bridge and the
// containers' namespaces.
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// A port of the host's loopback per test run (the test's pid spreads parallel runs apart).
int base_port() {
    return 20000 + static_cast<int>(::getpid() % 20000);
}

// One HTTP GET over TCP to ADDRESS:PORT; the whole answer, or "" when the connection fails.
std::string http_get(const std::string& address, int port) {
    bool v6 = address.find(':') != std::string::npos;
    Fd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET6, address.c_str(), &a->sin6_addr);
        len = sizeof *a;
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, address.c_str(), &a->sin_addr);
        len = sizeof *a;
    }
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return "";
    std::string req = "GET /index.html HTTP/1.0\r\n\r\n";
    if (::write(fd.get(), req.data(), req.size()) < 0)
        return "";
    std::string out;
    char buf[4096];
    for (;;) {
        pollfd p{fd.get(), POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0)
            break;
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

// One UDP datagram to 127.0.0.1:PORT; the answer, or "".
std::string udp_ask(int port, const std::string& text) {
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (::sendto(fd.get(), text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a) <
        0)
        return "";
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0)
        return "";
    char buf[512];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

class ProxyDevice : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (::access("/lib/systemd/systemd-socket-proxyd", X_OK) != 0)
            GTEST_SKIP() << "needs systemd-socket-proxyd (Debian package systemd)";
        if (sh("command -v dnsmasq nft nsenter python3 >/dev/null && echo ok") != "ok\n")
            GTEST_SKIP() << "needs dnsmasq, nft, nsenter and python3";
        forward4 = read_text("/proc/sys/net/ipv4/ip_forward");
        forward6 = read_text("/proc/sys/net/ipv6/conf/all/forwarding");
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
        for (auto& n : networks)
            sh("ip link del " + n + " 2>/dev/null");
        if (!forward4.empty())
            write_file("/proc/sys/net/ipv4/ip_forward", forward4);
        if (!forward6.empty())
            write_file("/proc/sys/net/ipv6/conf/all/forwarding", forward6);
    }
    std::string container(const std::string& base) {
        std::string n = unique_name(base);
        containers.push_back(n);
        return n;
    }
    std::string network(const std::string& tag) {
        std::string n = "lp" + tag + std::to_string(::getpid() % 100000);
        networks.push_back(n);
        return n;
    }
    std::string exec(const std::string& name, const std::string& cmd, int* st = nullptr) {
        return sh(
            env_path("LODGE_LODGECTL") + " exec " + name + " -- /bin/sh -c '" + cmd + "' 2>&1", st);
    }
    // busybox httpd in the container on ADDRESS:8000, serving a page that names the container.
    void serve(const std::string& name, const std::string& address) {
        int st = 0;
        std::string out =
            exec(name,
                 "mkdir -p /www && echo hello-from-" + name +
                     " > /www/index.html && busybox httpd -p " + address + ":8000 -h /www",
                 &st);
        ASSERT_EQ(st, 0) << out;
    }
    std::string leader(const std::string& name) {
        std::string show = ctl("show " + name);
        auto at = show.find("Leader=");
        return at == std::string::npos ? "" : show.substr(at + 7, show.find('\n', at) - at - 7);
    }
    std::string pid_file(const std::string& name, const std::string& dev) {
        return TestRoot::get().dir + "/run/proxies/" + name + "/" + dev;
    }
    // The forwarder's pid as lodged recorded it, 0 if none.
    pid_t forwarder(const std::string& name, const std::string& dev) {
        std::string text;
        if (read_file(pid_file(name, dev), text) < 0)
            return 0;
        return static_cast<pid_t>(std::atol(text.c_str()));
    }
    static bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }
    std::string table() {
        std::string info = ctl("network info " + networks.at(0));
        auto at = info.find("nftables table inet ");
        return at == std::string::npos ? "" : info.substr(at + 20, info.find('\n', at) - at - 20);
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> containers, networks;
    std::string forward4, forward6;
};

TEST_F(ProxyDevice, KeysAreCheckedWithClearErrors) {
    std::string c = container("pxk");
    int st = 0;
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    struct Case {
        std::string keys, says;
    } cases[] = {
        {"listen=tcp:127.0.0.1:80", "needs \"listen\" and \"connect\""},
        {"listen=tcp:300.1.1.1:80 connect=tcp:127.0.0.1:80", "not an IPv4 address"},
        {"listen=tcp:127.0.0.1:0 connect=tcp:127.0.0.1:80", "is not a port"},
        {"listen=tcp:127.0.0.1:70000 connect=tcp:127.0.0.1:80", "is not a port"},
        {"listen=tcp:::1:80 connect=tcp:127.0.0.1:80", "in brackets"},
        {"listen=tcp:127.0.0.1:80 connect=udp:127.0.0.1:80", "same protocol"},
        {"listen=sctp:127.0.0.1:80 connect=tcp:127.0.0.1:80", "unknown protocol"},
        {"listen=tcp:127.0.0.1:80-90 connect=tcp:127.0.0.1:80", "ranges"},
        {"listen=tcp:127.0.0.1:80 connect=tcp:0.0.0.0:80", "concrete address"},
        {"listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 bind=instance", "bind"},
        {"listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 nat=maybe", "\"nat\""},
        {"listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 nat=true", "loopback"},
        {"listen=tcp:0.0.0.0:80 connect=tcp:[::1]:80 nat=true", "address family"},
        {"listen=tcp:0.0.0.0:80 connect=tcp:10.9.9.9:80 nat=true", "static address"},
        {"listen=tcp:127.0.0.1:80 connect=tcp:127.0.0.1:80 proxy_protocol=true", "not supported"},
    };
    for (auto& k : cases) {
        std::string out = ctl("device add " + c + " px proxy " + k.keys, &st);
        EXPECT_NE(st, 0) << k.keys;
        EXPECT_TRUE(contains(out, k.says)) << k.keys << ": " << out;
        EXPECT_TRUE(contains(out, "px")) << out;
    }
    EXPECT_FALSE(contains(ctl("device list " + c), "px"));
}

// A device name is a file name (the forwarder's record, written as root) and an nft comment:
// names that climb out of a directory or end a quoted string are refused, by device add and
// by config edit (UpdateContainer) alike, and nothing changes.
TEST_F(ProxyDevice, DeviceNamesThatNamePathsOrScriptTextAreRefused) {
    std::string c = container("pxn");
    int st = 0;
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    const std::string keys = " proxy listen=tcp:127.0.0.1:1 connect=tcp:127.0.0.1:2";
    for (std::string name : {"'../../x'", "'a/b'", "'a\"b'", "'a\nb'", "'.hidden'"}) {
        std::string out = ctl("device add " + c + " " + name + keys, &st);
        EXPECT_NE(st, 0) << name << ": " << out;
        EXPECT_TRUE(contains(out, "evice name")) << name << ": " << out;
    }
    std::string yaml = TestRoot::get().dir + "/" + unique_name("edit") + ".yaml";
    ASSERT_EQ(write_file_atomic(yaml,
                                "devices:\n  \"../../../../etc/x\":\n    type: proxy\n"
                                "    listen: tcp:127.0.0.1:1\n    connect: tcp:127.0.0.1:2\n",
                                0644),
              0);
    std::string out =
        sh(env_path("LODGE_LODGECTL") + " config edit " + c + " <" + yaml + " 2>&1", &st);
    ::unlink(yaml.c_str());
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "Device name")) << out;
    std::string list = ctl("device list " + c, &st);
    EXPECT_EQ(st, 0) << list;
    EXPECT_FALSE(contains(list, "proxy")) << list;
}

TEST_F(ProxyDevice, ForwarderReachesTheContainerFromHostLoopbackAndGoesWithTheDevice) {
    std::string c = container("pxf");
    int st = 0;
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    std::string out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    serve(c, "127.0.0.1");
    int port = base_port();
    out = ctl("device add " + c + " web proxy listen=tcp:127.0.0.1:" + std::to_string(port) +
                  " connect=tcp:127.0.0.1:8000",
              &st);
    ASSERT_EQ(st, 0) << out;
    std::string page;
    EXPECT_TRUE(wait_until(
        [&] { return contains(page = http_get("127.0.0.1", port), "hello-from-" + c); }, 30))
        << page;
    pid_t fwd = forwarder(c, "web");
    ASSERT_GT(fwd, 0);
    EXPECT_TRUE(contains(read_text("/proc/" + std::to_string(fwd) + "/comm"), "systemd-socket"));
    // It sits in the container's network namespace and runs as nobody.
    EXPECT_EQ(sh("readlink /proc/" + std::to_string(fwd) + "/ns/net"),
              sh("readlink /proc/" + leader(c) + "/ns/net"));
    EXPECT_TRUE(contains(read_text("/proc/" + std::to_string(fwd) + "/status"), "Uid:\t65534"));

    // IPv6: the host's ::1 to the same server.
    int port6 = port + 1;
    out = ctl("device add " + c + " web6 proxy listen=tcp:[::1]:" + std::to_string(port6) +
                  " connect=tcp:127.0.0.1:8000",
              &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(
        wait_until([&] { return contains(page = http_get("::1", port6), "hello-from-" + c); }, 30))
        << page;

    // A port already taken is refused and not kept.
    out = ctl("device add " + c + " dup proxy listen=tcp:127.0.0.1:" + std::to_string(port) +
                  " connect=tcp:127.0.0.1:8000",
              &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Address already in use")) << out;
    EXPECT_FALSE(contains(ctl("device list " + c), "dup"));

    // Removing the device ends its forwarder; the port is closed.
    out = ctl("device remove " + c + " web", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(wait_until([&] { return !alive(fwd); }, 10));
    EXPECT_EQ(http_get("127.0.0.1", port), "");
    EXPECT_FALSE(exists(pid_file(c, "web")));

    // Stopping the container ends the other one (it dies with the container's pid namespace).
    pid_t fwd6 = forwarder(c, "web6");
    ASSERT_GT(fwd6, 0);
    out = ctl("stop " + c + " --timeout 10", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(wait_until([&] { return !alive(fwd6); }, 10));
    EXPECT_EQ(http_get("::1", port6), "");
    EXPECT_FALSE(exists(pid_file(c, "web6")));

    // Back with the next start.
    out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    serve(c, "127.0.0.1");
    EXPECT_TRUE(
        wait_until([&] { return contains(page = http_get("::1", port6), "hello-from-" + c); }, 30))
        << page;
}

TEST_F(ProxyDevice, ForwarderSurvivesLodgedKilled) {
    std::string c = container("pxr");
    int st = 0;
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    std::string out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    serve(c, "127.0.0.1");
    int port = base_port() + 2;
    out = ctl("device add " + c + " web proxy listen=tcp:127.0.0.1:" + std::to_string(port) +
                  " connect=tcp:127.0.0.1:8000",
              &st);
    ASSERT_EQ(st, 0) << out;
    pid_t fwd = forwarder(c, "web");
    ASSERT_GT(fwd, 0);
    daemon->kill9();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    // Adopted, not restarted.
    EXPECT_EQ(forwarder(c, "web"), fwd);
    EXPECT_TRUE(alive(fwd));
    std::string page;
    EXPECT_TRUE(wait_until(
        [&] { return contains(page = http_get("127.0.0.1", port), "hello-from-" + c); }, 30))
        << page;
}

// A stopped container's record names a pid that is now another container's forwarder (its own
// died with it, the pid was reused): the record goes, the other forwarder lives on.
TEST_F(ProxyDevice, AStaleRecordNeverStopsAnotherContainersForwarder) {
    std::string a = container("pxa");
    std::string b = container("pxb");
    int st = 0;
    ASSERT_EQ(ctl("create " + a, &st), "Created container " + a + "\n");
    ASSERT_EQ(ctl("create " + b, &st), "Created container " + b + "\n");
    std::string out = ctl("start " + a, &st);
    ASSERT_EQ(st, 0) << out;
    int port = base_port() + 5;
    out = ctl("device add " + a + " web proxy listen=tcp:127.0.0.1:" + std::to_string(port) +
                  " connect=tcp:127.0.0.1:8000",
              &st);
    ASSERT_EQ(st, 0) << out;
    pid_t fwd = forwarder(a, "web");
    ASSERT_GT(fwd, 0);
    std::string spec =
        " proxy listen=tcp:127.0.0.1:" + std::to_string(port + 1) + " connect=tcp:127.0.0.1:8000";
    // Records as an older lodged wrote them (no start time) and with another start time.
    for (std::string tail : {std::string(), std::string("1\n")}) {
        SCOPED_TRACE(tail);
        out = ctl("device add " + b + " old" + spec, &st);
        ASSERT_EQ(st, 0) << out;
        ASSERT_EQ(mkdir_p(TestRoot::get().dir + "/run/proxies/" + b, 0700), 0);
        ASSERT_EQ(write_file_atomic(pid_file(b, "old"),
                                    std::to_string(fwd) + "\ntcp:127.0.0.1:" +
                                        std::to_string(port + 1) + " tcp:127.0.0.1:8000\n" + tail,
                                    0600),
                  0);
        out = ctl("device remove " + b + " old", &st); // lodged syncs b's forwarders
        ASSERT_EQ(st, 0) << out;
        EXPECT_FALSE(exists(pid_file(b, "old")));
        EXPECT_TRUE(alive(fwd));
        EXPECT_EQ(forwarder(a, "web"), fwd);
    }
}

TEST_F(ProxyDevice, UdpEchoThroughTheForwarder) {
    std::string c = container("pxu");
    int st = 0;
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    std::string out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    // A UDP echo server in the container's network namespace (busybox nc has no UDP).
    std::string pid = leader(c);
    ASSERT_FALSE(pid.empty());
    sh("nsenter -t " + pid +
       " -n python3 -c 'import socket\n"
       "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
       "s.bind((\"127.0.0.1\",9000))\n"
       "s.settimeout(120)\n"
       "while True:\n"
       " d,a=s.recvfrom(512)\n"
       " s.sendto(b\"echo:\"+d,a)' >/dev/null 2>&1 &");
    int port = base_port() + 3;
    out = ctl("device add " + c + " dns proxy listen=udp:127.0.0.1:" + std::to_string(port) +
                  " connect=udp:127.0.0.1:9000",
              &st);
    ASSERT_EQ(st, 0) << out;
    std::string answer;
    EXPECT_TRUE(wait_until([&] { return (answer = udp_ask(port, "ping")) == "echo:ping"; }, 30))
        << answer;
    pid_t fwd = forwarder(c, "dns");
    ASSERT_GT(fwd, 0);
    EXPECT_TRUE(contains(read_text("/proc/" + std::to_string(fwd) + "/comm"), "lodge-proxy-udp"));
    ctl("stop " + c + " --force", &st);
    EXPECT_TRUE(wait_until([&] { return !alive(fwd); }, 10));
    sh("pkill -f -- '[s].bind((\"127.0.0.1\",9000))' 2>/dev/null");
}

TEST_F(ProxyDevice, NatRulesForwardToTheStaticAddressAndGoWithTheDeviceAndTheStop) {
    std::string net = network("n");
    int st = 0;
    std::string out = ctl("network create " + net + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string cidr = ctl("network get " + net + " ipv4.address");
    cidr = cidr.substr(0, cidr.find('\n'));
    std::string bridge_ip = cidr.substr(0, cidr.find('/'));
    std::string fixed = cidr.substr(0, cidr.rfind('.')) + ".50";
    std::string c = container("pxn");
    ASSERT_EQ(ctl("create " + c, &st), "Created container " + c + "\n");
    out = ctl("device add " + c + " eth0 nic network=" + net + " ipv4.address=" + fixed, &st);
    ASSERT_EQ(st, 0) << out;
    int port = base_port() + 4;
    std::string keys =
        "listen=tcp:0.0.0.0:" + std::to_string(port) + " connect=tcp:" + fixed + ":8000 nat=true";
    out = ctl("device add " + c + " web proxy " + keys, &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("start " + c, &st);
    ASSERT_EQ(st, 0) << out;
    // The address by hand (what the static DHCP lease would give): no DHCP client needed.
    out = exec(c, "busybox ip addr add " + fixed + "/24 dev eth0 && busybox ip link set eth0 up",
               &st);
    ASSERT_EQ(st, 0) << out;
    serve(c, "0.0.0.0");
    std::string t = table();
    ASSERT_FALSE(t.empty());
    EXPECT_NE(t, "lodge"); // a private state dir gets a table of its own
    std::string rules = sh("nft list table inet " + t + " 2>&1");
    EXPECT_TRUE(contains(rules, "dnat ip to " + fixed + ":8000")) << rules;
    EXPECT_TRUE(contains(rules, c + "/web")) << rules;
    // From the host to its own bridge address: the output chain's DNAT sends it to the container.
    std::string page;
    EXPECT_TRUE(wait_until(
        [&] { return contains(page = http_get(bridge_ip, port), "hello-from-" + c); }, 30))
        << page << rules;
    EXPECT_EQ(forwarder(c, "web"), 0); // no forwarder with nat=true

    // The rule goes with the device, comes back with it, and goes with the stop.
    out = ctl("device remove " + c + " web", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(contains(sh("nft list table inet " + t + " 2>&1"), "dnat"));
    out = ctl("device add " + c + " web proxy " + keys, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(sh("nft list table inet " + t + " 2>&1"), "dnat"));
    out = ctl("stop " + c + " --force", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(wait_until(
        [&] { return !contains(sh("nft list table inet " + t + " 2>&1"), "dnat"); }, 10));
    // Still there, the network's own rules.
    EXPECT_TRUE(contains(sh("nft list table inet " + t + " 2>&1"), "fwd." + net));
}

// Two lodged instances with their own state dirs (as parallel tests run them) each keep their
// networks' rules in a table of their own: deleting a network on one, which loads its table
// anew, leaves the other's rules in place. Fails when both use "inet lodge".
TEST_F(ProxyDevice, TwoLodgedInstancesKeepTheirTablesApart) {
    std::string net1 = network("a"), net2 = network("b");
    int st = 0;
    std::string out = ctl("network create " + net1 + " ipv6.address=none", &st);
    ASSERT_EQ(st, 0) << out;
    std::string t1 = table();

    std::string state1 = std::getenv("LODGE_STATE_DIR"), run1 = std::getenv("LODGE_RUNTIME_DIR");
    std::string dir2 = TestRoot::get().dir + "/" + unique_name("second");
    sh("mkdir -p " + dir2 + "/state " + dir2 + "/run");
    auto bus2 = std::make_unique<PrivateBus>("bus2");
    ::setenv("LODGE_STATE_DIR", (dir2 + "/state").c_str(), 1);
    ::setenv("LODGE_RUNTIME_DIR", (dir2 + "/run").c_str(), 1);
    auto second = std::make_unique<Lodged>();
    auto first_instance = [&] {
        ::setenv("DBUS_SYSTEM_BUS_ADDRESS", bus->address.c_str(), 1);
        ::setenv("LODGE_STATE_DIR", state1.c_str(), 1);
        ::setenv("LODGE_RUNTIME_DIR", run1.c_str(), 1);
    };
    auto second_instance = [&] {
        ::setenv("DBUS_SYSTEM_BUS_ADDRESS", bus2->address.c_str(), 1);
        ::setenv("LODGE_STATE_DIR", (dir2 + "/state").c_str(), 1);
        ::setenv("LODGE_RUNTIME_DIR", (dir2 + "/run").c_str(), 1);
    };
    if (!second->wait_ready()) {
        first_instance();
        FAIL() << "the second lodged did not start";
    }
    out = ctl("network create " + net2 + " ipv6.address=none", &st);
    std::string info2 = ctl("network info " + net2);
    first_instance();
    ASSERT_EQ(st, 0) << out;
    auto at = info2.find("nftables table inet ");
    ASSERT_NE(at, std::string::npos) << info2;
    std::string t2 = info2.substr(at + 20, info2.find('\n', at) - at - 20);
    EXPECT_NE(t1, t2);
    EXPECT_TRUE(contains(sh("nft list table inet " + t1 + " 2>&1"), "fwd." + net1));
    EXPECT_TRUE(contains(sh("nft list table inet " + t2 + " 2>&1"), "fwd." + net2));

    out = ctl("network delete " + net1, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(sh("nft list table inet " + t2 + " 2>&1"), "fwd." + net2));
    EXPECT_TRUE(contains(sh("nft list table inet " + t2 + " 2>&1"), "masquerade"));

    second_instance();
    out = ctl("network delete " + net2, &st);
    EXPECT_EQ(st, 0) << out;
    second.reset();
    bus2.reset();
    first_instance();
    EXPECT_FALSE(contains(sh("nft list tables 2>&1"), t2));
}

} // namespace
