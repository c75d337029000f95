#include "common/fileio.hpp"
#include "runtime/setup/mountapi.hpp"

#include <atomic>
#include <cstdio>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace lodge;
using namespace lodge::runtime;

namespace {

class ResolveInRoot : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lodge-test-mountapi-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        base = tmpl;
        root = base + "/root";
        outside = base + "/outside";
        ASSERT_EQ(mkdir_p(root + "/etc"), 0);
        ASSERT_EQ(mkdir_p(outside), 0);
        ASSERT_EQ(write_file_atomic(outside + "/secret", "host"), 0);
        ASSERT_EQ(write_file_atomic(root + "/etc/secret", "guest"), 0);
        rootfd.reset(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        ASSERT_TRUE(rootfd);
    }
    void TearDown() override { remove_tree(base); }
    std::string read_in_root(const std::string& path) {
        Fd fd = open_in_root(rootfd.get(), path, O_RDONLY);
        if (!fd)
            return "errno " + std::to_string(errno);
        char buf[64];
        ssize_t n = read(fd.get(), buf, sizeof buf);
        return n >= 0 ? std::string(buf, static_cast<size_t>(n)) : "read error";
    }
    std::string base, root, outside;
    Fd rootfd;
};

TEST_F(ResolveInRoot, AbsoluteSymlinksResolveInsideTheRoot) {
    // <root>/link -> <outside>/secret must read <root><outside>/secret, not the host file.
    ASSERT_EQ(symlink((outside + "/secret").c_str(), (root + "/link").c_str()), 0);
    EXPECT_EQ(read_in_root("link"), "errno " + std::to_string(ENOENT));
    ASSERT_EQ(symlink("/etc/secret", (root + "/abs").c_str()), 0);
    EXPECT_EQ(read_in_root("abs"), "guest");
}

TEST_F(ResolveInRoot, DotDotStopsAtTheRoot) {
    ASSERT_EQ(symlink("../../../../../etc/secret", (root + "/up").c_str()), 0);
    EXPECT_EQ(read_in_root("up"), "guest");
    EXPECT_EQ(read_in_root("../../../etc/secret"), "guest");
}

TEST_F(ResolveInRoot, NoSymlinksModeRefusesLinks) {
    ASSERT_EQ(symlink("/etc", (root + "/etclink").c_str()), 0);
    Fd fd = open_in_root(rootfd.get(), "etclink/secret", O_RDONLY, false);
    EXPECT_FALSE(fd);
    EXPECT_EQ(errno, ELOOP);
}

TEST_F(ResolveInRoot, MkdirThroughADanglingEscapingLinkCreatesInside) {
    ASSERT_EQ(symlink((outside + "/made").c_str(), (root + "/escape").c_str()), 0);
    Fd dir;
    ASSERT_EQ(mkdir_in_root(rootfd.get(), "escape/sub", dir), 0);
    struct stat st {};
    EXPECT_EQ(stat((root + outside + "/made/sub").c_str(), &st), 0);
    EXPECT_NE(stat((outside + "/made").c_str(), &st), 0) << "nothing may appear outside";
}

TEST_F(ResolveInRoot, MkdirRefusesSymlinkLoops) {
    ASSERT_EQ(symlink("/b", (root + "/a").c_str()), 0);
    ASSERT_EQ(symlink("/a", (root + "/b").c_str()), 0);
    Fd dir;
    EXPECT_LT(mkdir_in_root(rootfd.get(), "a/x", dir), 0);
}

// A rename anywhere on the host while ".." is resolved makes openat2(RESOLVE_IN_ROOT) fail with
// EAGAIN; many containers starting at once (busybox's sbin/init -> ../bin/busybox) hit that.
TEST_F(ResolveInRoot, DotDotSurvivesConcurrentRenames) {
    ASSERT_EQ(mkdir_p(root + "/bin"), 0);
    ASSERT_EQ(write_file_atomic(root + "/bin/busybox", "bb"), 0);
    ASSERT_EQ(mkdir_p(root + "/sbin"), 0);
    ASSERT_EQ(symlink("../bin/busybox", (root + "/sbin/init").c_str()), 0);
    ASSERT_EQ(write_file_atomic(outside + "/a", "x"), 0);
    std::atomic<bool> stop{false};
    std::thread renamer([&] {
        std::string a = outside + "/a", b = outside + "/b";
        while (!stop.load(std::memory_order_relaxed)) {
            std::rename(a.c_str(), b.c_str());
            std::rename(b.c_str(), a.c_str());
        }
    });
    int failures = 0, first_errno = 0;
    for (int i = 0; i < 20000; i++) {
        Fd fd = open_in_root(rootfd.get(), "sbin/init", O_PATH);
        if (!fd && failures++ == 0)
            first_errno = errno;
    }
    stop = true;
    renamer.join();
    EXPECT_EQ(failures, 0) << "first errno " << first_errno;
}

} // namespace
