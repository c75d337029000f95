// Rootfs sources (CONTRACT.md §3): built-in busybox image, directory copy, plain tarballs, LXD
// unified and split images, hostile tarballs. Runs as root (ownership, mknod, xattrs).
#include "common/fileio.hpp"
#include "image/builtin-image.hpp"
#include "image/import.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <map>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace lodge;
using namespace lodge::daemon;

namespace {

#define SKIP_UNLESS_ROOT()                                                                         \
    do {                                                                                           \
        if (::geteuid() != 0)                                                                      \
            GTEST_SKIP() << "needs root";                                                          \
    } while (0)

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/lodge-test-import-XXXXXX";
        char* p = ::mkdtemp(tmpl);
        if (p)
            path_ = p;
    }
    ~TempDir() {
        if (!path_.empty())
            remove_tree(path_);
    }
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

private:
    std::string path_;
};

bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}

struct stat lst(const std::string& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) < 0)
        ADD_FAILURE() << "lstat " << p << ": " << std::strerror(errno);
    return st;
}

std::string slurp(const std::string& p) {
    std::string s;
    EXPECT_EQ(read_file(p, s), 0) << p;
    return s;
}

void spit(const std::string& p, const std::string& text, mode_t mode = 0644) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ASSERT_GE(fd, 0) << p;
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

std::string link_target(const std::string& p) {
    char buf[4096];
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
    return n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, n);
}

std::string get_xattr(const std::string& p, const char* name) {
    char buf[1024];
    ssize_t n = ::lgetxattr(p.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, n);
}

int sh(const std::string& cmd) {
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int open_ro(const std::string& p) {
    return ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
}

// A raw security.capability value (VFS_CAP_REVISION_2, effective, cap_net_raw permitted).
std::string net_raw_capability() {
    struct vfs_cap_data cap {};
    cap.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
    cap.data[0].permitted = 1u << CAP_NET_RAW;
    return std::string(reinterpret_cast<const char*>(&cap), sizeof cap);
}

// A source tree exercising what a rootfs copy must keep.
void make_source_tree(const std::string& d, bool with_socket) {
    for (const char* sub : {"bin", "etc", "dev", "run", "private", "usr", "usr/lib"})
        ASSERT_EQ(::mkdir((d + "/" + sub).c_str(), 0755), 0) << sub;
    spit(d + "/etc/file", "hello\n", 0644);
    ASSERT_EQ(::chown((d + "/etc/file").c_str(), 1234, 5678), 0);
    ASSERT_EQ(::chmod((d + "/etc/file").c_str(), 04750), 0);
    ASSERT_EQ(::setxattr((d + "/etc/file").c_str(), "user.test", "value", 5, 0), 0);
    struct timespec times[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (d + "/etc/file").c_str(), times, 0), 0);
    ASSERT_EQ(::link((d + "/etc/file").c_str(), (d + "/etc/hard").c_str()), 0);

    spit(d + "/bin/ping", "#!/bin/sh\n", 0755);
    std::string cap = net_raw_capability();
    ASSERT_EQ(
        ::setxattr((d + "/bin/ping").c_str(), "security.capability", cap.data(), cap.size(), 0), 0);

    ASSERT_EQ(::symlink("/etc/passwd", (d + "/abs-link").c_str()), 0);
    ASSERT_EQ(::symlink("/etc", (d + "/dir-link").c_str()), 0);
    ASSERT_EQ(::symlink("../etc/file", (d + "/usr/rel-link").c_str()), 0);
    ASSERT_EQ(::lchown((d + "/usr/rel-link").c_str(), 7, 8), 0);

    ASSERT_EQ(::mknod((d + "/dev/null2").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::chmod((d + "/dev/null2").c_str(), 0666), 0);
    ASSERT_EQ(::chown((d + "/dev/null2").c_str(), 0, 5), 0);
    ASSERT_EQ(::mkfifo((d + "/run/fifo").c_str(), 0600), 0);
    ASSERT_EQ(::chmod((d + "/run/fifo").c_str(), 0620), 0);

    spit(d + "/private/secret", "s3cret", 0600);
    ASSERT_EQ(::chown((d + "/private").c_str(), 42, 43), 0);
    ASSERT_EQ(::chmod((d + "/private").c_str(), 0700), 0);

    if (with_socket) {
        int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(s, 0);
        struct sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        std::string sp = d + "/run/sock";
        ASSERT_LT(sp.size(), sizeof sa.sun_path);
        std::strcpy(sa.sun_path, sp.c_str());
        ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        ::close(s);
    }
    ASSERT_EQ(::chmod(d.c_str(), 0751), 0);
}

// What make_source_tree made, as found in an imported rootfs. `times` checks ns timestamps.
void check_imported_tree(const std::string& r, bool times) {
    struct stat st = lst(r + "/etc/file");
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 04750u);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 5678u);
    EXPECT_EQ(slurp(r + "/etc/file"), "hello\n");
    EXPECT_EQ(get_xattr(r + "/etc/file", "user.test"), "value");
    EXPECT_EQ(st.st_mtim.tv_sec, 1100000000);
    if (times) {
        EXPECT_EQ(st.st_mtim.tv_nsec, 987654321);
    }
    struct stat hard = lst(r + "/etc/hard");
    EXPECT_EQ(hard.st_ino, st.st_ino) << "hard link not preserved";
    EXPECT_EQ(st.st_nlink, 2u);

    EXPECT_EQ(get_xattr(r + "/bin/ping", "security.capability"), net_raw_capability());
    EXPECT_EQ(lst(r + "/bin/ping").st_mode & 07777, 0755u);

    EXPECT_TRUE(S_ISLNK(lst(r + "/abs-link").st_mode));
    EXPECT_EQ(link_target(r + "/abs-link"), "/etc/passwd");
    EXPECT_TRUE(S_ISLNK(lst(r + "/dir-link").st_mode));
    EXPECT_EQ(link_target(r + "/dir-link"), "/etc");
    EXPECT_EQ(link_target(r + "/usr/rel-link"), "../etc/file");
    EXPECT_EQ(lst(r + "/usr/rel-link").st_uid, 7u);
    EXPECT_EQ(lst(r + "/usr/rel-link").st_gid, 8u);

    st = lst(r + "/dev/null2");
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(1, 3));
    EXPECT_EQ(st.st_mode & 07777, 0666u);
    EXPECT_EQ(st.st_gid, 5u);
    st = lst(r + "/run/fifo");
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0620u);

    st = lst(r + "/private");
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(st.st_uid, 42u);
    EXPECT_EQ(st.st_gid, 43u);
    EXPECT_EQ(slurp(r + "/private/secret"), "s3cret");
    EXPECT_EQ(lst(r).st_mode & 07777, 0751u);
}

