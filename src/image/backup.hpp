// Container backups in LXD's instance backup layout (`lodgectl export` / `lodgectl import`,
// lodge-images(7)): one tarball holding
//
//   backup/index.yaml                  name, backend, pool, snapshots, optimized, type
//   backup/container/backup.yaml       the container (config, devices) and its snapshots
//   backup/container/rootfs/...        the root filesystem, ids as the container sees them
//   backup/snapshots/SNAP/rootfs/...   each snapshot's root filesystem (unless instance-only)
//
// LXD 5.0 writes the snapshots before backup/container/ and keeps unprivileged rootfses shifted
// on disk when it has no idmapped mounts (volatile.last_state.idmap says how); both are read.
// Everything here runs in lodged's workers, streaming through libarchive.
#pragma once

#include "common/config.hpp"
#include "image/store.hpp"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lodge::image {

// One range of an LXD idmap (volatile.last_state.idmap): host ids [host, host+range) are the
// container's [ns, ns+range).
struct IdRange {
    bool uid = false, gid = false;
    uint64_t host = 0, ns = 0, range = 0;
};
using IdMap = std::vector<IdRange>;

// volatile.last_state.idmap's JSON ("[]" or empty: not shifted). False when it is not one.
bool parse_lxd_idmap(const std::string& json, IdMap& out);

struct BackupSnapshot {
    std::string name;
    ContainerConfig config;
    uint64_t created_usec = 0, expires_usec = 0; // CLOCK_REALTIME; 0: unknown / never
    IdMap idmap;                                 // import: how its rootfs is shifted
    // export: the snapshot's directory (rootfs/ in it) and its on-disk shift (0: none)
    std::string dir;
    uint32_t shift_base = 0, shift_size = 0;
};

// export: what write_backup() packs.
struct BackupSource {
    ContainerConfig config;
    std::string rootfs;
    uint32_t shift_base = 0, shift_size = 0; // a rootfs shifted on disk: written unshifted
    std::vector<BackupSnapshot> snapshots;   // empty: --instance-only
    std::string compression;                 // gzip (default), xz, zstd, none
};

// Writes the backup tarball to `out_fd` (from its current offset) and syncs it. 0 or -errno
// with `error`; `progress` gets the rootfs bytes read so far.
int write_backup(int out_fd, const BackupSource& source, const CopyProgress& progress,
                 std::string& error);

// import: what a backup holds, as its index.yaml and backup/container/backup.yaml say.
struct BackupInfo {
    std::string name;       // the container's name in the backup
    std::string type;       // "container" (LXD's default when absent)
    ContainerConfig config; // keys and devices as lodge takes them (adopt below)
    IdMap idmap;
    std::vector<BackupSnapshot> snapshots;
    std::vector<std::string> notes; // what was left out, and why, for the user
    nlohmann::json to_json() const;
    static bool from_json(const nlohmann::json& j, BackupInfo& out);
};

// Reads index.yaml and backup/container/backup.yaml from the tarball at `fd` (a regular file,
// read from offset 0). Keys and devices lodge cannot take (LXD's volatile state, the root disk,
// anything check_container_config refuses) are left out and named in `notes`.
int read_backup_info(int fd, BackupInfo& info, std::string& error);

// Extracts the backup at `fd` (offset 0) into a new container directory `container_dir`:
// rootfs/ (must exist, empty) and snapshots/SNAP/{rootfs/,config.json,snapshot.json} for the
// snapshots `info` lists. Entries with absolute paths, "..", links leaving their volume or
// writes through symlinks fail the import ("refusing entry ..."); ids shifted by LXD are
// unshifted. Device nodes, xattrs and file flags follow the image import's rules (import.hpp).
int extract_backup(int fd, const BackupInfo& info, const std::string& container_dir,
                   const CopyProgress& progress, std::string& error);

} // namespace lodge::image
