// Filling a rootfs from a directory, like `cp -ax`; see import.hpp.
#include "common/fd.hpp"
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace lodge::daemon {
namespace {

using namespace import_detail;

constexpr unsigned statx_mask = STATX_BASIC_STATS;

int statx_at(int dirfd, const char* name, struct statx& stx) {
    int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (*name ? 0 : AT_EMPTY_PATH);
    if (::statx(dirfd, name, flags, statx_mask, &stx) < 0)
        return -errno;
    return 0;
}

dev_t stx_dev(const struct statx& s) {
    return makedev(s.stx_dev_major, s.stx_dev_minor);
}

struct CopyCtx {
    int dst_root;
    dev_t src_dev;
    // (dev, ino) of multiply linked non-directories already copied -> their path in dst.
    std::map<std::pair<dev_t, uint64_t>, std::string> links;
    std::set<std::string> warned_xattrs;
    std::set<std::string> dropped_xattrs;
    std::vector<char> buf;
    uint64_t done = 0;
    Progress* progress;
    std::string& error;
};

// Whether `s` (a child of the source tree) is the root of another mount: the kernel says so
// (STATX_ATTR_MOUNT_ROOT, bind mounts included), or, for directories on kernels without it, the
// device differs from the source root's, as `cp -x` decides.
bool is_mount_point(dev_t src_dev, const struct statx& s) {
    if (s.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
        return s.stx_attributes & STATX_ATTR_MOUNT_ROOT;
    return S_ISDIR(s.stx_mode) && stx_dev(s) != src_dev;
}

std::string child_path(const std::string& rel, const char* name) {
    return rel.empty() ? std::string(name) : rel + "/" + name;
}

std::string proc_fd_path(int dirfd, const char* name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

// Copies the extended attributes an image may set (keeps_xattr). With fds for regular files
// and directories; for symlinks and device nodes through /proc/self/fd/N/NAME with the l*xattr
// calls, which never follow the last component and never open the node.
int copy_xattrs(CopyCtx& c, int src_fd, int dst_fd, int src_dir, int dst_dir, const char* name,
                const std::string& rel) {
    bool by_fd = src_fd >= 0;
    std::string src_path, dst_path;
    if (!by_fd) {
        src_path = proc_fd_path(src_dir, name);
        dst_path = proc_fd_path(dst_dir, name);
    }
    std::vector<char> names(1024);
    ssize_t len;
    for (;;) {
        len = by_fd ? ::flistxattr(src_fd, names.data(), names.size())
                    : ::llistxattr(src_path.c_str(), names.data(), names.size());
        if (len >= 0)
            break;
        if (errno == ENOTSUP)
            return 0;
        if (errno != ERANGE)
            return fail_errno(c.error, errno, "Cannot list the xattrs of /" + rel);
        ssize_t need =
            by_fd ? ::flistxattr(src_fd, nullptr, 0) : ::llistxattr(src_path.c_str(), nullptr, 0);
        if (need < 0)
            return fail_errno(c.error, errno, "Cannot list the xattrs of /" + rel);
        names.resize(static_cast<size_t>(need) + 1);
    }
    std::vector<char> value(4096);
    for (ssize_t off = 0; off < len;) {
        const char* attr = names.data() + off;
        off += static_cast<ssize_t>(std::strlen(attr)) + 1;
        if (!keeps_xattr(attr)) {
            log_dropped_xattr(c.dropped_xattrs, attr, rel);
            continue;
        }
        ssize_t vlen;
        for (;;) {
            vlen = by_fd ? ::fgetxattr(src_fd, attr, value.data(), value.size())
                         : ::lgetxattr(src_path.c_str(), attr, value.data(), value.size());
            if (vlen >= 0 || errno != ERANGE)
                break;
            ssize_t need = by_fd ? ::fgetxattr(src_fd, attr, nullptr, 0)
                                 : ::lgetxattr(src_path.c_str(), attr, nullptr, 0);
            if (need < 0)
                break;
            value.resize(static_cast<size_t>(need) + 1);
        }
        if (vlen < 0) {
            if (errno == ENODATA) // removed meanwhile
                continue;
            return fail_errno(c.error, errno,
                              "Cannot read the xattr " + std::string(attr) + " of /" + rel);
        }
        int r =
            by_fd ? ::fsetxattr(dst_fd, attr, value.data(), static_cast<size_t>(vlen), 0)
                  : ::lsetxattr(dst_path.c_str(), attr, value.data(), static_cast<size_t>(vlen), 0);
        if (r < 0) {
            if (errno == ENOTSUP || errno == EOPNOTSUPP) {
                // The destination filesystem cannot hold this kind of attribute; say so once.
                if (c.warned_xattrs.insert(attr).second)
                    log_warning("Cannot copy xattr %s (first on /%s): not supported by the "
                                "destination filesystem",
                                attr, rel.c_str());
                continue;
            }
            return fail_errno(c.error, errno,
                              "Cannot set the xattr " + std::string(attr) + " on /" + rel);
        }
    }
    return 0;
}

struct timespec stx_ts(const struct statx_timestamp& t) {
    struct timespec ts;
    ts.tv_sec = t.tv_sec;
    ts.tv_nsec = t.tv_nsec;
    return ts;
}

// Owner, xattrs, mode, times, in that order: chown clears setuid bits and file capabilities.
int apply_attrs_fd(CopyCtx& c, int src_fd, int dst_fd, const struct statx& s,
                   const std::string& rel) {
    if (::fchown(dst_fd, s.stx_uid, s.stx_gid) < 0)
        return fail_errno(c.error, errno, "Cannot chown /" + rel);
    int r = copy_xattrs(c, src_fd, dst_fd, -1, -1, nullptr, rel);
    if (r < 0)
        return r;
    if (::fchmod(dst_fd, s.stx_mode & 07777) < 0)
        return fail_errno(c.error, errno, "Cannot chmod /" + rel);
    struct timespec times[2] = {stx_ts(s.stx_atime), stx_ts(s.stx_mtime)};
    if (::futimens(dst_fd, times) < 0)
        return fail_errno(c.error, errno, "Cannot set the times of /" + rel);
    return 0;
}

int apply_attrs_at(CopyCtx& c, int src_dir, int dst_dir, const char* name, const struct statx& s,
                   const std::string& rel) {
    if (::fchownat(dst_dir, name, s.stx_uid, s.stx_gid, AT_SYMLINK_NOFOLLOW) < 0)
        return fail_errno(c.error, errno, "Cannot chown /" + rel);
    int r = copy_xattrs(c, -1, -1, src_dir, dst_dir, name, rel);
    if (r < 0)
        return r;
    // Symlink modes are fixed; device nodes and fifos were just made by us, so following is moot.
    if (!S_ISLNK(s.stx_mode) && ::fchmodat(dst_dir, name, s.stx_mode & 07777, 0) < 0)
        return fail_errno(c.error, errno, "Cannot chmod /" + rel);
    struct timespec times[2] = {stx_ts(s.stx_atime), stx_ts(s.stx_mtime)};
    if (::utimensat(dst_dir, name, times, AT_SYMLINK_NOFOLLOW) < 0)
        return fail_errno(c.error, errno, "Cannot set the times of /" + rel);
    return 0;
}

int copy_range_rw(CopyCtx& c, int in, int out, off_t& pos, off_t end, const std::string& rel) {
    if (c.buf.empty())
        c.buf.resize(1 << 20);
    while (pos < end) {
        size_t want = static_cast<size_t>(std::min<off_t>(end - pos, c.buf.size()));
        ssize_t n = ::pread(in, c.buf.data(), want, pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail_errno(c.error, errno, "Cannot read /" + rel);
        if (n == 0) { // shrunk meanwhile
            pos = end;
            break;
        }
        for (ssize_t w = 0; w < n;) {
            ssize_t k = ::pwrite(out, c.buf.data() + w, static_cast<size_t>(n - w), pos + w);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return fail_errno(c.error, errno, "Cannot write /" + rel);
            w += k;
        }
        pos += n;
        c.progress->update(c.done + static_cast<uint64_t>(pos));
    }
    return 0;
}

// Copies the data segments of `in` (holes stay holes) with copy_file_range, falling back to
// read/write where the kernel cannot do it between these filesystems.
int copy_data(CopyCtx& c, int in, int out, off_t size, const std::string& rel) {
    bool use_cfr = true;
    off_t pos = 0;
    while (pos < size) {
        off_t data = ::lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) // only a hole left
                break;
            data = pos; // no SEEK_DATA support: copy everything
        }
        off_t hole = ::lseek(in, data, SEEK_HOLE);
        if (hole < 0 || hole > size)
            hole = size;
        pos = data;
        while (pos < hole) {
            if (!use_cfr) {
                int r = copy_range_rw(c, in, out, pos, hole, rel);
                if (r < 0)
                    return r;
                break;
            }
            off_t off_in = pos, off_out = pos;
            size_t len = static_cast<size_t>(std::min<off_t>(hole - pos, 8 << 20));
            ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, len, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                    errno == EPERM || errno == ETXTBSY) {
                    use_cfr = false;
                    continue;
                }
                return fail_errno(c.error, errno, "Cannot copy /" + rel);
            }
            if (n == 0) { // shrunk meanwhile
                pos = size;
                break;
            }
            pos += n;
            c.progress->update(c.done + static_cast<uint64_t>(pos));
        }
        if (pos < hole)
            pos = hole;
    }
    if (::ftruncate(out, size) < 0) // trailing hole
        return fail_errno(c.error, errno, "Cannot resize /" + rel);
    return 0;
}

int copy_regular(CopyCtx& c, int src_dir, int dst_dir, const char* name, const struct statx& s,
                 const std::string& rel) {
    // O_NONBLOCK: should the name have become a fifo since the statx, do not hang on it.
    Fd in(::openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
    if (!in)
        return fail_errno(c.error, errno, "Cannot open /" + rel);
    struct statx cur;
    int r = statx_at(in.get(), "", cur);
    if (r < 0)
        return fail_errno(c.error, r, "Cannot stat /" + rel);
    if (!S_ISREG(cur.stx_mode) || cur.stx_ino != s.stx_ino || stx_dev(cur) != stx_dev(s))
        return fail_errno(c.error, EAGAIN, "/" + rel + " changed while being copied");
    Fd out(::openat(dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out)
        return fail_errno(c.error, errno, "Cannot create /" + rel);
    off_t size = static_cast<off_t>(cur.stx_size);
    if ((r = copy_data(c, in.get(), out.get(), size, rel)) < 0)
        return r;
    c.done += cur.stx_size;
    c.progress->update(c.done);
    return apply_attrs_fd(c, in.get(), out.get(), cur, rel);
}

int copy_tree(CopyCtx& c, Fd src, int dst, const std::string& rel, const struct statx& self);

int copy_entry(CopyCtx& c, int src_dir, int dst_dir, const char* name, const std::string& rel) {
    struct statx s;
    int r = statx_at(src_dir, name, s);
    if (r == -ENOENT) // removed meanwhile
        return 0;
    if (r < 0)
        return fail_errno(c.error, r, "Cannot stat /" + rel);
    mode_t type = s.stx_mode & S_IFMT;

    if (type == S_IFDIR) {
        Fd sub(::openat(src_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
        if (!sub)
            return fail_errno(c.error, errno, "Cannot open /" + rel);
        if ((r = statx_at(sub.get(), "", s)) < 0)
            return fail_errno(c.error, r, "Cannot stat /" + rel);
        if (::mkdirat(dst_dir, name, 0700) < 0)
            return fail_errno(c.error, errno, "Cannot create /" + rel);
        Fd dsub(::openat(dst_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dsub)
            return fail_errno(c.error, errno, "Cannot open /" + rel);
        if (is_mount_point(c.src_dev, s)) {
            log_info("Not copying the contents of /%s: it is a mount point", rel.c_str());
            return apply_attrs_fd(c, sub.get(), dsub.get(), s, rel);
        }
        return copy_tree(c, std::move(sub), dsub.get(), rel, s);
    }

    if (type == S_IFSOCK) {
        log_debug("Skipping the socket /%s", rel.c_str());
        return 0;
    }
    if (is_mount_point(c.src_dev, s)) {
        log_info("Not copying /%s: it is a mount point", rel.c_str());
        return 0;
    }
    // Before the hard link lookup: a link outside dev/ to a node under dev/ is a node too.
    if ((type == S_IFBLK || type == S_IFCHR) && !keeps_device_node(rel)) {
        log_skipped_node(rel, type == S_IFBLK, s.stx_rdev_major, s.stx_rdev_minor);
        return 0;
    }
    if (s.stx_nlink > 1) {
        auto it = c.links.find({stx_dev(s), s.stx_ino});
        if (it != c.links.end()) {
            if (::linkat(c.dst_root, it->second.c_str(), dst_dir, name, 0) < 0)
                return fail_errno(c.error, errno, "Cannot link /" + rel + " to /" + it->second);
            return 0;
        }
    }

    switch (type) {
    case S_IFREG:
        r = copy_regular(c, src_dir, dst_dir, name, s, rel);
        break;
    case S_IFLNK: {
        std::vector<char> target(s.stx_size + 1 > PATH_MAX ? s.stx_size + 1 : PATH_MAX);
        ssize_t n = ::readlinkat(src_dir, name, target.data(), target.size());
        if (n < 0)
            return fail_errno(c.error, errno, "Cannot read the symlink /" + rel);
        if (static_cast<size_t>(n) >= target.size())
            return fail_errno(c.error, ENAMETOOLONG, "Cannot read the symlink /" + rel);
        target[static_cast<size_t>(n)] = '\0';
        if (::symlinkat(target.data(), dst_dir, name) < 0)
            return fail_errno(c.error, errno, "Cannot create the symlink /" + rel);
        r = apply_attrs_at(c, src_dir, dst_dir, name, s, rel);
        break;
    }
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
        if (::mknodat(dst_dir, name, type | 0600, makedev(s.stx_rdev_major, s.stx_rdev_minor)) < 0)
            return fail_errno(c.error, errno, "Cannot create the node /" + rel);
        r = apply_attrs_at(c, src_dir, dst_dir, name, s, rel);
        break;
    default:
        log_warning("Skipping /%s: unknown file type 0%o", rel.c_str(), type);
        return 0;
    }
    if (r == 0 && s.stx_nlink > 1)
        c.links.emplace(std::make_pair(stx_dev(s), s.stx_ino), rel);
    return r;
}

struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// Copies the entries of `src` into `dst`, then gives `dst` the attributes of `src` (`self`).
int copy_tree(CopyCtx& c, Fd src, int dst, const std::string& rel, const struct statx& self) {
    DirPtr dir(::fdopendir(src.get()));
    if (!dir)
        return fail_errno(c.error, errno, "Cannot read the directory /" + rel);
    int src_fd = src.release();
    for (;;) {
        errno = 0;
        struct dirent* de = ::readdir(dir.get());
        if (!de) {
            if (errno)
                return fail_errno(c.error, errno, "Cannot read the directory /" + rel);
            break;
        }
        if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0)
            continue;
        int r = copy_entry(c, src_fd, dst, de->d_name, child_path(rel, de->d_name));
        if (r < 0)
            return r;
    }
    return apply_attrs_fd(c, src_fd, dst, self, rel);
}

// Cheap pre-scan for the progress total: regular-file bytes, each inode counted once, with the
// same rules as the copy (no symlinks followed, no mount points entered).
void scan_size(dev_t src_dev, int dir_fd, uint64_t& total,
               std::set<std::pair<dev_t, uint64_t>>& seen) {
    DirPtr dir(::fdopendir(dir_fd));
    if (!dir) {
        ::close(dir_fd);
        return;
    }
    while (struct dirent* de = ::readdir(dir.get())) {
        if (de->d_type != DT_DIR && de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
            continue;
        if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0)
            continue;
        struct statx s;
        if (statx_at(::dirfd(dir.get()), de->d_name, s) < 0 || is_mount_point(src_dev, s))
            continue;
        if (S_ISREG(s.stx_mode)) {
            if (s.stx_nlink > 1 && !seen.insert({stx_dev(s), s.stx_ino}).second)
                continue;
            total += s.stx_size;
        } else if (S_ISDIR(s.stx_mode)) {
            int sub = ::openat(::dirfd(dir.get()), de->d_name,
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
            if (sub >= 0)
                scan_size(src_dev, sub, total, seen);
        }
    }
}

} // namespace

int import_directory(int dir_fd, const std::string& rootfs_dir, ProgressFn progress_fn,
                     std::string& error) {
    // Our own open file description, so the caller's fd offset is left alone.
    Fd src(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_NOCTTY | O_CLOEXEC));
    if (!src)
        return fail_errno(error, errno, "Cannot open the source directory");
    struct statx self;
    int r = statx_at(src.get(), "", self);
    if (r < 0)
        return fail_errno(error, r, "Cannot stat the source directory");
    Fd dst(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dst)
        return fail_errno(error, errno, "Cannot open " + rootfs_dir);

    uint64_t total = 0;
    if (progress_fn) {
        std::set<std::pair<dev_t, uint64_t>> seen;
        int scan_fd = ::openat(src.get(), ".", O_RDONLY | O_DIRECTORY | O_NOCTTY | O_CLOEXEC);
        if (scan_fd >= 0)
            scan_size(stx_dev(self), scan_fd, total, seen);
    }
    Progress progress(progress_fn, total);
    CopyCtx c{dst.get(), stx_dev(self), {}, {}, {}, {}, 0, &progress, error};
    r = copy_tree(c, std::move(src), dst.get(), "", self);
    if (r < 0)
        return r;
    progress.finish(c.done);
    return 0;
}

} // namespace lodge::daemon
