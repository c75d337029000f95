// The shift walks the tree by file descriptor: every entry is opened with O_PATH|O_NOFOLLOW
// relative to its parent directory's fd and changed through that fd, so no path is ever
// resolved twice and a symlink swapped in for a directory mid-walk is never followed.
#include "runtime/setup/idmap-shift.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <memory>
#include <optional>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

namespace lodge::runtime {
namespace {

constexpr const char* marker_name = "/rootfs.idmap-shift";

struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

class Shift {
public:
    Shift(uint32_t from, uint32_t to, uint32_t size) : from_(from), to_(to), size_(size) {}

    // Shifts the directory `dir` (open O_RDONLY) and everything below it on device `dev`.
    void tree(Fd dir, dev_t dev, const std::string& rel);
    // The first failure, once one happened.
    const std::optional<Error>& error() const { return error_; }

private:
    uint32_t id(uint32_t v) const {
        if (v < from_ || v - from_ >= size_)
            return v;
        return v - from_ + to_;
    }
    void fail(int err, const char* what, const std::string& rel);
    void entry(int dir_fd, const char* name, dev_t dev, const std::string& rel);
    void regular_file(int path_fd, const struct stat& st, const std::string& rel);
    bool shift_caps(std::vector<unsigned char>& caps) const;

