#include "image/lxd-remote.hpp"

#include "common/fd.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::image {
namespace {

// An API answer (a list of every image at most): bounded like a simplestreams catalog.
constexpr size_t max_api_answer = 64u << 20;
// The multipart framing around a split export's two parts: boundaries and part headers.
constexpr uint64_t max_multipart_overhead = 64u << 10;
constexpr size_t max_part_headers = 16u << 10;
// Past any real image: an export is bounded by its listed size, which must not wrap around.
constexpr uint64_t max_image_size = uint64_t{1} << 40;

int fail(std::string& error, int r, const std::string& msg) {
    error = msg;
    log_error("%s", msg.c_str());
    return r;
}

std::string str(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Go's url.PathEscape keeps more, but escaping more is as good: the server unescapes.
std::string path_escape(const std::string& s) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
            out += static_cast<char>(c);
        else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// GET `path` of the remote's API: its "metadata" on success; LXD's error (or the HTTP status
// when the answer is not LXD's) naming the remote otherwise: -ENOENT for 404, -EACCES for 403.
int api_get(const Remote& remote, const HttpOptions& options, const std::string& path,
            nlohmann::json& metadata, std::string& error) {
    std::string url = url_join(remote.url, path), body;
    long status = 0;
    if (int r = http_get_any_status(url, options, max_api_answer, body, status, error); r < 0) {
        error = "Remote \"" + remote.name + "\": " + error;
        return r;
    }
    auto j = nlohmann::json::parse(body, nullptr, false);
    std::string type = j.is_object() ? str(j, "type") : "";
    if (status >= 400 || type == "error") {
        long code = status;
        if (j.is_object() && j.contains("error_code") && j["error_code"].is_number_integer())
            code = j["error_code"].get<long>();
        // The server's words reach a terminal: no control characters, and not megabytes.
        std::string msg = j.is_object() ? remote_text(str(j, "error"), 512) : "";
        if (msg.empty())
            msg = "HTTP status " + std::to_string(status);
        int r = code == 404 ? -ENOENT : code == 403 ? -EACCES : -EIO;
        return fail(error, r,
                    "Remote \"" + remote.name + "\" answered GET /" + path + ": " + msg + " (" +
                        std::to_string(code) + ")");
    }
    if (type != "sync" || !j.contains("metadata"))
        return fail(error, -EPROTO,
                    "Remote \"" + remote.name + "\" (" + remote.url +
                        ") does not speak LXD's API: GET /" + path + " gave no synchronous answer");
    metadata = std::move(j["metadata"]);
    return 0;
}

bool is_hex(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    });
}

int write_all(int fd, const char* data, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t w = ::write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        done += static_cast<size_t>(w);
    }
    return 0;
}

// The value of `name="..."` in a Content-Disposition header ("" if none).
std::string disposition_name(const std::string& headers) {
    std::string lower = headers;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    size_t line = lower.find("content-disposition:");
    if (line == std::string::npos)
        return "";
    size_t end = lower.find("\r\n", line);
    std::string value = headers.substr(line, end == std::string::npos ? end : end - line);
    for (size_t at = 0; (at = value.find("name=\"", at)) != std::string::npos; at++) {
        // Not the tail of `filename="`.
        if (at > 0 && value[at - 1] != ' ' && value[at - 1] != ';')
            continue;
        size_t start = at + 6, close = value.find('"', start);
        return close == std::string::npos ? "" : value.substr(start, close - start);
    }
    return "";
}

} // namespace

bool parse_lxd_image(const nlohmann::json& e, RemoteImage& out, std::string& why) {
    if (!e.is_object()) {
        why = "an entry is not an object";
        return false;
    }
    out = RemoteImage{};
    out.fingerprint = str(e, "fingerprint");
    if (!is_fingerprint(out.fingerprint)) {
        why = "an entry has no valid fingerprint";
        return false;
    }
    auto pub = e.find("public");
    if (pub == e.end() || !pub->is_boolean() || !pub->get<bool>()) {
        why = "image " + out.fingerprint + " is not public: lodge downloads public images only";
        return false;
    }
    if (std::string type = str(e, "type"); !type.empty() && type != "container") {
        why = "image " + out.fingerprint + " is a " + type + " image, not a container's";
        return false;
    }
    auto size = e.find("size");
    if (size == e.end() || !size->is_number_unsigned() || size->get<uint64_t>() == 0 ||
        size->get<uint64_t>() > max_image_size) {
        why = "image " + out.fingerprint + " has no size, or one over " +
              std::to_string(max_image_size) + " bytes";
        return false;
    }
    // LXD names architectures as the kernel does (x86_64); compare them as simplestreams does.
    out.architecture = remote_text(stream_arch(str(e, "architecture")), 32);
    nlohmann::json props = e.value("properties", nlohmann::json::object());
    if (props.is_object()) {
        out.os = remote_text(str(props, "os"), 255);
        out.release = remote_text(str(props, "release"), 255);
        out.variant = remote_text(str(props, "variant"), 255);
        out.description = remote_text(str(props, "description"), 1024);
    }
    std::vector<std::string> names;
    if (auto aliases = e.find("aliases"); aliases != e.end() && aliases->is_array())
        for (auto& a : *aliases)
            if (a.is_object() && !str(a, "name").empty())
                names.push_back(str(a, "name"));
    out.aliases = remote_aliases(names);
    out.product = out.aliases.empty() ? out.fingerprint.substr(0, 12) : out.aliases.front();
    out.version = remote_text(str(e, "created_at"), 64);
    // Whether the export is split shows only in its answer (lxd_download_remote).
    out.kind = "lxd";
    out.metadata.ftype = "lxd-export";
    out.metadata.path = "1.0/images/" + out.fingerprint + "/export";
    out.metadata.sha256 = out.fingerprint;
    out.metadata.size = size->get<uint64_t>();
    return true;
}