// Runs import_tarball on `path`, optionally through a pipe (not seekable).
int import_file(const std::string& path, const std::string& rootfs, ImportResult& res,
                std::string& error, bool through_pipe = false,
                std::vector<ImportProgress>* progress = nullptr) {
    ProgressFn fn;
    if (progress)
        fn = [progress](const ImportProgress& p) { progress->push_back(p); };
    if (!through_pipe) {
        int fd = open_ro(path);
        EXPECT_GE(fd, 0) << path;
        int r = import_tarball(fd, rootfs, res, fn, error);
        ::close(fd);
        return r;
    }
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    std::thread writer([&path, wfd = p[1]] {
        std::string data;
        read_file(path, data);
        size_t off = 0;
        while (off < data.size()) {
            ssize_t n = ::write(wfd, data.data() + off, data.size() - off);
            if (n <= 0)
                break;
            off += static_cast<size_t>(n);
        }
        ::close(wfd);
    });
    int r = import_tarball(p[0], rootfs, res, fn, error);
    ::close(p[0]); // unblocks the writer if the import stopped early (SIGPIPE is ignored)
    writer.join();
    return r;
}

// Crafted archives, written with libarchive (GNU tar refuses to make some of these).
struct Entry {
    std::string name;
    mode_t type = AE_IFREG;
    std::string data = {};
    std::string symlink = {};
    std::string hardlink = {};
    std::map<std::string, std::string> xattrs = {};
    unsigned long fflags = 0; // FS_*_FL bits, as libarchive keeps them on Linux
};
Entry dir(const std::string& name) {
    return Entry{name, AE_IFDIR};
}
Entry file(const std::string& name, const std::string& data) {
    return Entry{name, AE_IFREG, data};
}
Entry sym(const std::string& name, const std::string& target) {
    return Entry{name, AE_IFLNK, "", target};
}
Entry hard(const std::string& name, const std::string& target) {
    return Entry{name, AE_IFREG, "", "", target};
}

