#include "image/simplestreams.hpp"

#include "common/fd.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/utsname.h>
#include <unistd.h>

namespace lodge::image {
namespace {

constexpr size_t max_index_size = 64u << 20;

int invalid(std::string& error, const std::string& msg) {
    error = msg;
    log_error("%s", msg.c_str());
    return -EINVAL;
}

std::vector<std::string> split_aliases(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find(',', start);
        if (end == std::string::npos)
            end = s.size();
        std::string a = s.substr(start, end - start);
        a.erase(0, a.find_first_not_of(' '));
        a.erase(a.find_last_not_of(' ') + 1);
        if (!a.empty())
            out.push_back(a);
        start = end + 1;
    }
    return out;
}

bool read_file_item(const nlohmann::json& item, StreamFile& out) {
    if (!item.is_object() || !item.contains("path") || !item["path"].is_string() ||
        !item.contains("sha256") || !item["sha256"].is_string())
        return false;
    out.ftype = item.value("ftype", "");
    out.path = item["path"].get<std::string>();
    out.sha256 = item["sha256"].get<std::string>();
    out.size = item.contains("size") && item["size"].is_number_unsigned()
                   ? item["size"].get<uint64_t>()
                   : 0;
    return is_fingerprint(out.sha256);
}

std::string str(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// One version's container image, if it has one.
bool version_image(const nlohmann::json& items, RemoteImage& img) {
    if (!items.is_object())
        return false;
    // Items are keyed by name; find them by ftype.
    const nlohmann::json *combined = nullptr, *meta = nullptr, *rootxz = nullptr,
                         *squashfs = nullptr;
    for (auto& [name, item] : items.items()) {
        std::string ftype = str(item, "ftype");
        if (ftype == "lxd_combined.tar.gz")
            combined = &item;
        else if (ftype == "lxd.tar.xz")
            meta = &item;
        else if (ftype == "root.tar.xz")
            rootxz = &item;
        else if (ftype == "squashfs")
            squashfs = &item;
    }
    if (combined && read_file_item(*combined, img.metadata)) {
        img.rootfs = {};
        img.fingerprint = img.metadata.sha256;
        return true;
    }
    if (!meta || !read_file_item(*meta, img.metadata))
        return false;
    if (rootxz && read_file_item(*rootxz, img.rootfs)) {
        img.fingerprint = str(*meta, "combined_rootxz_sha256");
        if (img.fingerprint.empty())
            img.fingerprint = str(*meta, "combined_sha256");
        return is_fingerprint(img.fingerprint);
    }
    if (squashfs && read_file_item(*squashfs, img.rootfs)) {
        // Only when no tarball rootfs is offered: unsquashfs unpacks it (import-squashfs.cpp).
        img.fingerprint = str(*meta, "combined_squashfs_sha256");
        return is_fingerprint(img.fingerprint);
    }
    return false;
}

} // namespace

int parse_stream_index(const std::string& text, std::vector<std::string>& paths,
                       std::string& error) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("index") || !j["index"].is_object())
        return invalid(error, "Invalid simplestreams index: no \"index\" object");
    for (auto& [name, entry] : j["index"].items()) {
        if (!entry.is_object() || str(entry, "datatype") != "image-downloads")
            continue;
        std::string path = str(entry, "path");
        if (!path.empty())
            paths.push_back(path);
    }
    if (paths.empty())
        return invalid(error, "The simplestreams index lists no image-downloads catalog");
    return 0;
}

