// Escape hatches of privileged containers (security review finding 3) and disk-device sources
// (finding 12, issue 12): each test runs the attack from inside a real container and checks that
// the host is untouched. Commands run through nsenter as host root in the container's
// namespaces, without its seccomp filter or capability drops, so only what the kernel enforces
// on the container's mounts can stop them.
#include "harness.hpp"

#include "common/paths.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge::test;

namespace {

class Privileged : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        c = std::make_unique<Container>(unique_name("priv"), true);
        c->make_busybox();
        std::string error;
        ASSERT_TRUE(c->start(&error)) << error;
    }
    void TearDown() override {
        if (c && c->pid() > 0)
            c->stop();
    }
    // Runs `cmd` inside; true when it exited 0.
    bool ok(const std::string& cmd) {
        int rc = 0;
        c->exec(cmd, &rc);
        return rc == 0;
    }
    std::unique_ptr<Container> c;
};

TEST_F(Privileged, ProcSysMaskCannotBeTakenOff) {
    std::string host_core = read_text("/proc/sys/kernel/core_pattern");
    ASSERT_FALSE(host_core.empty());
    std::string marker = unique_name("lodge-test-core");
    // The review's recipe: take the read-only bind off, then write a host-wide sysctl.
    bool unmounted = ok("umount -l /proc/sys");
    bool wrote = ok("echo " + marker + " > /proc/sys/kernel/core_pattern");
    // Other ways to the same knob: make the bind writable again, or a fresh procfs.
    bool remounted = ok("mount -o remount,bind,rw /proc/sys");
    bool fresh = ok("mkdir -p /tmp/p && mount -t proc proc /tmp/p");
    if (fresh)
        wrote |= ok("echo " + marker + " > /tmp/p/sys/kernel/core_pattern");
    wrote |= ok("echo " + marker + " > /proc/sys/kernel/core_pattern");
    std::string now = read_text("/proc/sys/kernel/core_pattern");
    if (now != host_core) // restore the host before reporting
        sh("printf '%s' '" + host_core.substr(0, host_core.find('\n')) +
           "' > /proc/sys/kernel/core_pattern");
    EXPECT_FALSE(unmounted) << "umount -l /proc/sys succeeded";
    EXPECT_FALSE(remounted) << "/proc/sys was made writable again";
    EXPECT_FALSE(fresh) << "a fresh procfs was mounted";
    EXPECT_FALSE(wrote) << "kernel.core_pattern was written";
    EXPECT_EQ(now, host_core) << "the host's kernel.core_pattern changed";
}

TEST_F(Privileged, SysStaysReadOnly) {
    EXPECT_FALSE(ok("mount -o remount,rw /sys")) << "mount -o remount,rw /sys succeeded";
    EXPECT_FALSE(ok("umount -l /sys")) << "umount -l /sys succeeded";
    EXPECT_FALSE(ok("mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s")) << "fresh sysfs mounted";
    std::string mountinfo = c->exec("cat /proc/self/mountinfo");
    EXPECT_TRUE(contains(c->exec("grep ' /sys ' /proc/self/mountinfo"), " ro,")) << mountinfo;
    // /sys/kernel/uevent_helper would run a host program on every uevent.
    EXPECT_FALSE(ok("echo /x > /sys/kernel/uevent_helper"));
}

TEST_F(Privileged, HostPassThroughPathsAreReadOnlyAndLocked) {
    std::vector<std::string> paths = {
        "/sys/firmware/efi/efivars", "/sys/fs/fuse/connections", "/sys/fs/pstore",
        "/sys/kernel/config",        "/sys/kernel/debug",        "/sys/kernel/security",
        "/sys/kernel/tracing"};
    struct statfs fs {};
    if (::statfs("/proc/sys/fs/binfmt_misc", &fs) == 0 &&
        static_cast<unsigned long>(fs.f_type) == BINFMTFS_MAGIC)
        paths.push_back("/proc/sys/fs/binfmt_misc");
    int checked = 0;
    for (auto& p : paths) {
        std::string line = c->exec("grep ' " + p + " ' /proc/self/mountinfo | tail -n1");
        if (line.empty())
            continue; // not on this host
        checked++;
        EXPECT_TRUE(contains(line, " ro,")) << line;
        EXPECT_FALSE(ok("mount -o remount,bind,rw " + p)) << p << " made writable";
        EXPECT_FALSE(ok("umount -l " + p)) << p << " unmounted";
    }
    if (checked == 0)
        GTEST_SKIP() << "no pass-through path exists on this host";
}

