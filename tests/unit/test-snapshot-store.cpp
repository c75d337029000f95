// The on-disk side of snapshots and restores (snapshot-store.cpp, tree-copy.cpp) without
// lodged: what lodged's next start makes of a restore that a crash cut short, at every point
// where it can be cut. Needs root (the copy runs cp in a private mount namespace).
#include "common/config.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "daemon/snapshot-store.hpp"
#include "daemon/tree-copy.hpp"

#include <atomic>
#include <cstdlib>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace lodge;
using namespace lodge::daemon;

namespace {

std::string read_text(const std::string& path) {
    std::string s;
    read_file(path, s);
    return s;
}

class SnapshotStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "needs root";
        root = "/tmp/lodge-snapstore-" + std::to_string(::getpid());
        ::setenv("LODGE_STATE_DIR", (root + "/state").c_str(), 1);
        ::setenv("LODGE_RUNTIME_DIR", (root + "/run").c_str(), 1);
        ASSERT_EQ(mkdir_p(paths::container_rootfs("c"), 0700), 0);
        // The container now: state B. Its snapshot s1: state A.
        write_file_atomic(paths::container_rootfs("c") + "/state", "A\n", 0644);
        ContainerConfig a = config("A");
        ASSERT_EQ(save_container_config(paths::container_config("c"), a), 0);
        std::string error;
        auto work = snapshots::prepare("c", "s1");
        ASSERT_TRUE(work) << work.error().message;
        ASSERT_EQ(snapshots::fill(paths::container_dir("c"), a, *work, 1, 0, nullptr, error), 0)
            << error;
        auto committed = snapshots::commit("c", "s1", *work);
        ASSERT_TRUE(committed) << committed.error().message;
        write_file_atomic(paths::container_rootfs("c") + "/state", "B\n", 0644);
        ASSERT_EQ(save_container_config(paths::container_config("c"), config("B")), 0);
    }
    void TearDown() override {
        if (!root.empty())
            remove_tree(root);
    }
    static ContainerConfig config(const std::string& state) {
        ContainerConfig c;
        c.name = "c";
        c.config["user.state"] = state;
        return c;
    }
    std::string config_state() {
        ContainerConfig c;
        std::string error;
        EXPECT_EQ(load_container_config(paths::container_config("c"), c, error), 0) << error;
        return c.get("user.state");
    }
    // A restore of s1 made up to the swap.
    std::string restore_ready() {
        std::string error;
        auto work = snapshots::prepare_restore("c");
        EXPECT_TRUE(work) << work.error().message;
        EXPECT_EQ(snapshots::fill_restore("c", "s1", config("A"), *work, nullptr, error), 0)
            << error;
        return *work;
    }
    std::string root;
};

// Cut short after the swap, before the config was written: the next start finishes it.
// (Without the recovery the container would keep rootfs A with config B.)
TEST_F(SnapshotStoreTest, ARestoreCutAfterTheSwapIsFinished) {
    std::string work = restore_ready();
    ASSERT_EQ(::renameat2(AT_FDCWD, (work + "/rootfs").c_str(), AT_FDCWD,
                          paths::container_rootfs("c").c_str(), RENAME_EXCHANGE),
              0);
    EXPECT_EQ(config_state(), "B"); // the crash's state: a mix
    auto stale = snapshots::recover({"c"});
    EXPECT_EQ(config_state(), "A");
    EXPECT_EQ(read_text(paths::container_rootfs("c") + "/state"), "A\n");
    ASSERT_EQ(stale.size(), 1u);
    EXPECT_EQ(stale[0], work);
}

// Cut short before the swap: the old state stays, the work directory is only removed.
TEST_F(SnapshotStoreTest, ARestoreCutBeforeTheSwapIsDropped) {
    std::string work = restore_ready();
    auto stale = snapshots::recover({"c"});
    EXPECT_EQ(config_state(), "B");
    EXPECT_EQ(read_text(paths::container_rootfs("c") + "/state"), "B\n");
    ASSERT_EQ(stale.size(), 1u);
    EXPECT_EQ(stale[0], work);
}

