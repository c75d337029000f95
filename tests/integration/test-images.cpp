// Bad and hostile root filesystems (CONTRACT §4, §5): a missing or unusable /sbin/init, missing
// base directories, and symlinks that try to make a mount or exec land on the host.
#include "harness.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace lodge::test;

namespace {

class Images : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        // A host directory the hostile images point at; nothing may ever appear in it.
        target = TestRoot::get().dir + "/host-target-" + unique_name("t");
        ASSERT_EQ(mkdir(target.c_str(), 0755), 0);
    }
    void TearDown() override {
        if (!target.empty()) {
            EXPECT_EQ(sh("ls -A " + target), "") << "something landed in the host directory";
            EXPECT_EQ(sh("grep -c ' " + target + "' /proc/self/mountinfo"), "0\n")
                << "something was mounted on the host directory";
            rmdir(target.c_str());
        }
    }
    std::string target;
};

TEST_F(Images, MissingInitFailsTheStartNamingContainerAndPath) {
    Container c(unique_name("noinit"), true);
    c.make_busybox();
    ASSERT_EQ(unlink((c.rootfs + "/sbin/init").c_str()), 0);
    std::string error;
    EXPECT_FALSE(c.start(&error));
    EXPECT_TRUE(contains(error, c.name)) << error;
    EXPECT_TRUE(contains(error, "/sbin/init")) << error;
    EXPECT_TRUE(contains(error, "No such file or directory")) << error;
    EXPECT_EQ(c.final_state()["state"], "error");
}

TEST_F(Images, NonExecutableInitFailsTheStart) {
    Container c(unique_name("noexec"), false);
    c.make_busybox();
    ASSERT_EQ(unlink((c.rootfs + "/sbin/init").c_str()), 0);
    ASSERT_EQ(std::system(("printf 'not a program' > " + c.rootfs + "/sbin/init").c_str()), 0);
    std::string error;
    EXPECT_FALSE(c.start(&error));
    EXPECT_TRUE(contains(error, c.name)) << error;
    EXPECT_TRUE(contains(error, "/sbin/init is not an executable file")) << error;
}