int parse_stream_products(const std::string& text, std::vector<RemoteImage>& out,
                          std::string& error) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("products") || !j["products"].is_object())
        return invalid(error, "Invalid simplestreams catalog: no \"products\" object");
    for (auto& [product, p] : j["products"].items()) {
        if (!p.is_object() || !p.contains("versions") || !p["versions"].is_object())
            continue;
        // Version names sort by time (20240505_1212); take the newest with a container image.
        std::vector<std::string> versions;
        for (auto& [v, unused] : p["versions"].items())
            versions.push_back(v);
        std::sort(versions.rbegin(), versions.rend());
        for (auto& v : versions) {
            auto& ver = p["versions"][v];
            RemoteImage img;
            if (!ver.is_object() || !version_image(ver.value("items", nlohmann::json()), img))
                continue;
            img.product = product;
            img.version = v;
            img.architecture = str(p, "arch");
            img.os = str(p, "os");
            img.release = str(p, "release");
            img.variant = str(p, "variant");
            img.aliases = split_aliases(str(p, "aliases"));
            img.description = str(p, "release_title");
            if (img.description.empty())
                img.description = img.os + " " + img.release + " " + img.architecture +
                                  (img.variant.empty() ? "" : " (" + img.variant + ")");
            out.push_back(std::move(img));
            break;
        }
    }
    return 0;
}

std::string stream_arch(const std::string& m) {
    if (m == "x86_64")
        return "amd64";
    if (m == "aarch64")
        return "arm64";
    if (m == "armv7l" || m == "armv8l")
        return "armhf";
    if (m == "i686" || m == "i586" || m == "i386")
        return "i386";
    if (m == "ppc64le")
        return "ppc64el";
    return m;
}

std::string host_stream_arch() {
    struct utsname u {};
    ::uname(&u);
    return stream_arch(u.machine);
}

const RemoteImage* find_remote_image(const std::vector<RemoteImage>& images, const std::string& ref,
                                     const std::string& arch, std::string& error) {
    std::string alias = ref, want_arch = arch;
    if (auto slash = ref.rfind('/'); slash != std::string::npos) {
        // "debian/12/arm64": an explicit architecture, when the last part names one.
        std::string last = ref.substr(slash + 1);
        for (auto& img : images)
            if (img.architecture == last) {
                alias = ref.substr(0, slash);
                want_arch = last;
                break;
            }
    }
    for (auto& img : images)
        if (img.architecture == want_arch &&
            std::find(img.aliases.begin(), img.aliases.end(), alias) != img.aliases.end())
            return &img;
    const RemoteImage* found = nullptr;
    for (auto& img : images)
        if (ref.size() >= 6 && img.fingerprint.compare(0, ref.size(), ref) == 0) {
            if (found && found->fingerprint != img.fingerprint) {
                error = "Image fingerprint prefix \"" + ref + "\" is ambiguous on the remote";
                return nullptr;
            }
            found = &img;
        }
    if (!found)
        error = "The remote has no image \"" + ref + "\" for " + want_arch;
    return found;
}

int list_remote(const std::string& base_url, const HttpOptions& options,
                std::vector<RemoteImage>& out, std::string& error) {
    std::string body;
    int r =
        http_get(url_join(base_url, "streams/v1/index.json"), options, max_index_size, body, error);
    if (r < 0)
        return r;
    std::vector<std::string> catalogs;
    if ((r = parse_stream_index(body, catalogs, error)) < 0)
        return r;
    for (auto& path : catalogs) {
        if ((r = http_get(url_join(base_url, path), options, max_index_size, body, error)) < 0)
            return r;
        if ((r = parse_stream_products(body, out, error)) < 0)
            return r;
    }
    return 0;
}

