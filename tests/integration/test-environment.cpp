// What a running container looks like from the host and from inside (runtime.md checks 1-12,
// 23-25), for privileged and unprivileged busybox containers.
#include "harness.hpp"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <sys/stat.h>
#include <unistd.h>

using namespace lodge::test;

namespace {

// The mountinfo line whose mount point is exactly `path`, or "".
std::string mount_line(const std::string& mountinfo, const std::string& path) {
    std::string found;
    size_t pos = 0;
    while (pos < mountinfo.size()) {
        size_t nl = mountinfo.find('\n', pos);
        std::string line = mountinfo.substr(pos, nl - pos);
        pos = nl == std::string::npos ? mountinfo.size() : nl + 1;
        // fields: id parent maj:min root mountpoint ...
        size_t f = 0, start = 0;
        for (int i = 0; i < 4 && f != std::string::npos; i++)
            f = line.find(' ', f + (i ? 1 : 0));
        if (f == std::string::npos)
            continue;
        start = f + 1;
        std::string mp = line.substr(start, line.find(' ', start) - start);
        if (mp == path)
            found = line; // the last one wins: it is the visible mount
    }
    return found;
}

class Environment : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        privileged = GetParam();
        c = std::make_unique<Container>(unique_name(privileged ? "envp" : "envu"), privileged);
        c->make_busybox(true);
        c->set("environment.FOO", "bar baz");
        c->set("environment.LANG", "C.UTF-8");
        c->set("environment.TESTINIT_MODE", "report");
        // Runs as PID 1's child, under the container's seccomp filter and capabilities.
        c->set("environment.TESTINIT_RUN", probe_cmd);
        std::string error;
        if (!c->start(&error)) {
            if (contains(error, "idmapped"))
                GTEST_SKIP() << error;
            FAIL() << error;
        }
        init = c->pid();
        ASSERT_GT(init, 0);
        // The report is written by PID 1 itself, before anything else it does.
        c->exec("while [ ! -e /testinit.report ]; do usleep 10000; done");
        report = read_text(c->rootfs + "/testinit.report");
        c->exec("while [ ! -e /probe.out ]; do usleep 10000; done");
        probe = read_text(c->rootfs + "/probe.out");
        mountinfo = c->exec("cat /proc/self/mountinfo");
    }
    bool privileged = false;
    std::unique_ptr<Container> c;
    pid_t init = 0;
    std::string report, mountinfo, probe;
    static constexpr const char* probe_cmd =
        "/bin/syscall-probe > /probe.tmp; /bin/syscall-probe compat >> /probe.tmp; "
        "mv /probe.tmp /probe.out";
};

TEST_P(Environment, Pid1ArgvEnvironmentAndCwd) {
    std::string cmdline = read_text("/proc/" + std::to_string(init) + "/cmdline");
    EXPECT_EQ(cmdline, std::string("/sbin/init") + '\0');
    std::string environ = read_text("/proc/" + std::to_string(init) + "/environ");
    // Exactly container=lxc plus the environment.* keys, nothing inherited.
    std::string expected = std::string("FOO=bar baz") + '\0' + "LANG=C.UTF-8" + '\0' +
                           "TESTINIT_MODE=report" + '\0' + "TESTINIT_RUN=" + probe_cmd + '\0' +
                           "container=lxc" + '\0';
    EXPECT_EQ(environ, expected);
    EXPECT_TRUE(contains(report, "argv /sbin/init\n")) << report;
    EXPECT_TRUE(contains(report, "cwd /\n")) << report;
    EXPECT_TRUE(contains(report, "pid 1\n")) << report;
    EXPECT_TRUE(contains(report, "SigBlk:\t0000000000000000")) << report;
    EXPECT_TRUE(contains(report, "SigIgn:\t0000000000000000")) << report;
    EXPECT_EQ(c->exec("hostname"), c->name + "\n");
}

