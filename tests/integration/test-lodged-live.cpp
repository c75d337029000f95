// Tier 1: what lodged changes in running containers: lxcfs followed as it comes and goes, and
// nics hot-plugged with their addresses shown and bad ones refused.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "nic-shapes.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

using LodgedTest = LodgedFixture; // test-lodged.cpp's suite

// Issue 7: lxcfs appearing, crashing and coming back while containers run.
TEST_F(LodgedTest, LxcfsIsFollowedLive) {
    if (!exists("/usr/bin/lxcfs") || !exists("/dev/fuse"))
        GTEST_SKIP() << "needs lxcfs and /dev/fuse";
    std::string n = name_container("lxlive"), p = name_container("lxlivep");
    ctl("create " + n + " -c limits.memory=256MiB");
    ctl("create " + p + " -c limits.memory=256MiB -c security.privileged=true");
    ctl("start " + n);
    ctl("start " + p);
    // A systemd guest too, when the Debian rootfs is at hand: it must stay up throughout.
    std::string d;
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (tarball && exists(tarball)) {
        d = name_container("lxlived");
        ctl("create " + d + " " + tarball + " -c limits.memory=256MiB");
        ctl("start " + d);
    }
    auto system_state = [&] {
        return sh(
            env_path("LODGE_LODGECTL") + " exec " + d +
            " -- sh -c 'for i in $(seq 600); do s=$(timeout 120 systemctl "
            "is-system-running --wait 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != offline ] && "
            "break; sleep 0.2; "
            "done; echo $s'");
    };
    if (!d.empty()) {
        EXPECT_EQ(system_state(), "running\n");
    }
    const std::string mnt = TestRoot::get().dir + "/lxcfs"; // LODGE_LXCFS_DIR
    sh("mkdir -p " + mnt);
    auto start_lxcfs = [&] {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/usr/bin/lxcfs", "lxcfs", "-f", "-p",
                  (TestRoot::get().dir + "/lxcfs.pid").c_str(), mnt.c_str(), nullptr);
            _exit(127);
        }
        return pid;
    };
    // Runs `script` in the container until it prints `want` (bounded against a hang only):
    // lodged gives the test no event for "binds moved".
    auto eventually = [&](const std::string& c, const std::string& script,
                          const std::string& want) {
        std::string out;
        wait_until([&] {
            out = sh(env_path("LODGE_LODGECTL") + " exec " + c + " -- sh -c '" + script + "' 2>&1");
            return contains(out, want);
        });
        return out;
    };
    const std::string meminfo = "grep MemTotal /proc/meminfo";
    for (auto& c : {n, p})
        EXPECT_FALSE(
            contains(sh(env_path("LODGE_LODGECTL") + " exec " + c + " -- cat /proc/self/mountinfo"),
                     "fuse.lxcfs"));
    // lxcfs appears after the containers started: the binds arrive without a restart.
    pid_t lxcfs = start_lxcfs();
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, meminfo, "262144 kB"), "262144 kB")) << c;
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 /io/lodge1 io.lodge1.Manager LXCFS"),
              "b true\n");
    EXPECT_TRUE(contains(ctl("status " + n), "LXCFS: bound")) << ctl("status " + n);
    // lxcfs dies: reads fall back to the kernel's files instead of failing with ENOTCONN.
    kill(lxcfs, SIGKILL);
    waitpid(lxcfs, nullptr, 0);
    const std::string reads = "cat /proc/meminfo /proc/uptime /proc/cpuinfo >/dev/null && "
                              "! grep -q fuse.lxcfs /proc/self/mountinfo && echo reads-ok";
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, reads, "reads-ok"), "reads-ok")) << c;
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 /io/lodge1 io.lodge1.Manager LXCFS"),
              "b false\n");
    // lxcfs comes back (its dead mount cleared first, as a service manager would): binds too.
    sh("umount -l " + mnt + " 2>/dev/null");
    lxcfs = start_lxcfs();
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, meminfo, "262144 kB"), "262144 kB")) << c;
    if (!d.empty()) {
        EXPECT_TRUE(contains(eventually(d, meminfo, "262144 kB"), "262144 kB"));
        EXPECT_EQ(system_state(), "running\n") << "the systemd guest stayed up";
    }
    // A lodged restart while lxcfs is down reconciles at start.
    daemon->kill9();
    kill(lxcfs, SIGKILL);
    waitpid(lxcfs, nullptr, 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_TRUE(contains(eventually(n, reads, "reads-ok"), "reads-ok"));
    sh("umount -l " + mnt + " 2>/dev/null; rm -f " + TestRoot::get().dir + "/lxcfs.pid");
}
// nic devices through lodged (CONTRACT §3): volatile keys made and kept by lodged, live plug
// and unplug, the host name mirrored into Config while running, GetAddresses and the list
// columns, and refusals that leave config.json as it was. The bridge is made by the test.
TEST_F(LodgedTest, NicsHotPlugAddressesAndRefusals) {
    struct Bridge {
        std::string name = "lnbd" + std::to_string(getpid());
        bool ok = false;
        Bridge() {
            int st = 0;
            sh("ip link add " + name + " type bridge && ip link set " + name + " up", &st);
            ok = st == 0;
        }
        ~Bridge() { sh("ip link del " + name + " 2>/dev/null"); }
    } br;
    if (!br.ok)
        GTEST_SKIP() << "cannot create a bridge";
    std::string n = name_container("nic");
    ctl("create " + n);
    int st = 0;
    EXPECT_EQ(ctl("device add " + n + " net0 type=nic nictype=bridged parent=" + br.name, &st), "");
    ASSERT_EQ(st, 0);
    EXPECT_EQ(ctl("config get " + n + " volatile.net0.name"), "eth0\n");
    std::string mac = ctl("config get " + n + " volatile.net0.hwaddr");
    EXPECT_TRUE(mac.size() == 18 && is_lxd_mac(mac.substr(0, 17))) << mac;

    ASSERT_EQ(ctl("start " + n, &st), "");
    auto in = [&](const std::string& cmd) {
        return sh(env_path("LODGE_LODGECTL") + " exec " + n + " -- sh -c '" + cmd + "'");
    };
    EXPECT_EQ(in("cat /sys/class/net/eth0/address"), mac);
    std::string host = ctl("config get " + n + " volatile.net0.host_name");
    EXPECT_TRUE(host.size() == 13 && is_veth_name(host.substr(0, 12))) << host;
    host.pop_back();
    EXPECT_TRUE(contains(sh("readlink /sys/class/net/" + host + "/master"), br.name));
    std::string status = ctl("status " + n);
    EXPECT_TRUE(contains(status, "NICs: net0: eth0 " + mac.substr(0, 17) + " (bridged on " +
                                     br.name + ", host " + host + ")"))
        << status;

    // Hot plug: in at once, with its volatile keys kept; out at once, keys and host end gone.
    EXPECT_EQ(ctl("device add " + n + " net1 type=nic nictype=p2p", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(ctl("config get " + n + " volatile.net1.name"), "eth1\n");
    EXPECT_EQ(in("ls /sys/class/net | tr \"\\n\" \" \""), "eth0 eth1 lo ");
    std::string host1 = ctl("config get " + n + " volatile.net1.host_name");
    host1.pop_back();
    EXPECT_TRUE(exists("/sys/class/net/" + host1)) << host1;
    EXPECT_EQ(ctl("device remove " + n + " net1", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(in("ls /sys/class/net | tr \"\\n\" \" \""), "eth0 lo ");
    EXPECT_FALSE(exists("/sys/class/net/" + host1)) << host1;
    EXPECT_EQ(ctl("config get " + n + " volatile.net1.name"), "\n");

    // Addresses from inside the container's namespace: GetAddresses and the list columns.
    in("echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad; ip addr add 169.254.9.9/16 dev eth0; "
       "ip -6 addr add fd99::9/64 dev eth0");
    std::string path = "/io/lodge1/container/";
    for (char ch : n)
        path += ch == '-' ? std::string("_2d") : std::string(1, ch);
    std::string addrs =
        sh("busctl --system call io.lodge1 " + path + " io.lodge1.Container GetAddresses 2>&1");
    EXPECT_TRUE(contains(addrs, "2 4 169 254 9 9")) << addrs;
    EXPECT_TRUE(contains(addrs, "10 16 253 153 0 0 0 0 0 0 0 0 0 0 0 0 0 9")) << addrs;
    auto list = nlohmann::json::parse(ctl("list --json"), nullptr, false);
    bool found = false;
    for (auto& row : list)
        if (row["name"] == n) {
            found = true;
            EXPECT_EQ(row["ipv4"], nlohmann::json::array({"169.254.9.9"})) << row;
            EXPECT_EQ(row["ipv6"], nlohmann::json::array({"fd99::9"})) << row;
        }
    EXPECT_TRUE(found);
    std::string text = ctl("list");
    EXPECT_TRUE(contains(text, "IPV4") && contains(text, "169.254.9.9") &&
                contains(text, "fd99::9"))
        << text;

    // Refusals name the device and the key and leave config.json untouched.
    std::string config = TestRoot::get().dir + "/state/containers/" + n + "/config.json";
    std::string before = read_text(config);
    std::string missing = "lnno" + std::to_string(getpid());
    struct Bad {
        std::string args, expect;
    };
    for (auto& [args, expect] :
         {Bad{"nictype=bridged parent=" + missing, "\"parent\" \"" + missing + "\" does not exist"},
          Bad{"nictype=bridged parent=lo", "\"parent\" \"lo\" is not a bridge"},
          Bad{"nictype=p2p name=eth0", "\"name\" \"eth0\" is already used by device \"net0\""},
          Bad{"nictype=p2p hwaddr=zz:16:3e:00:00:01", "invalid \"hwaddr\""},
          Bad{"nictype=p2p mtu=70000", "invalid \"mtu\""},
          Bad{"nictype=vxlan", "unknown \"nictype\" \"vxlan\""}}) {
        std::string out = ctl("device add " + n + " bad type=nic " + args, &st);
        EXPECT_NE(st, 0) << args;
        EXPECT_TRUE(contains(out, "Device \"bad\": ") && contains(out, expect))
            << args << ": " << out;
    }
    EXPECT_EQ(read_text(config), before) << "a refused device changed config.json";

    // Restart: the same name and MAC (persisted), a new host end (per boot).
    EXPECT_EQ(ctl("stop --force " + n, &st), "");
    EXPECT_FALSE(exists("/sys/class/net/" + host)) << host;
    EXPECT_EQ(ctl("config get " + n + " volatile.net0.host_name"), "\n");
    ASSERT_EQ(ctl("start " + n, &st), "");
    EXPECT_EQ(in("cat /sys/class/net/eth0/address"), mac);
    std::string host2 = ctl("config get " + n + " volatile.net0.host_name");
    EXPECT_NE(host2, host + "\n");
    EXPECT_TRUE(host2.size() == 13 && is_veth_name(host2.substr(0, 12))) << host2;
    EXPECT_TRUE(contains(read_text(config), mac.substr(0, 17)));
    EXPECT_FALSE(contains(read_text(config), "host_name")) << "host names are never on disk";
    ctl("stop --force " + n);
}

} // namespace