void write_tar(const std::string& path, const std::vector<Entry>& entries, bool gzip = false) {
    struct archive* a = archive_write_new();
    ASSERT_NE(a, nullptr);
    archive_write_set_format_pax_restricted(a);
    if (gzip)
        archive_write_add_filter_gzip(a);
    ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK) << archive_error_string(a);
    for (const Entry& e : entries) {
        struct archive_entry* ae = archive_entry_new();
        archive_entry_set_pathname(ae, e.name.c_str());
        archive_entry_set_mtime(ae, 1600000000, 0);
        if (!e.hardlink.empty()) {
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_hardlink(ae, e.hardlink.c_str());
            archive_entry_set_size(ae, 0);
        } else {
            archive_entry_set_filetype(ae, e.type);
            archive_entry_set_perm(ae, e.type == AE_IFDIR ? 0755 : 0644);
            if (e.type == AE_IFLNK)
                archive_entry_set_symlink(ae, e.symlink.c_str());
            archive_entry_set_size(ae, e.type == AE_IFREG ? e.data.size() : 0);
        }
        for (auto& [name, value] : e.xattrs)
            archive_entry_xattr_add_entry(ae, name.c_str(), value.data(), value.size());
        if (e.fflags)
            archive_entry_set_fflags(ae, e.fflags, 0);
        ASSERT_EQ(archive_write_header(a, ae), ARCHIVE_OK) << archive_error_string(a);
        if (e.type == AE_IFREG && e.hardlink.empty() && !e.data.empty()) {
            ASSERT_EQ(archive_write_data(a, e.data.data(), e.data.size()),
                      static_cast<la_ssize_t>(e.data.size()));
        }
        archive_entry_free(ae);
    }
    ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

const char* const metadata_yaml = R"yaml(architecture: x86_64
creation_date: 1700000000
properties:
  os: Debian
  release: bookworm
  description: "Debian bookworm amd64 (20231120_05:24)"
  variant: default
templates:
  /etc/hostname:
    when:
      - create
      - copy
    template: hostname.tpl
)yaml";

void check_image_keys(const ImportResult& res) {
    KeyMap want = {{"image.architecture", "x86_64"},
                   {"image.os", "Debian"},
                   {"image.release", "bookworm"},
                   {"image.description", "Debian bookworm amd64 (20231120_05:24)"},
                   {"image.variant", "default"}};
    EXPECT_EQ(res.image_keys, want);
}

// An LXD unified image tree: metadata.yaml, rootfs/, templates/.
void make_image_dir(const std::string& d) {
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
    spit(d + "/metadata.yaml", metadata_yaml);
    ASSERT_EQ(::mkdir((d + "/rootfs").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((d + "/rootfs/bin").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((d + "/rootfs/etc").c_str(), 0755), 0);
    spit(d + "/rootfs/bin/hello", "#!/bin/sh\necho hi\n", 0755);
    ASSERT_EQ(::link((d + "/rootfs/bin/hello").c_str(), (d + "/rootfs/bin/hi").c_str()), 0);
    spit(d + "/rootfs/etc/os-release", "ID=debian\n");
    ASSERT_EQ(::mkdir((d + "/templates").c_str(), 0755), 0);
    spit(d + "/templates/hostname.tpl", "{{ container.name }}\n");
}

void check_unified_rootfs(const std::string& r) {
    EXPECT_EQ(slurp(r + "/bin/hello"), "#!/bin/sh\necho hi\n");
    EXPECT_EQ(lst(r + "/bin/hello").st_mode & 07777, 0755u);
    EXPECT_EQ(lst(r + "/bin/hi").st_ino, lst(r + "/bin/hello").st_ino);
    EXPECT_EQ(slurp(r + "/etc/os-release"), "ID=debian\n");
    EXPECT_FALSE(exists(r + "/rootfs"));
    EXPECT_FALSE(exists(r + "/metadata.yaml"));
    EXPECT_FALSE(exists(r + "/templates"));
}

class Import : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0)
            GTEST_SKIP() << "needs root";
        ASSERT_FALSE(tmp.path().empty());
        rootfs = tmp / "rootfs";
        ASSERT_EQ(::mkdir(rootfs.c_str(), 0755), 0);
        std::signal(SIGPIPE, SIG_IGN);
    }
    TempDir tmp;
    std::string rootfs;
    std::string error;
};