// Cut short while copying (no restore.json yet): dropped too.
TEST_F(SnapshotStoreTest, ARestoreCutWhileCopyingIsDropped) {
    auto prepared = snapshots::prepare_restore("c");
    ASSERT_TRUE(prepared) << prepared.error().message;
    std::string work = *prepared;
    ASSERT_EQ(mkdir_p(work + "/rootfs", 0755), 0);
    auto stale = snapshots::recover({"c"});
    EXPECT_EQ(config_state(), "B");
    ASSERT_EQ(stale.size(), 1u);
    EXPECT_EQ(stale[0], work);
}

// Unfinished and deleted snapshots are leftovers; finished ones are not.
TEST_F(SnapshotStoreTest, HalfMadeSnapshotsAreLeftovers) {
    auto prepared = snapshots::prepare("c", "s2");
    ASSERT_TRUE(prepared) << prepared.error().message;
    std::string work = *prepared;
    auto stale = snapshots::recover({"c"});
    ASSERT_EQ(stale.size(), 1u);
    EXPECT_EQ(stale[0], work);
    auto list = snapshots::list("c");
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].name, "s1");
}

TEST_F(SnapshotStoreTest, SnapshotNamesAreChecked) {
    for (const char* bad : {"", ".hidden", "-x", "a/b", "..", "x y", "new\n"})
        EXPECT_FALSE(snapshots::check_name(bad).empty()) << bad;
    for (const char* good : {"snap0", "before-upgrade", "2026.12.03_1"})
        EXPECT_TRUE(snapshots::check_name(good).empty()) << good;
}

} // namespace

namespace {

// A guest that swaps a directory for a symlink to the host's /etc while its running rootfs is
// copied: cp already listed the directory, and opens "d/shadow" by path next. Chrooted into
// its jail, that path leads nowhere; outside a jail it is the host's /etc/shadow.
TEST(TreeCopyTest, ASymlinkSwappedInMidCopyReachesNothingOfTheHost) {
    if (::geteuid() != 0)
        GTEST_SKIP() << "needs root";
    std::string shadow;
    if (read_file("/etc/shadow", shadow) < 0 || shadow.empty())
        GTEST_SKIP() << "no /etc/shadow on this host";
    std::string root = "/tmp/lodge-treecopy-" + std::to_string(::getpid());
    ::setenv("LODGE_RUNTIME_DIR", (root + "/run").c_str(), 1);
    std::string src = root + "/src", dst = root + "/dst";
    ASSERT_EQ(mkdir_p(src + "/d", 0755), 0);
    // cp copies a directory's entries in inode order: the big file first, then the names.
    {
        std::string chunk(4 << 20, 'x');
        int fd = ::open((src + "/d/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        for (int i = 0; i < 128; i++)
            ASSERT_EQ(::write(fd, chunk.data(), chunk.size()), ssize_t(chunk.size()));
        ::close(fd);
    }
    for (const char* name : {"shadow", "passwd", "group"})
        write_file_atomic(src + "/d/" + name, "guest's own\n", 0644);
    std::atomic<bool> swapped{false}, stop{false};
    std::thread guest([&] {
        struct stat st {};
        while (!stop && ::stat((dst + "/d/big").c_str(), &st) < 0)
            ::usleep(200);
        if (stop)
            return;
        ::rename((src + "/d").c_str(), (src + "/d.old").c_str());
        ::symlink("/etc", (src + "/d").c_str());
        swapped = true;
    });
    CopyMethod used;
    std::string error;
    int r = copy_tree(src, dst, nullptr, used, error);
    stop = true;
    guest.join();
    std::string copied;
    read_file(dst + "/d/shadow", copied);
    // Compared without printing: a failure must not put the host's hashes in the test log.
    EXPECT_FALSE(copied == shadow) << "the host's /etc/shadow was copied into the guest's tree";
    if (!swapped)
        std::fprintf(stderr, "note: the copy ended before the swap\n");
    else
        std::fprintf(stderr, "note: copy after the swap: %s\n", r < 0 ? error.c_str() : "ok");
    remove_tree(root);
}

} // namespace
