// What the import tests share (test-import.cpp, test-import-hostile.cpp): a temporary
// directory, file helpers, crafted tarballs written with libarchive, an LXD image tree and the
// Import fixture. Runs as root (ownership, mknod, xattrs).
#pragma once

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

namespace lodge::import_test {

using namespace lodge::daemon;

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

inline bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}

inline struct stat lst(const std::string& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) < 0)
        ADD_FAILURE() << "lstat " << p << ": " << std::strerror(errno);
    return st;
}

inline std::string slurp(const std::string& p) {
    std::string s;
    EXPECT_EQ(read_file(p, s), 0) << p;
    return s;
}

inline void spit(const std::string& p, const std::string& text, mode_t mode = 0644) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ASSERT_GE(fd, 0) << p;
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

inline std::string link_target(const std::string& p) {
    char buf[4096];
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
    return n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, n);
}

inline std::string get_xattr(const std::string& p, const char* name) {
    char buf[1024];
    ssize_t n = ::lgetxattr(p.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, n);
}

inline int sh(const std::string& cmd) {
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

inline int open_ro(const std::string& p) {
    return ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
}

// A raw security.capability value (VFS_CAP_REVISION_2, effective, cap_net_raw permitted).
inline std::string net_raw_capability() {
    struct vfs_cap_data cap {};
    cap.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
    cap.data[0].permitted = 1u << CAP_NET_RAW;
    return std::string(reinterpret_cast<const char*>(&cap), sizeof cap);
}

// A source tree exercising what a rootfs copy must keep.
inline void make_source_tree(const std::string& d, bool with_socket) {
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
inline void check_imported_tree(const std::string& r, bool times) {
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
inline int import_file(const std::string& path, const std::string& rootfs, ImportResult& res,
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
    dev_t rdev = 0;           // device nodes
};
inline Entry dir(const std::string& name) {
    return Entry{name, AE_IFDIR};
}
inline Entry file(const std::string& name, const std::string& data) {
    return Entry{name, AE_IFREG, data};
}
inline Entry sym(const std::string& name, const std::string& target) {
    return Entry{name, AE_IFLNK, "", target};
}
inline Entry hard(const std::string& name, const std::string& target) {
    return Entry{name, AE_IFREG, "", "", target};
}

inline void write_tar(const std::string& path, const std::vector<Entry>& entries,
                      bool gzip = false) {
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
            if (e.type == AE_IFCHR || e.type == AE_IFBLK)
                archive_entry_set_rdev(ae, e.rdev);
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

inline const char* const metadata_yaml = R"yaml(architecture: x86_64
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

inline void check_image_keys(const ImportResult& res) {
    KeyMap want = {{"image.architecture", "x86_64"},
                   {"image.os", "Debian"},
                   {"image.release", "bookworm"},
                   {"image.description", "Debian bookworm amd64 (20231120_05:24)"},
                   {"image.variant", "default"}};
    EXPECT_EQ(res.image_keys, want);
}

// An LXD unified image tree: metadata.yaml, rootfs/, templates/.
inline void make_image_dir(const std::string& d) {
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

inline void check_unified_rootfs(const std::string& r) {
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

} // namespace lodge::import_test
