// libarchive as the image code uses it, in one place: tarballs read with their entries checked
// and extracted under one directory (image imports, backup imports), and directory trees
// written into tarballs (publish, export). Not for other users.
//
// What an extracted entry may not do: have an absolute path or a ".." component (refused, not
// stripped), be a hard link out of its volume, write through a symlink; device nodes, xattrs and
// file flags follow import-shared.hpp's rules.
#pragma once

#include "common/fd.hpp"
#include "image/store.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <sys/types.h>

namespace lodge::image::tar_io {

struct ReadFree {
    void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteFree {
    void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryFree {
    void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using ReadArchive = std::unique_ptr<struct archive, ReadFree>;
using WriteArchive = std::unique_ptr<struct archive, WriteFree>;
using Entry = std::unique_ptr<struct archive_entry, EntryFree>;

const char* archive_msg(struct archive* a);
// libarchive's errno for a failure, or EIO when it has none (0 or ARCHIVE_ERRNO_MISC).
int archive_err(struct archive* a);

// ---- reading

// A tar reader (every in-library filter: gzip, bzip2, xz, lzma, zstd; never an external
// decompressor) on `fd` from its current offset. `what` names the source in errors.
int open_tar_reader(int fd, const std::string& what, ReadArchive& out, std::string& error);

// archive_read_next_header: ARCHIVE_OK (also for a warning, logged once per message in `warned`:
// e.g. UTF-8 pax names under the C locale, where the raw bytes are right), ARCHIVE_EOF or -errno.
int next_tar_header(struct archive* a, struct archive_entry** e, const std::string& what,
                    std::set<std::string>& warned, std::string& error);

// "./bin//sh/" -> "bin/sh", "./" -> "". Sets `why` for absolute paths and ".." components.
std::string normalize_entry_path(const char* raw, std::string& why);

// The data of a small regular file entry (metadata.yaml, index.yaml), at most `max_size` bytes.
int read_entry_text(struct archive* a, struct archive_entry* e, const std::string& what,
                    const std::string& name, size_t max_size, std::string& out, std::string& error);

// A volume's root directory entry: its owner, mode and times go on the directory at the end
// (extracting its children changes its mtime).
struct RootAttrs {
    bool set = false;
    mode_t mode = 0755;
    uid_t uid = 0;
    gid_t gid = 0;
    struct timespec times[2] = {};
};
void set_root_attrs(struct archive_entry* e, RootAttrs& attrs); // a directory entry only
int apply_root_attrs(int root_fd, const RootAttrs& attrs, const std::string& root,
                     std::string& error);

// `path` resolved to a canonical one (no symlinks, no ".."; ARCHIVE_EXTRACT_SECURE_SYMLINKS
// checks every component of the rewritten absolute paths, so it must only ever find the
// archive's own symlinks) and opened.
int open_root_dir(const std::string& path, std::string& canonical, Fd& fd, std::string& error);

// A device node entry seen so far (by its path in the volume), so that hard links to it follow
// the same rule.
struct DeviceNode {
    bool kept, block;
    unsigned major, minor;
};

// Where checked entries are extracted: a canonical directory, through a disk writer that
// restores owners, modes, times, xattrs and ACLs but no file flags (an image or backup does not
// get to make immutable or append-only files).
class Extractor {
public:
    explicit Extractor(std::string what) : what_(std::move(what)) {}
    int open(std::string& error);
    // Writes `e` (named `raw` in the archive, read from `in`) at `root`/`rel`. `hl` is the
    // archive's hard link target when it is one, `link_rel` that target under `root` (already
    // checked to be inside the volume). `on_block` runs after every block written. Returns 1
    // when written, 0 when left out (a device node outside dev/), or -errno.
    int write(struct archive* in, struct archive_entry* e, const std::string& raw,
              const std::string& root, const std::string& rel, const char* hl,
              const std::string& link_rel, std::map<std::string, DeviceNode>& device_nodes,
              const std::function<void()>& on_block, std::string& error);
    // Applies the deferred directory modes and times.
    int close(std::string& error);

private:
    std::string what_;
    WriteArchive disk_;
    std::set<std::string> dropped_xattrs_;
};

// ---- writing

// A file the tarball is written to, hashed on the way when `hash` is set.
struct FdSink {
    int fd;
    Sha256* hash = nullptr;
    uint64_t written = 0;
    int err = 0; // the write(2) errno that stopped it
};

// A pax tarball to `sink` with `compression` (gzip, the default, xz, zstd or none; checked by
// the caller with check_compression).
int open_tar_writer(FdSink& sink, const std::string& compression, const std::string& what,
                    WriteArchive& out, std::string& error);

// One regular file of `text` at `path`.
int write_text_entry(struct archive* w, const std::string& path, const std::string& text,
                     std::string& error);

// The tree at `dir` under `prefix` in the archive: symlinks as they are, no other filesystem
// entered, no sockets, numeric ids only; ids in [shift_base, +shift_size) of a rootfs shifted
// on disk are written as the container's (shift_base 0: not shifted). `done` counts the file
// bytes read, reported to `progress` every 8 MiB.
int write_tree(struct archive* w, const std::string& dir, const std::string& prefix,
               uint32_t shift_base, uint32_t shift_size, uint64_t& done,
               const CopyProgress& progress, std::string& error);

// Finishes the tarball and syncs `sink`'s file.
int close_tar_writer(struct archive* w, const FdSink& sink, const std::string& what,
                     std::string& error);

} // namespace lodge::image::tar_io