// ---- built-in image ----

TEST_F(Import, BuiltinLayout) {
    if (!exists(builtin_busybox_path))
        GTEST_SKIP() << "no /bin/busybox (busybox-static)";
    ASSERT_EQ(import_builtin(rootfs, error), 0) << error;

    EXPECT_EQ(link_target(rootfs + "/sbin/init"), "../bin/busybox");
    EXPECT_EQ(link_target(rootfs + "/bin/sh"), "busybox");
    EXPECT_EQ(link_target(rootfs + "/usr/sbin/chroot"), "../../bin/busybox");
    EXPECT_EQ(link_target(rootfs + "/sbin/reboot"), "../bin/busybox");
    struct stat bb = lst(rootfs + "/bin/busybox"), host = lst(builtin_busybox_path);
    EXPECT_TRUE(S_ISREG(bb.st_mode));
    EXPECT_EQ(bb.st_mode & 07777, 0755u);
    EXPECT_EQ(bb.st_size, host.st_size);
    EXPECT_EQ(lst(rootfs + "/tmp").st_mode & 07777, 01777u);
    for (const char* d : {"dev", "mnt", "proc", "root", "sys", "run", "var/log", "etc/init.d"})
        EXPECT_TRUE(S_ISDIR(lst(rootfs + "/" + d).st_mode)) << d;
    std::string inittab = slurp(rootfs + "/etc/inittab");
    EXPECT_NE(inittab.find("::sysinit:/etc/init.d/rcS\n"), std::string::npos);
    EXPECT_NE(inittab.find("::ctrlaltdel:/sbin/reboot\n"), std::string::npos);
    EXPECT_EQ(lst(rootfs + "/etc/init.d/rcS").st_mode & 07777, 0755u);
    EXPECT_EQ(slurp(rootfs + "/etc/passwd").rfind("root:x:0:0:", 0), 0u);
    EXPECT_EQ(lst(rootfs).st_mode & 07777, 0755u);

    // The image stays cheap to make (it was a < 0.3 s timing check, which a loaded machine
    // broke): one copy of busybox, everything else links and a few small text files.
    static off_t regular_bytes;
    static int busybox_copies;
    regular_bytes = 0;
    busybox_copies = 0;
    ASSERT_EQ(::nftw(
                  rootfs.c_str(),
                  [](const char*, const struct stat* st, int type, struct FTW*) {
                      if (type == FTW_F && S_ISREG(st->st_mode)) {
                          regular_bytes += st->st_size;
                          busybox_copies += st->st_size == lst(builtin_busybox_path).st_size;
                      }
                      return 0;
                  },
                  16, FTW_PHYS),
              0);
    EXPECT_EQ(busybox_copies, 1);
    EXPECT_LT(regular_bytes, host.st_size + 64 * 1024);
}

// Walks a tree into "path type mode target-or-content" lines, sorted by readdir order-free path.
void describe(const std::string& root, const std::string& rel,
              std::map<std::string, std::string>& out) {
    std::string p = rel.empty() ? root : root + "/" + rel;
    struct stat st = lst(p);
    char head[64];
    std::snprintf(head, sizeof head, "%o %u:%u ", st.st_mode, st.st_uid, st.st_gid);
    std::string desc = head;
    if (S_ISLNK(st.st_mode))
        desc += "-> " + link_target(p);
    else if (S_ISREG(st.st_mode))
        desc += slurp(p);
    out[rel] = desc;
    if (!S_ISDIR(st.st_mode))
        return;
    DIR* d = ::opendir(p.c_str());
    ASSERT_NE(d, nullptr);
    while (struct dirent* de = ::readdir(d)) {
        if (std::strcmp(de->d_name, ".") && std::strcmp(de->d_name, ".."))
            describe(root, rel.empty() ? de->d_name : rel + "/" + de->d_name, out);
    }
    ::closedir(d);
}

TEST_F(Import, BuiltinMatchesScript) {
    const char* fixtures = std::getenv("LODGE_FIXTURES");
    if (!fixtures || !exists(builtin_busybox_path))
        GTEST_SKIP() << "needs LODGE_FIXTURES and /bin/busybox";
    std::string script_dir = tmp / "script";
    ASSERT_EQ(sh(std::string(fixtures) + "/make-busybox-rootfs.sh " + script_dir), 0);
    ASSERT_EQ(import_builtin(rootfs, error), 0) << error;
    std::map<std::string, std::string> a, b;
    describe(script_dir, "", a);
    describe(rootfs, "", b);
    EXPECT_EQ(a.size(), b.size());
    for (auto& [path, desc] : a) {
        auto it = b.find(path);
        if (it == b.end())
            ADD_FAILURE() << "missing " << path;
        else
            EXPECT_EQ(it->second, desc) << path;
    }
    for (auto& [path, desc] : b)
        EXPECT_TRUE(a.count(path)) << "extra " << path;
}