    uint32_t from_, to_, size_;
    std::optional<Error> error_;
};

// The first failure is logged and returned; the walk goes on, so that one bad entry does not
// leave the rest of the tree half shifted.
void Shift::fail(int err, const char* what, const std::string& rel) {
    if (!error_)
        error_ = log_error_value(err, "Failed to shift the ids of /%s: %s", rel.c_str(), what);
}

// File capabilities name the root they apply to (v3); v2 ones mean the initial root.
bool Shift::shift_caps(std::vector<unsigned char>& value) const {
    if (value.size() < XATTR_CAPS_SZ_2)
        return false;
    struct vfs_ns_cap_data caps {};
    std::memcpy(&caps, value.data(), std::min(value.size(), sizeof caps));
    uint32_t root = value.size() >= XATTR_CAPS_SZ_3 ? caps.rootid : 0;
    caps.rootid = id(root);
    uint32_t effective = caps.magic_etc & VFS_CAP_FLAGS_EFFECTIVE;
    // Back in the initial namespace, v2 says the same.
    caps.magic_etc = (caps.rootid == 0 ? VFS_CAP_REVISION_2 : VFS_CAP_REVISION_3) | effective;
    size_t size = caps.rootid == 0 ? XATTR_CAPS_SZ_2 : XATTR_CAPS_SZ_3;
    value.assign(reinterpret_cast<unsigned char*>(&caps),
                 reinterpret_cast<unsigned char*>(&caps) + size);
    return true;
}

// chown drops setuid/setgid bits and file capabilities on regular files: they are read first
// and put back, through an fd of this very inode (reopened from the O_PATH one, so a device
// node or fifo swapped in under the name is never opened).
void Shift::regular_file(int path_fd, const struct stat& st, const std::string& rel) {
    Fd f(::open(("/proc/self/fd/" + std::to_string(path_fd)).c_str(),
                O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
    if (!f)
        return fail(errno, "cannot open it", rel);
    std::vector<unsigned char> caps(sizeof(struct vfs_ns_cap_data));
    ssize_t n = ::fgetxattr(f.get(), "security.capability", caps.data(), caps.size());
    caps.resize(n > 0 ? static_cast<size_t>(n) : 0);
    if (::fchown(f.get(), id(st.st_uid), id(st.st_gid)) < 0)
        return fail(errno, "chown", rel);
    if ((st.st_mode & (S_ISUID | S_ISGID)) && ::fchmod(f.get(), st.st_mode & 07777) < 0)
        return fail(errno, "chmod", rel);
    if (shift_caps(caps) &&
        ::fsetxattr(f.get(), "security.capability", caps.data(), caps.size(), 0) < 0)
        fail(errno, "cannot restore its file capabilities", rel);
}

void Shift::entry(int dir_fd, const char* name, dev_t dev, const std::string& rel) {
    Fd f(::openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!f) {
        if (errno != ENOENT)
            fail(errno, "cannot open it", rel);
        return;
    }
    struct stat st {};
    if (::fstat(f.get(), &st) < 0)
        return fail(errno, "stat", rel);
    if (st.st_dev != dev) // another filesystem mounted here: not ours to change
        return;
    if (S_ISDIR(st.st_mode)) {
        Fd sub(::openat(f.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!sub)
            return fail(errno, "cannot open it", rel);
        return tree(std::move(sub), dev, rel);
    }
    if (id(st.st_uid) == st.st_uid && id(st.st_gid) == st.st_gid)
        return;
    if (S_ISREG(st.st_mode))
        return regular_file(f.get(), st, rel);
    // Symlinks, device nodes, fifos, sockets: the O_PATH fd itself, never what it points to.
    if (::fchownat(f.get(), "", id(st.st_uid), id(st.st_gid), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) <
        0)
        fail(errno, "chown", rel);
}

void Shift::tree(Fd dir, dev_t dev, const std::string& rel) {
    struct stat st {};
    if (::fstat(dir.get(), &st) < 0)
        return fail(errno, "stat", rel);
    if ((id(st.st_uid) != st.st_uid || id(st.st_gid) != st.st_gid) &&
        ::fchown(dir.get(), id(st.st_uid), id(st.st_gid)) < 0)
        return fail(errno, "chown", rel);
    int dir_fd = dir.get();
    DirPtr d(::fdopendir(dir.release()));
    if (!d) {
        fail(errno, "cannot read it", rel);
        ::close(dir_fd);
        return;
    }
    for (;;) {
        errno = 0;
        struct dirent* e = ::readdir(d.get());
        if (!e) {
            if (errno)
                fail(errno, "cannot read it", rel);
            break;
        }
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
            continue;
        entry(dir_fd, e->d_name, dev, rel.empty() ? e->d_name : rel + "/" + e->d_name);
    }
}

} // namespace

Result<> shift_rootfs(const std::string& container_dir, uint32_t from, uint32_t to, uint32_t size) {
    if (from == to)
        return {};
    std::string rootfs = container_dir + "/rootfs";
    // With disjoint ranges a shifted id is never shifted again, so a walk that was cut short
    // (a crash) can simply run again. Overlapping ones would shift some files twice.
    uint64_t from_end = uint64_t(from) + size, to_end = uint64_t(to) + size;
    if (from_end > uint64_t(UINT32_MAX) + 1 || to_end > uint64_t(UINT32_MAX) + 1 ||
        (from < to_end && to < from_end)) {
        std::string message = "Refusing to shift the ids of " + rootfs + " from " +
                              std::to_string(from) + " to " + std::to_string(to) +
                              ": the ranges of " + std::to_string(size) +
                              " ids overlap or leave the id space, and an interrupted shift "
                              "could not be redone safely";
        log_error("%s", message.c_str());
        return make_error(errors::failed, ERANGE, std::move(message));
    }
    log_info("Shifting the ids of %s from %u to %u (no idmapped mounts here)", rootfs.c_str(), from,
             to);
    Fd root(::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root)
        return log_error_value(errno, "Failed to open %s", rootfs.c_str());
    struct stat st {};
    if (::fstat(root.get(), &st) < 0)
        return log_error_value(errno, "Failed to stat %s", rootfs.c_str());
    Shift shift(from, to, size);
    shift.tree(std::move(root), st.st_dev, "");
    if (shift.error())
        return *shift.error();
    std::string marker = container_dir + marker_name;
    if (to == 0) {
        ::unlink(marker.c_str());
        return {};
    }
    if (int r = write_file_atomic(marker, std::to_string(to) + "\n", 0644); r < 0)
        return log_error_value(r, "Failed to record the shift in %s", marker.c_str());
    return {};
}

} // namespace lodge::runtime
