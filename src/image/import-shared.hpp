// What the importers share (import-dir.cpp, import-tar.cpp, metadata.cpp); not for other users.
//
// What an image may not bring (both sources): block and character device nodes outside dev/
// (the host's disk as /root/disk would be raw access to it), file flags (immutable or
// append-only files would make the container undeletable), and xattrs other than user.*,
// security.capability and POSIX ACLs (trusted.* and security.* are the host's to set).
#pragma once

#include "common/config.hpp"
#include "common/log.hpp"
#include "image/import.hpp"

#include <cstdint>
#include <cstring>
#include <set>
#include <string>

namespace lodge::daemon::import_detail {

inline constexpr uint64_t progress_step = 1 << 20;

// Device nodes are kept under dev/ only. A container never sees them there (its /dev is a fresh
// tmpfs, and the rootfs is mounted nodev for unprivileged containers), but the tree stays the
// image it was (as LXD keeps it) for tools that chroot into it or export it again.
inline bool keeps_device_node(const std::string& rel) {
    return rel.rfind("dev/", 0) == 0;
}

inline void log_skipped_node(const std::string& rel, bool block, unsigned major, unsigned minor) {
    log_warning("Skipping the %s device node /%s (%u:%u): images may carry device nodes only "
                "under /dev",
                block ? "block" : "character", rel.c_str(), major, minor);
}

// The xattrs an image may set: the guest's own (user.*), file capabilities (which the kernel
// ties to the container's root through the idmapped mount or the shift) and POSIX ACLs.
inline bool keeps_xattr(const char* name) {
    return std::strncmp(name, "user.", 5) == 0 || std::strcmp(name, "security.capability") == 0 ||
           std::strcmp(name, "system.posix_acl_access") == 0 ||
           std::strcmp(name, "system.posix_acl_default") == 0;
}

// Says once per attribute name that the import drops it.
inline void log_dropped_xattr(std::set<std::string>& logged, const char* name,
                              const std::string& rel) {
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

// import-squashfs.cpp: whether `fd` holds a squashfs image (at its offset), and its unpacking
// into `rootfs_dir` by unsquashfs (the fd must be a whole regular file).
bool is_squashfs(int fd);
int import_squashfs(int fd, const std::string& rootfs_dir, const ProgressFn& progress,
                    std::string& error);

// Reads `architecture` and the flat `properties:` map (scalar values only) of a metadata.yaml
// into image.* keys (metadata.cpp).
int parse_metadata(const std::string& text, KeyMap& keys, std::string& error);

} // namespace lodge::daemon::import_detail