TEST_F(Import, BuiltinRefusesBadBusybox) {
    EXPECT_EQ(make_busybox_rootfs("/bin/ls", rootfs, error), -EINVAL);
    EXPECT_NE(error.find("dynamically linked"), std::string::npos) << error;
    EXPECT_EQ(make_busybox_rootfs("/etc/passwd", rootfs, error), -EINVAL);
    EXPECT_NE(error.find("/etc/passwd"), std::string::npos) << error;
    EXPECT_EQ(make_busybox_rootfs(tmp / "no-busybox", rootfs, error), -ENOENT);
    EXPECT_NE(error.find("no-busybox"), std::string::npos) << error;
}

// ---- directory ----

TEST_F(Import, DirectoryKeepsEverything) {
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    make_source_tree(src, true);
    ASSERT_EQ(::lsetxattr((src + "/abs-link").c_str(), "trusted.lodge", "sym", 3, 0), 0);
    // A 16 MiB sparse file with data at both ends.
    {
        int fd = ::open((src + "/usr/lib/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, "head", 4, 0), 4);
        ASSERT_EQ(::pwrite(fd, "tail", 4, (16 << 20) - 4), 4);
        ::close(fd);
    }
    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::vector<ImportProgress> progress;
    int r = import_directory(
        fd, rootfs, [&](const ImportProgress& p) { progress.push_back(p); }, error);
    ::close(fd);
    ASSERT_EQ(r, 0) << error;
    check_imported_tree(rootfs, true);
    EXPECT_EQ(get_xattr(rootfs + "/abs-link", "trusted.lodge"), "<No data available>")
        << "trusted.* is the host's, not the image's";
    EXPECT_FALSE(exists(rootfs + "/run/sock")) << "sockets are skipped";

    struct stat sp = lst(rootfs + "/usr/lib/sparse");
    EXPECT_EQ(sp.st_size, 16 << 20);
    EXPECT_LT(sp.st_blocks * 512, 1 << 20) << "holes not kept";
    std::string data = slurp(rootfs + "/usr/lib/sparse");
    EXPECT_EQ(data.substr(0, 4), "head");
    EXPECT_EQ(data.substr(data.size() - 4), "tail");

    ASSERT_FALSE(progress.empty());
    EXPECT_GT(progress.back().bytes_total, uint64_t(16) << 20);
    EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
}

TEST_F(Import, DirectoryDoesNotCrossMounts) {
    // A private mount namespace for this process, so the test mounts never leak.
    if (::unshare(CLONE_NEWNS) < 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr))
        GTEST_SKIP() << "cannot make a mount namespace: " << std::strerror(errno);
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/mnt").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/bound").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/elsewhere").c_str(), 0755), 0);
    spit(src + "/elsewhere/file", "x");
    spit(src + "/keep", "keep");
    spit(src + "/file-target", "under");
    ASSERT_EQ(::mount("tmpfs", (src + "/mnt").c_str(), "tmpfs", 0, "mode=0711"), 0);
    spit(src + "/mnt/inside", "must not be copied");
    // Bind mounts of the same filesystem have the same st_dev: still not entered.
    ASSERT_EQ(
        ::mount((src + "/elsewhere").c_str(), (src + "/bound").c_str(), nullptr, MS_BIND, nullptr),
        0);
    ASSERT_EQ(
        ::mount((src + "/keep").c_str(), (src + "/file-target").c_str(), nullptr, MS_BIND, nullptr),
        0);

    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    int r = import_directory(fd, rootfs, nullptr, error);
    ::close(fd);
    ::umount2((src + "/file-target").c_str(), MNT_DETACH);
    ::umount2((src + "/bound").c_str(), MNT_DETACH);
    ::umount2((src + "/mnt").c_str(), MNT_DETACH);
    ASSERT_EQ(r, 0) << error;
    EXPECT_TRUE(S_ISDIR(lst(rootfs + "/mnt").st_mode));
    EXPECT_FALSE(exists(rootfs + "/mnt/inside"));
    EXPECT_TRUE(S_ISDIR(lst(rootfs + "/bound").st_mode));
    EXPECT_FALSE(exists(rootfs + "/bound/file"));
    EXPECT_EQ(slurp(rootfs + "/elsewhere/file"), "x");
    EXPECT_EQ(slurp(rootfs + "/keep"), "keep");
    EXPECT_FALSE(exists(rootfs + "/file-target")) << "a file mount point is skipped";
}

