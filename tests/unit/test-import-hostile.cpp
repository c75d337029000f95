// What an image may not do or bring (CONTRACT.md §3, lodge-images(7)): hostile tarballs
// (absolute paths, '..', writes through symlinks, hard links out of the rootfs) are refused with
// the entry named; device nodes outside dev/, file flags and xattrs other than user.*,
// security.capability and ACLs are left out. Runs as root (mknod, xattrs, file flags).
#include "image/yaml.hpp"
#include "import-fixture.hpp"

using namespace lodge;
using namespace lodge::daemon;
using namespace lodge::import_test;

namespace {

// ---- hostile tarballs ----

class Hostile : public Import {
protected:
    // Imports `entries` (as a plain tar, or gzipped through a pipe) and expects a refusal.
    void expect_refused(const std::vector<Entry>& entries, const std::string& bad_entry) {
        for (bool pipe : {false, true}) {
            SCOPED_TRACE(pipe ? "via pipe" : "seekable");
            std::string tarball = tmp / "hostile.tar";
            write_tar(tarball, entries, pipe);
            std::string dest = tmp / ("dest-" + std::to_string(n_++));
            ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
            ImportResult res;
            EXPECT_EQ(import_file(tarball, dest, res, error, pipe), -EINVAL);
            EXPECT_NE(error.find("refusing entry '" + bad_entry + "'"), std::string::npos) << error;
        }
    }
    int n_ = 0;
};

TEST_F(Hostile, AbsolutePath) {
    std::string outside = "/tmp/lodge-test-escape-" + std::to_string(::getpid());
    expect_refused({dir("./"), file("ok", "fine"), file(outside + "/abs", "x")}, outside + "/abs");
    EXPECT_FALSE(exists(outside));
}

TEST_F(Hostile, DotDot) {
    expect_refused({file("ok", "fine"), file("../escape", "x")}, "../escape");
    expect_refused({dir("a/"), file("a/../../escape2", "x")}, "a/../../escape2");
    EXPECT_FALSE(exists(tmp / "escape"));
    EXPECT_FALSE(exists(tmp / "escape2"));
    // Inside a unified image too.
    expect_refused(
        {file("metadata.yaml", metadata_yaml), dir("rootfs/"), file("rootfs/../../escape3", "x")},
        "rootfs/../../escape3");
    EXPECT_FALSE(exists(tmp / "escape3"));
}

TEST_F(Hostile, WriteThroughSymlink) {
    std::string outside = tmp / "outside";
    ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
    expect_refused({sym("link", outside), file("link/file", "pwned")}, "link/file");
    expect_refused({sym("rel", "../outside"), dir("rel/sub/")}, "rel/sub/");
    expect_refused({file("metadata.yaml", metadata_yaml), sym("rootfs/link", outside),
                    file("rootfs/link/file", "pwned")},
                   "rootfs/link/file");
    EXPECT_FALSE(exists(outside + "/file"));
    EXPECT_FALSE(exists(outside + "/sub"));
}

TEST_F(Hostile, HardLinkOutside) {
    std::string outside = tmp / "outside";
    ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
    spit(outside + "/victim", "original");
    expect_refused({sym("link", outside), hard("x", "link/victim")}, "x");
    expect_refused({hard("y", "../outside/victim")}, "y");
    expect_refused({hard("z", outside + "/victim")}, "z");
    expect_refused(
        {file("metadata.yaml", metadata_yaml), dir("rootfs/"), hard("rootfs/w", "metadata.yaml")},
        "rootfs/w");
    EXPECT_EQ(lst(outside + "/victim").st_nlink, 1u);
    EXPECT_EQ(slurp(outside + "/victim"), "original");
}

// ---- what an image may not bring ----

// Without <linux/fs.h>, which clashes with <sys/mount.h>.
constexpr unsigned long fs_ioc_getflags = _IOR('f', 1, long);
constexpr unsigned long fs_ioc_setflags = _IOW('f', 2, long);
constexpr int fs_immutable_fl = 0x10, fs_append_fl = 0x20;

// The file's FS_*_FL flags, or -1.
int file_flags(const std::string& p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int flags = 0;
    int r = ::ioctl(fd, fs_ioc_getflags, &flags);
    ::close(fd);
    return r < 0 ? -1 : flags;
}

bool set_file_flags(const std::string& p, int flags) {
    int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = ::ioctl(fd, fs_ioc_setflags, &flags) == 0;
    ::close(fd);
    return ok;
}

// Runs `f` with stderr captured; returns what was logged.
template <typename F> std::string logged_by(F&& f) {
    testing::internal::CaptureStderr();
    f();
    return testing::internal::GetCapturedStderr();
}

// A block node for the host's root disk outside dev/ (the review's attack), a character node
// and a hard link to a kept node outside dev/ too; a node under dev/ that stays.
TEST_F(Import, DeviceNodesOnlyUnderDev) {
    struct stat root_st {};
    ASSERT_EQ(::stat("/", &root_st), 0);
    unsigned maj = major(root_st.st_dev), min = minor(root_st.st_dev);
    std::string src = tmp / "src";
    for (const char* d : {"", "/dev", "/root", "/etc"})
        ASSERT_EQ(::mkdir((src + d).c_str(), 0755), 0) << d;
    ASSERT_EQ(::mknod((src + "/root/disk").c_str(), S_IFBLK | 0600, root_st.st_dev), 0);
    ASSERT_EQ(::mknod((src + "/etc/mem").c_str(), S_IFCHR | 0600, makedev(1, 1)), 0);
    ASSERT_EQ(::mknod((src + "/dev/null2").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::link((src + "/dev/null2").c_str(), (src + "/etc/null-link").c_str()), 0);
    spit(src + "/etc/hostname", "img\n");
    ASSERT_EQ(sh("tar --numeric-owner -C " + src + " -cf " + tmp / "nodes.tar ."), 0);
    std::string disk_msg = "Skipping the block device node /root/disk (" + std::to_string(maj) +
                           ":" + std::to_string(min) + ")";

    auto check = [&](const std::string& r, const std::string& log) {
        EXPECT_FALSE(exists(r + "/root/disk")) << "the host's disk came in with the image";
        EXPECT_FALSE(exists(r + "/etc/mem"));
        EXPECT_FALSE(exists(r + "/etc/null-link")) << "a hard link made a node outside dev/";
        struct stat st = lst(r + "/dev/null2");
        EXPECT_TRUE(S_ISCHR(st.st_mode));
        EXPECT_EQ(st.st_rdev, makedev(1, 3));
        EXPECT_EQ(slurp(r + "/etc/hostname"), "img\n");
        EXPECT_TRUE(S_ISDIR(lst(r + "/root").st_mode));
        EXPECT_NE(log.find(disk_msg), std::string::npos) << log;
        EXPECT_NE(log.find("character device node /etc/mem (1:1)"), std::string::npos) << log;
        EXPECT_NE(log.find("/etc/null-link"), std::string::npos) << log;
    };
    {
        SCOPED_TRACE("tarball");
        ImportResult res;
        int r = 0;
        std::string log =
            logged_by([&] { r = import_file(tmp / "nodes.tar", rootfs, res, error); });
        ASSERT_EQ(r, 0) << error;
        check(rootfs, log);
    }
    {
        SCOPED_TRACE("directory");
        std::string dest = tmp / "dest-dir";
        ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
        int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        int r = 0;
        std::string log = logged_by([&] { r = import_directory(fd, dest, nullptr, error); });
        ::close(fd);
        ASSERT_EQ(r, 0) << error;
        check(dest, log);
    }
}

// A chain of hard links: dev/x links to a kept node under dev/, root/disk links to dev/x. The
// second link makes a node outside dev/ as surely as a direct one (found in review: only the
// first name of a node was recorded).
TEST_F(Import, DeviceNodeLinkChainsStayUnderDev) {
    std::string tarball = tmp / "chain.tar";
    Entry node{"dev/null2", AE_IFCHR};
    node.rdev = makedev(1, 3);
    write_tar(tarball, {dir("./"), dir("dev/"), dir("root/"), node, hard("dev/x", "dev/null2"),
                        hard("root/disk", "dev/x"), hard("root/disk2", "root/disk")});
    ImportResult res;
    int r = 0;
    std::string log = logged_by([&] { r = import_file(tarball, rootfs, res, error); });
    ASSERT_EQ(r, 0) << error;
    EXPECT_FALSE(exists(rootfs + "/root/disk")) << "a two-step hard link made a node outside dev/";
    EXPECT_FALSE(exists(rootfs + "/root/disk2"));
    EXPECT_EQ(lst(rootfs + "/dev/x").st_rdev, makedev(1, 3));
    EXPECT_NE(log.find("/root/disk"), std::string::npos) << log;
}

// A backup's index.yaml of 1 MiB whose one large scalar is used 300 times through an alias: the
// conversion stops at its byte budget instead of building 300 MiB (found in review).
TEST(Yaml, AliasesCannotMultiplyAScalar) {
    std::string text = "x: &x " + std::string(1 << 20, 'a') + "\ny:\n";
    for (int i = 0; i < 300; i++)
        text += "  - *x\n";
    nlohmann::json out;
    std::string error;
    EXPECT_LT(image::yaml_to_json(text, "backup/index.yaml", out, error), 0);
    EXPECT_NE(error.find("Invalid backup/index.yaml"), std::string::npos) << error;
    error.clear();
    ASSERT_EQ(image::yaml_to_json("a: &a v\nb: [*a, *a]\n", "t", out, error), 0) << error;
    EXPECT_EQ(out["b"][1], "v");
}

// chattr +i / +a in an image: neither import restores them (the container could never be
// deleted otherwise).
TEST_F(Import, NoFileFlagsFromImages) {
    std::string probe = tmp / "probe";
    spit(probe, "x");
    if (!set_file_flags(probe, fs_immutable_fl))
        GTEST_SKIP() << "the filesystem of " << tmp.path() << " has no immutable flag";
    set_file_flags(probe, 0);
    std::string tarball = tmp / "flags.tar";
    write_tar(tarball,
              {dir("./"), Entry{"frozen", AE_IFREG, "data", "", "", {}, 0x10 /* immutable */},
               Entry{"log", AE_IFREG, "data", "", "", {}, 0x20 /* append-only */}});
    ImportResult res;
    int r = import_file(tarball, rootfs, res, error);
    int frozen = file_flags(rootfs + "/frozen"), log = file_flags(rootfs + "/log");
    set_file_flags(rootfs + "/frozen", 0); // whatever happened, let TempDir clean up
    set_file_flags(rootfs + "/log", 0);
    ASSERT_EQ(r, 0) << error;
    EXPECT_EQ(frozen & fs_immutable_fl, 0) << "immutable flag restored";
    EXPECT_EQ(log & fs_append_fl, 0) << "append-only flag restored";
    EXPECT_EQ(slurp(rootfs + "/frozen"), "data");

    // The directory copy never copies flags either.
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    spit(src + "/frozen", "data");
    ASSERT_TRUE(set_file_flags(src + "/frozen", fs_immutable_fl));
    std::string dest = tmp / "dest-dir";
    ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    r = import_directory(fd, dest, nullptr, error);
    ::close(fd);
    set_file_flags(src + "/frozen", 0);
    frozen = file_flags(dest + "/frozen");
    set_file_flags(dest + "/frozen", 0);
    ASSERT_EQ(r, 0) << error;
    EXPECT_EQ(frozen & fs_immutable_fl, 0);
}

// trusted.* and security.* other than file capabilities stay out; user.* and capabilities
// come in.
TEST_F(Import, OnlyHarmlessXattrs) {
    std::string cap = net_raw_capability();
    std::map<std::string, std::string> attrs = {{"user.keep", "yes"},
                                                {"security.capability", cap},
                                                {"trusted.overlay.opaque", "y"},
                                                {"trusted.evil", "1"}};
    write_tar(tmp / "xattrs.tar", {dir("./"), Entry{"bin", AE_IFDIR},
                                   Entry{"bin/ping", AE_IFREG, "#!/bin/sh\n", "", "", attrs}});
    ImportResult res;
    int r = 0;
    std::string log = logged_by([&] { r = import_file(tmp / "xattrs.tar", rootfs, res, error); });
    ASSERT_EQ(r, 0) << error;
    std::string ping = rootfs + "/bin/ping";
    EXPECT_EQ(get_xattr(ping, "user.keep"), "yes");
    EXPECT_EQ(get_xattr(ping, "security.capability"), cap);
    EXPECT_EQ(get_xattr(ping, "trusted.evil"), "<No data available>");
    EXPECT_EQ(get_xattr(ping, "trusted.overlay.opaque"), "<No data available>");
    EXPECT_NE(log.find("Not restoring the xattr trusted.evil (first on /bin/ping)"),
              std::string::npos)
        << log;

    // The same tree copied from a directory.
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    spit(src + "/file", "x");
    for (auto& [name, value] : attrs)
        ASSERT_EQ(::setxattr((src + "/file").c_str(), name.c_str(), value.data(), value.size(), 0),
                  0)
            << name;
    std::string dest = tmp / "dest-dir";
    ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    log = logged_by([&] { r = import_directory(fd, dest, nullptr, error); });
    ::close(fd);
    ASSERT_EQ(r, 0) << error;
    EXPECT_EQ(get_xattr(dest + "/file", "user.keep"), "yes");
    EXPECT_EQ(get_xattr(dest + "/file", "security.capability"), cap);
    EXPECT_EQ(get_xattr(dest + "/file", "trusted.evil"), "<No data available>");
    EXPECT_NE(log.find("Not restoring the xattr trusted.evil"), std::string::npos) << log;
}

} // namespace