namespace {

// How often a download cut short is taken up again (by a Range request from where it
// stopped, or from the start when the server serves no ranges) before it fails.
constexpr int max_download_attempts = 4;

// One item into `path`, checked against its size and sha256; `combined` hashes on.
int fetch_item(const std::string& base_url, const HttpOptions& options, const StreamFile& f,
               const std::string& path, const std::string& stage, Sha256& combined,
               const StageProgress& progress, std::string& error) {
    if (progress)
        progress(stage, 0, f.size);
    Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) {
        error = "Cannot create " + path + ": " + std::strerror(errno);
        return log_error_errno(errno, "Cannot create %s", path.c_str());
    }
    const Sha256 combined_before = combined; // to start over from
    Sha256 own;
    uint64_t got = 0;
    HttpSink sink = [&](const char* data, size_t n) {
        if (f.size && got + n > f.size) {
            error =
                "The remote sent more than the " + std::to_string(f.size) + " bytes of " + f.path;
            return false;
        }
        own.update(data, n);
        combined.update(data, n);
        for (size_t done = 0; done < n;) {
            ssize_t w = ::write(out.get(), data + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                error = "Cannot write " + path + ": " + std::strerror(errno);
                return false;
            }
            done += static_cast<size_t>(w);
        }
        got += n;
        return true;
    };
    HttpProgress report = [&](uint64_t done, uint64_t total) {
        if (progress)
            progress(stage, done, total ? total : f.size);
    };
    std::string url = url_join(base_url, f.path);
    int r = 0;
    for (int attempt = 1; attempt <= max_download_attempts; attempt++) {
        r = http_download_from(url, options, got, sink, report, error);
        if (r == -ESPIPE) {
            // No ranges: the bytes so far go, and the file is fetched whole again.
            if (::ftruncate(out.get(), 0) < 0 || ::lseek(out.get(), 0, SEEK_SET) < 0) {
                error = "Cannot empty " + path + ": " + std::strerror(errno);
                return -errno;
            }
            own = Sha256();
            combined = combined_before;
            got = 0;
            continue;
        }
        bool cut_short = r == -EIO || r == -ETIMEDOUT;
        if (!cut_short || attempt == max_download_attempts)
            break;
        log_warning("Download of %s stopped at %llu of %llu bytes (attempt %d of %d): resuming",
                    f.path.c_str(), static_cast<unsigned long long>(got),
                    static_cast<unsigned long long>(f.size), attempt, max_download_attempts);
    }
    if (r < 0)
        return r;
    if (f.size && got != f.size)
        return invalid(error, "Download of " + f.path + " is truncated: " + std::to_string(got) +
                                  " of " + std::to_string(f.size) + " bytes");
    std::string sum = own.hex();
    if (sum != f.sha256)
        return invalid(error,
                       "sha256 mismatch for " + f.path + ": expected " + f.sha256 + ", got " + sum);
    if (::fsync(out.get()) < 0) {
        error = "Cannot sync " + path + ": " + std::strerror(errno);
        return -errno;
    }
    return 0;
}

} // namespace

int download_remote(const std::string& base_url, const HttpOptions& options, const RemoteImage& img,
                    const std::string& work_dir, ImageInfo& info, const StageProgress& progress,
                    std::string& error) {
    if (!img.unusable.empty())
        return invalid(error, "Cannot use image " + img.product + ": " + img.unusable);
    Sha256 combined;
    bool split = !img.rootfs.ftype.empty();
    int r = fetch_item(base_url, options, img.metadata, work_dir + "/image",
                       split ? "metadata" : "image", combined, progress, error);
    if (r < 0)
        return r;
    if (split && (r = fetch_item(base_url, options, img.rootfs, work_dir + "/rootfs", "rootfs",
                                 combined, progress, error)) < 0)
        return r;
    std::string fp = combined.hex();
    if (fp != img.fingerprint)
        return invalid(error, "Fingerprint mismatch for " + img.product + ": the catalog says " +
                                  img.fingerprint + ", the files hash to " + fp);
    info.fingerprint = fp;
    info.type = split ? "split" : "unified";
    info.size = img.metadata.size + img.rootfs.size;
    if (progress)
        progress("verifying", 0, 0);
    return read_metadata_into(work_dir + "/image", info, error);
}

int lookup_remote(const std::string& base_url, const HttpOptions& options, const std::string& ref,
                  RemoteImage& out, std::string& error) {
    std::vector<RemoteImage> images;
    if (int r = list_remote(base_url, options, images, error); r < 0)
        return r;
    const RemoteImage* img = find_remote_image(images, ref, host_stream_arch(), error);
    if (!img)
        return -ENOENT;
    out = *img;
    return 0;
}

} // namespace lodge::image