TEST_P(Environment, Pid1HasOnlyTheConsoleOpen) {
    std::string fds = sh("ls /proc/" + std::to_string(init) + "/fd | sort -n | tr '\\n' ' '");
    // test-init opens files for its log; right after exec it had exactly 0 1 2 (the report).
    EXPECT_TRUE(contains(report, "fd 0 /dev/pts/0\n")) << report;
    EXPECT_TRUE(contains(report, "fd 1 /dev/pts/0\n")) << report;
    EXPECT_TRUE(contains(report, "fd 2 /dev/pts/0\n")) << report;
    int other_fds = 0;
    size_t pos = 0;
    while ((pos = report.find("\nfd ", pos)) != std::string::npos) {
        std::string n = report.substr(pos + 4, report.find(' ', pos + 4) - pos - 4);
        if (n != "0" && n != "1" && n != "2" && !contains(report.substr(pos, 80), "/proc/"))
            other_fds++;
        pos++;
    }
    EXPECT_EQ(other_fds, 0) << report;
    EXPECT_TRUE(contains(report, "tty /dev/pts/0")) << report;
    // /dev/console is the same pty, bind-mounted.
    std::string console = mount_line(mountinfo, "/dev/console");
    EXPECT_TRUE(contains(console, " /0 /dev/console ")) << console;
    EXPECT_TRUE(contains(console, " - devpts ")) << console;
}

TEST_P(Environment, DevIsASmallTmpfsWithTheStandardNodes) {
    std::string dev = mount_line(mountinfo, "/dev");
    EXPECT_TRUE(contains(dev, " - tmpfs ")) << dev;
    EXPECT_TRUE(contains(dev, "size=492k")) << dev;
    EXPECT_TRUE(contains(dev, "mode=755")) << dev;
    std::string nodes = c->exec("for n in full null random tty urandom zero; do "
                                "stat -c '%n %F %t:%T %a' /dev/$n; done");
    EXPECT_EQ(nodes, "/dev/full character special file 1:7 666\n"
                     "/dev/null character special file 1:3 666\n"
                     "/dev/random character special file 1:8 666\n"
                     "/dev/tty character special file 5:0 666\n"
                     "/dev/urandom character special file 1:9 666\n"
                     "/dev/zero character special file 1:5 666\n");
    for (const char* n : {"full", "null", "random", "tty", "urandom", "zero"}) {
        std::string line = mount_line(mountinfo, std::string("/dev/") + n);
        if (privileged)
            EXPECT_EQ(line, "") << "privileged /dev/" << n << " must be a node of our own";
        else
            EXPECT_TRUE(contains(line, " - devtmpfs ")) << "/dev/" << n << ": " << line;
    }
    EXPECT_EQ(c->exec("for l in fd stdin stdout stderr log; do readlink /dev/$l; done"),
              "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\n"
              "/run/systemd/journal/dev-log\n");
    EXPECT_EQ(c->exec("test -e /dev/shm && echo yes || echo no"), "no\n");
    int rc = 0;
    c->exec("echo hi > /dev/null && head -c 4 /dev/zero | wc -c | grep -qx 4", &rc);
    EXPECT_EQ(rc, 0);
}

TEST_P(Environment, DevptsPtmxAndOptionalHostNodes) {
    std::string pts = mount_line(mountinfo, "/dev/pts");
    EXPECT_TRUE(contains(pts, " - devpts ")) << pts;
    EXPECT_TRUE(contains(pts, "nosuid")) << pts;
    EXPECT_TRUE(contains(pts, "noexec")) << pts;
    EXPECT_TRUE(contains(pts, "mode=620,ptmxmode=666,max=1024")) << pts;
    if (privileged) {
        EXPECT_TRUE(contains(pts, "gid=5,")) << pts;
    }
    std::string ptmx = mount_line(mountinfo, "/dev/ptmx");
    EXPECT_TRUE(contains(ptmx, " /ptmx /dev/ptmx ")) << ptmx;
    EXPECT_EQ(c->exec("stat -c '%F %a' /dev/ptmx"), "character special file 666\n");
    bool host_fuse = exists("/dev/fuse"), host_tun = exists("/dev/net/tun");
    EXPECT_EQ(c->exec("test -c /dev/fuse && echo yes || echo no"), host_fuse ? "yes\n" : "no\n");
    EXPECT_EQ(c->exec("test -c /dev/net/tun && echo yes || echo no"), host_tun ? "yes\n" : "no\n");
    std::string mq = mount_line(mountinfo, "/dev/mqueue");
    EXPECT_TRUE(contains(mq, " - mqueue ")) << mq;
    EXPECT_TRUE(contains(mq, " / /dev/mqueue ")) << "a fresh mqueue, not a bind: " << mq;
}