int parse_lxd_image_list(const nlohmann::json& list, const std::string& remote_name,
                         std::vector<RemoteImage>& out, std::string& error) {
    if (!list.is_array())
        return fail(error, -EPROTO,
                    "Remote \"" + remote_name + "\" sent an image list that is not a list");
    if (list.size() > max_remote_images)
        return fail(error, -EPROTO,
                    "Remote \"" + remote_name + "\" lists " + std::to_string(list.size()) +
                        " images, more than the " + std::to_string(max_remote_images) +
                        " lodge reads");
    for (auto& entry : list) {
        RemoteImage img;
        std::string why;
        // Private and VM images are not for lodge; skipped quietly, as `lxc image list` does.
        if (parse_lxd_image(entry, img, why))
            out.push_back(std::move(img));
    }
    return 0;
}

int lxd_list_remote(const Remote& remote, const HttpOptions& options, std::vector<RemoteImage>& out,
                    std::string& error) {
    nlohmann::json list;
    if (int r = api_get(remote, options, "1.0/images?recursion=1", list, error); r < 0)
        return r;
    return parse_lxd_image_list(list, remote.name, out, error);
}

int lxd_lookup_remote(const Remote& remote, const HttpOptions& options, const std::string& ref,
                      RemoteImage& out, std::string& error) {
    if (ref.empty())
        return fail(error, -EINVAL, "No image named for remote \"" + remote.name + "\"");
    nlohmann::json alias;
    std::string target;
    int r = api_get(remote, options, "1.0/images/aliases/" + path_escape(ref), alias, error);
    if (r >= 0) {
        target = alias.is_object() ? str(alias, "target") : "";
        if (!is_fingerprint(target))
            return fail(error, -EPROTO,
                        "Remote \"" + remote.name + "\" names no valid image for alias \"" + ref +
                            "\"");
    } else if (r == -ENOENT && is_hex(ref) && ref.size() >= 6 && ref.size() <= 64) {
        target = ref; // a fingerprint or its prefix: the server matches prefixes
    } else if (r == -ENOENT) {
        return fail(error, r, "The remote has no image \"" + ref + "\" (" + error + ")");
    } else {
        return r;
    }
    nlohmann::json entry;
    if ((r = api_get(remote, options, "1.0/images/" + target, entry, error)) < 0) {
        if (r == -ENOENT)
            error = "The remote has no image \"" + ref + "\" (" + error + ")";
        return r;
    }
    std::string why;
    if (!parse_lxd_image(entry, out, why))
        return fail(error, why.find("not public") != std::string::npos ? -EACCES : -EPROTO,
                    "Remote \"" + remote.name + "\": " + why);
    if (out.fingerprint.compare(0, target.size(), target) != 0)
        return fail(error, -EPROTO,
                    "Remote \"" + remote.name + "\" answered for image " + target +
                        " with another one, " + out.fingerprint);
    if (std::string host = host_stream_arch(); out.architecture != host)
        return fail(error, -ENOENT,
                    "The remote has no image \"" + ref + "\" for " + host + " (it is for " +
                        out.architecture + ")");
    return 0;
}

