#include "image/store.hpp"

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "image/import.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <nettle/sha2.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::image {
namespace {

// A split image's rootfs may be a squashfs (LXD's images), unpacked by unsquashfs on create.
bool is_squashfs_file(const std::string& path) {
    char magic[4];
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    return f && ::pread(f.get(), magic, sizeof magic, 0) == sizeof magic &&
           std::memcmp(magic, "hsqs", 4) == 0;
}

struct DirClose {
    void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirClose>;

std::string aliases_path() {
    return images_dir() + "/aliases.json";
}

std::string info_path(const std::string& fp) {
    return images_dir() + "/" + fp + "/info.json";
}

int fail(std::string& error, int err, const std::string& msg) {
    err = err < 0 ? -err : err;
    error = msg + ": " + std::strerror(err);
    log_error_errno(err, "%s", msg.c_str());
    return -err;
}

std::string hex(const uint8_t* d, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n; i++) {
        out += digits[d[i] >> 4];
        out += digits[d[i] & 15];
    }
    return out;
}

constexpr uint64_t progress_step = 4 << 20;

// Copies `in` (from its current offset) to a new file `path`, feeding the hash.
int copy_hashing(int in, const std::string& path, sha256_ctx& ctx, uint64_t& copied, uint64_t total,
                 const CopyProgress& progress, std::string& error) {
    Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out)
        return fail(error, errno, "Cannot create " + path);
    std::vector<uint8_t> buf(1 << 20);
    uint64_t last = copied;
    for (;;) {
        ssize_t n = ::read(in, buf.data(), buf.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail(error, errno, "Cannot read the image");
        if (n == 0)
            break;
        sha256_update(&ctx, static_cast<size_t>(n), buf.data());
        for (ssize_t done = 0; done < n;) {
            ssize_t w = ::write(out.get(), buf.data() + done, static_cast<size_t>(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return fail(error, errno, "Cannot write " + path);
            done += w;
        }
        copied += static_cast<uint64_t>(n);
        if (progress && copied - last >= progress_step) {
            last = copied;
            progress(copied, total);
        }
    }
    if (::fsync(out.get()) < 0)
        return fail(error, errno, "Cannot sync " + path);
    return 0;
}

uint64_t remaining_size(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    off_t pos = ::lseek(fd, 0, SEEK_CUR);
    return pos >= 0 && st.st_size > pos ? static_cast<uint64_t>(st.st_size - pos) : 0;
}

int write_aliases(const AliasMap& aliases, std::string& error) {
    nlohmann::json j = aliases;
    if (int r = write_file_atomic(aliases_path(), j.dump(2) + "\n", 0600); r < 0)
        return fail(error, r, "Cannot write " + aliases_path());
    return 0;
}

} // namespace

std::string images_dir() {
    return paths::state_dir() + "/images";
}

bool is_fingerprint(const std::string& s) {
    if (s.size() != 64)
        return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    return true;
}

std::string check_alias_name(const std::string& alias) {
    if (alias.empty())
        return "An image alias must not be empty";
    if (alias.size() > 255)
        return "Image alias \"" + alias.substr(0, 32) + "...\" is longer than 255 characters";
    for (unsigned char c : alias)
        if (c <= 0x20 || c >= 0x7f || c == ':' || c == '"' || c == '\\')
            return "Image alias \"" + alias +
                   "\" may hold only printable ASCII without spaces, ':', '\"' or '\\'";
    if (alias[0] == '.' || alias[0] == '-')
        return "Image alias \"" + alias + "\" must not start with '.' or '-'";
    return {};
}

nlohmann::json ImageInfo::to_json() const {
    return nlohmann::json{{"fingerprint", fingerprint},
                          {"type", type},
                          {"size", size},
                          {"architecture", architecture},
                          {"properties", properties},
                          {"uploaded_usec", uploaded_usec},
                          {"last_used_usec", last_used_usec},
                          {"cached", cached},
                          {"source", source},
                          {"auto_update", auto_update}};
}

bool ImageInfo::from_json(const nlohmann::json& j, ImageInfo& out) {
    if (!j.is_object())
        return false;
    try {
        out.fingerprint = j.at("fingerprint").get<std::string>();
        out.type = j.value("type", "unified");
        out.size = j.value("size", uint64_t{0});
        out.architecture = j.value("architecture", "");
        out.properties = j.value("properties", KeyMap{});
        out.uploaded_usec = j.value("uploaded_usec", uint64_t{0});
        out.last_used_usec = j.value("last_used_usec", uint64_t{0});
        out.cached = j.value("cached", false);
        out.source = j.value("source", "");
        out.auto_update = j.value("auto_update", false);
    } catch (const nlohmann::json::exception&) {
        return false;
    }
    return is_fingerprint(out.fingerprint);
}

int Store::ensure(std::string& error) const {
    std::string dir = images_dir();
    if (int r = mkdir_p(paths::state_dir(), 0755); r < 0)
        return fail(error, r, "Cannot create " + paths::state_dir());
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
        return fail(error, errno, "Cannot create " + dir);
    // Root-only whatever made it: images may hold anything.
    if (::chown(dir.c_str(), 0, 0) < 0 || ::chmod(dir.c_str(), 0700) < 0)
        return fail(error, errno, "Cannot make " + dir + " root-only");
    return 0;
}

std::vector<ImageInfo> Store::list() const {
    std::vector<ImageInfo> out;
    DirPtr d{::opendir(images_dir().c_str())};
    if (!d)
        return out;
    while (dirent* e = ::readdir(d.get())) {
        ImageInfo info;
        if (is_fingerprint(e->d_name) && get(e->d_name, info) == 0)
            out.push_back(std::move(info));
    }
    return out;
}

int Store::get(const std::string& fp, ImageInfo& out) const {
    if (!is_fingerprint(fp))
        return -EINVAL;
    std::string text;
    if (int r = read_file(info_path(fp), text); r < 0)
        return r;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!ImageInfo::from_json(j, out) || out.fingerprint != fp) {
        log_error("Ignoring image %s: its info.json is invalid", fp.c_str());
        return -EINVAL;
    }
    return 0;
}

int Store::resolve(const std::string& ref, std::string& fp, std::string& error) const {
    AliasMap a = aliases();
    if (auto it = a.find(ref); it != a.end()) {
        fp = it->second;
        return 0;
    }
    std::vector<std::string> matches;
    bool hexish = !ref.empty() && ref.size() <= 64;
    for (char c : ref)
        hexish = hexish && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (hexish)
        for (auto& info : list())
            if (info.fingerprint.compare(0, ref.size(), ref) == 0)
                matches.push_back(info.fingerprint);
    if (matches.size() == 1) {
        fp = matches[0];
        return 0;
    }
    if (matches.size() > 1) {
        error = "Image fingerprint prefix \"" + ref + "\" is ambiguous";
        return -EINVAL;
    }
    error = "No image \"" + ref + "\" in the local store";
    return -ENOENT;
}

AliasMap Store::aliases() const {
    std::string text;
    if (read_file(aliases_path(), text) < 0)
        return {};
    auto j = nlohmann::json::parse(text, nullptr, false);
    AliasMap out;
    if (j.is_object())
        for (auto& [k, v] : j.items())
            if (v.is_string() && is_fingerprint(v.get<std::string>()))
                out[k] = v.get<std::string>();
    return out;
}

std::vector<std::string> Store::aliases_of(const std::string& fp) const {
    std::vector<std::string> out;
    for (auto& [alias, target] : aliases())
        if (target == fp)
            out.push_back(alias);
    return out;
}

int Store::set_alias(const std::string& alias, const std::string& fp, bool replace,
                     std::string& error) const {
    if (auto e = check_alias_name(alias); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    ImageInfo info;
    if (get(fp, info) < 0) {
        error = "No image " + fp + " in the local store";
        return -ENOENT;
    }
    AliasMap a = aliases();
    if (auto it = a.find(alias); it != a.end() && it->second != fp && !replace) {
        error =
            "Image alias \"" + alias + "\" already exists (image " + it->second.substr(0, 12) + ")";
        return -EEXIST;
    }
    a[alias] = fp;
    return write_aliases(a, error);
}

int Store::remove_alias(const std::string& alias, std::string& error) const {
    AliasMap a = aliases();
    if (a.erase(alias) == 0) {
        error = "No image alias \"" + alias + "\"";
        return -ENOENT;
    }
    return write_aliases(a, error);
}

int Store::prepare(std::string& work_dir, std::string& error) const {
    if (int r = ensure(error); r < 0)
        return r;
    std::string tmpl = images_dir() + "/.tmp-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
        return fail(error, errno, "Cannot create a work directory in " + images_dir());
    work_dir = tmpl;
    return 0;
}

int Store::commit(const std::string& work_dir, const ImageInfo& info, std::string& error) const {
    if (!is_fingerprint(info.fingerprint)) {
        error = "Invalid image fingerprint";
        return -EINVAL;
    }
    if (int r = write_file_atomic(work_dir + "/info.json", info.to_json().dump(2) + "\n", 0600);
        r < 0)
        return fail(error, r, "Cannot write the image's info.json");
    std::string dest = images_dir() + "/" + info.fingerprint;
    if (::renameat2(AT_FDCWD, work_dir.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) < 0) {
        int err = errno;
        if (err == EEXIST) {
            error = "Image " + info.fingerprint + " is already in the local store";
            return -EEXIST;
        }
        return fail(error, err, "Cannot put image " + info.fingerprint + " in place");
    }
    Fd dir(::open(images_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir)
        ::fsync(dir.get());
    return 0;
}

int Store::retire(const std::string& fp, std::string& trash, std::string& error) const {
    ImageInfo info;
    if (get(fp, info) < 0) {
        error = "No image " + fp + " in the local store";
        return -ENOENT;
    }
    std::string tmpl = images_dir() + "/.trash-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
        return fail(error, errno, "Cannot create a trash directory in " + images_dir());
    std::string dest = tmpl + "/" + fp;
    if (::rename((images_dir() + "/" + fp).c_str(), dest.c_str()) < 0) {
        int err = errno;
        ::rmdir(tmpl.c_str());
        return fail(error, err, "Cannot remove image " + fp);
    }
    trash = tmpl;
    AliasMap a = aliases();
    bool changed = false;
    for (auto it = a.begin(); it != a.end();)
        if (it->second == fp) {
            it = a.erase(it);
            changed = true;
        } else {
            ++it;
        }
    std::string ignored;
    if (changed)
        write_aliases(a, ignored);
    return 0;
}

int Store::update(const ImageInfo& info) const {
    return write_file_atomic(info_path(info.fingerprint), info.to_json().dump(2) + "\n", 0600);
}

std::vector<std::string> Store::leftovers() const {
    std::vector<std::string> out;
    DirPtr d{::opendir(images_dir().c_str())};
    if (!d)
        return out;
    while (dirent* e = ::readdir(d.get())) {
        std::string n = e->d_name;
        if (n.rfind(".tmp-", 0) == 0 || n.rfind(".trash-", 0) == 0 || n.rfind(".dl-", 0) == 0)
            out.push_back(images_dir() + "/" + n);
    }
    return out;
}

std::string Store::image_path(const std::string& fp) {
    return images_dir() + "/" + fp + "/image";
}

std::string Store::rootfs_path(const std::string& fp) {
    return images_dir() + "/" + fp + "/rootfs";
}

int ingest(int image_fd, int rootfs_fd, const std::string& work_dir, ImageInfo& info,
           const CopyProgress& progress, std::string& error) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    uint64_t total = remaining_size(image_fd) + (rootfs_fd >= 0 ? remaining_size(rootfs_fd) : 0);
    uint64_t copied = 0;
    std::string image = work_dir + "/image", rootfs = work_dir + "/rootfs";
    int r = copy_hashing(image_fd, image, ctx, copied, total, progress, error);
    if (r < 0)
        return r;
    if (rootfs_fd >= 0 &&
        (r = copy_hashing(rootfs_fd, rootfs, ctx, copied, total, progress, error)) < 0)
        return r;
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx, sizeof digest, digest);
    info.fingerprint = hex(digest, sizeof digest);
    info.type = rootfs_fd >= 0 ? "split" : "unified";
    info.size = copied;
    // Read to the end once, so that no damaged image is stored.
    if ((r = verify_tarball(image, rootfs_fd >= 0 ? "metadata tarball" : "image", error)) < 0 ||
        (rootfs_fd >= 0 && !is_squashfs_file(rootfs) &&
         (r = verify_tarball(rootfs, "rootfs tarball", error)) < 0))
        return r;
    if ((r = read_metadata_into(image, info, error)) < 0) {
        if (rootfs_fd < 0 && error.find("no metadata.yaml") != std::string::npos)
            error += " (a plain rootfs tarball is no image: give metadata too, or use "
                     "`lodgectl create NAME TARBALL`)";
        return r;
    }
    if (progress)
        progress(copied, total);
    return 0;
}

int verify_tarball(const std::string& path, const std::string& what, std::string& error) {
    struct archive* a = archive_read_new();
    if (!a)
        return fail(error, ENOMEM, "Cannot check the " + what);
    archive_read_support_format_tar(a);
    archive_read_support_filter_all(a);
    int r = archive_read_open_filename(a, path.c_str(), 256 * 1024);
    struct archive_entry* e;
    size_t entries = 0;
    while (r == ARCHIVE_OK && (r = archive_read_next_header(a, &e)) >= ARCHIVE_WARN &&
           r != ARCHIVE_EOF) {
        entries++;
        r = archive_read_data_skip(a);
        if (r == ARCHIVE_WARN)
            r = ARCHIVE_OK;
    }
    std::string why = archive_error_string(a) ? archive_error_string(a) : "unreadable";
    archive_read_free(a);
    if (r != ARCHIVE_EOF || entries == 0) {
        error = "The " + what + " is damaged: " + (entries == 0 ? "no entries" : why);
        log_error("%s", error.c_str());
        return -EINVAL;
    }
    return 0;
}

int read_metadata_into(const std::string& image, ImageInfo& info, std::string& error) {
    Fd meta(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
    if (!meta)
        return fail(error, errno, "Cannot open " + image);
    KeyMap keys;
    if (int r = daemon::read_image_metadata(meta.get(), keys, error); r < 0) {
        if (error.find("metadata.yaml") == std::string::npos)
            error = "Not an LXD image: " + error;
        return r;
    }
    for (auto& [k, v] : keys) {
        if (k == "image.architecture")
            info.architecture = v;
        else if (k.rfind("image.", 0) == 0)
            info.properties[k.substr(6)] = v;
    }
    return 0;
}

std::string Sha256::hex() {
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx_, sizeof digest, digest);
    return lodge::image::hex(digest, sizeof digest);
}

int sha256_file(int fd, std::string& out, std::string& error) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail(error, errno, "Cannot read the file to hash");
        if (n == 0)
            break;
        sha256_update(&ctx, static_cast<size_t>(n), buf.data());
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx, sizeof digest, digest);
    out = hex(digest, sizeof digest);
    return 0;
}

} // namespace lodge::image
