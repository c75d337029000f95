// lodgectl file push|pull|delete|edit against lodged and real containers (issue 15): a large
// file round-trips with its mode and owner, symlinks in the guest's tree never lead out of
// it (push or pull), a file pushed into a running unprivileged container has the owner it was
// given as seen from inside, recursive copies keep the tree.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

class FilesTest : public LodgedFixture {
protected:
    void SetUp() override {
        LodgedFixture::SetUp();
        if (!set_up())
            return;
        work = TestRoot::get().dir + "/" + unique_name("files");
        ASSERT_EQ(mkdir_p(work, 0755), 0);
    }
    void TearDown() override {
        LodgedFixture::TearDown();
        if (!work.empty())
            remove_tree(work);
    }
    std::string make(const std::string& base) {
        std::string n = name_container(base);
        int st = -1;
        EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
        return n;
    }
    std::string rootfs(const std::string& n) {
        return TestRoot::get().dir + "/state/containers/" + n + "/rootfs";
    }
    std::string work;
};

// 1 GiB, sparse but for 16 chunks of 1 MiB of data spread over it (the machine's disk takes
// it; the chunks make a shifted or truncated copy differ).
std::string make_big_file(const std::string& path) {
    Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    EXPECT_TRUE(f.valid());
    std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 16; i++) {
        std::fill(chunk.begin(), chunk.end(), static_cast<char>('a' + i));
        off_t at = static_cast<off_t>(i) * (64 << 20) + i * 4099;
        EXPECT_EQ(::pwrite(f.get(), chunk.data(), chunk.size(), at), ssize_t(chunk.size()));
    }
    EXPECT_EQ(::ftruncate(f.get(), off_t(1) << 30), 0);
    return path;
}