std::string multipart_boundary(const std::string& content_type) {
    auto lower = [](std::string v) {
        std::transform(v.begin(), v.end(), v.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        return v;
    };
    auto trim = [](const std::string& v) {
        size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
        return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
    };
    size_t semi = content_type.find(';');
    if (lower(trim(content_type.substr(0, semi))) != "multipart/form-data")
        return "";
    // Parameters: `; name=token` or `; name="quoted"`, the boundary among them by name.
    std::string boundary;
    for (size_t at = semi; at != std::string::npos && at < content_type.size();) {
        if (trim(content_type.substr(at + 1)).empty())
            break; // a trailing ';'
        size_t eq = content_type.find('=', at + 1);
        if (eq == std::string::npos)
            return "";
        std::string name = lower(trim(content_type.substr(at + 1, eq - at - 1)));
        size_t v = content_type.find_first_not_of(" \t", eq + 1);
        std::string value;
        if (v != std::string::npos && content_type[v] == '"') {
            size_t close = content_type.find('"', v + 1);
            if (close == std::string::npos)
                return "";
            value = content_type.substr(v + 1, close - v - 1);
            at = content_type.find(';', close);
            if (trim(content_type.substr(close + 1, at == std::string::npos ? at : at - close - 1))
                    .size())
                return "";
        } else {
            at = content_type.find(';', eq);
            value = trim(content_type.substr(eq + 1, at == std::string::npos ? at : at - eq - 1));
        }
        if (name == "boundary") {
            if (!boundary.empty())
                return ""; // two boundaries: which one the server meant is anyone's guess
            boundary = value;
        }
    }
    // RFC 2046: 1 to 70 of bchars (DIGIT ALPHA '()+_,-./:=? and space), not ending in space.
    static const std::string bchars_other = "'()+_,-./:=? ";
    if (boundary.empty() || boundary.size() > 70 || boundary.back() == ' ')
        return "";
    for (unsigned char c : boundary)
        if (!std::isalnum(c) && bchars_other.find(static_cast<char>(c)) == std::string::npos)
            return "";
    return boundary;
}

// A small multipart/form-data reader for a file: Debian has no C or C++ library that parses a
// multipart body from a file (libraries for it live in web frameworks). It takes exactly what
// LXD sends (two parts, `metadata` then `rootfs`, no preamble) and refuses anything else; the
// part headers are bounded, and the parts' sizes by the file's, which the download bounded.
int split_lxd_multipart(const std::string& export_path, const std::string& boundary,
                        const std::string& metadata_path, const std::string& rootfs_path,
                        std::string& combined_sha256, std::string& error) {
    auto malformed = [&](const std::string& why) {
        return fail(error, -EPROTO, "Malformed multipart image export: " + why);
    };
    if (boundary.empty())
        return malformed("no boundary");
    Fd in(::open(export_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) {
        error = "Cannot open " + export_path + ": " + std::strerror(errno);
        return log_error_errno(errno, "Cannot open %s", export_path.c_str());
    }
    const std::string first = "--" + boundary + "\r\n";
    const std::string delimiter = "\r\n--" + boundary;
    const char* const names[] = {"metadata", "rootfs"};
    const std::string* const paths[] = {&metadata_path, &rootfs_path};
    enum class State { start, headers, body, after_delimiter, done } state = State::start;
    Sha256 combined;
    Fd out;
    int part = -1;
    std::string buf;
    bool eof = false;
    std::vector<char> chunk(1u << 20);
    while (state != State::done) {
        // What the current state needs may not be in `buf` yet: read on (bounded per state).
        bool need_more = false;
        switch (state) {
        case State::start:
            if (buf.size() < first.size()) {
                need_more = true;
                break;
            }
            if (buf.compare(0, first.size(), first) != 0)
                return malformed("it does not start with its boundary");
            buf.erase(0, first.size());
            state = State::headers;
            break;
        case State::headers: {
            size_t end = buf.find("\r\n\r\n");
            // Bounded whether their end shows in this read or not.
            if (end != std::string::npos ? end > max_part_headers : buf.size() > max_part_headers)
                return malformed("part headers over " + std::to_string(max_part_headers) +
                                 " bytes");
            if (end == std::string::npos) {
                need_more = true;
                break;
            }
            if (++part >= 2)
                return malformed("more than two parts");
            std::string name = disposition_name(buf.substr(0, end + 2));
            if (name != names[part])
                return malformed("part " + std::to_string(part + 1) + " is \"" + name +
                                 "\", not \"" + names[part] + "\"");
            buf.erase(0, end + 4);
            out = Fd(::open(paths[part]->c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!out) {
                error = "Cannot create " + *paths[part] + ": " + std::strerror(errno);
                return log_error_errno(errno, "Cannot create %s", paths[part]->c_str());
            }
            state = State::body;
            break;
        }
        case State::body: {
            // A delimiter counts when "--" (the end) or CRLF (a next part) follows it, as in
            // RFC 2046; the same bytes followed by anything else are data.
            size_t at = buf.find(delimiter);
            while (at != std::string::npos && buf.size() >= at + delimiter.size() + 2 &&
                   buf.compare(at + delimiter.size(), 2, "--") != 0 &&
                   buf.compare(at + delimiter.size(), 2, "\r\n") != 0)
                at = buf.find(delimiter, at + 1);
            bool found = at != std::string::npos && buf.size() >= at + delimiter.size() + 2;
            // Until a whole delimiter shows, what comes before where one may start goes out.
            size_t flush = at != std::string::npos          ? at
                           : buf.size() >= delimiter.size() ? buf.size() - (delimiter.size() - 1)
                                                            : 0;
            combined.update(buf.data(), flush);
            if (int r = write_all(out.get(), buf.data(), flush); r < 0) {
                error = "Cannot write " + *paths[part] + ": " + std::strerror(-r);
                return log_error_errno(r, "Cannot write %s", paths[part]->c_str());
            }
            buf.erase(0, flush);
            if (!found) {
                need_more = true;
                break;
            }
            buf.erase(0, delimiter.size());
            if (::fsync(out.get()) < 0) {
                error = "Cannot sync " + *paths[part] + ": " + std::strerror(errno);
                return log_error_errno(errno, "Cannot sync %s", paths[part]->c_str());
            }
            out = Fd();
            state = State::after_delimiter;
            break;
        }
        case State::after_delimiter:
            if (buf.size() < 2) {
                need_more = true;
                break;
            }
            if (buf.compare(0, 2, "--") == 0)
                state = State::done; // the closing delimiter; an epilogue is ignored
            else if (buf.compare(0, 2, "\r\n") == 0) {
                buf.erase(0, 2);
                state = State::headers;
            } else
                return malformed("a boundary is followed by neither a part nor the end");
            break;
        case State::done:
            break;
        }
        if (!need_more)
            continue;
        if (eof)
            return malformed("it ends inside " +
                             std::string(part < 0 ? "its first boundary" : names[part]));
        ssize_t n = ::read(in.get(), chunk.data(), chunk.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            error = "Cannot read " + export_path + ": " + std::strerror(errno);
            return log_error_errno(errno, "Cannot read %s", export_path.c_str());
        }
        if (n == 0)
            eof = true;
        buf.append(chunk.data(), static_cast<size_t>(n));
    }
    if (part != 1)
        return malformed("it has no rootfs part");
    combined_sha256 = combined.hex();
    return 0;
}

int lxd_download_remote(const Remote& remote, const HttpOptions& options, const RemoteImage& img,
                        const std::string& work_dir, ImageInfo& info, const StageProgress& progress,
                        std::string& error) {
    const std::string export_path = work_dir + "/export", image_path = work_dir + "/image",
                      rootfs_path = work_dir + "/rootfs";
    FetchFile file{url_join(remote.url, img.metadata.path),
                   "the export of image " + img.fingerprint,
                   export_path,
                   "image",
                   img.metadata.size + max_multipart_overhead,
                   img.metadata.size};
    Sha256 whole;
    uint64_t got = 0;
    std::string content_type;
    if (int r = fetch_file(file, options, {&whole}, progress, got, &content_type, error); r < 0)
        return r;
    std::string fp;
    bool split = false;
    if (std::string boundary = multipart_boundary(content_type); !boundary.empty()) {
        split = true;
        if (int r = split_lxd_multipart(export_path, boundary, image_path, rootfs_path, fp, error);
            r < 0)
            return r;
        if (::unlink(export_path.c_str()) < 0) {
            error = "Cannot remove " + export_path + ": " + std::strerror(errno);
            return log_error_errno(errno, "Cannot remove %s", export_path.c_str());
        }
    } else if (content_type.rfind("multipart/", 0) == 0) {
        return fail(error, -EPROTO,
                    "Malformed multipart image export: no usable boundary in \"" + content_type +
                        "\"");
    } else {
        fp = whole.hex();
        if (::rename(export_path.c_str(), image_path.c_str()) < 0) {
            error = "Cannot rename " + export_path + ": " + std::strerror(errno);
            return log_error_errno(errno, "Cannot rename %s", export_path.c_str());
        }
    }
    if (fp != img.fingerprint)
        return fail(error, -EINVAL,
                    "Fingerprint mismatch for image " + img.fingerprint + " of remote \"" +
                        remote.name + "\": its export hashes to " + fp);
    info.fingerprint = fp;
    info.type = split ? "split" : "unified";
    info.size = got;
    if (split) {
        struct stat meta {
        }, rootfs{};
        if (::stat(image_path.c_str(), &meta) == 0 && ::stat(rootfs_path.c_str(), &rootfs) == 0)
            info.size = static_cast<uint64_t>(meta.st_size) + static_cast<uint64_t>(rootfs.st_size);
    }
    if (progress)
        progress("verifying", 0, 0);
    return read_metadata_into(image_path, info, error);
}

} // namespace lodge::image
