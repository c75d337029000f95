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
#include "image/tar-io.hpp"

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

using namespace image::tar_io;

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
    return open_tar_reader(src.fd, src.what, out, error);
}

std::string first_component(const std::string& path) {
    return path.substr(0, path.find('/'));
}

bool in_image_dir(const std::string& path, const char* dir) {
    return first_component(path) == dir;
}

// metadata.yaml, read from the archive and parsed into image.* keys.
int read_metadata_entry(struct archive* a, struct archive_entry* e, const std::string& what,
                        KeyMap& keys, std::string& error) {
    std::string text;
    int r = read_entry_text(a, e, what, "metadata.yaml", max_metadata_size, text, error);
    return r < 0 ? r : parse_metadata(text, keys, error);
}

enum class Kind { unknown, plain, unified };

int next_header(struct archive* a, struct archive_entry** e, TarSource& src, std::string& error) {
    return next_tar_header(a, e, src.what, src.warned, error);
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
        std::string name = normalize_entry_path(raw, why);
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

// Extracts the source into `root` (canonical, see open_root_dir). Entry names are checked here
// and rewritten to root + "/" + name; hard link targets likewise.
int extract(TarSource& src, Kind kind, const std::string& root, int root_fd, KeyMap& keys,
            Progress& progress, std::string& error) {
    ReadArchive a;
    int r = open_reader(src, a, error);
    if (r < 0)
        return r;
    Extractor out(src.what);
    if ((r = out.open(error)) < 0)
        return r;
    std::map<std::string, DeviceNode> device_nodes;
    auto report = [&] {
        progress.update(static_cast<uint64_t>(archive_filter_bytes(a.get(), -1)));
    };

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
        std::string name = normalize_entry_path(raw_c, why);
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
            if (archive_entry_filetype(e) != AE_IFDIR)
                return fail_invalid(error,
                                    "refusing entry '" + raw + "': the root is not a directory");
            set_root_attrs(e, root_attrs);
            continue;
        }

        const char* hl = archive_entry_hardlink(e);
        std::string target;
        if (hl) {
            target = normalize_entry_path(hl, why);
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
        }
        r = out.write(a.get(), e, raw, root, dest, hl, target, device_nodes, report, error);
        if (r < 0)
            return r;
        if (r > 0)
            extracted++;
        report();
    }
    if (r < 0)
        return r;
    uint64_t read_bytes = static_cast<uint64_t>(archive_filter_bytes(a.get(), -1));
    if ((r = out.close(error)) < 0)
        return r;

    if (kind == Kind::unified && !saw_metadata)
        return fail_invalid(error, "The " + src.what +
                                       " looks like an LXD image (rootfs/) but has no "
                                       "metadata.yaml");
    if (kind == Kind::plain && !root_attrs.set)
        root_attrs = pending_root;
    if (extracted == 0 && !root_attrs.set)
        return fail_invalid(error, "The " + src.what + " contains no root filesystem");
    if ((r = apply_root_attrs(root_fd, root_attrs, root, error)) < 0)
        return r;
    progress.finish(src.size ? src.size : read_bytes);
    return 0;
}

int import_tar(TarSource& src, Kind kind, const std::string& rootfs_dir, KeyMap& keys,
               Progress& progress, std::string& error) {
    std::string root;
    Fd root_fd;
    int r = open_root_dir(rootfs_dir, root, root_fd, error);
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
        std::string name = raw ? normalize_entry_path(raw, why) : std::string();
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
