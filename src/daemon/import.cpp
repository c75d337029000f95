// Filling a rootfs from a directory or a tarball; see import.hpp.
//
// Tarballs go through libarchive (tar formats only; gzip, bzip2, xz, lzma and zstd filters, all
// in-library, never an external decompressor). metadata.yaml is parsed with libyaml (Debian's
// libyaml-dev): only `architecture` and the flat `properties:` map are used.
//
// Unified or plain: an archive is an LXD/Incus unified image when it has a top-level
// metadata.yaml. When the fd is seekable, a header-only pre-scan decides this before extracting:
// it stops at the first entry that settles it (metadata.yaml -> unified; anything outside
// rootfs/ and templates/ -> plain), so it costs nothing for plain rootfs tarballs and for images
// that list metadata.yaml first, and one extra decompression for images that list rootfs/ first.
// When the fd is not seekable (a pipe), the first entry that is metadata.yaml, rootfs/... or
// templates/... means unified (and metadata.yaml must then turn up later), anything else plain.
//
// What an image may not bring (both sources): block and character device nodes outside dev/
// (the host's disk as /root/disk would be raw access to it), file flags (immutable or
// append-only files would make the container undeletable), and xattrs other than user.*,
// security.capability and POSIX ACLs (trusted.* and security.* are the host's to set).
#include "daemon/import.hpp"
#include "import-error.hpp"

#include "common/fd.hpp"
#include "common/log.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <yaml.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
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

constexpr uint64_t progress_step = 1 << 20;
constexpr size_t max_metadata_size = 16 << 20;

// Device nodes are kept under dev/ only. A container never sees them there (its /dev is a fresh
// tmpfs, and the rootfs is mounted nodev for unprivileged containers), but the tree stays the
// image it was (as LXD keeps it) for tools that chroot into it or export it again.
bool keeps_device_node(const std::string& rel) {
    return rel.rfind("dev/", 0) == 0;
}

void log_skipped_node(const std::string& rel, bool block, unsigned major, unsigned minor) {
    log_warning("Skipping the %s device node /%s (%u:%u): images may carry device nodes only "
                "under /dev",
                block ? "block" : "character", rel.c_str(), major, minor);
}

// The xattrs an image may set: the guest's own (user.*), file capabilities (which the kernel
// ties to the container's root through the idmapped mount or the shift) and POSIX ACLs.
bool keeps_xattr(const char* name) {
    return std::strncmp(name, "user.", 5) == 0 || std::strcmp(name, "security.capability") == 0 ||
           std::strcmp(name, "system.posix_acl_access") == 0 ||
           std::strcmp(name, "system.posix_acl_default") == 0;
}

// Says once per attribute name that the import drops it.
void log_dropped_xattr(std::set<std::string>& logged, const char* name, const std::string& rel) {
    if (logged.insert(name).second)
        log_warning("Not restoring the xattr %s (first on /%s): images may set only user.*, "
                    "security.capability and ACLs",
                    name, rel.c_str());
}

