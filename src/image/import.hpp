// Filling a new container's rootfs from a source (CONTRACT.md §3 "Sources"): the built-in
// busybox image, a directory, a rootfs tarball, or an LXD/Incus image (unified or split).
// The CLI opens the source and passes file descriptors; nothing here opens a path on a caller's
// behalf. `rootfs_dir` is an existing empty directory; on failure the caller removes it.
// Every function returns 0 or -errno (-EINVAL for bad content), puts a human message naming what
// was wrong in `error`, and logs the failure once.
#pragma once

#include "common/config.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace lodge::daemon {

struct ImportProgress {
    uint64_t bytes_done;
    uint64_t bytes_total; // 0 if unknown
};
// Called from the importing thread, at most every 1 MiB of progress and once at the end.
using ProgressFn = std::function<void(const ImportProgress&)>;

struct ImportResult {
    // "image.<key>" for each metadata.yaml `properties:` entry, plus "image.architecture".
    KeyMap image_keys;
};

// The built-in image: a busybox rootfs made from the host's static /bin/busybox, the same layout
// as tests/fixtures/make-busybox-rootfs.sh (see builtin-image.hpp).
int import_builtin(const std::string& rootfs_dir, std::string& error);

// Copies the tree under `dir_fd` like `cp -ax`: ownership, modes, timestamps, xattrs (user.*,
// security.capability and ACLs only), symlinks as they are, hard links, fifos, and device nodes
// under dev/ (others are skipped with a warning); sockets and file flags (chattr) are not
// copied. Symlinks are never followed, and mount points inside the source are created empty
// without descending into them. Progress counts regular-file bytes.
int import_directory(int dir_fd, const std::string& rootfs_dir, ProgressFn progress,
                     std::string& error);

// A .tar, .tar.gz, .tar.xz, .tar.bz2 or .tar.zst read from `fd` (from its current offset): either
// a plain rootfs, or an LXD/Incus unified image (top-level metadata.yaml + rootfs/, templates/
// ignored), of which only rootfs/ is extracted and metadata.yaml gives `result.image_keys`.
// Entries that would land outside rootfs_dir (absolute, "..", through a symlink) fail the import
// with "refusing entry X: ...". What the directory copy leaves out is left out here too
// (device nodes outside dev/, other xattrs, file flags). Progress counts compressed bytes read;
// the total is known when `fd` is a regular file.
int import_tarball(int fd, const std::string& rootfs_dir, ImportResult& result, ProgressFn progress,
                   std::string& error);

// An LXD split image: a metadata tarball (metadata.yaml, templates/) and a plain rootfs tarball.
int import_split_image(int metadata_fd, int rootfs_fd, const std::string& rootfs_dir,
                       ImportResult& result, ProgressFn progress, std::string& error);

// Only metadata.yaml of an LXD image (a unified tarball or a split image's metadata tarball),
// read from `fd` at its current offset: its image.* keys as import_tarball gives them.
int read_image_metadata(int fd, KeyMap& keys, std::string& error);

} // namespace lodge::daemon
