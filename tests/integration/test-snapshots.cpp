// Snapshots, restore, copy and rename through lodged and lodgectl (issue 15), with real
// containers: a restored rootfs is the snapshot's in every attribute a copy can lose (owners,
// modes, setuid bits, xattrs, ACLs, file capabilities, hardlinks, device nodes, fifos, sparse
// files), on a plain directory and on a btrfs filesystem the test makes; copies run next to
// their source; renames take snapshots, log and autostart along; kill -9 of lodged mid-way
// leaves the old or the new state and nothing else.
#include "calendar.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <map>
#include <set>
#include <sstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// Everything about a tree that a faithful copy keeps, one line per entry, by path.
std::map<std::string, std::string>* manifest_out;
std::string manifest_root;
std::map<ino_t, std::set<std::string>>* manifest_inodes;

std::string xattrs_of(const char* path) {
    char names[8192];
    ssize_t n = ::llistxattr(path, names, sizeof names);
    std::set<std::string> out;
    for (ssize_t i = 0; i > -1 && i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
        char value[4096];
        ssize_t v = ::lgetxattr(path, names + i, value, sizeof value);
        std::string hex;
        for (ssize_t k = 0; k < v; k++) {
            char b[3];
            std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(value[k]));
            hex += b;
        }
        out.insert(std::string(names + i) + "=" + hex);
    }
    std::string joined;
    for (auto& x : out)
        joined += x + ";";
    return joined;
}

int manifest_entry(const char* path, const struct stat* st, int, struct FTW*) {
    std::string rel = std::string(path).substr(manifest_root.size());
    std::ostringstream line;
    line << std::oct << st->st_mode << std::dec << " " << st->st_uid << ":" << st->st_gid;
    if (S_ISREG(st->st_mode)) {
        line << " size=" << st->st_size << " blocks=" << (st->st_blocks > 0 ? "some" : "none")
             << " data=" << std::hash<std::string>{}(read_text(path));
        (*manifest_inodes)[st->st_ino].insert(rel);
    } else if (S_ISLNK(st->st_mode)) {
        char target[4096];
        ssize_t n = ::readlink(path, target, sizeof target);
        line << " -> " << std::string(target, n > 0 ? static_cast<size_t>(n) : 0);
    } else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
        line << " dev=" << major(st->st_rdev) << "," << minor(st->st_rdev);
    }
    if (!S_ISDIR(st->st_mode))
        line << " mtime=" << st->st_mtim.tv_sec;
    line << " xattrs=" << xattrs_of(path);
    (*manifest_out)[rel] = line.str();
    return 0;
}

std::map<std::string, std::string> manifest(const std::string& root) {
    std::map<std::string, std::string> out;
    std::map<ino_t, std::set<std::string>> inodes;
    manifest_out = &out;
    manifest_inodes = &inodes;
    manifest_root = root;
    ::nftw(root.c_str(), manifest_entry, 64, FTW_PHYS | FTW_MOUNT);
    // Hardlinks: every name of an inode points at the first of them.
    for (auto& [ino, names] : inodes)
        for (auto& n : names)
            out[n] += " links=" + *names.begin();
    return out;
}

// The first differences between two manifests, for a readable failure.
std::string diff(const std::map<std::string, std::string>& a,
                 const std::map<std::string, std::string>& b) {
    std::string out;
    int shown = 0;
    for (auto& [k, v] : a) {
        auto it = b.find(k);
        if (it == b.end() || it->second != v) {
            out += "\n  " + k + ": " + v + "\n   vs " + (it == b.end() ? "(missing)" : it->second);
            if (++shown > 8)
                return out;
        }
    }
    for (auto& [k, v] : b)
        if (!a.count(k)) {
            out += "\n  " + k + ": (missing) vs " + v;
            if (++shown > 8)
                return out;
        }
    return out;
}

// An ACL in the kernel's xattr format: user::rwx user:1234:r-x group::r-x mask::r-x other::---.
std::string acl_value() {
    struct Entry {
        uint16_t tag, perm;
        uint32_t id;
    };
    const Entry entries[] = {{0x01, 7, UINT32_MAX},
                             {0x02, 5, 1234},
                             {0x04, 5, UINT32_MAX},
                             {0x10, 5, UINT32_MAX},
                             {0x20, 0, UINT32_MAX}};
    uint32_t version = 2;
    std::string v(reinterpret_cast<const char*>(&version), sizeof version);
    v.append(reinterpret_cast<const char*>(entries), sizeof entries);
    return v;
}