TEST_F(Images, MissingDevProcSysAreCreated) {
    Container c(unique_name("nodirs"), false);
    c.make_busybox();
    for (const char* d : {"/dev", "/proc", "/sys"})
        ASSERT_EQ(rmdir((c.rootfs + d).c_str()), 0) << d;
    std::string error;
    ASSERT_TRUE(c.start(&error)) << error;
    EXPECT_EQ(
        c.exec("test -c /dev/null && test -e /proc/self/status && test -d /sys/class && echo ok"),
        "ok\n");
    struct stat st {};
    ASSERT_EQ(stat((c.rootfs + "/proc").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u);
}

TEST_F(Images, DevSymlinkOutOfTheRootfsIsRefused) {
    for (const char* dir : {"dev", "proc", "sys"}) {
        Container c(unique_name((std::string("lnk") + dir).c_str()), true);
        c.make_busybox();
        std::string p = c.rootfs + "/" + dir;
        ASSERT_EQ(rmdir(p.c_str()), 0);
        ASSERT_EQ(symlink(target.c_str(), p.c_str()), 0);
        std::string error;
        EXPECT_FALSE(c.start(&error)) << dir;
        EXPECT_TRUE(contains(error, std::string("/") + dir)) << error;
        EXPECT_TRUE(contains(error, "symlink")) << error;
    }
}

TEST_F(Images, InitSymlinkToAHostPathResolvesInsideTheRootfs) {
    Container c(unique_name("initlnk"), true);
    c.make_busybox();
    // /usr/bin/perl exists on the host (install-deps.sh) but not in the busybox rootfs.
    ASSERT_TRUE(exists("/usr/bin/perl"));
    ASSERT_EQ(unlink((c.rootfs + "/sbin/init").c_str()), 0);
    ASSERT_EQ(symlink("/usr/bin/perl", (c.rootfs + "/sbin/init").c_str()), 0);
    std::string error;
    EXPECT_FALSE(c.start(&error)) << "the host's perl must not run as the container's init";
    EXPECT_TRUE(contains(error, "/sbin/init")) << error;
    // And one that goes up and out with "..".
    ASSERT_EQ(unlink((c.rootfs + "/sbin/init").c_str()), 0);
    ASSERT_EQ(symlink("../../../../../../../../usr/bin/perl", (c.rootfs + "/sbin/init").c_str()),
              0);
    EXPECT_FALSE(c.start(&error));
}

TEST_F(Images, DiskDeviceTargetThroughAnEscapingSymlinkStaysInside) {
    Container c(unique_name("disklnk"), true);
    c.make_busybox();
    // /mnt/escape -> <host target>: the mount must land in <rootfs>/<host target>/data.
    ASSERT_EQ(symlink(target.c_str(), (c.rootfs + "/mnt/escape").c_str()), 0);
    std::string source = TestRoot::get().dir + "/" + unique_name("disksrc");
    ASSERT_EQ(mkdir(source.c_str(), 0755), 0);
    ASSERT_EQ(std::system(("echo hello > " + source + "/file").c_str()), 0);
    c.config.devices["data"] = {{"type", "disk"}, {"source", source}, {"path", "/mnt/escape/data"}};
    std::string error;
    ASSERT_TRUE(c.start(&error)) << error;
    EXPECT_EQ(c.exec("cat /mnt/escape/data/file"), "hello\n");
    EXPECT_TRUE(exists(c.rootfs + target + "/data")) << "created inside the rootfs";
    c.stop();
    sh("rm -rf " + source);
}

TEST_F(Images, ReadOnlyDiskDevice) {
    Container c(unique_name("diskro"), false);
    c.make_busybox();
    std::string source = TestRoot::get().dir + "/" + unique_name("rosrc");
    ASSERT_EQ(mkdir(source.c_str(), 0755), 0);
    c.config.devices["ro"] = {
        {"type", "disk"}, {"source", source}, {"path", "/srv/ro"}, {"readonly", "true"}};
    LODGE_START_OR_SKIP(c);
    int rc = 0;
    c.exec("touch /srv/ro/x 2>/dev/null", &rc);
    EXPECT_NE(rc, 0);
    EXPECT_FALSE(exists(source + "/x"));
    c.stop();
    sh("rm -rf " + source);
}

TEST_F(Images, PrivilegedChmodOfDevChangesNothingOnTheHost) {
    Container c(unique_name("chmoddev"), true);
    c.make_busybox();
    std::string error;
    ASSERT_TRUE(c.start(&error)) << error;
    const char* nodes[] = {"/dev/null", "/dev/zero", "/dev/full",    "/dev/random", "/dev/urandom",
                           "/dev/tty",  "/dev/fuse", "/dev/net/tun", "/dev/ptmx",   "/dev/console"};
    auto snapshot = [&] {
        std::string s;
        for (const char* n : nodes) {
            struct stat st {};
            if (stat(n, &st) == 0)
                s += std::string(n) + " " + std::to_string(st.st_mode) + " " +
                     std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + "\n";
        }
        return s;
    };
    std::string before = snapshot();
    // Symlinks are skipped: /dev/stdin and friends lead to whatever the exec'ing process has
    // open, which is the test's business, not the container's /dev.
    c.exec("for f in /dev/* /dev/net/* /dev/pts/*; do [ -L $f ] && continue; "
           "chmod 0777 $f; chown 4242:4242 $f; done; true");
    // The container did change its own nodes...
    EXPECT_EQ(c.exec("stat -c %a:%u /dev/null"), "777:4242\n");
    // ...and none of the host's.
    EXPECT_EQ(snapshot(), before);
}

} // namespace

namespace {

TEST(IdmapFallback, RootfsIsShiftedOnceWhereIdmappedMountsAreNotUsed) {
    LODGE_REQUIRE_ROOT();
    Container c(unique_name("shift"), false);
    c.make_busybox();
    std::string suid = c.rootfs + "/bin/suid-probe";
    ASSERT_EQ(
        std::system(("cp " + c.rootfs + "/bin/busybox " + suid + " && chmod 4755 " + suid).c_str()),
        0);
    // What a filesystem without idmapped mounts gets; forced here since ext4 has them.
    setenv("LODGE_IDMAP", "shift", 1);
    std::string error;
    bool started = c.start(&error);
    unsetenv("LODGE_IDMAP");
    ASSERT_TRUE(started) << error;
    struct stat st {};
    ASSERT_EQ(lstat((c.rootfs + "/bin/busybox").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000000u);
    EXPECT_EQ(st.st_gid, 1000000u);
    ASSERT_EQ(lstat(suid.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 04755u) << "the setuid bit survives the chown";
    ASSERT_EQ(lstat((c.rootfs + "/sbin/init").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000000u) << "symlinks are shifted themselves, not their targets";
    EXPECT_EQ(c.exec("stat -c %u:%g /bin/busybox"), "0:0\n");
    EXPECT_FALSE(contains(c.exec("grep ' / / ' /proc/self/mountinfo"), "idmapped"));
    EXPECT_EQ(c.stop()["state"], "stopped");

    // A privileged start needs the ids back as they were.
    c.set("security.privileged", "true");
    ASSERT_TRUE(c.start(&error)) << error;
    ASSERT_EQ(lstat((c.rootfs + "/bin/busybox").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    ASSERT_EQ(lstat(suid.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 04755u);
    EXPECT_EQ(c.stop()["state"], "stopped");
}

} // namespace