// ---- plain tarballs ----

TEST_F(Import, PlainTarballs) {
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    make_source_tree(src, false);
    struct Kind {
        const char* ext;
        const char* flag;
    };
    for (Kind k :
         {Kind{"tar", ""}, Kind{"tar.gz", "-z"}, Kind{"tar.xz", "-J"}, Kind{"tar.zst", "--zstd"}}) {
        SCOPED_TRACE(k.ext);
        std::string tarball = tmp / (std::string("root.") + k.ext);
        ASSERT_EQ(sh(std::string("tar --numeric-owner --xattrs --xattrs-include='*' ") + k.flag +
                     " -C " + src + " -cf " + tarball + " ."),
                  0);
        std::string dest = tmp / (std::string("dest-") + k.ext);
        ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
        ImportResult res;
        std::vector<ImportProgress> progress;
        ASSERT_EQ(import_file(tarball, dest, res, error, false, &progress), 0) << error;
        check_imported_tree(dest, false);
        EXPECT_TRUE(res.image_keys.empty());
        ASSERT_FALSE(progress.empty());
        EXPECT_EQ(progress.back().bytes_total, static_cast<uint64_t>(lst(tarball).st_size));
        EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
    }
    // Through a pipe: no total, same result.
    std::string dest = tmp / "dest-pipe";
    ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
    ImportResult res;
    std::vector<ImportProgress> progress;
    ASSERT_EQ(import_file(tmp / "root.tar.zst", dest, res, error, true, &progress), 0) << error;
    check_imported_tree(dest, false);
    ASSERT_FALSE(progress.empty());
    EXPECT_EQ(progress.back().bytes_total, 0u);
    EXPECT_GT(progress.back().bytes_done, 0u);
}

// A plain rootfs whose top directory happens to be called rootfs/ (no metadata.yaml) stays as is.
TEST_F(Import, RootfsDirWithoutMetadataIsPlain) {
    std::string tarball = tmp / "x.tar";
    write_tar(tarball, {dir("rootfs/"), file("rootfs/file", "data")});
    ImportResult res;
    ASSERT_EQ(import_file(tarball, rootfs, res, error), 0) << error;
    EXPECT_EQ(slurp(rootfs + "/rootfs/file"), "data");
    EXPECT_TRUE(res.image_keys.empty());
}

// ---- LXD images ----

TEST_F(Import, UnifiedImage) {
    std::string img = tmp / "img";
    make_image_dir(img);
    // rootfs/ listed before metadata.yaml, and after it.
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + " -cf " +
                 tmp / "rootfs-first.tar rootfs metadata.yaml templates"),
              0);
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + " -czf " +
                 tmp / "meta-first.tar.gz ./metadata.yaml ./templates ./rootfs"),
              0);
    int n = 0;
    for (const char* name : {"rootfs-first.tar", "meta-first.tar.gz"}) {
        for (bool pipe : {false, true}) {
            SCOPED_TRACE(std::string(name) + (pipe ? " via pipe" : ""));
            std::string dest = tmp / ("dest" + std::to_string(n++));
            ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
            ImportResult res;
            ASSERT_EQ(import_file(tmp / name, dest, res, error, pipe), 0) << error;
            check_image_keys(res);
            check_unified_rootfs(dest);
            EXPECT_EQ(lst(dest).st_mode & 07777, 0755u) << "rootfs/ entry's mode";
        }
    }
}

