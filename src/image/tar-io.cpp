// libarchive for the image code; see tar-io.hpp.
#include "image/tar-io.hpp"

#include "common/log.hpp"
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace lodge::image::tar_io {
namespace {

using daemon::fail_errno;
using daemon::fail_invalid;
namespace rules = daemon::import_detail;

struct LinkResolverFree {
    void operator()(struct archive_entry_linkresolver* l) const {
        archive_entry_linkresolver_free(l);
    }
};

int fail_archive(std::string& error, struct archive* a, const std::string& msg) {
    return fail_errno(error, archive_err(a), msg + ": " + archive_msg(a));
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
        if (rules::keeps_xattr(name)) {
            kept.emplace_back(name, value ? std::string(static_cast<const char*>(value), size)
                                          : std::string());
            continue;
        }
        dropped = true;
        rules::log_dropped_xattr(logged, name, rel);
    }
    if (!dropped)
        return;
    archive_entry_xattr_clear(e);
    for (auto& [n, v] : kept)
        archive_entry_xattr_add_entry(e, n.c_str(), v.data(), v.size());
}

la_ssize_t sink_write(struct archive*, void* ud, const void* buf, size_t size) {
    auto* s = static_cast<FdSink*>(ud);
    const char* p = static_cast<const char*>(buf);
    for (size_t done = 0; done < size;) {
        ssize_t n = ::write(s->fd, p + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            s->err = errno;
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    if (s->hash)
        s->hash->update(buf, size);
    s->written += size;
    return static_cast<la_ssize_t>(size);
}

} // namespace

const char* archive_msg(struct archive* a) {
    const char* m = archive_error_string(a);
    return m ? m : "unknown error";
}

int archive_err(struct archive* a) {
    int err = archive_errno(a);
    return err > 0 ? err : EIO;
}

int open_tar_reader(int fd, const std::string& what, ReadArchive& out, std::string& error) {
    ReadArchive a(archive_read_new());
    if (!a)
        return fail_errno(error, ENOMEM, "Cannot read the " + what);
    archive_read_support_format_tar(a.get());
    // Debian's libarchive has all of these in-library (no external decompressor is run).
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_bzip2(a.get());
    archive_read_support_filter_xz(a.get());
    archive_read_support_filter_lzma(a.get());
    archive_read_support_filter_zstd(a.get());
    if (archive_read_open_fd(a.get(), fd, 256 * 1024) != ARCHIVE_OK)
        return fail_invalid(error, "Cannot read the " + what + ": " + archive_msg(a.get()));
    out = std::move(a);
    return 0;
}

int next_tar_header(struct archive* a, struct archive_entry** e, const std::string& what,
                    std::set<std::string>& warned, std::string& error) {
    int r = archive_read_next_header(a, e);
    if (r == ARCHIVE_WARN) {
        if (warned.insert(archive_msg(a)).second)
            log_warning("%s: %s", what.c_str(), archive_msg(a));
        return ARCHIVE_OK;
    }
    if (r == ARCHIVE_OK || r == ARCHIVE_EOF)
        return r;
    return fail_invalid(error, "Cannot read the " + what + ": " + archive_msg(a));
}

std::string normalize_entry_path(const char* raw, std::string& why) {
    why.clear();
    if (raw[0] == '/') {
        why = "absolute path";
        return {};
    }
    std::string out;
    for (const char* p = raw; *p;) {
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

int read_entry_text(struct archive* a, struct archive_entry* e, const std::string& what,
                    const std::string& name, size_t max_size, std::string& out,
                    std::string& error) {
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return fail_invalid(error, name + " in the " + what + " is not a regular file");
    if (archive_entry_size(e) > static_cast<la_int64_t>(max_size))
        return fail_invalid(error, name + " in the " + what + " is too large");
    out.clear();
    char buf[65536];
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n < 0)
            return fail_invalid(error,
                                "Cannot read " + name + " in the " + what + ": " + archive_msg(a));
        if (n == 0)
            return 0;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max_size)
            return fail_invalid(error, name + " in the " + what + " is too large");
    }
}

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

int apply_root_attrs(int root_fd, const RootAttrs& ra, const std::string& root,
                     std::string& error) {
    if (ra.set && (::fchown(root_fd, ra.uid, ra.gid) < 0 || ::fchmod(root_fd, ra.mode) < 0 ||
                   ::futimens(root_fd, ra.times) < 0))
        return fail_errno(error, errno, "Cannot set the attributes of " + root);
    return 0;
}

int open_root_dir(const std::string& path, std::string& canonical, Fd& fd, std::string& error) {
    char* real = ::realpath(path.c_str(), nullptr);
    if (!real)
        return fail_errno(error, errno, "Cannot resolve " + path);
    canonical = real;
    std::free(real);
    fd.reset(::open(canonical.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd)
        return fail_errno(error, errno, "Cannot open " + path);
    return 0;
}

int Extractor::open(std::string& error) {
    disk_.reset(archive_write_disk_new());
    if (!disk_)
        return fail_errno(error, ENOMEM, "Cannot extract the " + what_);
    // Entry names are checked and rewritten to absolute paths by the caller, so
    // ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS cannot be used; no ARCHIVE_EXTRACT_FFLAGS.
    archive_write_disk_set_options(
        disk_.get(), ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                         ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL |
                         ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    return 0;
}

int Extractor::write(struct archive* in, struct archive_entry* e, const std::string& raw,
                     const std::string& root, const std::string& rel, const char* hl,
                     const std::string& link_rel, std::map<std::string, DeviceNode>& device_nodes,
                     const std::function<void()>& on_block, std::string& error) {
    std::string link_desc;
    if (hl) {
        link_desc = " (hard link to " + std::string(hl) + ")";
        archive_entry_set_hardlink(e, (root + "/" + link_rel).c_str());
        // A link to a skipped node, or a link outside dev/ to a kept one, is such a node. The
        // link is recorded under its own name too, so a chain (dev/a, dev/b -> dev/a,
        // root/c -> dev/b) is judged like one link.
        auto node = device_nodes.find(link_rel);
        if (node == device_nodes.end()) {
            device_nodes.erase(rel);
        } else {
            DeviceNode linked = node->second;
            linked.kept = linked.kept && rules::keeps_device_node(rel);
            device_nodes[rel] = linked;
            if (!linked.kept) {
                rules::log_skipped_node(rel, linked.block, linked.major, linked.minor);
                return 0;
            }
        }
    } else {
        device_nodes.erase(rel);
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFBLK || type == AE_IFCHR) {
            DeviceNode node{rules::keeps_device_node(rel), type == AE_IFBLK,
                            static_cast<unsigned>(archive_entry_rdevmajor(e)),
                            static_cast<unsigned>(archive_entry_rdevminor(e))};
            device_nodes[rel] = node;
            if (!node.kept) {
                rules::log_skipped_node(rel, node.block, node.major, node.minor);
                return 0;
            }
        }
    }
    filter_xattrs(e, dropped_xattrs_, rel);
    archive_entry_set_pathname(e, (root + "/" + rel).c_str());

    struct archive* w = disk_.get();
    int r = archive_write_header(w, e);
    if (r == ARCHIVE_WARN) {
        log_warning("%s: %s", raw.c_str(), archive_msg(w));
    } else if (r != ARCHIVE_OK) {
        // libarchive reports its path checks (a symlink in the way, "..") with errno 0 or -1;
        // a hard link that cannot be made is an archive problem as well.
        int err = archive_errno(w);
        if (err <= 0 || hl)
            return fail_invalid(error,
                                "refusing entry '" + raw + "'" + link_desc + ": " + archive_msg(w));
        return fail_errno(error, err, "Cannot extract '" + raw + "': " + archive_msg(w));
    }
    for (;;) {
        const void* buf;
        size_t size;
        la_int64_t offset;
        r = archive_read_data_block(in, &buf, &size, &offset);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return fail_invalid(error, "Cannot read '" + raw + "' in the " + what_ + ": " +
                                           archive_msg(in));
        if (archive_write_data_block(w, buf, size, offset) < ARCHIVE_WARN)
            return fail_errno(error, archive_err(w),
                              "Cannot write '" + raw + "': " + archive_msg(w));
        if (on_block)
            on_block();
    }
    r = archive_write_finish_entry(w);
    if (r == ARCHIVE_WARN)
        log_warning("%s: %s", raw.c_str(), archive_msg(w));
    else if (r != ARCHIVE_OK)
        return fail_errno(error, archive_err(w), "Cannot extract '" + raw + "': " + archive_msg(w));
    return 1;
}

int Extractor::close(std::string& error) {
    if (archive_write_close(disk_.get()) < ARCHIVE_WARN)
        return fail_errno(error, archive_err(disk_.get()),
                          "Cannot finish extracting the " + what_ + ": " +
                              archive_msg(disk_.get()));
    return 0;
}

int open_tar_writer(FdSink& sink, const std::string& compression, const std::string& what,
                    WriteArchive& out, std::string& error) {
    WriteArchive w(archive_write_new());
    if (!w)
        return fail_errno(error, ENOMEM, "Cannot write the " + what);
    archive_write_set_format_pax_restricted(w.get());
    if (compression == "xz")
        archive_write_add_filter_xz(w.get());
    else if (compression == "zstd")
        archive_write_add_filter_zstd(w.get());
    else if (compression != "none")
        archive_write_add_filter_gzip(w.get());
    archive_write_set_bytes_in_last_block(w.get(), 1);
    if (archive_write_open(w.get(), &sink, nullptr, sink_write, nullptr) != ARCHIVE_OK)
        return fail_archive(error, w.get(), "Cannot write the " + what);
    out = std::move(w);
    return 0;
}

int write_text_entry(struct archive* w, const std::string& path, const std::string& text,
                     std::string& error) {
    Entry e(archive_entry_new());
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(text.size()));
    archive_entry_set_mtime(e.get(), ::time(nullptr), 0);
    if (archive_write_header(w, e.get()) != ARCHIVE_OK ||
        archive_write_data(w, text.data(), text.size()) < 0)
        return fail_archive(error, w, "Cannot write " + path);
    return 0;
}

int write_tree(struct archive* w, const std::string& dir, const std::string& prefix,
               uint32_t shift_base, uint32_t shift_size, uint64_t& done,
               const CopyProgress& progress, std::string& error) {
    ReadArchive disk(archive_read_disk_new());
    if (!disk)
        return fail_errno(error, ENOMEM, "Cannot read " + dir);
    archive_read_disk_set_symlink_physical(disk.get());
    archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                                   ARCHIVE_READDISK_NO_FFLAGS);
    if (archive_read_disk_open(disk.get(), dir.c_str()) != ARCHIVE_OK)
        return fail_archive(error, disk.get(), "Cannot read " + dir);
    // archive_read_disk reports every name of a file; the resolver turns the later ones into
    // hard links to the first (one resolver per tree: links never cross volumes).
    std::unique_ptr<struct archive_entry_linkresolver, LinkResolverFree> links(
        archive_entry_linkresolver_new());
    archive_entry_linkresolver_set_strategy(links.get(), archive_format(w));
    Entry e(archive_entry_new());
    std::vector<char> buf(1 << 20);
    uint64_t last = done;
    auto unshift = [&](la_int64_t id) {
        return shift_base && id >= shift_base &&
                       id < static_cast<la_int64_t>(shift_base) + shift_size
                   ? id - shift_base
                   : id;
    };
    auto relative = [&](const std::string& path) {
        std::string rel = path.size() > dir.size() ? path.substr(dir.size()) : "";
        while (!rel.empty() && rel[0] == '/')
            rel.erase(0, 1);
        return rel.empty() ? prefix : prefix + "/" + rel;
    };
    for (;;) {
        archive_entry_clear(e.get());
        int r = archive_read_next_header2(disk.get(), e.get());
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return fail_archive(error, disk.get(), "Cannot read " + dir);
        archive_read_disk_descend(disk.get());
        std::string name = archive_entry_pathname(e.get());
        mode_t type = archive_entry_filetype(e.get());
        if (type == AE_IFSOCK)
            continue; // a tarball holds no sockets; the guest makes them again
        archive_entry_set_pathname(e.get(), relative(name).c_str());
        archive_entry_set_uname(e.get(), nullptr);
        archive_entry_set_gname(e.get(), nullptr);
        archive_entry_set_uid(e.get(), unshift(archive_entry_uid(e.get())));
        archive_entry_set_gid(e.get(), unshift(archive_entry_gid(e.get())));
        struct archive_entry* entry = e.get();
        struct archive_entry* spare = nullptr;
        archive_entry_linkify(links.get(), &entry, &spare); // tar: in place, never deferred
        r = archive_write_header(w, e.get());
        if (r < ARCHIVE_WARN)
            return fail_archive(error, w, "Cannot write " + name);
        if (type != AE_IFREG || archive_entry_size(e.get()) == 0)
            continue;
        for (;;) {
            la_ssize_t n = archive_read_data(disk.get(), buf.data(), buf.size());
            if (n < 0)
                return fail_archive(error, disk.get(), "Cannot read " + name);
            if (n == 0)
                break;
            if (archive_write_data(w, buf.data(), static_cast<size_t>(n)) < 0)
                return fail_archive(error, w, "Cannot write " + name);
            done += static_cast<uint64_t>(n);
            if (progress && done - last >= (8u << 20)) {
                last = done;
                progress(done, 0);
            }
        }
    }
    return 0;
}

int close_tar_writer(struct archive* w, const FdSink& sink, const std::string& what,
                     std::string& error) {
    if (archive_write_close(w) != ARCHIVE_OK)
        return fail_archive(error, w, "Cannot finish the " + what);
    if (sink.err)
        return fail_errno(error, sink.err, "Cannot write the " + what);
    // EINVAL: a pipe or terminal, which has nothing to sync.
    if (::fsync(sink.fd) < 0 && errno != EINVAL)
        return fail_errno(error, errno, "Cannot sync the " + what);
    return 0;
}

} // namespace lodge::image::tar_io