// Puts every kind of entry a copy can get wrong below `rootfs`/fixture.
void populate(const std::string& rootfs) {
    std::string f = rootfs + "/fixture";
    ASSERT_EQ(mkdir_p(f + "/dir/sub", 0755), 0);
    write_file_atomic(f + "/plain", "plain file\n", 0644);
    ASSERT_EQ(::chown((f + "/plain").c_str(), 1000, 1000), 0);
    write_file_atomic(f + "/setuid", "#!/bin/sh\n", 0755);
    ASSERT_EQ(::chmod((f + "/setuid").c_str(), 04755), 0);
    write_file_atomic(f + "/dir/sub/deep", "deep\n", 0600);
    ASSERT_EQ(::chown((f + "/dir").c_str(), 1001, 1002), 0);
    ASSERT_EQ(::setxattr((f + "/plain").c_str(), "user.lodge-test", "value", 5, 0), 0);
    ASSERT_EQ(::setxattr((f + "/plain").c_str(), "trusted.lodge-test", "t", 1, 0), 0);
    std::string acl = acl_value();
    ASSERT_EQ(
        ::setxattr((f + "/dir").c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0), 0)
        << std::strerror(errno);
    // A file capability (v2: cap_net_raw permitted+effective).
    const unsigned char cap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    write_file_atomic(f + "/capable", "cap\n", 0755);
    ASSERT_EQ(::setxattr((f + "/capable").c_str(), "security.capability", cap, sizeof cap, 0), 0)
        << std::strerror(errno);
    ASSERT_EQ(::link((f + "/plain").c_str(), (f + "/dir/hardlink").c_str()), 0);
    ASSERT_EQ(::symlink("../plain", (f + "/dir/symlink").c_str()), 0);
    ASSERT_EQ(::lchown((f + "/dir/symlink").c_str(), 1003, 1003), 0);
    ASSERT_EQ(::mknod((f + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::mknod((f + "/loop").c_str(), S_IFBLK | 0660, makedev(7, 200)), 0);
    ASSERT_EQ(::mkfifo((f + "/fifo").c_str(), 0640), 0);
    // A sparse file: 8 MiB with one block of data at its end.
    Fd sparse(::open((f + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(sparse.valid());
    ASSERT_EQ(::pwrite(sparse.get(), "end", 3, 8 << 20), 3);
    write_file_atomic(rootfs + "/state", "A\n", 0644);
}

// Changes all of it: the restore must undo every change.
void mess_up(const std::string& rootfs) {
    std::string f = rootfs + "/fixture";
    write_file_atomic(f + "/plain", "changed\n", 0600);
    ::chown((f + "/setuid").c_str(), 5, 5);
    ::chmod((f + "/setuid").c_str(), 0700);
    ::removexattr((f + "/capable").c_str(), "security.capability");
    ::unlink((f + "/dir/hardlink").c_str());
    ::unlink((f + "/null").c_str());
    ::mknod((f + "/null").c_str(), S_IFCHR | 0666, makedev(1, 5));
    remove_tree(f + "/dir/sub");
    write_file_atomic(f + "/new-file", "new\n", 0644);
    write_file_atomic(rootfs + "/state", "B\n", 0644);
}

class SnapshotTest : public LodgedFixture {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        state_dir = TestRoot::get().dir + "/state";
        unit_dir = TestRoot::get().dir + "/" + unique_name("units");
        ASSERT_EQ(mkdir_p(unit_dir + "/machines.target.wants", 0755), 0);
        setenv("LODGE_SYSTEMD_UNIT_DIR", unit_dir.c_str(), 1);
        LodgedFixture::SetUp();
    }
    void TearDown() override {
        LodgedFixture::TearDown();
        if (!btrfs_mount.empty()) {
            setenv("LODGE_STATE_DIR", (TestRoot::get().dir + "/state").c_str(), 1);
            sh("umount " + btrfs_mount + " 2>/dev/null; rm -rf " + btrfs_mount + " " + btrfs_mount +
               ".img");
        }
        sh("rm -rf " + unit_dir);
    }
    // Moves the state dir onto a btrfs filesystem in a loop file; false when that cannot be made.
    bool use_btrfs(std::string& why) {
        int st = -1;
        sh("command -v mkfs.btrfs", &st);
        if (st != 0) {
            why = "mkfs.btrfs is not installed";
            return false;
        }
        btrfs_mount = TestRoot::get().dir + "/" + unique_name("btrfs");
        std::string out =
            sh("mkdir -p " + btrfs_mount + " && truncate -s 1G " + btrfs_mount +
                   ".img && mkfs.btrfs -q " + btrfs_mount + ".img 2>&1 && mount -o loop " +
                   btrfs_mount + ".img " + btrfs_mount + " 2>&1",
               &st);
        if (st != 0) {
            why = "cannot make a btrfs loop filesystem: " + out;
            return false;
        }
        daemon.reset();
        state_dir = btrfs_mount + "/state";
        setenv("LODGE_STATE_DIR", state_dir.c_str(), 1);
        start_lodged();
        return true;
    }
    std::string make(const std::string& base) {
        std::string n = unique_name(base);
        created.push_back(n);
        int st = -1;
        EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
        return n;
    }
    std::string cdir(const std::string& n) { return state_dir + "/containers/" + n; }
    std::string rootfs(const std::string& n) { return cdir(n) + "/rootfs"; }
    // `lodgectl copy FROM NEW FLAGS` to a new name made from `base`; "" when it failed.
    std::string copy_to(const std::string& from, const std::string& base,
                        const std::string& flags) {
        std::string n = unique_name(base);
        created.push_back(n);
        int st = -1;
        std::string out = ctl("copy " + from + " " + n + flags, &st);
        EXPECT_EQ(st, 0) << out;
        return st == 0 ? n : "";
    }
    std::string get(const std::string& n, const std::string& key) {
        std::string v = ctl("config get " + n + " " + key);
        while (!v.empty() && v.back() == '\n')
            v.pop_back();
        return v;
    }
    // Hidden entries (".new-", ".trash-", ".restore-") in `dir`.
    static std::vector<std::string> hidden(const std::string& dir) {
        std::vector<std::string> out;
        if (DIR* d = ::opendir(dir.c_str())) {
            while (dirent* e = ::readdir(d))
                if (e->d_name[0] == '.' && std::strcmp(e->d_name, ".") != 0 &&
                    std::strcmp(e->d_name, "..") != 0)
                    out.push_back(e->d_name);
            ::closedir(d);
        }
        return out;
    }
    void snapshot_restore_round_trip();

    std::string state_dir, unit_dir, btrfs_mount;
};

void SnapshotTest::snapshot_restore_round_trip() {
    std::string n = make("snap");
    populate(rootfs(n));
    int st = -1;
    ASSERT_EQ(ctl("config set " + n + " user.state=A", &st), "") << st;
    auto before = manifest(rootfs(n));
    ASSERT_GT(before.size(), 10u);
    std::string out = ctl("snapshot create " + n + " s1", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("snapshot list " + n + " -q"), "s1\n"));
    auto snapped = manifest(cdir(n) + "/snapshots/s1/rootfs");
    EXPECT_TRUE(snapped == before) << "the snapshot differs:" << diff(before, snapped);

    mess_up(rootfs(n));
    ctl("config set " + n + " user.state=B");
    ASSERT_NE(manifest(rootfs(n)), before);
    out = ctl("restore " + n + " s1", &st);
    ASSERT_EQ(st, 0) << out;
    auto after = manifest(rootfs(n));
    EXPECT_TRUE(after == before) << "the restored rootfs differs:" << diff(before, after);
    EXPECT_EQ(get(n, "user.state"), "A");
    // The old rootfs goes in a worker.
    EXPECT_TRUE(wait_until([&] { return hidden(cdir(n)).empty(); })) << "restore left a directory";
    // The snapshot itself is untouched by the restore and can be restored again.
    EXPECT_TRUE(manifest(cdir(n) + "/snapshots/s1/rootfs") == before);
    auto shown = nlohmann::json::parse(ctl("snapshot show " + n + " s1 --json"), nullptr, false);
    ASSERT_TRUE(shown.is_object());
    EXPECT_EQ(shown["config"].value("user.state", ""), "A");
    EXPECT_GT(shown.value("created_usec", uint64_t(0)), 0u);
}

TEST_F(SnapshotTest, RestoreGivesBackTheSnapshotOnAPlainDirectory) {
    snapshot_restore_round_trip();
}

TEST_F(SnapshotTest, RestoreGivesBackTheSnapshotOnBtrfs) {
    std::string why;
    if (!use_btrfs(why))
        GTEST_SKIP() << why;
    snapshot_restore_round_trip();
    // Rootfs and snapshots are subvolumes there (inode 256 is a subvolume's root).
    struct stat st {};
    for (auto& n : created) {
        ASSERT_EQ(::stat(rootfs(n).c_str(), &st), 0);
        EXPECT_EQ(st.st_ino, 256u) << "the rootfs is no subvolume";
        ASSERT_EQ(::stat((cdir(n) + "/snapshots/s1/rootfs").c_str(), &st), 0);
        EXPECT_EQ(st.st_ino, 256u) << "the snapshot is no subvolume";
    }
}

TEST_F(SnapshotTest, SnapshotNamesListDeleteAndRename) {
    std::string n = make("snapn");
    int st = -1;
    EXPECT_EQ(ctl("snapshot create " + n, &st), "Created snapshot snap0 of " + n + "\n");
    EXPECT_EQ(ctl("snapshot create " + n, &st), "Created snapshot snap1 of " + n + "\n");
    std::string out = ctl("snapshot create " + n + " snap0", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "already has a snapshot")) << out;
    out = ctl("snapshot create " + n + " ../evil", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Invalid snapshot name")) << out;
    EXPECT_EQ(ctl("snapshot rename " + n + " snap1 before-upgrade", &st), "");
    EXPECT_EQ(ctl("snapshot list " + n + " -q"), "snap0\nbefore-upgrade\n");
    EXPECT_EQ(ctl("snapshot delete " + n + " snap0", &st), "");
    EXPECT_EQ(ctl("snapshot list " + n + " -q"), "before-upgrade\n");
    out = ctl("restore " + n + " snap0", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "no snapshot \"snap0\"")) << out;
    EXPECT_TRUE(wait_until([&] { return hidden(cdir(n) + "/snapshots").empty(); }));
}

// Snapshots are stateless (rootfs and config), which --stateless asks for; --stateful would need
// CRIU and is refused, saying so.
TEST_F(SnapshotTest, StatelessIsTheDefaultAndStatefulIsRefused) {
    std::string n = make("snapsl");
    int st = -1;
    EXPECT_EQ(ctl("snapshot create " + n + " s1 --stateless", &st),
              "Created snapshot s1 of " + n + "\n");
    EXPECT_EQ(st, 0);
    std::string out = ctl("snapshot create " + n + " s2 --stateful", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "CRIU")) << out;
    EXPECT_EQ(ctl("snapshot list " + n + " -q"), "s1\n");
}

// The container object has the Manager's methods without the name (as machined's Machine):
// snapshots, restore, copy, rename and files, with the same typed errors.
TEST_F(SnapshotTest, TheContainerObjectHasTheSameMethods) {
    std::string n = make("snapobj");
    std::string path = sh("busctl call io.lodge1 /io/lodge1 io.lodge1.Manager GetContainer s " + n +
                          " | cut -d'\"' -f2");
    ASSERT_TRUE(contains(path, "/io/lodge1/container/")) << path;
    path.pop_back();
    auto call = [&](const std::string& args) {
        return sh("busctl call io.lodge1 " + path + " io.lodge1.Container " + args + " 2>&1");
    };
    EXPECT_EQ(call("CreateSnapshot s s1"), "s \"s1\"\n");
    EXPECT_TRUE(contains(call("ListSnapshots"), "a(stt) 1 \"s1\"")) << call("ListSnapshots");
    EXPECT_TRUE(contains(call("RestoreSnapshot sb nothere false"), "has no snapshot"));
    EXPECT_EQ(call("RestoreSnapshot sb s1 false"), "");
    EXPECT_EQ(call("RenameSnapshot ss s1 s2"), "");
    EXPECT_TRUE(contains(call("StatFile s /bin"), "s \"directory\"")) << call("StatFile s /bin");
    EXPECT_EQ(call("MakeDirectory suuub /made 0 0 493 false"), "");
    EXPECT_TRUE(exists(rootfs(n) + "/made"));
    EXPECT_EQ(call("DeleteFile s /made"), "");
    EXPECT_FALSE(exists(rootfs(n) + "/made"));
    std::string copy = unique_name("snapobjc");
    created.push_back(copy);
    EXPECT_TRUE(contains(call("Copy ssa{ss}b \"\" " + copy + " 0 true"), "o \"/io/lodge1/"));
    EXPECT_EQ(ctl("snapshot list " + copy + " -q"), "s2\n");
    EXPECT_TRUE(contains(call("Copy ssa{ss}b \"\" " + copy + " 0 true"), "already exists"));
    EXPECT_EQ(call("DeleteSnapshot s s2"), "");
    std::string renamed = unique_name("snapobjr");
    created.push_back(renamed);
    EXPECT_TRUE(contains(call("Rename s " + renamed), "o \"/io/lodge1/container/"));
    EXPECT_TRUE(contains(ctl("list -q"), renamed + "\n"));
}

// A running container: its snapshot is taken while it runs; a restore is refused until
// --force, which stops it first.
TEST_F(SnapshotTest, RunningContainerSnapshotAndForcedRestore) {
    std::string n = make("snaprun");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    ASSERT_EQ(st, 0) << out;
    out = ctl("exec " + n + " -- /bin/sh -c 'echo before > /inside'", &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("snapshot create " + n + " live", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(read_text(cdir(n) + "/snapshots/live/rootfs/inside"), "before\n");
    ctl("exec " + n + " -- /bin/sh -c 'echo after > /inside'");
    out = ctl("restore " + n + " live", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "running")) << out;
    out = ctl("restore " + n + " live --force", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("status " + n), "stopped"));
    EXPECT_EQ(read_text(rootfs(n) + "/inside"), "before\n");
    out = ctl("start " + n, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + n + " -- cat /inside"), "before\n");
    ctl("stop --force " + n);
}

} // namespace

