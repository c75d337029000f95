// The container's cgroup: limits.* on the container's payload cgroup, LXD's device allow-list
// for every container, and LXCFS binds from a private lxcfs instance.
#include "harness.hpp"

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge::test;

namespace {

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

TEST(Cgroup, LimitsAreAppliedToTheContainersPayloadCgroup) {
    LODGE_REQUIRE_ROOT();
    Container c("cglim-" + std::to_string(getpid()), false);
    c.make_busybox(true);
    c.set("limits.memory", "256MiB");
    c.set("limits.processes", "64");
    c.set("limits.cpu", "1");
    LODGE_START_OR_SKIP(c);
    // On the payload only: the supervisor in <base>/supervisor stays outside them.
    std::string base = TestRoot::get().cgroup + "/" + c.name;
    std::string payload = base + "/payload";
    std::string pids_max;
    if (exists("/sys/fs/cgroup/memory/" + base)) {
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/memory/" + payload + "/memory.limit_in_bytes")),
                  "268435456");
        pids_max = "/sys/fs/cgroup/pids/" + payload + "/pids.max";
        EXPECT_EQ(trim(read_text(pids_max)), "64");
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/pids/" + base + "/pids.max")), "max");
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/cpu/" + payload + "/cpu.cfs_quota_us")), "100000");
    } else if (exists("/sys/fs/cgroup/" + payload + "/memory.max")) {
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/" + payload + "/memory.max")), "268435456");
        pids_max = "/sys/fs/cgroup/" + payload + "/pids.max";
        EXPECT_EQ(trim(read_text(pids_max)), "64");
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/" + base + "/pids.max")), "max");
        EXPECT_EQ(trim(read_text("/sys/fs/cgroup/" + payload + "/cpu.max")), "100000 100000");
    } else {
        GTEST_SKIP() << "no memory controller for " << base;
    }
    // A live change (what lodged asks for after `config set`).
    c.set("limits.processes", "99");
    c.write_config();
    auto reply = c.request("apply-limits");
    EXPECT_EQ(reply.value("ok", false), true) << reply.dump();
    EXPECT_EQ(trim(read_text(pids_max)), "99");
    // apply-limits carries its limits (as lodged sends them): config.json is not read again,
    // and a set of CPUs pins the payload wherever the cpuset controller is.
    lodge::Limits sent;
    ASSERT_EQ(lodge::parse_limit("limits.processes", "77", sent), "");
    ASSERT_EQ(lodge::parse_limit("limits.cpu", "0", sent), "");
    reply = c.request(lodge::runtime::proto::Request::apply_limits(sent));
    EXPECT_EQ(reply.value("ok", false), true) << reply.dump();
    EXPECT_EQ(trim(read_text(pids_max)), "77");
    for (std::string cpus : {"/sys/fs/cgroup/cpuset/" + payload + "/cpuset.cpus",
                             "/sys/fs/cgroup/" + payload + "/cpuset.cpus"}) {
        if (!exists(cpus))
            continue;
        EXPECT_EQ(trim(read_text(cpus)), "0") << cpus;
    }
}

// Every hierarchy of /proc/PID/cgroup puts PID at `path` ("N:controllers:/path" lines).
void expect_cgroup_everywhere(pid_t pid, const std::string& path) {
    std::string text = read_text("/proc/" + std::to_string(pid) + "/cgroup");
    size_t lines = 0, pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        size_t colon = line.find(':', line.find(':') + 1);
        if (colon == std::string::npos)
            continue;
        lines++;
        EXPECT_EQ(line.substr(colon + 1), path) << "pid " << pid << ": " << line;
    }
    EXPECT_GT(lines, 0u) << text;
}

// The supervisor joins <base>/supervisor together with PID 1's move (one grace period), and
// both are where they belong once the start has been answered, in every hierarchy.
TEST(Cgroup, SupervisorAndInitSitInTheirOwnCgroupsEverywhere) {
    LODGE_REQUIRE_ROOT();
    Container c("cgplace-" + std::to_string(getpid()), false);
    c.make_busybox(true);
    LODGE_START_OR_SKIP(c);
    auto status = c.request("status");
    pid_t supervisor = status.value("supervisor_pid", 0);
    pid_t init = status.value("pid", 0);
    ASSERT_GT(supervisor, 0) << status.dump();
    ASSERT_GT(init, 0) << status.dump();
    std::string base = "/" + TestRoot::get().cgroup + "/" + c.name;
    expect_cgroup_everywhere(supervisor, base + "/supervisor");
    expect_cgroup_everywhere(init, base + "/payload");
    EXPECT_EQ(c.stop(10)["state"], "stopped");
}

