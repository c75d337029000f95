// Copies of container root filesystems for snapshots, restores and copies. They run in
// lodged's workers (operation.hpp), never on its loop.
//
// On btrfs a rootfs is a subvolume and a copy is a subvolume snapshot (one ioctl, atomic even
// while the container runs). Elsewhere GNU cp makes the copy: `cp -a --reflink=auto` keeps
// ids, modes, timestamps, xattrs (ACLs and file capabilities among them), hardlinks, sparse
// files and device nodes, and clones extents (FICLONE) wherever the filesystem can, so XFS
// and other reflink filesystems share data; libarchive's disk writer would copy every byte.
// cp runs chrooted in a private mount namespace that holds only the source (read-only), the
// target and the host's /usr: a guest that swaps a directory for a symlink while its running
// rootfs is copied reaches nothing of the host.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace lodge::daemon {

enum class CopyMethod { btrfs_snapshot, cp };
const char* copy_method_name(CopyMethod m);

// Bytes written so far (0 when unknown); called every second or so while a copy runs.
using CopyProgress = std::function<void(uint64_t written)>;

// Makes `dst` (which must not exist) a copy of the directory `src` and what is below it on
// its filesystem. Returns 0 or -errno with `error` set; a failed copy may leave `dst` behind
// for the caller to remove.
int copy_tree(const std::string& src, const std::string& dst, const CopyProgress& progress,
              CopyMethod& used, std::string& error);

// A new empty directory for a rootfs: a btrfs subvolume where `path`'s parent is on btrfs
// (so that it can be snapshotted), else a plain directory. Returns 0 or -errno.
int make_rootfs_dir(const std::string& path, unsigned mode);

// Deletes the btrfs subvolumes at most `depth` levels below the directory `path` (and
// subvolumes nested in them), so that remove_tree(), which stays on one filesystem, can
// remove the rest. Does nothing off btrfs.
void destroy_subvolumes(const std::string& path, int depth = 3);

} // namespace lodge::daemon