namespace {

// 256 MiB in 64 files below `rootfs`/bulk: a copy of it takes long enough to be caught.
void add_bulk(const std::string& rootfs) {
    ASSERT_EQ(mkdir_p(rootfs + "/bulk", 0755), 0);
    std::string chunk(4 << 20, 'x');
    for (int i = 0; i < 64; i++) {
        Fd f(::open((rootfs + "/bulk/" + std::to_string(i)).c_str(),
                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        ASSERT_TRUE(f.valid());
        chunk[0] = static_cast<char>('a' + i % 26);
        ASSERT_EQ(::write(f.get(), chunk.data(), chunk.size()), ssize_t(chunk.size()));
    }
}

// The hidden work directory in `dir` starting with `prefix` once its rootfs has `entry`.
bool work_under_way(const std::string& dir, const std::string& prefix, const std::string& entry) {
    if (DIR* d = ::opendir(dir.c_str())) {
        bool found = false;
        while (dirent* e = ::readdir(d))
            if (std::string(e->d_name).rfind(prefix, 0) == 0 &&
                exists(dir + "/" + e->d_name + "/rootfs/" + entry))
                found = true;
        ::closedir(d);
        return found;
    }
    return false;
}

std::vector<std::string> copy_jails() {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(paths::runtime_dir().c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::string(e->d_name).rfind("copy-", 0) == 0)
                out.push_back(e->d_name);
        ::closedir(d);
    }
    return out;
}

} // namespace

// kill -9 of lodged while a snapshot is being copied: after the restart the snapshot is
// either whole or absent, and no work directory or copy jail is left.
TEST_F(SnapshotTest, KillNineMidSnapshotLeavesOldOrNew) {
    std::string n = make("snapk9");
    add_bulk(rootfs(n));
    auto source = manifest(rootfs(n));
    Background snap("snapshot create " + n + " k9");
    bool caught =
        wait_until([&] { return work_under_way(cdir(n) + "/snapshots", ".new-", "bulk"); }, 120);
    daemon->kill9();
    std::string out;
    int st = snap.wait(&out);
    start_lodged();
    EXPECT_TRUE(wait_until([&] { return hidden(cdir(n) + "/snapshots").empty(); }))
        << "a half-made snapshot was left behind";
    EXPECT_TRUE(copy_jails().empty());
    std::string listed = ctl("snapshot list " + n + " -q");
    if (listed == "k9\n") {
        auto snapped = manifest(cdir(n) + "/snapshots/k9/rootfs");
        EXPECT_TRUE(snapped == source)
            << "a listed snapshot is incomplete:" << diff(source, snapped);
    } else {
        EXPECT_EQ(listed, "");
        EXPECT_NE(st, 0) << "lodgectl said the snapshot was made: " << out;
    }
    if (!caught)
        std::fprintf(stderr, "note: the snapshot finished before lodged was killed\n");
}

// kill -9 of lodged during a restore: afterwards the rootfs and the config are both the old
// ones or both the snapshot's, and the restore's work directory is gone.
TEST_F(SnapshotTest, KillNineMidRestoreLeavesOldOrNew) {
    std::string n = make("restk9");
    add_bulk(rootfs(n));
    write_file_atomic(rootfs(n) + "/state", "A\n", 0644);
    int st = -1;
    ctl("config set " + n + " user.state=A");
    std::string out = ctl("snapshot create " + n + " s1", &st);
    ASSERT_EQ(st, 0) << out;
    auto old_a = manifest(rootfs(n));
    write_file_atomic(rootfs(n) + "/state", "B\n", 0644);
    ::unlink((rootfs(n) + "/bulk/3").c_str());
    ctl("config set " + n + " user.state=B");
    auto old_b = manifest(rootfs(n));
    Background restore("restore " + n + " s1");
    bool caught = wait_until([&] { return work_under_way(cdir(n), ".restore-", "bulk"); }, 120);
    daemon->kill9();
    restore.wait(&out);
    start_lodged();
    EXPECT_TRUE(wait_until([&] { return hidden(cdir(n)).empty(); }))
        << "the restore's work directory was left behind";
    std::string state = read_text(rootfs(n) + "/state");
    EXPECT_EQ(get(n, "user.state") + "\n", state) << "rootfs and config disagree";
    auto now = manifest(rootfs(n));
    EXPECT_TRUE(now == (state == "A\n" ? old_a : old_b))
        << "the rootfs is a mix:" << diff(state == "A\n" ? old_a : old_b, now);
    if (!caught)
        std::fprintf(stderr, "note: the restore finished before lodged was killed\n");
}

// kill -9 of lodged during a copy: after the restart the copy is either absent, with no work
// directory of it left, or whole (every rootfs entry, a valid config, it starts); the source
// is untouched either way.
TEST_F(SnapshotTest, KillNineMidCopyLeavesOldOrNew) {
    std::string src = make("copyk9");
    add_bulk(rootfs(src));
    auto source = manifest(rootfs(src));
    std::string source_config = ctl("config show " + src + " --json");
    std::string dst = unique_name("copyk9d");
    created.push_back(dst);
    Background copy("copy " + src + " " + dst);
    std::string containers = state_dir + "/containers";
    bool caught =
        wait_until([&] { return work_under_way(containers, ".new-" + dst + "-", "bulk"); }, 120);
    daemon->kill9();
    std::string out;
    int st = copy.wait(&out);
    start_lodged();
    auto work_dirs_of_dst = [&] {
        std::vector<std::string> left;
        for (auto& h : hidden(containers))
            if (contains(h, "-" + dst + "-"))
                left.push_back(h);
        return left;
    };
    EXPECT_TRUE(wait_until([&] { return work_dirs_of_dst().empty(); }))
        << "a work directory of the copy was left behind in " << containers;
    EXPECT_TRUE(copy_jails().empty());
    auto src_now = manifest(rootfs(src));
    EXPECT_TRUE(src_now == source) << "the source changed:" << diff(source, src_now);
    EXPECT_EQ(ctl("config show " + src + " --json"), source_config);
    std::string listed = ctl("list -q");
    EXPECT_TRUE(contains(listed, src + "\n")) << listed;
    if (contains(listed, dst + "\n")) {
        auto copied = manifest(rootfs(dst));
        EXPECT_TRUE(copied == source) << "a listed copy is incomplete:" << diff(source, copied);
        auto config = nlohmann::json::parse(ctl("config show " + dst + " --json"), nullptr, false);
        ASSERT_TRUE(config.is_object()) << "the copy's config is not valid";
        out = ctl("start " + dst, &st);
        if (st != 0 && contains(out, "idmapped"))
            std::fprintf(stderr, "note: containers cannot start here: %s", out.c_str());
        else
            EXPECT_EQ(st, 0) << "the copy does not start: " << out;
    } else {
        EXPECT_FALSE(exists(cdir(dst))) << "an unlisted copy has a directory";
        EXPECT_NE(st, 0) << "lodgectl said the copy was made: " << out;
    }
    if (!caught)
        std::fprintf(stderr, "note: the copy finished before lodged was killed\n");
}

// A copy runs next to its source: new MACs, a new instance-id, new host ends of the veths;
// the source's snapshots come along unless --no-snapshots; a snapshot can be the source.
TEST_F(SnapshotTest, CopiesRunNextToTheirSource) {
    std::string a = make("copya");
    int st = -1;
    std::string out = ctl("device add " + a + " eth0 nic nictype=p2p", &st);
    ASSERT_EQ(st, 0) << out;
    write_file_atomic(rootfs(a) + "/marker", "from a\n", 0644);
    ASSERT_EQ(ctl("snapshot create " + a + " s1", &st), "Created snapshot s1 of " + a + "\n");
    out = ctl("start " + a, &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    ASSERT_EQ(st, 0) << out;
    std::string b = copy_to(a, "copyb", " -c user.copied=yes");
    ASSERT_NE(b, "");
    EXPECT_EQ(read_text(rootfs(b) + "/marker"), "from a\n");
    EXPECT_EQ(ctl("snapshot list " + b + " -q"), "s1\n");
    EXPECT_EQ(get(b, "user.copied"), "yes");
    out = ctl("start " + b, &st);
    ASSERT_EQ(st, 0) << out;
    auto config_of = [&](const std::string& n) {
        return nlohmann::json::parse(ctl("config show " + n + " --json"), nullptr, false);
    };
    auto ca = config_of(a), cb = config_of(b);
    ASSERT_TRUE(ca.is_object() && cb.is_object());
    for (const char* key :
         {"volatile.eth0.hwaddr", "volatile.cloud-init.instance-id", "volatile.eth0.host_name"}) {
        EXPECT_NE(ca.value(key, ""), "") << key;
        EXPECT_NE(cb.value(key, ""), "") << key;
        EXPECT_NE(ca.value(key, ""), cb.value(key, "")) << key << " is the same in the copy";
    }
    EXPECT_TRUE(contains(ctl("status " + a), "running"));
    EXPECT_TRUE(contains(ctl("status " + b), "running"));

    std::string c = copy_to(a + "/s1", "copyc", " --no-snapshots");
    ASSERT_NE(c, "");
    EXPECT_EQ(read_text(rootfs(c) + "/marker"), "from a\n");
    EXPECT_EQ(ctl("snapshot list " + c + " -q"), "");
    out = ctl("copy " + a + " " + b, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "already exists")) << out;
    out = ctl("copy " + a + "/nosuch " + unique_name("copyd"), &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "no snapshot")) << out;
    ctl("stop --force " + a);
    ctl("stop --force " + b);
}