TEST_F(Privileged, DevLxdSocketCannotBeRemovedOrReplaced) {
    // The supervisor binds the shared devlxd directory; stand in for lodged's socket.
    std::string dir = lodge::paths::devlxd_dir();
    std::string sock_path = dir + "/sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    ::unlink(sock_path.c_str());
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
    ASSERT_TRUE(ok("test -S /dev/lxd/sock"));
    EXPECT_FALSE(ok("rm /dev/lxd/sock"));
    EXPECT_FALSE(ok("touch /dev/lxd/evil"));
    EXPECT_FALSE(ok("mount -o remount,bind,rw /dev/lxd"));
    EXPECT_FALSE(ok("umount -l /dev/lxd && rm /dev/lxd/sock"));
    struct stat st {};
    EXPECT_EQ(::lstat(sock_path.c_str(), &st), 0) << "the host socket is gone";
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_FALSE(exists(dir + "/evil"));
    // A read-only bind still lets the guest connect (through PID 1's root, so the path crosses
    // the container's read-only mount).
    int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(client, 0);
    struct sockaddr_un ca {};
    ca.sun_family = AF_UNIX;
    std::snprintf(ca.sun_path, sizeof ca.sun_path, "/proc/%d/root/dev/lxd/sock", c->pid());
    EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&ca), sizeof ca), 0) << strerror(errno);
    ::close(client);
    // security.devlxd followed live: the locked bind cannot be unmounted, so it gets hidden and
    // uncovered again.
    auto r = c->request("devlxd-detach");
    EXPECT_TRUE(r.value("ok", false)) << r;
    EXPECT_FALSE(ok("test -e /dev/lxd/sock")) << "the socket is still reachable";
    r = c->request("devlxd-attach");
    EXPECT_TRUE(r.value("ok", false)) << r;
    EXPECT_TRUE(ok("test -S /dev/lxd/sock")) << "the socket did not come back";
    EXPECT_FALSE(ok("rm /dev/lxd/sock"));
    ::close(fd);
    ::unlink(sock_path.c_str());
}

// The lock must not freeze the lxcfs binds: when lxcfs dies they have to come out, so reads fall
// back to the kernel's files instead of failing with ENOTCONN.
TEST(PrivilegedLxcfs, BindsPresentAtStartCanStillBeTakenOut) {
    LODGE_REQUIRE_ROOT();
    if (!exists("/usr/bin/lxcfs") || !exists("/dev/fuse"))
        GTEST_SKIP() << "needs lxcfs and /dev/fuse";
    std::string mnt = lodge::paths::lxcfs_dir();
    sh("mkdir -p " + mnt);
    std::string pidfile = TestRoot::get().dir + "/" + unique_name("lxcfs") + ".pid";
    pid_t lxcfs = fork();
    if (lxcfs == 0) {
        execl("/usr/bin/lxcfs", "lxcfs", "-f", "-p", pidfile.c_str(), mnt.c_str(), nullptr);
        _exit(127);
    }
    ASSERT_GT(lxcfs, 0);
    // lxcfs gives no readiness signal; its mount appearing is the sign.
    std::string ready = sh("for i in $(seq 200); do grep -q ' " + mnt +
                           " .*fuse.lxcfs' /proc/self/mountinfo && test -e " + mnt +
                           "/proc/meminfo && echo up && break; sleep 0.05; done");
    auto cleanup = [&] {
        kill(lxcfs, SIGKILL);
        waitpid(lxcfs, nullptr, 0);
        sh("umount -l " + mnt + " 2>/dev/null; rm -f " + pidfile);
    };
    if (ready != "up\n") {
        cleanup();
        GTEST_SKIP() << "lxcfs did not come up here";
    }
    Container c(unique_name("privlx"), true);
    c.make_busybox();
    std::string error;
    if (!c.start(&error)) {
        cleanup();
        FAIL() << error;
    }
    EXPECT_TRUE(contains(c.exec("cat /proc/self/mountinfo"), "fuse.lxcfs"));
    kill(lxcfs, SIGKILL);
    waitpid(lxcfs, nullptr, 0);
    auto r = c.request("lxcfs-detach");
    EXPECT_TRUE(r.value("ok", false)) << r;
    std::string mountinfo = c.exec("cat /proc/self/mountinfo");
    EXPECT_FALSE(contains(mountinfo, "fuse.lxcfs")) << mountinfo;
    int rc = 0;
    c.exec("cat /proc/meminfo /proc/uptime /proc/cpuinfo >/dev/null", &rc);
    EXPECT_EQ(rc, 0) << "reads fail after lxcfs died";
    // The masks stay locked all the same.
    EXPECT_FALSE(c.exec("umount -l /proc/sys 2>/dev/null && echo unmounted") == "unmounted\n");
    c.stop();
    cleanup();
}

// ---- disk sources --------------------------------------------------------------------------

class DiskSource : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        base = TestRoot::get().dir + "/" + unique_name("disks");
        ASSERT_EQ(::mkdir(base.c_str(), 0755), 0);
    }
    void TearDown() override { sh("rm -rf " + base); }
    std::string base;
};