TEST_P(Environment, BootIdIsPerContainerAndReadOnly) {
    std::string host = read_text("/proc/sys/kernel/random/boot_id");
    std::string inside = c->exec("cat /proc/sys/kernel/random/boot_id");
    EXPECT_EQ(inside.size(), 37u) << inside;
    EXPECT_NE(inside, host);
    EXPECT_EQ(inside, c->status()["boot_id"].get<std::string>() + "\n");
    int rc = 0;
    c->exec("echo x > /proc/sys/kernel/random/boot_id 2>/dev/null", &rc);
    EXPECT_NE(rc, 0);
}

TEST_P(Environment, ProcAndSysLayout) {
    std::string proc = mount_line(mountinfo, "/proc");
    EXPECT_TRUE(contains(proc, " - proc ")) << proc;
    EXPECT_TRUE(contains(proc, "nosuid,nodev,noexec")) << proc;
    std::string sys = mount_line(mountinfo, "/sys");
    EXPECT_TRUE(contains(sys, " - sysfs ")) << sys;
    if (privileged) {
        // LXD's "mixed" layout.
        EXPECT_TRUE(contains(mount_line(mountinfo, "/proc/sys"), " ro,"));
        EXPECT_TRUE(contains(mount_line(mountinfo, "/proc/sys/net"), " rw,"));
        EXPECT_TRUE(contains(sys, " ro,")) << sys;
        EXPECT_TRUE(contains(mount_line(mountinfo, "/sys/devices/virtual/net"), " rw,"));
        if (exists("/proc/sysrq-trigger")) {
            EXPECT_TRUE(contains(mount_line(mountinfo, "/proc/sysrq-trigger"), " ro,"));
        }
    } else {
        EXPECT_EQ(mount_line(mountinfo, "/proc/sys"), "");
        EXPECT_TRUE(contains(sys, " rw,")) << sys;
    }
}

TEST_P(Environment, PassThroughPathsIffOnHost) {
    const char* paths[] = {
        "/sys/firmware/efi/efivars", "/sys/fs/fuse/connections", "/sys/fs/pstore",
        "/sys/kernel/config",        "/sys/kernel/debug",        "/sys/kernel/security",
        "/sys/kernel/tracing"};
    for (const char* p : paths) {
        bool on_host = exists(p);
        EXPECT_EQ(!mount_line(mountinfo, p).empty(), on_host) << p;
    }
    // binfmt_misc counts as on the host only when it is mounted there.
    struct statfs fs {};
    bool binfmt = ::statfs("/proc/sys/fs/binfmt_misc", &fs) == 0 &&
                  static_cast<unsigned long>(fs.f_type) == BINFMTFS_MAGIC;
    EXPECT_EQ(!mount_line(mountinfo, "/proc/sys/fs/binfmt_misc").empty(), binfmt && privileged);
}