// Rate-limited progress reports; `base` and `total` let a split image report one sequence.
class Progress {
public:
    Progress(const ProgressFn& fn, uint64_t total, uint64_t base = 0)
        : fn_(fn), total_(total), base_(base) {}
    void update(uint64_t done) {
        if (fn_ && done >= last_ + progress_step) {
            last_ = done;
            fn_(ImportProgress{base_ + done, total_});
        }
    }
    void finish(uint64_t done) {
        if (fn_)
            fn_(ImportProgress{base_ + done, total_});
    }

private:
    const ProgressFn& fn_;
    uint64_t total_, base_;
    uint64_t last_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Directory copy
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Tarballs
// ---------------------------------------------------------------------------------------------

struct ReadFree {
    void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteFree {
    void operator()(struct archive* a) const { archive_write_free(a); }
};
using ReadArchive = std::unique_ptr<struct archive, ReadFree>;
using WriteArchive = std::unique_ptr<struct archive, WriteFree>;

const char* archive_msg(struct archive* a) {
    const char* m = archive_error_string(a);
    return m ? m : "unknown error";
}

// libarchive's errno for a failure, or EIO when it has none (0 or ARCHIVE_ERRNO_MISC).
int archive_err(struct archive* a) {
    int err = archive_errno(a);
    return err > 0 ? err : EIO;
}

// A tarball source: where it starts, and its size when it is a regular file.
struct TarSource {
    int fd;
    std::string what; // "tarball", "metadata tarball", "rootfs tarball"
    off_t start = 0;
    bool seekable = false;
    uint64_t size = 0;
    std::set<std::string> warned = {}; // reader warnings already logged (they repeat per entry)
};

int probe_source(TarSource& src, std::string& error) {
    struct stat st;
    if (::fstat(src.fd, &st) < 0)
        return fail_errno(error, errno, "Cannot stat the " + src.what);
    if (S_ISDIR(st.st_mode))
        return fail_invalid(error, "The " + src.what + " is a directory, not a tarball");
    if (S_ISREG(st.st_mode)) {
        off_t pos = ::lseek(src.fd, 0, SEEK_CUR);
        if (pos >= 0) {
            src.start = pos;
            src.seekable = true;
            src.size = st.st_size > pos ? static_cast<uint64_t>(st.st_size - pos) : 0;
        }
        char magic[4];
        if (::pread(src.fd, magic, sizeof magic, src.start) == sizeof magic &&
            std::memcmp(magic, "hsqs", 4) == 0)
            return fail_invalid(error, "The " + src.what +
                                           " is a squashfs image; only tarballs are supported");
    }
    return 0;
}

int open_reader(TarSource& src, ReadArchive& out, std::string& error) {
    if (src.seekable && ::lseek(src.fd, src.start, SEEK_SET) < 0)
        return fail_errno(error, errno, "Cannot rewind the " + src.what);
    ReadArchive a(archive_read_new());
    if (!a)
        return fail_errno(error, ENOMEM, "Cannot read the " + src.what);
    archive_read_support_format_tar(a.get());
    // Debian's libarchive has all of these in-library (no external decompressor is run).
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_bzip2(a.get());
    archive_read_support_filter_xz(a.get());
    archive_read_support_filter_lzma(a.get());
    archive_read_support_filter_zstd(a.get());
    if (archive_read_open_fd(a.get(), src.fd, 256 * 1024) != ARCHIVE_OK)
        return fail_invalid(error, "Cannot read the " + src.what + ": " + archive_msg(a.get()));
    out = std::move(a);
    return 0;
}

// "./bin//sh/" -> "bin/sh", "./" -> "". Sets `why` for absolute paths and ".." components.
std::string normalize_path(const char* raw, std::string& why) {
    why.clear();
    if (raw[0] == '/') {
        why = "absolute path";
        return {};
    }
    std::string out;
    const char* p = raw;
    while (*p) {
        const char* e = std::strchr(p, '/');
        size_t len = e ? static_cast<size_t>(e - p) : std::strlen(p);
        std::string_view comp(p, len);
        if (comp == "..") {
            why = "path contains '..'";
            return {};
        }
        if (!comp.empty() && comp != ".") {
            if (!out.empty())
                out += '/';
            out.append(comp);
        }
        p += len;
        if (*p == '/')
            p++;
    }
    return out;
}

std::string first_component(const std::string& path) {
    return path.substr(0, path.find('/'));
}

bool in_image_dir(const std::string& path, const char* dir) {
    return first_component(path) == dir;
}

// ---- metadata.yaml ----

struct YamlDoc {
    yaml_parser_t parser;
    yaml_document_t doc;
    bool parser_ok = false, doc_ok = false;
    ~YamlDoc() {
        if (doc_ok)
            yaml_document_delete(&doc);
        if (parser_ok)
            yaml_parser_delete(&parser);
    }
};

std::string scalar(yaml_node_t* n) {
    return std::string(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
}

bool valid_key_part(const std::string& k) {
    if (k.empty())
        return false;
    for (unsigned char ch : k)
        if (ch < 0x21 || ch == '=' || ch >= 0x80)
            return false;
    return true;
}

// Reads `architecture` and the flat `properties:` map (scalar values only) into image.* keys.
int parse_metadata(const std::string& text, KeyMap& keys, std::string& error) {
    YamlDoc y;
    if (!yaml_parser_initialize(&y.parser))
        return fail_errno(error, ENOMEM, "Cannot parse metadata.yaml");
    y.parser_ok = true;
    yaml_parser_set_input_string(&y.parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    if (!yaml_parser_load(&y.parser, &y.doc))
        return fail_invalid(error, "Invalid metadata.yaml: line " +
                                       std::to_string(y.parser.problem_mark.line + 1) + ": " +
                                       (y.parser.problem ? y.parser.problem : "syntax error"));
    y.doc_ok = true;
    yaml_node_t* root = yaml_document_get_root_node(&y.doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        return fail_invalid(error, "Invalid metadata.yaml: not a mapping");
    for (auto* pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t* k = yaml_document_get_node(&y.doc, pair->key);
        yaml_node_t* v = yaml_document_get_node(&y.doc, pair->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE)
            continue;
        std::string key = scalar(k);
        if (key == "architecture" && v->type == YAML_SCALAR_NODE) {
            keys["image.architecture"] = scalar(v);
        } else if (key == "properties" && v->type == YAML_MAPPING_NODE) {
            for (auto* p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
                yaml_node_t* pk = yaml_document_get_node(&y.doc, p->key);
                yaml_node_t* pv = yaml_document_get_node(&y.doc, p->value);
                if (!pk || !pv || pk->type != YAML_SCALAR_NODE || pv->type != YAML_SCALAR_NODE)
                    continue;
                std::string name = scalar(pk);
                if (!valid_key_part(name)) {
                    log_warning("Ignoring metadata.yaml property \"%s\": not a valid key name",
                                name.c_str());
                    continue;
                }
                keys["image." + name] = scalar(pv);
            }
        }
    }
    return 0;
}

int read_entry_data(struct archive* a, struct archive_entry* e, const std::string& what,
                    const std::string& name, std::string& out, std::string& error) {
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return fail_invalid(error, name + " in the " + what + " is not a regular file");
    if (archive_entry_size(e) > static_cast<la_int64_t>(max_metadata_size))
        return fail_invalid(error, name + " in the " + what + " is too large");
    out.clear();
    char buf[65536];
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n < 0)
            return fail_invalid(error,
                                "Cannot read " + name + " in the " + what + ": " + archive_msg(a));
        if (n == 0)
            break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max_metadata_size)
            return fail_invalid(error, name + " in the " + what + " is too large");
    }
    return 0;
}

enum class Kind { unknown, plain, unified };

int next_header(struct archive* a, struct archive_entry** e, TarSource& src, std::string& error) {
    int r = archive_read_next_header(a, e);
    if (r == ARCHIVE_WARN) {
        // E.g. UTF-8 pax names under the C locale: the raw bytes are used, which is right.
        if (src.warned.insert(archive_msg(a)).second)
            log_warning("%s: %s", src.what.c_str(), archive_msg(a));
        return ARCHIVE_OK;
    }
    if (r == ARCHIVE_OK || r == ARCHIVE_EOF)
        return r;
    return fail_invalid(error, "Cannot read the " + src.what + ": " + archive_msg(a));
}

// Header-only pass over a seekable source: is it a unified image? Stops at the first entry that
// decides it.
int scan_kind(TarSource& src, Kind& kind, std::string& error) {
    ReadArchive a;
    int r = open_reader(src, a, error);
    if (r < 0)
        return r;
    kind = Kind::plain;
    struct archive_entry* e;
    std::string why;
    while ((r = next_header(a.get(), &e, src, error)) == ARCHIVE_OK) {
        const char* raw = archive_entry_pathname(e);
        if (!raw)
            break;
        std::string name = normalize_path(raw, why);
        if (!why.empty() || name.empty())
            continue; // refused (or the root) during extraction
        if (name == "metadata.yaml") {
            kind = Kind::unified;
            break;
        }
        if (!in_image_dir(name, "rootfs") && !in_image_dir(name, "templates"))
            break;
    }
    return r < 0 ? r : 0;
}

struct RootAttrs {
    bool set = false;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec times[2];
};

void set_root_attrs(struct archive_entry* e, RootAttrs& ra) {
    if (archive_entry_filetype(e) != AE_IFDIR)
        return;
    ra.set = true;
    ra.mode = archive_entry_perm(e) & 07777;
    ra.uid = static_cast<uid_t>(archive_entry_uid(e));
    ra.gid = static_cast<gid_t>(archive_entry_gid(e));
    ra.times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
    ra.times[0] = archive_entry_atime_is_set(e)
                      ? timespec{archive_entry_atime(e), archive_entry_atime_nsec(e)}
                      : ra.times[1];
}

// Drops the xattrs an image may not set from the entry before libarchive restores them.
void filter_xattrs(struct archive_entry* e, std::set<std::string>& logged, const std::string& rel) {
    std::vector<std::pair<std::string, std::string>> kept;
    bool dropped = false;
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (!name)
            continue;
        if (keeps_xattr(name)) {
            kept.emplace_back(name, value ? std::string(static_cast<const char*>(value), size)
                                          : std::string());
            continue;
        }
        dropped = true;
        log_dropped_xattr(logged, name, rel);
    }
    if (!dropped)
        return;
    archive_entry_xattr_clear(e);
    for (auto& [n, v] : kept)
        archive_entry_xattr_add_entry(e, n.c_str(), v.data(), v.size());
}

// A device node entry seen so far (by its path in the rootfs), so that hard links to it follow
// the same rule.
struct DeviceNode {
    bool kept, block;
    unsigned major, minor;
};

// Extracts the source into `root` (a canonical path: no symlinks, no "..", so that
// ARCHIVE_EXTRACT_SECURE_SYMLINKS, which checks every component of the rewritten absolute path,
// only ever finds the archive's own symlinks). Entry names are checked here (absolute paths and
// ".." are refused, not stripped) and rewritten to root + "/" + name; hard link targets likewise.
// ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS cannot be used, as every rewritten path is absolute.
int extract(TarSource& src, Kind kind, const std::string& root, int root_fd, KeyMap& keys,
            Progress& progress, std::string& error) {
    ReadArchive a;
    int r = open_reader(src, a, error);
    if (r < 0)
        return r;
    WriteArchive w(archive_write_disk_new());
    if (!w)
        return fail_errno(error, ENOMEM, "Cannot extract the " + src.what);
    // No ARCHIVE_EXTRACT_FFLAGS: an image does not get to make immutable or append-only files.
    archive_write_disk_set_options(
        w.get(), ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                     ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                     ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    std::map<std::string, DeviceNode> device_nodes;
    std::set<std::string> dropped_xattrs;

    bool saw_metadata = false;
    size_t extracted = 0;
    RootAttrs root_attrs, pending_root; // pending: the "./" entry seen before the kind was known
    struct archive_entry* e;
    std::string why;
    while ((r = next_header(a.get(), &e, src, error)) == ARCHIVE_OK) {
        const char* raw_c = archive_entry_pathname(e);
        if (!raw_c)
            return fail_invalid(error, "The " + src.what + " has an entry with an unreadable name");
        std::string raw = raw_c;
        std::string name = normalize_path(raw_c, why);
        if (!why.empty())
            return fail_invalid(error, "refusing entry '" + raw + "': " + why);

        if (kind == Kind::unknown && !name.empty())
            kind = name == "metadata.yaml" || in_image_dir(name, "rootfs") ||
                           in_image_dir(name, "templates")
                       ? Kind::unified
                       : Kind::plain;

        std::string dest = name;
        if (kind == Kind::unknown && name.empty()) {
            set_root_attrs(e, pending_root);
            continue;
        }
        if (kind == Kind::unified) {
            if (name == "metadata.yaml") {
                std::string text;
                if ((r = read_entry_data(a.get(), e, src.what, name, text, error)) < 0 ||
                    (r = parse_metadata(text, keys, error)) < 0)
                    return r;
                saw_metadata = true;
                continue;
            }
            if (!in_image_dir(name, "rootfs"))
                continue; // templates/, and the archive's own root entry
            dest = name.size() > 6 ? name.substr(7) : std::string();
        }

        if (dest.empty()) {
            // The rootfs's own directory entry: its owner, mode and times go on root_fd at the
            // end (extracting children changes its mtime).
            if (archive_entry_filetype(e) != AE_IFDIR)
                return fail_invalid(error,
                                    "refusing entry '" + raw + "': the root is not a directory");
            set_root_attrs(e, root_attrs);
            continue;
        }

        const char* hl = archive_entry_hardlink(e);
        std::string link_desc, target;
        if (hl) {
            target = normalize_path(hl, why);
            if (!why.empty())
                why = "hard link target " + std::string(hl) + ": " + why;
            if (why.empty() && kind == Kind::unified) {
                if (!in_image_dir(target, "rootfs"))
                    why = "hard link target " + std::string(hl) + " is outside rootfs/";
                else
                    target = target.size() > 6 ? target.substr(7) : std::string();
            }
            if (why.empty() && target.empty())
                why = "hard link to the root directory";
            if (!why.empty())
                return fail_invalid(error, "refusing entry '" + raw + "': " + why);
            link_desc = " (hard link to " + std::string(hl) + ")";
            archive_entry_set_hardlink(e, (root + "/" + target).c_str());
        }

        if (hl) {
            // A link to a skipped node, or a link outside dev/ to a kept one, is such a node.
            auto node = device_nodes.find(target);
            if (node != device_nodes.end() && (!node->second.kept || !keeps_device_node(dest))) {
                log_skipped_node(dest, node->second.block, node->second.major, node->second.minor);
                continue;
            }
        } else {
            device_nodes.erase(dest);
            mode_t type = archive_entry_filetype(e);
            if (type == AE_IFBLK || type == AE_IFCHR) {
                DeviceNode node{keeps_device_node(dest), type == AE_IFBLK,
                                static_cast<unsigned>(archive_entry_rdevmajor(e)),
                                static_cast<unsigned>(archive_entry_rdevminor(e))};
                device_nodes[dest] = node;
                if (!node.kept) {
                    log_skipped_node(dest, node.block, node.major, node.minor);
                    continue;
                }
            }
        }
        filter_xattrs(e, dropped_xattrs, dest);
        archive_entry_set_pathname(e, (root + "/" + dest).c_str());

        r = archive_write_header(w.get(), e);
        if (r == ARCHIVE_WARN) {
            log_warning("%s: %s", raw.c_str(), archive_msg(w.get()));
        } else if (r != ARCHIVE_OK) {
            // libarchive reports its path checks (symlink in the way, "..") with errno 0 or -1;
            // a hard link that cannot be made is an archive problem as well.
            int err = archive_errno(w.get());
            if (err <= 0 || hl)
                return fail_invalid(error, "refusing entry '" + raw + "'" + link_desc + ": " +
                                               archive_msg(w.get()));
            return fail_errno(error, err, "Cannot extract '" + raw + "': " + archive_msg(w.get()));
        }
        for (;;) {
            const void* buf;
            size_t size;
            la_int64_t offset;
            r = archive_read_data_block(a.get(), &buf, &size, &offset);
            if (r == ARCHIVE_EOF)
                break;
            if (r < ARCHIVE_WARN)
                return fail_invalid(error, "Cannot read '" + raw + "' in the " + src.what + ": " +
                                               archive_msg(a.get()));
            if (archive_write_data_block(w.get(), buf, size, offset) < ARCHIVE_WARN)
                return fail_errno(error, archive_err(w.get()),
                                  "Cannot write '" + raw + "': " + archive_msg(w.get()));
            progress.update(static_cast<uint64_t>(archive_filter_bytes(a.get(), -1)));
        }
        r = archive_write_finish_entry(w.get());
        if (r == ARCHIVE_WARN)
            log_warning("%s: %s", raw.c_str(), archive_msg(w.get()));
        else if (r != ARCHIVE_OK)
            return fail_errno(error, archive_err(w.get()),
                              "Cannot extract '" + raw + "': " + archive_msg(w.get()));
        extracted++;
        progress.update(static_cast<uint64_t>(archive_filter_bytes(a.get(), -1)));
    }
    if (r < 0)
        return r;
    uint64_t read_bytes = static_cast<uint64_t>(archive_filter_bytes(a.get(), -1));
    // Applies the deferred directory modes and times.
    if (archive_write_close(w.get()) < ARCHIVE_WARN)
        return fail_errno(error, archive_err(w.get()),
                          "Cannot finish extracting the " + src.what + ": " + archive_msg(w.get()));

    if (kind == Kind::unified && !saw_metadata)
        return fail_invalid(error, "The " + src.what +
                                       " looks like an LXD image (rootfs/) but has no "
                                       "metadata.yaml");
    if (kind == Kind::plain && !root_attrs.set)
        root_attrs = pending_root;
    if (extracted == 0 && !root_attrs.set)
        return fail_invalid(error, "The " + src.what + " contains no root filesystem");
    if (root_attrs.set) {
        if (::fchown(root_fd, root_attrs.uid, root_attrs.gid) < 0 ||
            ::fchmod(root_fd, root_attrs.mode) < 0 || ::futimens(root_fd, root_attrs.times) < 0)
            return fail_errno(error, errno, "Cannot set the attributes of " + root);
    }
    progress.finish(src.size ? src.size : read_bytes);
    return 0;
}

int open_root(const std::string& rootfs_dir, std::string& root, Fd& fd, std::string& error) {
    char* real = ::realpath(rootfs_dir.c_str(), nullptr);
    if (!real)
        return fail_errno(error, errno, "Cannot resolve " + rootfs_dir);
    root = real;
    std::free(real);
    fd.reset(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd)
        return fail_errno(error, errno, "Cannot open " + rootfs_dir);
    return 0;
}

int import_tar(TarSource& src, Kind kind, const std::string& rootfs_dir, KeyMap& keys,
               Progress& progress, std::string& error) {
    std::string root;
    Fd root_fd;
    int r = open_root(rootfs_dir, root, root_fd, error);
    if (r < 0)
        return r;
    if (kind == Kind::unknown && src.seekable && (r = scan_kind(src, kind, error)) < 0)
        return r;
    return extract(src, kind, root, root_fd.get(), keys, progress, error);
}

// The metadata tarball of a split image: only metadata.yaml is read.
int read_metadata_tarball(TarSource& src, KeyMap& keys, Progress& progress, std::string& error) {
    ReadArchive a;
    int r = open_reader(src, a, error);
    if (r < 0)
        return r;
    struct archive_entry* e;
    std::string why;
    bool found = false, saw_rootfs = false;
    while ((r = next_header(a.get(), &e, src, error)) == ARCHIVE_OK) {
        const char* raw = archive_entry_pathname(e);
        std::string name = raw ? normalize_path(raw, why) : std::string();
        if (name == "metadata.yaml" && why.empty()) {
            std::string text;
            if ((r = read_entry_data(a.get(), e, src.what, name, text, error)) < 0 ||
                (r = parse_metadata(text, keys, error)) < 0)
                return r;
            found = true;
            break;
        }
        saw_rootfs =
            saw_rootfs || (why.empty() && !name.empty() && !in_image_dir(name, "templates"));
    }
    if (r < 0)
        return r;
    if (!found)
        return fail_invalid(error,
                            "The metadata tarball has no metadata.yaml" +
                                std::string(saw_rootfs ? " (is it the rootfs tarball?)" : ""));
    progress.finish(src.size ? src.size : static_cast<uint64_t>(archive_filter_bytes(a.get(), -1)));
    return 0;
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

int import_tarball(int fd, const std::string& rootfs_dir, ImportResult& result,
                   ProgressFn progress_fn, std::string& error) {
    TarSource src{fd, "tarball"};
    int r = probe_source(src, error);
    if (r < 0)
        return r;
    Progress progress(progress_fn, src.size);
    return import_tar(src, Kind::unknown, rootfs_dir, result.image_keys, progress, error);
}

int read_image_metadata(int fd, KeyMap& keys, std::string& error) {
    TarSource src{fd, "image"};
    int r = probe_source(src, error);
    if (r < 0)
        return r;
    ProgressFn none;
    Progress progress(none, src.size);
    return read_metadata_tarball(src, keys, progress, error);
}

int import_split_image(int metadata_fd, int rootfs_fd, const std::string& rootfs_dir,
                       ImportResult& result, ProgressFn progress_fn, std::string& error) {
    TarSource meta{metadata_fd, "metadata tarball"};
    TarSource rootfs{rootfs_fd, "rootfs tarball"};
    int r = probe_source(meta, error);
    if (r < 0 || (r = probe_source(rootfs, error)) < 0)
        return r;
    uint64_t total = meta.seekable && rootfs.seekable ? meta.size + rootfs.size : 0;
    Progress meta_progress(progress_fn, total);
    if ((r = read_metadata_tarball(meta, result.image_keys, meta_progress, error)) < 0)
        return r;
    Progress rootfs_progress(progress_fn, total, meta.size);
    return import_tar(rootfs, Kind::plain, rootfs_dir, result.image_keys, rootfs_progress, error);
}

} // namespace lodge::daemon
