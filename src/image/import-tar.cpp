// Filling a rootfs from a tarball; see import.hpp.
//
// Tarballs go through libarchive (tar formats only; gzip, bzip2, xz, lzma and zstd filters, all
// in-library, never an external decompressor).
//
// Unified or plain: an archive is an LXD/Incus unified image when it has a top-level
// metadata.yaml. When the fd is seekable, a header-only pre-scan decides this before extracting:
// it stops at the first entry that settles it (metadata.yaml -> unified; anything outside
// rootfs/ and templates/ -> plain), so it costs nothing for plain rootfs tarballs and for images
// that list metadata.yaml first, and one extra decompression for images that list rootfs/ first.
// When the fd is not seekable (a pipe), the first entry that is metadata.yaml, rootfs/... or
// templates/... means unified (and metadata.yaml must then turn up later), anything else plain.
#include "common/fd.hpp"
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace lodge::daemon {
namespace {

using namespace import_detail;

constexpr size_t max_metadata_size = 16 << 20;

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

// metadata.yaml, read from the archive and parsed into image.* keys.
int read_metadata_entry(struct archive* a, struct archive_entry* e, const std::string& what,
                        KeyMap& keys, std::string& error) {
    std::string text;
    int r = read_entry_data(a, e, what, "metadata.yaml", text, error);
    return r < 0 ? r : parse_metadata(text, keys, error);
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
                if ((r = read_metadata_entry(a.get(), e, src.what, keys, error)) < 0)
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
            if ((r = read_metadata_entry(a.get(), e, src.what, keys, error)) < 0)
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
    if (is_squashfs(rootfs_fd)) {
        // LXD's split images with a squashfs rootfs (simplestreams ftype "squashfs").
        int r = probe_source(meta, error);
        if (r < 0)
            return r;
        Progress meta_progress(progress_fn, 0);
        if ((r = read_metadata_tarball(meta, result.image_keys, meta_progress, error)) < 0)
            return r;
        return import_squashfs(rootfs_fd, rootfs_dir, progress_fn, error);
    }
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