TEST(Cgroup, EveryContainerGetsLxdsDeviceAllowList) {
    LODGE_REQUIRE_ROOT();
    if (!exists("/sys/fs/cgroup/devices"))
        GTEST_SKIP() << "no v1 devices controller (test-device-policy covers the cgroup2 program)";
    for (bool privileged : {true, false}) {
        Container c(std::string(privileged ? "cgdevp-" : "cgdevu-") + std::to_string(getpid()),
                    privileged);
        c.make_busybox(true);
        // mknod is the kernel's to refuse in a user namespace; the open is the list's.
        std::string out = c.start_and_run(
            "mknod /tmp/null c 1 3 && echo hello > /tmp/null && echo null-ok; "
            "mknod /tmp/tty0 c 4 0 && echo mknod-ok; cat /tmp/tty0 || echo open-denied");
        if (privileged) {
            EXPECT_TRUE(contains(out, "null-ok")) << out;
            EXPECT_TRUE(contains(out, "mknod-ok"))
                << "mknod of any char device is allowed: " << out;
            EXPECT_TRUE(contains(out, "Operation not permitted")) << out;
            EXPECT_TRUE(contains(out, "open-denied")) << out;
        }
        std::string list = read_text("/sys/fs/cgroup/devices/" + TestRoot::get().cgroup + "/" +
                                     c.name + "/payload/devices.list");
        EXPECT_TRUE(contains(list, "c 136:* rwm")) << list;
        EXPECT_TRUE(contains(list, "c 10:229 rwm")) << list;
        EXPECT_TRUE(contains(list, "b *:* m")) << list;
        EXPECT_FALSE(contains(list, "a *:* rwm")) << list;
        EXPECT_EQ(c.stop(10)["state"], "stopped");
    }
}

class Lxcfs : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (!exists("/usr/bin/lxcfs") || !exists("/dev/fuse"))
            GTEST_SKIP() << "needs lxcfs and /dev/fuse";
        mountpoint = TestRoot::get().dir + "/lxcfs"; // LODGE_LXCFS_DIR of the test root
        sh("mkdir -p " + mountpoint);
        lxcfs = fork();
        if (lxcfs == 0) {
            execl("/usr/bin/lxcfs", "lxcfs", "-f", "-p",
                  (TestRoot::get().dir + "/lxcfs.pid").c_str(), mountpoint.c_str(), nullptr);
            _exit(127);
        }
        // lxcfs gives no readiness event: wait (bounded) for its mount to appear.
        ASSERT_TRUE(
            wait_until_sh("grep -q ' " + mountpoint + " .* fuse.lxcfs ' /proc/self/mountinfo"))
            << "lxcfs did not mount " << mountpoint;
    }
    void TearDown() override {
        if (lxcfs > 0) {
            kill(lxcfs, SIGTERM);
            waitpid(lxcfs, nullptr, 0);
            sh("umount -l " + mountpoint + " 2>/dev/null; rm -f " + TestRoot::get().dir +
               "/lxcfs.pid");
        }
    }
    std::string mountpoint;
    pid_t lxcfs = -1;
};

TEST_F(Lxcfs, MeminfoShowsTheContainersMemoryLimit) {
    for (bool privileged : {true, false}) {
        Container c(std::string(privileged ? "lxcfsp-" : "lxcfsu-") + std::to_string(getpid()),
                    privileged);
        c.make_busybox(true);
        c.set("limits.memory", "256MiB");
        std::string out = c.start_and_run("grep MemTotal /proc/meminfo");
        EXPECT_TRUE(contains(out, "MemTotal:         262144 kB")) << out;
        std::string mounts = c.exec("cat /proc/self/mountinfo");
        for (const char* f : {"/proc/meminfo", "/proc/cpuinfo", "/proc/uptime", "/proc/stat",
                              "/proc/loadavg", "/proc/diskstats", "/proc/swaps"})
            EXPECT_TRUE(contains(mounts, std::string(" ") + f + " ")) << f << "\n" << mounts;
        EXPECT_TRUE(contains(mounts, "fuse.lxcfs")) << mounts;
        EXPECT_EQ(c.stop(10)["state"], "stopped");
    }
}

TEST(LxcfsAbsent, StartSucceedsWithoutBinds) {
    LODGE_REQUIRE_ROOT();
    Container c("nolxcfs-" + std::to_string(getpid()), true);
    c.make_busybox();
    std::string error;
    ASSERT_TRUE(c.start(&error)) << error;
    EXPECT_FALSE(contains(c.exec("cat /proc/self/mountinfo"), "fuse.lxcfs"));
}

} // namespace