TEST_F(Import, SplitImage) {
    std::string img = tmp / "img";
    make_image_dir(img);
    ASSERT_EQ(sh("tar -C " + img + " -cJf " + tmp / "meta.tar.xz metadata.yaml templates"), 0);
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + "/rootfs -czf " + tmp / "rootfs.tar.gz ."), 0);
    int mfd = open_ro(tmp / "meta.tar.xz"), rfd = open_ro(tmp / "rootfs.tar.gz");
    ASSERT_GE(mfd, 0);
    ASSERT_GE(rfd, 0);
    ImportResult res;
    std::vector<ImportProgress> progress;
    int r = import_split_image(
        mfd, rfd, rootfs, res, [&](const ImportProgress& p) { progress.push_back(p); }, error);
    ASSERT_EQ(r, 0) << error;
    check_image_keys(res);
    check_unified_rootfs(rootfs);
    ASSERT_FALSE(progress.empty());
    uint64_t total = lst(tmp / "meta.tar.xz").st_size + lst(tmp / "rootfs.tar.gz").st_size;
    EXPECT_EQ(progress.back().bytes_total, total);
    EXPECT_EQ(progress.back().bytes_done, total);

    // Swapped: the "metadata tarball" has no metadata.yaml.
    std::string dest = tmp / "swapped";
    ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
    ASSERT_EQ(::lseek(mfd, 0, SEEK_SET), 0);
    ASSERT_EQ(::lseek(rfd, 0, SEEK_SET), 0);
    ImportResult res2;
    EXPECT_EQ(import_split_image(rfd, mfd, dest, res2, nullptr, error), -EINVAL);
    EXPECT_NE(error.find("no metadata.yaml"), std::string::npos) << error;
    ::close(mfd);
    ::close(rfd);
}

TEST_F(Import, BadMetadataYaml) {
    std::string tarball = tmp / "bad.tar";
    write_tar(tarball, {file("metadata.yaml", "properties: [unclosed\n  - x: {"), dir("rootfs/"),
                        file("rootfs/file", "x")});
    ImportResult res;
    EXPECT_EQ(import_file(tarball, rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("metadata.yaml"), std::string::npos) << error;
}

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

// ---- corrupt data ----

TEST_F(Import, CorruptData) {
    std::string junk = tmp / "junk.tar";
    std::string bytes(100000, '\0');
    for (size_t i = 0; i < bytes.size(); i++)
        bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
    spit(junk, bytes);
    ImportResult res;
    EXPECT_EQ(import_file(junk, rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("tarball"), std::string::npos) << error;

    // A gzip tarball cut in the middle of a file's data.
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    std::string big;
    for (int i = 0; i < 200000; i++)
        big += std::to_string(i * 7919) + "\n";
    spit(src + "/big", big);
    ASSERT_EQ(sh("tar -C " + src + " -czf " + tmp / "t.tar.gz ."), 0);
    std::string gz = slurp(tmp / "t.tar.gz");
    spit(tmp / "cut.tar.gz", gz.substr(0, gz.size() / 2));
    std::string dest = tmp / "dest-cut";
    ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
    EXPECT_EQ(import_file(tmp / "cut.tar.gz", dest, res, error), -EINVAL);
    EXPECT_NE(error.find("big"), std::string::npos) << error;

    // A squashfs image is named as such.
    spit(tmp / "rootfs.squashfs", std::string("hsqs") + std::string(4092, '\0'));
    EXPECT_EQ(import_file(tmp / "rootfs.squashfs", rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("squashfs"), std::string::npos) << error;

    // Empty input.
    spit(tmp / "empty.tar", "");
    EXPECT_EQ(import_file(tmp / "empty.tar", rootfs, res, error), -EINVAL);
    EXPECT_FALSE(error.empty());
}

// Timing on a real rootfs tarball (LODGE_IMPORT_BENCH=1; uses the integration tests' cached
// Debian image).
TEST_F(Import, BenchDebianTarball) {
    const char* path = "/var/cache/lodge-tests/debian-bookworm.tar.zst";
    if (!std::getenv("LODGE_IMPORT_BENCH") || !exists(path))
        GTEST_SKIP() << "set LODGE_IMPORT_BENCH=1 (needs " << path << ")";
    ImportResult res;
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(import_file(path, rootfs, res, error), 0) << error;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("import_tarball(%s): %.2f s\n", path, secs);
    EXPECT_TRUE(exists(rootfs + "/etc/os-release"));
    std::string copy = tmp / "copy";
    ASSERT_EQ(::mkdir(copy.c_str(), 0755), 0);
    int fd = ::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(import_directory(fd, copy, nullptr, error), 0) << error;
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ::close(fd);
    std::printf("import_directory(that rootfs): %.2f s\n", secs);
}

} // namespace
