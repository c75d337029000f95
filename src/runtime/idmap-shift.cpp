#include "idmap-shift.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstring>
#include <ftw.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {

constexpr const char* marker_name = "/rootfs.idmap-shift";

struct ShiftJob {
    uint32_t from, to, size;
    int error;
};
ShiftJob job; // nftw's callback takes no user data

uint32_t shift_id(uint32_t id) {
    if (id < job.from || id - job.from >= job.size)
        return id;
    return id - job.from + job.to;
}

// File capabilities name the root they apply to (v3); v2 ones mean the initial root.
void shift_file_caps(const char* path) {
    unsigned char buf[sizeof(struct vfs_ns_cap_data)];
    ssize_t n = ::lgetxattr(path, "security.capability", buf, sizeof buf);
    if (n < static_cast<ssize_t>(XATTR_CAPS_SZ_2))
        return;
    struct vfs_ns_cap_data caps {};
    std::memcpy(&caps, buf, static_cast<size_t>(n));
    uint32_t root = n >= static_cast<ssize_t>(XATTR_CAPS_SZ_3) ? caps.rootid : 0;
    caps.magic_etc = VFS_CAP_REVISION_3 | (caps.magic_etc & VFS_CAP_FLAGS_EFFECTIVE);
    caps.rootid = shift_id(root);
    if (caps.rootid == 0) // back in the initial namespace: v2 says the same
        caps.magic_etc = VFS_CAP_REVISION_2 | (caps.magic_etc & VFS_CAP_FLAGS_EFFECTIVE);
    size_t size = caps.rootid == 0 ? XATTR_CAPS_SZ_2 : XATTR_CAPS_SZ_3;
    ::lsetxattr(path, "security.capability", &caps, size, 0);
}

int shift_one(const char* path, const struct stat* st, int type, struct FTW*) {
    if (type == FTW_NS || type == FTW_DNR) {
        job.error = -EIO;
        return 0;
    }
    uid_t uid = shift_id(st->st_uid);
    gid_t gid = shift_id(st->st_gid);
    if (uid == st->st_uid && gid == st->st_gid)
        return 0;
    if (::lchown(path, uid, gid) < 0) {
        job.error = -errno;
        return 0;
    }
    // chown drops setuid/setgid and file capabilities on regular files; put them back.
    if (S_ISREG(st->st_mode)) {
        if (st->st_mode & (S_ISUID | S_ISGID))
            ::chmod(path, st->st_mode & 07777);
        shift_file_caps(path);
    }
    return 0;
}

} // namespace

uint32_t shifted_base(const std::string& container_dir) {
    std::string text;
    if (read_file(container_dir + marker_name, text) < 0)
        return 0;
    while (!text.empty() && text.back() == '\n')
        text.pop_back();
    return static_cast<uint32_t>(parse_uint(text, UINT32_MAX).value_or(0));
}

int shift_rootfs(const std::string& container_dir, uint32_t from, uint32_t to, uint32_t size) {
    if (from == to)
        return 0;
    std::string rootfs = container_dir + "/rootfs";
    log_info("Shifting the ids of %s from %u to %u (no idmapped mounts here)", rootfs.c_str(), from,
             to);
    job = {from, to, size, 0};
    if (::nftw(rootfs.c_str(), shift_one, 64, FTW_PHYS | FTW_MOUNT) < 0)
        return log_error_errno(errno, "Failed to walk %s", rootfs.c_str());
    if (job.error < 0)
        return log_error_errno(job.error, "Failed to shift the ids of %s", rootfs.c_str());
    std::string marker = container_dir + marker_name;
    if (to == 0) {
        ::unlink(marker.c_str());
        return 0;
    }
    if (int r = write_file_atomic(marker, std::to_string(to) + "\n", 0644); r < 0)
        return log_error_errno(r, "Failed to record the shift in %s", marker.c_str());
    return 0;
}

} // namespace lodge::runtime