// The review's finding 12: a directory the container can write (here owned by its root, uid
// 1000000) holds the source; the guest swaps the source for a symlink to a host directory.
TEST_F(DiskSource, SymlinkSwappedInByTheGuestIsRefused) {
    std::string share = base + "/share", secret = base + "/secret";
    ASSERT_EQ(::mkdir(share.c_str(), 0755), 0);
    ASSERT_EQ(::chown(share.c_str(), 1000000, 1000000), 0);
    ASSERT_EQ(::mkdir(secret.c_str(), 0755), 0);
    ASSERT_EQ(std::system(("echo host-secret > " + secret + "/file").c_str()), 0);
    // What container B's root does (as uid 1000000 so the link is the container's).
    ASSERT_EQ(std::system(("setpriv --reuid=1000000 --regid=1000000 --clear-groups ln -s " +
                           secret + " " + share + "/a-data")
                              .c_str()),
              0);
    Container c(unique_name("dswap"), false);
    c.make_busybox();
    c.config.devices["data"] = {{"type", "disk"}, {"source", share + "/a-data"}, {"path", "/data"}};
    std::string error;
    bool started = c.start(&error);
    if (started) {
        std::string seen = c.exec("cat /data/file");
        c.stop();
        FAIL() << "the symlink was followed; the guest sees: " << seen;
    }
    EXPECT_TRUE(contains(error, "Device \"data\"")) << error;
    EXPECT_TRUE(contains(error, "symlink")) << error;
}

TEST_F(DiskSource, SymlinkInTheMiddleOfTheSourceIsRefusedToo) {
    std::string share = base + "/share", secret = base + "/secret";
    ASSERT_EQ(::mkdir(share.c_str(), 0755), 0);
    ASSERT_EQ(::chown(share.c_str(), 1000000, 1000000), 0);
    ASSERT_EQ(::mkdir((secret + "").c_str(), 0700), 0);
    ASSERT_EQ(::mkdir((secret + "/sub").c_str(), 0700), 0);
    ASSERT_EQ(std::system(("setpriv --reuid=1000000 --regid=1000000 --clear-groups ln -s " +
                           secret + " " + share + "/dir")
                              .c_str()),
              0);
    Container c(unique_name("dmid"), true);
    c.make_busybox();
    c.config.devices["data"] = {
        {"type", "disk"}, {"source", share + "/dir/sub"}, {"path", "/data"}};
    std::string error;
    bool started = c.start(&error);
    if (started)
        c.stop();
    EXPECT_FALSE(started) << "a symlink in a container-writable directory was followed";
    EXPECT_TRUE(contains(error, "symlink")) << error;
}

TEST_F(DiskSource, RootOwnedSymlinkInARootOnlyDirectoryIsFollowed) {
    // Like /lib -> usr/lib on a merged-/usr host: nothing a container can write.
    std::string real = base + "/real";
    ASSERT_EQ(::mkdir(real.c_str(), 0755), 0);
    ASSERT_EQ(std::system(("echo through-link > " + real + "/file").c_str()), 0);
    ASSERT_EQ(::symlink("real", (base + "/link").c_str()), 0);
    Container c(unique_name("dlink"), false);
    c.make_busybox();
    c.config.devices["data"] = {{"type", "disk"}, {"source", base + "/link"}, {"path", "/data"}};
    LODGE_START_OR_SKIP(c);
    EXPECT_EQ(c.exec("cat /data/file"), "through-link\n");
    c.stop();
}

// Issue 12: LXD mounts a source below a directory only root may traverse (mktemp -d makes 0700).
TEST_F(DiskSource, SourceBelowARootOnlyDirectoryMountsUnprivileged) {
    std::string hidden = base + "/hidden";
    ASSERT_EQ(::mkdir(hidden.c_str(), 0700), 0);
    ASSERT_EQ(::mkdir((hidden + "/data").c_str(), 0755), 0);
    ASSERT_EQ(std::system(("echo from-root-only > " + hidden + "/data/file").c_str()), 0);
    ASSERT_EQ(std::system(("echo single-file > " + hidden + "/single").c_str()), 0);
    Container c(unique_name("dhide"), false);
    c.make_busybox();
    c.config.devices["data"] = {{"type", "disk"}, {"source", hidden + "/data"}, {"path", "/data"}};
    c.config.devices["one"] = {
        {"type", "disk"}, {"source", hidden + "/single"}, {"path", "/etc/single"}};
    LODGE_START_OR_SKIP(c);
    EXPECT_EQ(c.exec("cat /data/file"), "from-root-only\n");
    EXPECT_EQ(c.exec("cat /etc/single"), "single-file\n");
    c.stop();
}

} // namespace