// A rename takes the snapshots, the console log and the autostart link along, and gives a
// new instance-id; a running container is not renamed.
TEST_F(SnapshotTest, RenameTakesEverythingAlong) {
    std::string n = make("renold");
    int st = -1;
    ASSERT_EQ(ctl("snapshot create " + n + " s1", &st), "Created snapshot s1 of " + n + "\n");
    std::string out = ctl("start " + n, &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    ASSERT_EQ(st, 0) << out;
    out = ctl("rename " + n + " " + unique_name("rennew"), &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "stop it first")) << out;
    ctl("stop --force " + n);
    std::string log_dir = TestRoot::get().dir + "/log/";
    ASSERT_TRUE(exists(log_dir + n + "/console.log"));
    std::string wants = unit_dir + "/machines.target.wants/";
    ASSERT_EQ(::symlink("/usr/local/lib/systemd/system/lodge@.service",
                        (wants + "lodge@" + n + ".service").c_str()),
              0);
    std::string id = get(n, "volatile.cloud-init.instance-id");
    std::string m = unique_name("rennew");
    created.push_back(m);
    out = ctl("rename " + n + " " + m, &st);
    ASSERT_EQ(st, 0) << out;
    std::string listed = ctl("list -q");
    EXPECT_TRUE(contains(listed, m + "\n")) << listed;
    EXPECT_FALSE(contains(listed, n + "\n")) << listed;
    EXPECT_FALSE(exists(cdir(n)));
    EXPECT_EQ(ctl("snapshot list " + m + " -q"), "s1\n");
    EXPECT_TRUE(exists(log_dir + m + "/console.log"));
    EXPECT_FALSE(exists(log_dir + n));
    EXPECT_FALSE(exists(wants + "lodge@" + n + ".service"));
    char target[256] = {};
    EXPECT_GT(::readlink((wants + "lodge@" + m + ".service").c_str(), target, sizeof target - 1),
              0);
    EXPECT_STREQ(target, "/usr/local/lib/systemd/system/lodge@.service");
    std::string new_id = get(m, "volatile.cloud-init.instance-id");
    EXPECT_NE(new_id, "");
    EXPECT_NE(new_id, id);
    auto shown = nlohmann::json::parse(ctl("show " + m + " --json"), nullptr, false);
    ASSERT_TRUE(shown.is_object()) << ctl("show " + m + " --json");
    EXPECT_EQ(shown.value("name", ""), m);
    out = ctl("start " + m, &st);
    EXPECT_EQ(st, 0) << out;
    ctl("stop --force " + m);
    // The old name is free again; the new one is taken.
    out = ctl("rename " + m + " " + m, &st);
    EXPECT_NE(st, 0);
    // Survives a restart of lodged.
    daemon.reset();
    start_lodged();
    EXPECT_EQ(ctl("snapshot list " + m + " -q"), "s1\n");
}