TEST_F(FilesTest, ALargeFileRoundTripsWithModeAndOwner) {
    std::string n = make("fbig");
    std::string big = make_big_file(work + "/big");
    int st = -1;
    std::string out = ctl(
        "file push " + big + " " + n + "/opt/data/big -p --uid 1000 --gid 1001 --mode 0640", &st);
    ASSERT_EQ(st, 0) << out;
    struct stat in {};
    ASSERT_EQ(::stat((rootfs(n) + "/opt/data/big").c_str(), &in), 0);
    EXPECT_EQ(in.st_size, off_t(1) << 30);
    EXPECT_EQ(in.st_mode & 07777, 0640u);
    EXPECT_EQ(in.st_uid, 1000u) << "on disk the rootfs holds the container's own ids";
    EXPECT_EQ(in.st_gid, 1001u);
    out = ctl("file pull " + n + "/opt/data/big " + work + "/back", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(sh("cmp " + big + " " + work + "/back && echo same"), "same\n");
    struct stat back {};
    ASSERT_EQ(::stat((work + "/back").c_str(), &back), 0);
    EXPECT_EQ(back.st_mode & 07777, 0640u);
    EXPECT_EQ(back.st_uid, 1000u);
    EXPECT_EQ(back.st_gid, 1001u);
    // Into an existing directory: the source's name, its mode.
    write_file_atomic(work + "/small", "small\n", 0751);
    out = ctl("file push " + work + "/small " + n + "/opt/data", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(read_text(rootfs(n) + "/opt/data/small"), "small\n");
    ASSERT_EQ(::stat((rootfs(n) + "/opt/data/small").c_str(), &in), 0);
    EXPECT_EQ(in.st_mode & 07777, 0751u);
    EXPECT_EQ(in.st_uid, 0u);
    out = ctl("file push " + work + "/small " + n + "/no/such/dir/x", &st);
    EXPECT_NE(st, 0) << "a missing directory was made without -p";
    out = ctl("file push " + work + "/small " + n + "/x --uid 70000", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "outside the container's range")) << out;
}

// Symlinks in the guest's tree resolve inside it, as the guest would see them: neither a
// pull nor a push through one reaches the host's /etc.
TEST_F(FilesTest, SymlinksInTheContainerNeverLeadOut) {
    std::string host_shadow = read_text("/etc/shadow");
    if (host_shadow.empty())
        GTEST_SKIP() << "no /etc/shadow on this host";
    std::string n = make("flink");
    std::string r = rootfs(n);
    write_file_atomic(r + "/etc/shadow", "guest's shadow\n", 0640);
    ASSERT_EQ(::symlink("/etc/shadow", (r + "/abs-shadow").c_str()), 0);
    ASSERT_EQ(::symlink("../../../../../../../../etc/shadow", (r + "/rel-shadow").c_str()), 0);
    ASSERT_EQ(::symlink("/etc", (r + "/etc-dir").c_str()), 0);
    int st = -1;
    for (const char* link : {"abs-shadow", "rel-shadow", "etc-dir/shadow"}) {
        std::string out = ctl("file pull " + n + "/" + link + " " + work + "/pulled", &st);
        ASSERT_EQ(st, 0) << out;
        std::string got = read_text(work + "/pulled");
        EXPECT_EQ(got, "guest's shadow\n") << link;
        EXPECT_FALSE(got == host_shadow) << link << " led to the host's /etc/shadow";
    }
    // Push through a symlinked directory: lands in the guest's /etc.
    write_file_atomic(work + "/payload", "pushed\n", 0644);
    std::string out =
        ctl("file push " + work + "/payload " + n + "/etc-dir/lodge-test-pushed", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(read_text(r + "/etc/lodge-test-pushed"), "pushed\n");
    EXPECT_FALSE(exists("/etc/lodge-test-pushed")) << "a push wrote into the host's /etc";
    ::unlink("/etc/lodge-test-pushed");
    // Push onto the symlink itself: the link is replaced, its target (wherever) untouched.
    out = ctl("file push " + work + "/payload " + n + "/abs-shadow", &st);
    ASSERT_EQ(st, 0) << out;
    struct stat l {};
    ASSERT_EQ(::lstat((r + "/abs-shadow").c_str(), &l), 0);
    EXPECT_TRUE(S_ISREG(l.st_mode));
    EXPECT_EQ(read_text("/etc/shadow"), host_shadow);
    EXPECT_EQ(read_text(r + "/etc/shadow"), "guest's shadow\n");
    // A fifo is never opened.
    ASSERT_EQ(::mkfifo((r + "/fifo").c_str(), 0644), 0);
    out = ctl("file pull " + n + "/fifo " + work + "/fifo-out", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "not a regular file")) << out;
}

// Pushed into a running unprivileged container as 1000:1000, the file is 1000:1000 inside.
TEST_F(FilesTest, PushIntoARunningUnprivilegedContainerShowsTheOwnerInside) {
    std::string n = make("frun");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    ASSERT_EQ(st, 0) << out;
    write_file_atomic(work + "/owned", "owned\n", 0600);
    out =
        ctl("file push " + work + "/owned " + n + "/home/user/owned -p --uid 1000 --gid 1000", &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("exec " + n + " -- /bin/stat -c %u:%g:%a /home/user/owned", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(out, "1000:1000:600\n");
    EXPECT_EQ(ctl("exec " + n + " -- /bin/cat /home/user/owned"), "owned\n");
    // And a file the guest made comes out with the guest's ids.
    ctl("exec " + n + " -- /bin/sh -c 'echo made > /made && chown 33:44 /made'");
    out = ctl("file pull " + n + "/made " + work + "/made", &st);
    ASSERT_EQ(st, 0) << out;
    struct stat m {};
    ASSERT_EQ(::stat((work + "/made").c_str(), &m), 0);
    EXPECT_EQ(m.st_uid, 33u);
    EXPECT_EQ(m.st_gid, 44u);
    EXPECT_EQ(read_text(work + "/made"), "made\n");
    ctl("stop --force " + n);
}

uid_t owner_of(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? st.st_uid : uid_t(-1);
}

// push -p into a rootfs shifted on disk (no idmapped mounts): the directories it makes are the
// container's (its root, or the --uid/--gid given), as the guest sees them. They were the
// host's root's, which the guest sees as nobody (65534) and its root cannot change.
TEST_F(FilesTest, PushWithParentsIntoAShiftedRootfsMakesTheContainersDirectories) {
    daemon.reset();
    ::setenv("LODGE_IDMAP", "shift", 1); // what filesystems without idmapped mounts get
    daemon = std::make_unique<Lodged>();
    ::unsetenv("LODGE_IDMAP");
    ASSERT_TRUE(daemon->wait_ready());
    std::string n = make("fshift");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    uid_t base = owner_of(rootfs(n) + "/bin");
    if (base == 0 || base == uid_t(-1))
        GTEST_SKIP() << "the rootfs was not shifted on disk";
    write_file_atomic(work + "/f", "f\n", 0644);
    out = ctl("file push " + work + "/f " + n + "/deep/er/f -p --uid 1000 --gid 1001", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + n + " -- /bin/stat -c %u:%g:%a /deep /deep/er /deep/er/f"),
              "1000:1001:755\n1000:1001:755\n1000:1001:644\n");
    EXPECT_EQ(owner_of(rootfs(n) + "/deep/er"), base + 1000) << "not the container's id on disk";
    out = ctl("file push " + work + "/f " + n + "/other/dir/f -p", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + n + " -- /bin/stat -c %u:%g /other /other/dir"), "0:0\n0:0\n");
    // The guest's root may change what it was given.
    out = ctl("exec " + n + " -- /bin/chmod 700 /other", &st);
    EXPECT_EQ(st, 0) << out;
    ctl("stop --force " + n);
}

// push -p through symlinks in the guest's tree that point at a host path: the directories are
// made inside the container's rootfs, where the guest would resolve them, never on the host;
// through a dangling one nothing is made (as mkdir -p in the guest).
TEST_F(FilesTest, PushWithParentsThroughAnEscapingSymlinkStaysInTheRootfs) {
    std::string n = make("fescape");
    std::string host = work + "/host-target";
    ASSERT_EQ(mkdir_p(host, 0755), 0);
    ASSERT_EQ(mkdir_p(rootfs(n) + host, 0755), 0); // the same path inside
    ASSERT_EQ(::symlink(host.c_str(), (rootfs(n) + "/escape").c_str()), 0);
    ASSERT_EQ(::symlink(("../../../../../.." + host).c_str(), (rootfs(n) + "/up").c_str()), 0);
    ASSERT_EQ(::symlink((host + "/missing").c_str(), (rootfs(n) + "/dangling").c_str()), 0);
    ASSERT_EQ(mkdir_p(host + "/missing", 0755), 0); // exists on the host only
    write_file_atomic(work + "/f", "f\n", 0644);
    int st = -1;
    for (const char* via : {"/escape", "/up"}) {
        std::string out = ctl("file push " + work + "/f " + n + via + "/sub/f -p", &st);
        ASSERT_EQ(st, 0) << via << ": " << out;
        EXPECT_FALSE(exists(host + "/sub")) << via << ": a directory was made on the host";
        EXPECT_EQ(read_text(rootfs(n) + host + "/sub/f"), "f\n") << via;
        ASSERT_EQ(remove_tree(rootfs(n) + host + "/sub"), 0);
    }
    std::string out = ctl("file push " + work + "/f " + n + "/dangling/sub/f -p", &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_FALSE(exists(host + "/missing/sub")) << "a directory was made on the host";
    EXPECT_FALSE(exists(rootfs(n) + host + "/missing"));
}

// file mount: sshfs speaks SFTP with the guest's sftp-server, run inside by lodgectl exec; the
// guest's files, owners as the guest has them, and writes land as the guest's root. Without an
// sftp-server in the guest, it says what to install.
TEST_F(FilesTest, MountShowsTheContainersFilesThroughSshfs) {
    if (sh("command -v sshfs").empty())
        GTEST_SKIP() << "sshfs is not installed";
    if (::access("/dev/fuse", R_OK | W_OK) != 0)
        GTEST_SKIP() << "no /dev/fuse";
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (!tarball || !exists(tarball))
        GTEST_SKIP() << "no Debian rootfs tarball (scripts/test.sh sets LODGE_DEBIAN_TARBALL)";
    std::string mnt = work + "/mnt";
    ASSERT_EQ(mkdir_p(mnt, 0755), 0);
    int st = -1;
    std::string bare = make("fmountbb");
    std::string out = ctl("file mount " + bare + "/ " + mnt, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "openssh-sftp-server")) << out;

    std::string n = unique_name("fmount");
    created.push_back(n);
    out = ctl("create " + n + " " + tarball, &st);
    ASSERT_EQ(st, 0) << out;
    std::string server = rootfs(n) + "/usr/lib/openssh/sftp-server";
    if (!exists(server)) { // the host's build of the same Debian release
        ASSERT_EQ(mkdir_p(rootfs(n) + "/usr/lib/openssh", 0755), 0);
        ASSERT_EQ(sh("cp /usr/lib/openssh/sftp-server " + server + " && echo ok"), "ok\n");
    }
    out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    out =
        ctl("exec " + n + " -- /bin/sh -c 'echo guest > /root/m && chown 1000:1001 /root/m'", &st);
    ASSERT_EQ(st, 0) << out;
    pid_t mounter = ::fork();
    if (mounter == 0) {
        std::string ctl_path = env_path("LODGE_LODGECTL");
        ::execl(ctl_path.c_str(), ctl_path.c_str(), "file", "mount", (n + "/root").c_str(),
                mnt.c_str(), nullptr);
        _exit(127);
    }
    ASSERT_GT(mounter, 0);
    EXPECT_TRUE(wait_until([&] { return read_text(mnt + "/m") == "guest\n"; }, 60));
    struct stat m {};
    EXPECT_EQ(::stat((mnt + "/m").c_str(), &m), 0);
    EXPECT_EQ(m.st_uid, 1000u);
    EXPECT_EQ(m.st_gid, 1001u);
    {
        Fd f(::open((mnt + "/back").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
        ASSERT_TRUE(f.valid());
        ASSERT_EQ(::write(f.get(), "host\n", 5), 5);
    }
    EXPECT_EQ(ctl("exec " + n + " -- /bin/stat -c %u:%g:%a /root/back"), "0:0:640\n");
    EXPECT_EQ(ctl("exec " + n + " -- /bin/cat /root/back"), "host\n");
    sh("fusermount3 -u " + mnt + " || umount -l " + mnt);
    int status = -1;
    ASSERT_EQ(::waitpid(mounter, &status, 0), mounter);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    ctl("stop --force " + n);
}

TEST_F(FilesTest, RecursiveCopiesDeleteAndEdit) {
    std::string n = make("frec");
    std::string tree = work + "/tree";
    ASSERT_EQ(mkdir_p(tree + "/a/b", 0755), 0);
    write_file_atomic(tree + "/a/b/file", "deep\n", 0600);
    write_file_atomic(tree + "/top", "top\n", 0644);
    ASSERT_EQ(::symlink("a/b/file", (tree + "/link").c_str()), 0);
    int st = -1;
    std::string out = ctl("file push -r -p " + tree + " " + n + "/srv", &st);
    ASSERT_EQ(st, 0) << out;
    std::string r = rootfs(n);
    EXPECT_EQ(read_text(r + "/srv/tree/a/b/file"), "deep\n");
    char target[64] = {};
    EXPECT_GT(::readlink((r + "/srv/tree/link").c_str(), target, sizeof target - 1), 0);
    EXPECT_STREQ(target, "a/b/file");
    out = ctl("file pull -r " + n + "/srv/tree " + work + "/back", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(sh("diff -r --no-dereference " + tree + " " + work + "/back && echo same"), "same\n");
    out = ctl("file push " + tree + " " + n + "/srv2", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "use -r")) << out;

    // edit, not on a terminal: the new content from stdin; owner and mode stay.
    ASSERT_EQ(::chown((r + "/srv/tree/top").c_str(), 1000, 1000), 0);
    ASSERT_EQ(::chmod((r + "/srv/tree/top").c_str(), 0604), 0);
    out =
        sh("echo edited | " + env_path("LODGE_LODGECTL") + " file edit " + n + "/srv/tree/top 2>&1",
           &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(read_text(r + "/srv/tree/top"), "edited\n");
    struct stat e {};
    ASSERT_EQ(::stat((r + "/srv/tree/top").c_str(), &e), 0);
    EXPECT_EQ(e.st_uid, 1000u);
    EXPECT_EQ(e.st_mode & 07777, 0604u);

    EXPECT_EQ(ctl("file delete " + n + "/srv/tree/top " + n + "/srv/tree/link", &st), "");
    EXPECT_FALSE(exists(r + "/srv/tree/top"));
    EXPECT_FALSE(exists(r + "/srv/tree/link"));
    EXPECT_TRUE(exists(r + "/srv/tree/a/b/file")) << "a symlink's target was deleted";
    out = ctl("file delete " + n + "/srv/tree/a", &st);
    EXPECT_NE(st, 0) << "a directory that is not empty was deleted";
    out = ctl("file delete " + n + "/", &st);
    EXPECT_NE(st, 0);
}

} // namespace

namespace {

// config edit: the whole definition as YAML, checked by lodged before anything changes.
TEST_F(FilesTest, ConfigEditTakesValidYamlAndRefusesBadEdits) {
    std::string n = make("cfgedit");
    int st = -1;
    ctl("config set " + n + " user.before=1");
    std::string shown = ctl("config show " + n + " --expanded", &st);
    ASSERT_EQ(st, 0) << shown;
    EXPECT_TRUE(contains(shown, "config:\n")) << shown;
    EXPECT_TRUE(contains(shown, "  user.before: 1\n")) << shown;
    EXPECT_TRUE(contains(shown, "devices: {}\n")) << shown;
    std::string lodgectl = env_path("LODGE_LODGECTL");
    std::string yaml = work + "/edit.yaml";
    // Not on a terminal: the YAML comes from stdin. volatile.* keys left out stay as they are.
    write_file_atomic(yaml,
                      "config:\n  user.after: \"two words: yes\"\n  limits.memory: 256MiB\n"
                      "devices:\n  eth0:\n    type: nic\n    nictype: p2p\n",
                      0644);
    std::string out = sh(lodgectl + " config edit " + n + " <" + yaml + " 2>&1", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("config get " + n + " user.after"), "two words: yes\n");
    EXPECT_EQ(ctl("config get " + n + " user.before"), "\n");
    EXPECT_NE(ctl("config get " + n + " volatile.cloud-init.instance-id"), "\n");
    EXPECT_TRUE(contains(ctl("device list " + n), "eth0")) << ctl("device list " + n);
    // Bad edits change nothing and say why.
    for (auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
             {"config:\n  no.such.key: x\n", "no.such.key"},
             {"config:\n  limits.memory: lots\n", "limits.memory"},
             {"config:\n  volatile.cloud-init.instance-id: mine\n", "set by lodge only"},
             {"config:\n  user.a: \"unterminated\n", "Invalid YAML"},
             {"config: [a, b]\n", "must be a mapping"},
             {"profiles:\n  - default\n", "unknown section"},
             {"devices:\n  d:\n    type: nonsense\n", "nonsense"}}) {
        write_file_atomic(yaml, bad, 0644);
        out = sh(lodgectl + " config edit " + n + " <" + yaml + " 2>&1", &st);
        EXPECT_NE(st, 0) << bad;
        EXPECT_TRUE(contains(out, why)) << bad << " -> " << out;
        EXPECT_EQ(ctl("config get " + n + " user.after"), "two words: yes\n") << bad;
    }
}

// On a terminal: a bad edit is shown and the editor opens again on it, as lxc config edit.
TEST_F(FilesTest, ConfigEditReopensTheEditorOnABadEdit) {
    int st = -1;
    sh("command -v script", &st);
    if (st != 0)
        GTEST_SKIP() << "script(1) is not installed";
    std::string n = make("cfgtty");
    std::string editor = work + "/editor.sh", count = work + "/runs";
    // First run: a bad key. Second run: the bad key fixed.
    write_file_atomic(editor,
                      "#!/bin/sh\necho x >> " + count + "\nif [ $(wc -l < " + count +
                          ") = 1 ]; then printf 'config:\\n  bad.key: 1\\n' > \"$1\"; "
                          "else printf 'config:\\n  user.fixed: yes\\n' > \"$1\"; fi\n",
                      0755);
    std::string out = sh("printf '\\n' | EDITOR=" + editor + " timeout 120 script -qec '" +
                             env_path("LODGE_LODGECTL") + " config edit " + n + "' /dev/null 2>&1",
                         &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "bad.key")) << out;
    EXPECT_TRUE(contains(out, "open the editor again")) << out;
    EXPECT_EQ(read_text(count), "x\nx\n");
    EXPECT_EQ(ctl("config get " + n + " user.fixed"), "yes\n");
}

} // namespace
