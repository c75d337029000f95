// The rootfs shift fallback (src/runtime/idmap-shift.cpp): ids, setuid bits and file
// capabilities moved; overlapping ranges refused; symlinks, also ones swapped in while the
// shift runs, never followed. Runs as root (chown, fanotify).
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "runtime/setup/idmap-shift.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

using namespace lodge;

namespace {

class Shift : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "needs root";
        char tmpl[] = "/tmp/lodge-test-shift-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        rootfs = dir + "/rootfs";
        ASSERT_EQ(::mkdir(rootfs.c_str(), 0755), 0);
    }
    void TearDown() override {
        if (!dir.empty())
            remove_tree(dir);
    }
    void file(const std::string& rel, uid_t uid, mode_t mode = 0644) {
        std::string p = rootfs + "/" + rel;
        int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0) << p;
        ::close(fd);
        ASSERT_EQ(::chown(p.c_str(), uid, uid), 0);
        ASSERT_EQ(::chmod(p.c_str(), mode), 0);
    }
    struct stat lst(const std::string& p) {
        struct stat st {};
        EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p << ": " << std::strerror(errno);
        return st;
    }
    std::string dir, rootfs;
};

struct vfs_ns_cap_data read_caps(const std::string& p, ssize_t& size) {
    struct vfs_ns_cap_data caps {};
    size = ::getxattr(p.c_str(), "security.capability", &caps, sizeof caps);
    return caps;
}

TEST_F(Shift, MovesIdsKeepsSetuidAndCapabilities) {
    ASSERT_EQ(::mkdir((rootfs + "/bin").c_str(), 0755), 0);
    file("bin/su", 0, 04755);
    file("bin/ping", 0, 0755);
    struct vfs_cap_data cap {};
    cap.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
    cap.data[0].permitted = 1u << CAP_NET_RAW;
    ASSERT_EQ(
        ::setxattr((rootfs + "/bin/ping").c_str(), "security.capability", &cap, XATTR_CAPS_SZ_2, 0),
        0);
    file("outside-range", 70000);
    ASSERT_EQ(::symlink("/etc/passwd", (rootfs + "/link").c_str()), 0);
    ASSERT_EQ(::link((rootfs + "/bin/su").c_str(), (rootfs + "/bin/su-hard").c_str()), 0);

    ASSERT_TRUE(runtime::shift_rootfs(dir, 0, 1000000, 65536).ok());
    EXPECT_EQ(runtime::shifted_base(dir), 1000000u);
    EXPECT_EQ(lst(rootfs).st_uid, 1000000u);
    EXPECT_EQ(lst(rootfs + "/bin").st_gid, 1000000u);
    struct stat su = lst(rootfs + "/bin/su");
    EXPECT_EQ(su.st_uid, 1000000u) << "a hard link visited twice is shifted once";
    EXPECT_EQ(su.st_mode & 07777, 04755u);
    EXPECT_EQ(lst(rootfs + "/outside-range").st_uid, 70000u);
    EXPECT_EQ(lst(rootfs + "/link").st_uid, 1000000u);
    EXPECT_EQ(lst("/etc/passwd").st_uid, 0u);
    ssize_t n = 0;
    struct vfs_ns_cap_data caps = read_caps(rootfs + "/bin/ping", n);
    ASSERT_EQ(n, static_cast<ssize_t>(XATTR_CAPS_SZ_3)) << "file capabilities lost by the chown";
    EXPECT_EQ(caps.rootid, 1000000u);
    EXPECT_EQ(caps.data[0].permitted, 1u << CAP_NET_RAW);

    ASSERT_TRUE(runtime::shift_rootfs(dir, 1000000, 0, 65536).ok());
    EXPECT_EQ(runtime::shifted_base(dir), 0u);
    EXPECT_EQ(lst(rootfs + "/bin/su").st_uid, 0u);
    EXPECT_EQ(lst(rootfs + "/bin/su").st_mode & 07777, 04755u);
    caps = read_caps(rootfs + "/bin/ping", n);
    EXPECT_EQ(n, static_cast<ssize_t>(XATTR_CAPS_SZ_2));
}

