// Security of the container store (security review findings 1, 2, 13, 15): container trees are
// root-only, so host users reach no rootfs and cannot run the setuid files container root
// makes; older trees are tightened at lodged start; imports leave out device nodes outside
// /dev; a delete that meets an immutable file or cannot clean up still deletes; unprivileged
// containers (idmapped and shifted) with exec and disk devices work in the root-only tree.
// Real lodged on a private bus, driven through lodgectl; host-user probes run as nobody.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

constexpr uid_t nobody = 65534;
// Without <linux/fs.h>, which clashes with <sys/mount.h>.
constexpr unsigned long fs_ioc_setflags = _IOW('f', 2, long);
constexpr int fs_immutable_fl = 0x10;

bool set_flags(const std::string& path, int flags) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    return fd && ::ioctl(fd.get(), fs_ioc_setflags, &flags) == 0;
}

// Runs `probe` in a child that is nobody (no groups) and returns its exit status.
int as_nobody(const std::function<int()>& probe) {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::setgroups(0, nullptr) < 0 || ::setresgid(nobody, nobody, nobody) < 0 ||
            ::setresuid(nobody, nobody, nobody) < 0)
            _exit(120);
        _exit(probe());
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// 0 when nobody can stat `path`, else the errno.
int nobody_stat(const std::string& path) {
    return as_nobody([&] {
        struct stat st {};
        return ::stat(path.c_str(), &st) == 0 ? 0 : errno;
    });
}

// 0 when nobody ran `path` (as busybox `true`), else the errno of the execve.
int nobody_exec(const std::string& path) {
    return as_nobody([&] {
        char arg0[] = "true";
        char* argv[] = {arg0, nullptr};
        char* envp[] = {nullptr};
        ::execve(path.c_str(), argv, envp);
        return errno;
    });
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) < 0)
        return 0;
    return st.st_mode & 07777;
}

uid_t owner_of(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) < 0)
        return static_cast<uid_t>(-1);
    return st.st_uid;
}

std::vector<std::string> hidden_entries(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n != "." && n != ".." && n[0] == '.')
                out.push_back(n);
        }
        ::closedir(d);
    }
    return out;
}

class SecurityStore : public LodgedFixture {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        // A state dir of our own, made by lodged itself below a directory every user can
        // traverse (as /var/lib/lodge is 0711), so that only lodged's modes keep nobody out.
        std::string root = TestRoot::get().dir;
        ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
        state = root + "/" + unique_name("store");
        containers = state + "/containers";
        ::setenv("LODGE_STATE_DIR", state.c_str(), 1);
        LodgedFixture::SetUp();
    }
    void TearDown() override {
        LodgedFixture::TearDown();
        if (!state.empty()) {
            sh("chattr -R -i " + state + " 2>/dev/null");
            remove_tree(state);
        }
        ::setenv("LODGE_STATE_DIR", (TestRoot::get().dir + "/state").c_str(), 1);
    }
    std::string make(const std::string& base) {
        std::string n = unique_name(base) + "-" + std::to_string(created.size());
        created.push_back(n);
        return n;
    }
    std::string rootfs(const std::string& n) { return containers + "/" + n + "/rootfs"; }
    bool listed(const std::string& n) { return contains(ctl("list --no-legend"), n + " "); }

    std::string state, containers;
};