TEST_P(Environment, SeccompDefaultPolicy) {
    const std::string& out = probe;
    EXPECT_TRUE(contains(out, "kexec_load 38\n")) << out;
    EXPECT_TRUE(contains(out, "open_by_handle_at 38\n")) << out;
    EXPECT_TRUE(contains(out, "init_module 38\n")) << out;
    EXPECT_TRUE(contains(out, "finit_module 38\n")) << out;
    EXPECT_TRUE(contains(out, "delete_module 38\n")) << out;
    EXPECT_TRUE(contains(out, "umount2_force 13\n")) << out;
    EXPECT_TRUE(contains(out, "umount2_plain 2\n")) << out; // reaches the kernel: ENOENT
    std::string status = read_text("/proc/" + std::to_string(init) + "/status");
    EXPECT_TRUE(contains(status, "Seccomp:\t2")) << status;
    // The filter does not come with no_new_privs: setuid programs keep working in the guest.
    EXPECT_TRUE(contains(status, "NoNewPrivs:\t0")) << status;
}

TEST_P(Environment, Capabilities) {
    std::string status = read_text("/proc/" + std::to_string(init) + "/status");
    auto pos = status.find("CapBnd:\t");
    ASSERT_NE(pos, std::string::npos);
    unsigned long long bnd = std::stoull(status.substr(pos + 8, 16), nullptr, 16);
    auto has = [&](int cap) { return (bnd >> cap) & 1; };
    EXPECT_TRUE(has(22)) << "CAP_SYS_BOOT is kept";
    EXPECT_TRUE(has(21)) << "CAP_SYS_ADMIN is kept";
    for (int dropped : {16, 17, 25, 32, 33})
        EXPECT_EQ(has(dropped), !privileged) << "capability " << dropped;
}

TEST_P(Environment, OwnDelegatedCgroup) {
    std::string cg = read_text("/proc/" + std::to_string(init) + "/cgroup");
    std::string base = TestRoot::get().cgroup + "/" + c->name + "/payload";
    EXPECT_TRUE(contains(cg, "0::/" + base + "\n")) << cg;
    EXPECT_TRUE(contains(cg, ":memory:/" + base + "\n") || !exists("/sys/fs/cgroup/memory")) << cg;
    // Inside, the cgroup namespace makes the payload the root.
    std::string inside = c->exec("cat /proc/1/cgroup");
    EXPECT_TRUE(contains(inside, "0::/\n")) << inside;
    struct stat st {};
    ASSERT_EQ(stat(("/sys/fs/cgroup/unified/" + base).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, privileged ? 0u : 1000000u);
    ASSERT_EQ(stat(("/sys/fs/cgroup/unified/" + base + "/cgroup.procs").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, privileged ? 0u : 1000000u);
}

// Issue 12: LXD's containers start with lo up; inits such as busybox's (and the test init here)
// never bring it up themselves.
TEST_P(Environment, LoopbackIsUpBeforeInitRuns) {
    std::string flags = c->exec("cat /sys/class/net/lo/flags");
    ASSERT_FALSE(flags.empty());
    EXPECT_TRUE(std::stoul(flags, nullptr, 16) & 0x1) << "lo is down: flags " << flags;
    int rc = 0;
    std::string out = c->exec("ping -c 1 -W 5 127.0.0.1 2>&1", &rc);
    EXPECT_EQ(rc, 0) << out;
}

TEST_P(Environment, UserNamespaceMap) {
    std::string map = read_text("/proc/" + std::to_string(init) + "/uid_map");
    if (privileged) {
        EXPECT_TRUE(contains(map, "0          0 4294967295")) << map;
    } else {
        EXPECT_TRUE(contains(map, "0    1000000      65536")) << map;
        // The rootfs is idmapped: files owned by 0 on disk are root's inside.
        EXPECT_EQ(c->exec("stat -c %u:%g /bin/busybox"), "0:0\n");
        std::string status = read_text("/proc/" + std::to_string(init) + "/status");
        EXPECT_TRUE(contains(status, "Uid:\t1000000\t")) << status;
    }
}

INSTANTIATE_TEST_SUITE_P(Runtime, Environment, ::testing::Values(true, false),
                         [](const auto& info) {
                             return info.param ? "privileged" : "unprivileged";
                         });

} // namespace
