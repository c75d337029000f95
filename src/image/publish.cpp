#include "image/publish.hpp"

#include "common/fd.hpp"
#include "common/log.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace lodge::image {
namespace {

struct ReadFree {
    void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteFree {
    void operator()(struct archive* a) const { archive_write_free(a); }
};
struct LinkResolverFree {
    void operator()(struct archive_entry_linkresolver* l) const {
        archive_entry_linkresolver_free(l);
    }
};
struct EntryFree {
    void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

// The image file, hashed as libarchive writes it.
struct Sink {
    int fd;
    Sha256 hash;
    uint64_t written = 0;
    int err = 0;
};

la_ssize_t on_write(struct archive*, void* ud, const void* buf, size_t size) {
    auto* s = static_cast<Sink*>(ud);
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
    s->hash.update(buf, size);
    s->written += size;
    return static_cast<la_ssize_t>(size);
}

// A YAML double-quoted scalar.
std::string quoted(const std::string& v) {
    std::string out = "\"";
    for (unsigned char c : v) {
        if (c == '"' || c == '\\')
            out += '\\', out += static_cast<char>(c);
        else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else
            out += static_cast<char>(c);
    }
    return out + "\"";
}

int fail(std::string& error, int err, const std::string& msg) {
    error = msg + ": " + std::strerror(err);
    log_error_errno(err, "%s", msg.c_str());
    return -err;
}

int fail_archive(std::string& error, struct archive* a, const std::string& msg) {
    int err = archive_errno(a) > 0 ? archive_errno(a) : EIO;
    const char* m = archive_error_string(a);
    error = msg + ": " + (m ? m : std::strerror(err));
    log_error("%s", error.c_str());
    return -err;
}

} // namespace

std::string check_compression(const std::string& c) {
    if (c.empty() || c == "gzip" || c == "xz" || c == "zstd" || c == "none")
        return {};
    return "Unknown compression \"" + c + "\": gzip, xz, zstd or none";
}

int publish_rootfs(const PublishRequest& req, const std::string& work_dir, ImageInfo& info,
                   const CopyProgress& progress, std::string& error) {
    if (auto why = check_compression(req.compression); !why.empty()) {
        error = why;
        return -EINVAL;
    }
    std::string path = work_dir + "/image";
    Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out)
        return fail(error, errno, "Cannot create " + path);
    Sink sink{out.get(), {}, 0, 0};
    std::unique_ptr<struct archive, WriteFree> w(archive_write_new());
    archive_write_set_format_pax_restricted(w.get());
    const std::string& c = req.compression;
    if (c == "xz")
        archive_write_add_filter_xz(w.get());
    else if (c == "zstd")
        archive_write_add_filter_zstd(w.get());
    else if (c != "none")
        archive_write_add_filter_gzip(w.get());
    archive_write_set_bytes_in_last_block(w.get(), 1);
    if (archive_write_open(w.get(), &sink, nullptr, on_write, nullptr) != ARCHIVE_OK)
        return fail_archive(error, w.get(), "Cannot write the image");

    // metadata.yaml: the container's image.* keys become the new image's properties.
    struct utsname u {};
    ::uname(&u);
    std::string arch = u.machine;
    std::string yaml;
    if (auto it = req.image_keys.find("image.architecture"); it != req.image_keys.end())
        arch = it->second;
    yaml = "architecture: " + quoted(arch) +
           "\ncreation_date: " + std::to_string(static_cast<long long>(::time(nullptr))) +
           "\nproperties:\n";
    for (auto& [k, v] : req.image_keys)
        if (k.rfind("image.", 0) == 0 && k != "image.architecture")
            yaml += "  " + quoted(k.substr(6)) + ": " + quoted(v) + "\n";
    std::unique_ptr<struct archive_entry, EntryFree> meta(archive_entry_new());
    archive_entry_set_pathname(meta.get(), "metadata.yaml");
    archive_entry_set_filetype(meta.get(), AE_IFREG);
    archive_entry_set_perm(meta.get(), 0644);
    archive_entry_set_size(meta.get(), static_cast<la_int64_t>(yaml.size()));
    archive_entry_set_mtime(meta.get(), ::time(nullptr), 0);
    if (archive_write_header(w.get(), meta.get()) != ARCHIVE_OK ||
        archive_write_data(w.get(), yaml.data(), yaml.size()) < 0)
        return fail_archive(error, w.get(), "Cannot write metadata.yaml");