// A crash halfway through a shift between overlapping ranges would leave files that a rerun
// shifts a second time; such a shift is not started.
TEST_F(Shift, RefusesOverlappingRanges) {
    file("f", 0);
    file("g", 5000);
    EXPECT_EQ(runtime::shift_rootfs(dir, 0, 1000, 65536).error().code, ERANGE);
    EXPECT_EQ(runtime::shift_rootfs(dir, 1000, 0, 65536).error().code, ERANGE);
    EXPECT_EQ(runtime::shift_rootfs(dir, 0, UINT32_MAX - 10, 65536).error().code, ERANGE);
    EXPECT_EQ(lst(rootfs + "/f").st_uid, 0u);
    EXPECT_EQ(lst(rootfs + "/g").st_uid, 5000u);
    EXPECT_EQ(runtime::shifted_base(dir), 0u);
    // Adjacent ranges do not overlap.
    EXPECT_TRUE(runtime::shift_rootfs(dir, 0, 65536, 65536).ok());
    EXPECT_EQ(lst(rootfs + "/g").st_uid, 70536u);
}

// Whoever can rename inside the rootfs swaps a directory for a symlink to a host directory at
// the moment the shift opens it (made deterministic with a fanotify permission event on that
// directory); nothing outside the rootfs may change owner.
TEST_F(Shift, SymlinkSwappedInIsNotFollowed) {
    std::string outside = dir + "/outside";
    ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
    int fd = ::open((outside + "/victim").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    ASSERT_EQ(::mkdir((rootfs + "/a").c_str(), 0755), 0);
    file("a/victim", 0);

    Fd fan(::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY | O_CLOEXEC));
    if (!fan)
        GTEST_SKIP() << "fanotify: " << std::strerror(errno);
    if (::fanotify_mark(fan.get(), FAN_MARK_ADD, FAN_OPEN_PERM | FAN_ONDIR, AT_FDCWD,
                        (rootfs + "/a").c_str()) < 0)
        GTEST_SKIP() << "fanotify permission events: " << std::strerror(errno);

    std::atomic<bool> done{false};
    int result = 1;
    std::thread shifter([&] {
        result = runtime::shift_rootfs(dir, 0, 1000000, 65536).ok() ? 0 : -1;
        done = true;
    });
    bool swapped = false;
    while (!done) {
        struct pollfd p {
            fan.get(), POLLIN, 0
        };
        if (::poll(&p, 1, 100) <= 0)
            continue;
        char buf[4096];
        ssize_t n = ::read(fan.get(), buf, sizeof buf);
        for (auto* m = reinterpret_cast<struct fanotify_event_metadata*>(buf);
             n > 0 && FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
            if (!swapped) {
                // The shift is opening a/: make the name a symlink to the host directory.
                swapped = ::rename((rootfs + "/a").c_str(), (rootfs + "/a-real").c_str()) == 0 &&
                          ::symlink(outside.c_str(), (rootfs + "/a").c_str()) == 0;
            }
            struct fanotify_response r {
                m->fd, FAN_ALLOW
            };
            EXPECT_EQ(::write(fan.get(), &r, sizeof r), static_cast<ssize_t>(sizeof r));
            if (m->fd >= 0)
                ::close(m->fd);
        }
    }
    shifter.join();
    EXPECT_TRUE(swapped) << "the shift never opened a/";
    EXPECT_EQ(result, 0);
    EXPECT_EQ(lst(outside + "/victim").st_uid, 0u) << "the shift followed the swapped-in symlink";
    EXPECT_EQ(lst(outside).st_uid, 0u);
    EXPECT_EQ(lst(rootfs + "/a-real/victim").st_uid, 1000000u);
}

} // namespace