// The review's recipe: container root makes a setuid-root binary (real uid 0 on disk through
// the idmapped mount); a host user runs it, or just looks around in the rootfs.
TEST_F(SecurityStore, HostUsersCannotReachARootfs) {
    std::string n = make("reach");
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    ASSERT_EQ(ctl("start " + n, &st), "");
    ASSERT_EQ(st, 0);
    ctl("exec " + n + " -- sh -c 'cp /bin/busybox /rootsh && chmod 4755 /rootsh'", &st);
    ASSERT_EQ(st, 0);
    std::string rootsh = rootfs(n) + "/rootsh";
    ASSERT_EQ(mode_of(rootsh), 04755u) << "container root made no setuid file";

    EXPECT_EQ(mode_of(containers), 0700u);
    EXPECT_EQ(owner_of(containers), 0u);
    EXPECT_EQ(mode_of(containers + "/" + n), 0700u);
    EXPECT_EQ(owner_of(containers + "/" + n), 0u);
    EXPECT_EQ(nobody_stat(state), 0) << "the probe itself does not work";
    EXPECT_EQ(nobody_stat(rootfs(n)), EACCES);
    EXPECT_EQ(nobody_stat(rootfs(n) + "/etc/passwd"), EACCES);
    EXPECT_EQ(nobody_exec(rootsh), EACCES) << "nobody ran container root's setuid file";
    // The container itself does not mind.
    EXPECT_EQ(ctl("exec " + n + " -- hostname"), n + "\n");
    ctl("stop --force " + n);
}

// Trees left 0711 by older versions are made root-only when lodged starts; leftovers of an
// interrupted delete are removed even when they hold an immutable file.
TEST_F(SecurityStore, OlderTreesAreTightenedAtStart) {
    std::string n = make("old");
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    daemon.reset();
    ASSERT_EQ(::chmod(containers.c_str(), 0711), 0);
    ASSERT_EQ(::chmod((containers + "/" + n).c_str(), 0711), 0);
    ASSERT_EQ(nobody_stat(rootfs(n) + "/etc/passwd"), 0) << "0711 trees are open";
    std::string trash = containers + "/.trash-gone-AbC123";
    ASSERT_EQ(mkdir_p(trash + "/rootfs/etc", 0755), 0);
    ASSERT_EQ(write_file_atomic(trash + "/rootfs/etc/frozen", "x"), 0);
    bool immutable = set_flags(trash + "/rootfs/etc/frozen", fs_immutable_fl);

    start_lodged();
    EXPECT_EQ(mode_of(containers), 0700u);
    EXPECT_EQ(mode_of(containers + "/" + n), 0700u);
    EXPECT_EQ(nobody_stat(rootfs(n) + "/etc/passwd"), EACCES);
    // Leftovers are removed in a worker after the start: wait for it (bounded).
    EXPECT_TRUE(wait_until([&] { return !exists(trash); }))
        << (immutable ? "with an immutable file" : "");
    EXPECT_TRUE(listed(n));
}