namespace {

uint64_t local_usec(int year, int mon, int mday, int hour, int min) {
    struct tm t = calendar(year, mon, mday, hour, min);
    return static_cast<uint64_t>(::mktime(&t)) * 1000000;
}

} // namespace

// snapshots.schedule with the test's clock (RunSnapshotSchedule): a snapshot in each minute
// the schedule names, one only, named by snapshots.pattern, deleted once snapshots.expiry has
// passed; stopped containers get none (LXD's default).
TEST_F(SnapshotTest, ScheduledSnapshotsFireAndExpire) {
    std::string n = make("sched");
    int st = -1;
    for (const char* kv : {"snapshots.schedule='*/15 * * * *'", "snapshots.expiry=1H",
                           "snapshots.pattern=auto-%d"}) {
        std::string out = ctl("config set " + n + " " + kv, &st);
        ASSERT_EQ(st, 0) << kv << ": " << out;
    }
    std::string out = ctl("config set " + n + " snapshots.schedule='every day'", &st);
    EXPECT_NE(st, 0) << "a bad schedule was taken";
    out = ctl("start " + n, &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    ASSERT_EQ(st, 0) << out;
    auto tick = [&](uint64_t usec) {
        return sh("busctl call io.lodge1 /io/lodge1 io.lodge1.Manager RunSnapshotSchedule t " +
                  std::to_string(usec) + " 2>&1");
    };
    auto listed = [&] { return ctl("snapshot list " + n + " -q"); };
    uint64_t t0 = local_usec(2030, 1, 1, 10, 30);
    EXPECT_EQ(tick(t0), "u 1\n");
    EXPECT_TRUE(wait_until([&] { return listed() == "auto-0\n"; })) << listed();
    EXPECT_EQ(tick(t0 + 10000000), "u 0\n") << "a second snapshot in the same minute";
    EXPECT_EQ(tick(t0 + 60000000), "u 0\n") << "10:31 is not in */15";
    EXPECT_EQ(tick(t0 + 15 * 60000000ULL), "u 1\n");
    EXPECT_TRUE(wait_until([&] { return listed() == "auto-0\nauto-1\n"; })) << listed();
    auto shown =
        nlohmann::json::parse(ctl("snapshot show " + n + " auto-0 --json"), nullptr, false);
    ASSERT_TRUE(shown.is_object());
    EXPECT_EQ(shown.value("created_usec", uint64_t(0)), t0);
    EXPECT_EQ(shown.value("expires_usec", uint64_t(0)), t0 + 3600 * 1000000ULL);
    // 11:31: auto-0 (10:30 + 1H) has expired, auto-1 (10:45 + 1H) not yet.
    EXPECT_EQ(tick(t0 + 61 * 60000000ULL), "u 0\n");
    EXPECT_TRUE(wait_until([&] { return listed() == "auto-1\n"; })) << listed();
    ctl("stop --force " + n);
    // 11:45 is in the schedule, but the container is stopped; auto-1 expires right then.
    EXPECT_EQ(tick(t0 + 75 * 60000000ULL), "u 0\n") << "a stopped container was snapshotted";
    EXPECT_TRUE(wait_until([&] { return listed().empty(); })) << listed();
}