    // rootfs/: symlinks as they are, no other filesystem entered, numeric ids only.
    std::unique_ptr<struct archive, ReadFree> disk(archive_read_disk_new());
    archive_read_disk_set_symlink_physical(disk.get());
    archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                                   ARCHIVE_READDISK_NO_FFLAGS);
    if (archive_read_disk_open(disk.get(), req.rootfs.c_str()) != ARCHIVE_OK)
        return fail_archive(error, disk.get(), "Cannot read " + req.rootfs);
    // archive_read_disk reports every name of a file; the resolver makes the later ones hard
    // links to the first.
    std::unique_ptr<struct archive_entry_linkresolver, LinkResolverFree> links(
        archive_entry_linkresolver_new());
    archive_entry_linkresolver_set_strategy(links.get(), archive_format(w.get()));
    std::unique_ptr<struct archive_entry, EntryFree> e(archive_entry_new());
    std::vector<char> buf(1 << 20);
    uint64_t done = 0, last = 0;
    for (;;) {
        archive_entry_clear(e.get());
        int r = archive_read_next_header2(disk.get(), e.get());
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return fail_archive(error, disk.get(), "Cannot read " + req.rootfs);
        archive_read_disk_descend(disk.get());
        std::string name = archive_entry_pathname(e.get());
        std::string rel = name.size() > req.rootfs.size() ? name.substr(req.rootfs.size()) : "";
        if (!rel.empty() && rel[0] == '/')
            rel.erase(0, 1);
        mode_t type = archive_entry_filetype(e.get());
        if (type == AE_IFSOCK)
            continue; // a tarball holds no sockets; the guest makes them again
        archive_entry_set_pathname(e.get(), rel.empty() ? "rootfs" : ("rootfs/" + rel).c_str());
        archive_entry_set_uname(e.get(), nullptr);
        archive_entry_set_gname(e.get(), nullptr);
        if (req.shift_base) {
            auto unshift = [&](la_int64_t id) {
                return id >= req.shift_base &&
                               id < static_cast<la_int64_t>(req.shift_base) + req.shift_size
                           ? id - req.shift_base
                           : id;
            };
            archive_entry_set_uid(e.get(), unshift(archive_entry_uid(e.get())));
            archive_entry_set_gid(e.get(), unshift(archive_entry_gid(e.get())));
        }
        struct archive_entry* entry = e.get();
        struct archive_entry* spare = nullptr;
        archive_entry_linkify(links.get(), &entry, &spare); // tar: in place, never deferred
        r = archive_write_header(w.get(), e.get());
        if (r < ARCHIVE_WARN)
            return fail_archive(error, w.get(), "Cannot write " + rel);
        if (type != AE_IFREG || archive_entry_size(e.get()) == 0)
            continue;
        for (;;) {
            la_ssize_t n = archive_read_data(disk.get(), buf.data(), buf.size());
            if (n < 0)
                return fail_archive(error, disk.get(), "Cannot read " + rel);
            if (n == 0)
                break;
            if (archive_write_data(w.get(), buf.data(), static_cast<size_t>(n)) < 0)
                return fail_archive(error, w.get(), "Cannot write " + rel);
            done += static_cast<uint64_t>(n);
            if (progress && done - last >= (8u << 20)) {
                last = done;
                progress(done, 0);
            }
        }
    }
    if (archive_write_close(w.get()) != ARCHIVE_OK)
        return fail_archive(error, w.get(), "Cannot finish the image");
    if (sink.err)
        return fail(error, sink.err, "Cannot write " + path);
    if (::fsync(out.get()) < 0)
        return fail(error, errno, "Cannot sync " + path);
    info.fingerprint = sink.hash.hex();
    info.type = "unified";
    info.size = sink.written;
    return read_metadata_into(path, info, error);
}

} // namespace lodge::image