// An immutable file in the rootfs (an older import, or root on the host) does not make the
// delete fail, nor leave trash behind.
TEST_F(SecurityStore, DeleteCopesWithImmutableFiles) {
    std::string n = make("imm");
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    ASSERT_EQ(write_file_atomic(rootfs(n) + "/frozen", "x"), 0);
    if (!set_flags(rootfs(n) + "/frozen", fs_immutable_fl))
        GTEST_SKIP() << "no immutable flag on " << state << ": " << std::strerror(errno);
    std::string out = ctl("delete " + n, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_FALSE(listed(n));
    EXPECT_FALSE(exists(containers + "/" + n));
    // The files go in a worker after the reply: wait for it (bounded), then nothing is left.
    EXPECT_TRUE(wait_until([&] { return hidden_entries(containers).empty(); }))
        << hidden_entries(containers)[0];
}

// Once renamed to trash the container is deleted, even when its files cannot be removed yet
// (here a mount inside the rootfs): lodged forgets it, and a later start removes the trash.
TEST_F(SecurityStore, DeleteThatCannotCleanUpStillDeletes) {
    std::string n = make("busy");
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    std::string mnt = rootfs(n) + "/mnt";
    ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k"), 0);
    std::string out = ctl("delete " + n, &st);
    auto trash = hidden_entries(containers);
    for (auto& t : trash) // whatever happened, no mount stays behind
        ::umount2((containers + "/" + t + "/rootfs/mnt").c_str(), MNT_DETACH);
    ::umount2(mnt.c_str(), MNT_DETACH);
    EXPECT_EQ(st, 0) << out;
    EXPECT_FALSE(listed(n)) << "deleted on disk but still listed";
    EXPECT_EQ(ctl("status " + n, &st).find("State:"), std::string::npos);
    EXPECT_NE(st, 0);
    ASSERT_EQ(trash.size(), 1u);
    EXPECT_EQ(trash[0].rfind(".trash-" + n + "-", 0), 0u) << trash[0];

    daemon.reset();
    start_lodged();
    EXPECT_TRUE(wait_until([&] { return hidden_entries(containers).empty(); }));
}

// An image carrying the host's root disk as a block node outside /dev (the review's recipe):
// neither the tarball nor the directory import creates it.
TEST_F(SecurityStore, ImportsLeaveOutHostDiskNodes) {
    std::string base = make("base");
    int st = 0;
    ASSERT_EQ(ctl("create " + base, &st), "Created container " + base + "\n");
    std::string img = TestRoot::get().dir + "/" + unique_name("evil-img");
    struct stat root_st {};
    ASSERT_EQ(::stat("/", &root_st), 0);
    sh("cp -a " + rootfs(base) + " " + img, &st);
    ASSERT_EQ(st, 0);
    ASSERT_EQ(::mkdir((img + "/root").c_str(), 0700) == 0 || errno == EEXIST, true);
    ASSERT_EQ(::mknod((img + "/root/disk").c_str(), S_IFBLK | 0600, root_st.st_dev), 0);
    ASSERT_EQ(::mknod((img + "/dev/kept").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    sh("tar --numeric-owner -C " + img + " -cf " + img + ".tar .", &st);
    ASSERT_EQ(st, 0);

    for (const std::string& source : {img + ".tar", img}) {
        SCOPED_TRACE(source);
        std::string n = make("evil");
        EXPECT_EQ(ctl("create " + n + " " + source, &st), "Created container " + n + "\n");
        EXPECT_FALSE(exists(rootfs(n) + "/root/disk")) << "the host's disk came in";
        EXPECT_TRUE(exists(rootfs(n) + "/dev/kept")) << "nodes under /dev are kept";
        EXPECT_EQ(ctl("start " + n, &st), "");
        EXPECT_EQ(ctl("exec " + n + " -- sh -c 'test -e /root/disk; echo $?'"), "1\n");
        ctl("stop --force " + n);
    }
    sh("rm -rf " + img + " " + img + ".tar");
}

// The shift fallback, exec and a disk device in the root-only tree: container root reaches its
// rootfs (through the mount, never through the host path) and a host directory bound into it.
TEST_F(SecurityStore, ShiftedContainerWorksInRootOnlyTree) {
    daemon.reset();
    ::setenv("LODGE_IDMAP", "shift", 1); // what filesystems without idmapped mounts get
    start_lodged();
    ::unsetenv("LODGE_IDMAP");
    std::string n = make("shift");
    std::string data = TestRoot::get().dir + "/" + unique_name("data");
    ASSERT_EQ(mkdir_p(data, 0755), 0);
    ASSERT_EQ(write_file_atomic(data + "/hello", "from the host\n", 0644), 0);
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    EXPECT_EQ(ctl("device add " + n + " data type=disk source=" + data + " path=/mnt/data"), "");
    std::string out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(owner_of(rootfs(n) + "/bin/busybox"), 1000000u) << "not shifted";
    EXPECT_EQ(ctl("exec " + n + " -- stat -c %u /bin/busybox"), "0\n");
    EXPECT_EQ(ctl("exec " + n + " -- cat /mnt/data/hello"), "from the host\n");
    EXPECT_EQ(mode_of(containers + "/" + n), 0700u);
    EXPECT_EQ(nobody_stat(rootfs(n)), EACCES);
    ctl("stop --force " + n);
    sh("rm -rf " + data);
}

} // namespace
