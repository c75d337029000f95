// Container backups in LXD's instance backup layout; see backup.hpp.
#include "image/backup.hpp"

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <yaml.h>

namespace lodge::image {
namespace {

using daemon::fail_errno;
using daemon::fail_invalid;
using json = nlohmann::json;

constexpr const char* index_path = "backup/index.yaml";
constexpr const char* container_yaml = "backup/container/backup.yaml";
constexpr const char* container_rootfs = "backup/container/rootfs";
constexpr const char* snapshots_prefix = "backup/snapshots/";
constexpr size_t max_yaml_size = 16 << 20;
// A YAML document may reuse nodes (aliases); converting it must not blow up.
constexpr size_t max_yaml_nodes = 1 << 20;

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
using ReadArchive = std::unique_ptr<struct archive, ReadFree>;
using WriteArchive = std::unique_ptr<struct archive, WriteFree>;
using Entry = std::unique_ptr<struct archive_entry, EntryFree>;

const char* archive_msg(struct archive* a) {
    const char* m = archive_error_string(a);
    return m ? m : "unknown error";
}

int archive_err(struct archive* a) {
    int err = archive_errno(a);
    return err > 0 ? err : EIO;
}

// ---- YAML: libyaml's document tree as JSON (scalars as strings), and a block-style writer.

struct YamlDoc {
    yaml_parser_t parser{};
    yaml_document_t doc{};
    bool parser_ok = false, doc_ok = false;
    ~YamlDoc() {
        if (doc_ok)
            yaml_document_delete(&doc);
        if (parser_ok)
            yaml_parser_delete(&parser);
    }
};

bool node_to_json(yaml_document_t* doc, yaml_node_t* n, json& out, size_t& budget, int depth) {
    if (!n || budget == 0 || depth > 64)
        return false;
    budget--;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        out =
            std::string(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
        return true;
    case YAML_SEQUENCE_NODE:
        out = json::array();
        for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
            json item;
            if (!node_to_json(doc, yaml_document_get_node(doc, *i), item, budget, depth + 1))
                return false;
            out.push_back(std::move(item));
        }
        return true;
    case YAML_MAPPING_NODE:
        out = json::object();
        for (auto* p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t* k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE)
                return false;
            json value;
            if (!node_to_json(doc, yaml_document_get_node(doc, p->value), value, budget, depth + 1))
                return false;
            out[std::string(reinterpret_cast<const char*>(k->data.scalar.value),
                            k->data.scalar.length)] = std::move(value);
        }
        return true;
    default:
        out = nullptr;
        return true;
    }
}

int parse_yaml(const std::string& text, const std::string& what, json& out, std::string& error) {
    YamlDoc y;
    if (!yaml_parser_initialize(&y.parser))
        return fail_errno(error, ENOMEM, "Cannot parse " + what);
    y.parser_ok = true;
    yaml_parser_set_input_string(&y.parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    if (!yaml_parser_load(&y.parser, &y.doc))
        return fail_invalid(error, "Invalid " + what + ": line " +
                                       std::to_string(y.parser.problem_mark.line + 1) + ": " +
                                       (y.parser.problem ? y.parser.problem : "syntax error"));
    y.doc_ok = true;
    yaml_node_t* root = yaml_document_get_root_node(&y.doc);
    size_t budget = max_yaml_nodes;
    if (!root || root->type != YAML_MAPPING_NODE || !node_to_json(&y.doc, root, out, budget, 0))
        return fail_invalid(error, "Invalid " + what + ": not a mapping of the expected shape");
    return 0;
}

// A YAML double-quoted scalar.
std::string quoted(const std::string& v) {
    std::string out = "\"";
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

std::string yaml_scalar(const json& v) {
    if (v.is_string())
        return quoted(v.get<std::string>());
    if (v.is_null())
        return "null";
    return v.dump(); // numbers and booleans
}

void emit_yaml(std::string& out, const json& v, int indent) {
    std::string pad(static_cast<size_t>(indent), ' ');
    auto child = [&](const json& c) {
        if (c.is_object() && !c.empty()) {
            out += "\n";
            emit_yaml(out, c, indent + 2);
        } else if (c.is_array() && !c.empty()) {
            out += "\n";
            emit_yaml(out, c, indent);
        } else if (c.is_object()) {
            out += " {}\n";
        } else if (c.is_array()) {
            out += " []\n";
        } else {
            out += " " + yaml_scalar(c) + "\n";
        }
    };
    if (v.is_object()) {
        for (auto& [k, c] : v.items()) {
            out += pad + quoted(k) + ":";
            child(c);
        }
    } else if (v.is_array()) {
        for (auto& c : v) {
            out += pad + "-";
            if (c.is_object() && !c.empty()) {
                out += "\n";
                emit_yaml(out, c, indent + 2);
            } else {
                child(c);
            }
        }
    }
}

// ---- times: RFC 3339 as LXD writes them (Go's time.Time), µs since the epoch here.

std::string rfc3339(uint64_t usec) {
    if (usec == 0)
        return "0001-01-01T00:00:00Z";
    time_t secs = static_cast<time_t>(usec / 1000000);
    struct tm tm {};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lluZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<unsigned long long>(usec % 1000000));
    return buf;
}

uint64_t parse_rfc3339(const std::string& s) {
    struct tm tm {};
    int consumed = 0;
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6)
        return 0;
    if (tm.tm_year < 1970)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t secs = ::timegm(&tm);
    if (secs < 0)
        return 0;
    const char* p = s.c_str() + consumed;
    uint64_t frac = 0, scale = 1000000;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (scale > 1) {
                scale /= 10;
                frac += static_cast<uint64_t>(*p - '0') * scale;
            }
    }
    int64_t offset = 0;
    int oh = 0, om = 0;
    if ((*p == '+' || *p == '-') && std::sscanf(p + 1, "%2d:%2d", &oh, &om) == 2)
        offset = (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    int64_t total = static_cast<int64_t>(secs) - offset;
    return total > 0 ? static_cast<uint64_t>(total) * 1000000 + frac : 0;
}

// ---- config: what of a container's LXD definition lodge takes.

std::string string_of(const json& v) {
    if (v.is_string())
        return v.get<std::string>();
    if (v.is_null())
        return "";
    return v.dump();
}

// volatile.* keys are LXD's (or lodge's) state: a restore keeps the MACs, interface names and
// the base image; the rest (idmaps, last state, uuid) is remade.
bool keeps_volatile(const std::string& k) {
    auto ends = [&](const char* suffix) {
        size_t n = std::strlen(suffix);
        return k.size() > n && k.compare(k.size() - n, n, suffix) == 0;
    };
    return k == "volatile.base_image" || ends(".hwaddr") || ends(".name");
}

// Returns why the definition is refused (a device name that could name a path), or "".
std::string adopt(const json& def, const std::string& what, ContainerConfig& out,
                  std::vector<std::string>& notes) {
    if (def.contains("config") && def["config"].is_object())
        for (auto& [k, v] : def["config"].items()) {
            std::string value = string_of(v);
            if (k.rfind("volatile.", 0) == 0 && !keeps_volatile(k))
                continue;
            if (auto why = check_config_key(k, value, KeySource::lodge); !why.empty()) {
                notes.push_back(what + ": left out key " + k + ": " + why);
                continue;
            }
            out.config[k] = value;
        }
    if (def.contains("devices") && def["devices"].is_object())
        for (auto& [dev, keys] : def["devices"].items()) {
            if (!keys.is_object())
                continue;
            // Not left out with a note: such a name is an attack, not an LXD feature.
            if (auto why = check_device_name(dev); !why.empty())
                return what + ": " + why;
            KeyMap map;
            for (auto& [k, v] : keys.items())
                map[k] = string_of(v);
            // LXD's root disk names its storage pool; lodge keeps the rootfs itself.
            if (map["type"] == "disk" && map["path"] == "/")
                continue;
            ContainerConfig one;
            one.name = "imported";
            one.devices[dev] = map;
            if (auto why = check_container_config(one); !why.empty()) {
                notes.push_back(what + ": left out device " + dev + ": " + why);
                continue;
            }
            out.devices[dev] = map;
        }
    return {};
}

bool valid_snapshot_name(const std::string& s) {
    if (s.empty() || s.size() > 63 || s == "." || s == ".." || s[0] == '.')
        return false;
    for (unsigned char c : s)
        if (c <= 0x20 || c == '/' || c >= 0x7f)
            return false;
    return true;
}

// "./backup//x/" -> "backup/x"; `why` is set for absolute paths and ".." components.
std::string normalize(const char* raw, std::string& why) {
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

int open_reader(int fd, ReadArchive& out, std::string& error) {
    if (::lseek(fd, 0, SEEK_SET) < 0)
        return fail_errno(error, errno, "Cannot rewind the backup (it must be a file)");
    ReadArchive a(archive_read_new());
    if (!a)
        return fail_errno(error, ENOMEM, "Cannot read the backup");
    archive_read_support_format_tar(a.get());
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_bzip2(a.get());
    archive_read_support_filter_xz(a.get());
    archive_read_support_filter_lzma(a.get());
    archive_read_support_filter_zstd(a.get());
    if (archive_read_open_fd(a.get(), fd, 256 * 1024) != ARCHIVE_OK)
        return fail_invalid(error, std::string("Cannot read the backup: ") + archive_msg(a.get()));
    out = std::move(a);
    return 0;
}

int next_header(struct archive* a, struct archive_entry** e, std::string& error) {
    int r = archive_read_next_header(a, e);
    if (r == ARCHIVE_WARN || r == ARCHIVE_OK)
        return ARCHIVE_OK;
    if (r == ARCHIVE_EOF)
        return r;
    return fail_invalid(error, std::string("Cannot read the backup: ") + archive_msg(a));
}

int read_text(struct archive* a, struct archive_entry* e, const std::string& name, std::string& out,
              std::string& error) {
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return fail_invalid(error, name + " in the backup is not a regular file");
    out.clear();
    char buf[65536];
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n < 0)
            return fail_invalid(error, "Cannot read " + name + ": " + archive_msg(a));
        if (n == 0)
            return 0;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max_yaml_size)
            return fail_invalid(error, name + " in the backup is too large");
    }
}

// ---- writing

struct Sink {
    int fd;
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
    return static_cast<la_ssize_t>(size);
}

int fail_write(std::string& error, struct archive* a, const std::string& msg) {
    return fail_errno(error, archive_err(a), msg + ": " + archive_msg(a));
}

int write_text(struct archive* w, const std::string& path, const std::string& text,
               std::string& error) {
    Entry e(archive_entry_new());
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(text.size()));
    archive_entry_set_mtime(e.get(), ::time(nullptr), 0);
    if (archive_write_header(w, e.get()) != ARCHIVE_OK ||
        archive_write_data(w, text.data(), text.size()) < 0)
        return fail_write(error, w, "Cannot write " + path);
    return 0;
}

// The tree at `dir` under `prefix` in the archive: symlinks as they are, no other filesystem
// entered, numeric ids only, a shifted rootfs written with the container's ids.
int write_tree(struct archive* w, const std::string& dir, const std::string& prefix,
               uint32_t shift_base, uint32_t shift_size, uint64_t& done,
               const CopyProgress& progress, std::string& error) {
    ReadArchive disk(archive_read_disk_new());
    archive_read_disk_set_symlink_physical(disk.get());
    archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                                   ARCHIVE_READDISK_NO_FFLAGS);
    if (archive_read_disk_open(disk.get(), dir.c_str()) != ARCHIVE_OK)
        return fail_write(error, disk.get(), "Cannot read " + dir);
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
            return fail_write(error, disk.get(), "Cannot read " + dir);
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
            return fail_write(error, w, "Cannot write " + name);
        if (type != AE_IFREG || archive_entry_size(e.get()) == 0)
            continue;
        for (;;) {
            la_ssize_t n = archive_read_data(disk.get(), buf.data(), buf.size());
            if (n < 0)
                return fail_write(error, disk.get(), "Cannot read " + name);
            if (n == 0)
                break;
            if (archive_write_data(w, buf.data(), static_cast<size_t>(n)) < 0)
                return fail_write(error, w, "Cannot write " + name);
            done += static_cast<uint64_t>(n);
            if (progress && done - last >= (8u << 20)) {
                last = done;
                progress(done, 0);
            }
        }
    }
    return 0;
}

json definition(const ContainerConfig& c, const std::string& arch) {
    json config = json::object(), devices = json::object();
    for (auto& [k, v] : c.config)
        config[k] = v;
    // The rootfs in the backup is not shifted: LXD maps it afresh.
    config["volatile.last_state.idmap"] = "[]";
    for (auto& [d, keys] : c.devices) {
        json dev = json::object();
        for (auto& [k, v] : keys)
            dev[k] = v;
        devices[d] = dev;
    }
    return {{"architecture", arch}, {"config", config},          {"devices", devices},
            {"ephemeral", false},   {"profiles", json::array()}, {"stateful", false},
            {"description", ""},    {"expanded_config", config}, {"expanded_devices", devices}};
}

std::string architecture(const ContainerConfig& c) {
    std::string arch = c.get("image.architecture");
    if (!arch.empty())
        return arch;
    struct utsname u {};
    ::uname(&u);
    return u.machine;
}

// ---- extracting

struct RootAttrs {
    bool set = false;
    mode_t mode = 0755;
    uid_t uid = 0;
    gid_t gid = 0;
    struct timespec times[2] = {};
};

struct DeviceNode {
    bool kept, block;
    unsigned major, minor;
};

// One volume of the backup (the container's rootfs or a snapshot's) and where it goes.
struct Volume {
    std::string prefix; // "backup/container/rootfs", "backup/snapshots/S/rootfs"
    std::string root;   // canonical target directory
    Fd root_fd;
    const IdMap* idmap = nullptr;
    RootAttrs attrs;
    size_t entries = 0;
    std::map<std::string, DeviceNode> device_nodes;
};

la_int64_t unshift(const IdMap* map, la_int64_t id, bool uid) {
    if (!map)
        return id;
    for (auto& r : *map)
        if ((uid ? r.uid : r.gid) && static_cast<uint64_t>(id) >= r.host &&
            static_cast<uint64_t>(id) - r.host < r.range)
            return static_cast<la_int64_t>(r.ns + (static_cast<uint64_t>(id) - r.host));
    return id;
}

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
        if (daemon::import_detail::keeps_xattr(name)) {
            kept.emplace_back(name, value ? std::string(static_cast<const char*>(value), size)
                                          : std::string());
            continue;
        }
        dropped = true;
        daemon::import_detail::log_dropped_xattr(logged, name, rel);
    }
    if (!dropped)
        return;
    archive_entry_xattr_clear(e);
    for (auto& [n, v] : kept)
        archive_entry_xattr_add_entry(e, n.c_str(), v.data(), v.size());
}

int make_dir(const std::string& path, mode_t mode, std::string& error) {
    if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST)
        return fail_errno(error, errno, "Cannot create " + path);
    return 0;
}

int open_dir(const std::string& path, std::string& canonical, Fd& fd, std::string& error) {
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

} // namespace

bool parse_lxd_idmap(const std::string& text, IdMap& out) {
    out.clear();
    if (text.empty())
        return true;
    auto j = json::parse(text, nullptr, false);
    if (!j.is_array())
        return false;
    for (auto& e : j) {
        if (!e.is_object())
            return false;
        IdRange r;
        r.uid = e.value("Isuid", false);
        r.gid = e.value("Isgid", false);
        auto num = [&](const char* k) -> int64_t {
            return e.contains(k) && e[k].is_number_integer() ? e[k].get<int64_t>() : -1;
        };
        int64_t host = num("Hostid"), ns = num("Nsid"), range = num("Maprange");
        if (host < 0 || ns < 0 || range <= 0 || host > UINT32_MAX || ns > UINT32_MAX ||
            range > UINT32_MAX)
            return false;
        r.host = static_cast<uint64_t>(host);
        r.ns = static_cast<uint64_t>(ns);
        r.range = static_cast<uint64_t>(range);
        out.push_back(r);
    }
    return true;
}

int write_backup(int out_fd, const BackupSource& src, const CopyProgress& progress,
                 std::string& error) {
    const std::string& c = src.compression;
    if (!c.empty() && c != "gzip" && c != "xz" && c != "zstd" && c != "none")
        return fail_invalid(error, "Unknown compression \"" + c + "\": gzip, xz, zstd or none");
    Sink sink{out_fd};
    WriteArchive w(archive_write_new());
    archive_write_set_format_pax_restricted(w.get());
    if (c == "xz")
        archive_write_add_filter_xz(w.get());
    else if (c == "zstd")
        archive_write_add_filter_zstd(w.get());
    else if (c != "none")
        archive_write_add_filter_gzip(w.get());
    archive_write_set_bytes_in_last_block(w.get(), 1);
    if (archive_write_open(w.get(), &sink, nullptr, on_write, nullptr) != ARCHIVE_OK)
        return fail_write(error, w.get(), "Cannot write the backup");

    std::string arch = architecture(src.config);
    json names = json::array();
    for (auto& s : src.snapshots)
        names.push_back(s.name);
    json index = {{"name", src.config.name}, {"backend", "dir"},   {"pool", "default"},
                  {"snapshots", names},      {"optimized", false}, {"optimized_header", false},
                  {"type", "container"}};
    json container = definition(src.config, arch);
    container["name"] = src.config.name;
    container["type"] = "container";
    container["status"] = "Stopped";
    container["status_code"] = 102;
    json snaps = json::array();
    for (auto& s : src.snapshots) {
        json d = definition(s.config, arch);
        d["name"] = s.name;
        d["created_at"] = rfc3339(s.created_usec);
        d["expires_at"] = rfc3339(s.expires_usec);
        snaps.push_back(d);
    }
    json backup = {{"container", container},
                   {"snapshots", snaps},
                   {"pool",
                    {{"name", "default"},
                     {"driver", "dir"},
                     {"description", ""},
                     {"config", json::object()},
                     {"status", "Created"},
                     {"locations", json::array({"none"})}}},
                   {"volume",
                    {{"name", src.config.name},
                     {"type", "container"},
                     {"content_type", "filesystem"},
                     {"description", ""},
                     {"config", json::object()}}}};
    std::string index_text, backup_text;
    emit_yaml(index_text, index, 0);
    emit_yaml(backup_text, backup, 0);
    // index.yaml first, backup.yaml next: an import reads both without going through rootfs/.
    if (int r = write_text(w.get(), index_path, index_text, error); r < 0)
        return r;
    if (int r = write_text(w.get(), container_yaml, backup_text, error); r < 0)
        return r;
    uint64_t done = 0;
    if (int r = write_tree(w.get(), src.rootfs, container_rootfs, src.shift_base, src.shift_size,
                           done, progress, error);
        r < 0)
        return r;
    for (auto& s : src.snapshots)
        if (int r = write_tree(w.get(), s.dir + "/rootfs",
                               std::string(snapshots_prefix) + s.name + "/rootfs", s.shift_base,
                               s.shift_size, done, progress, error);
            r < 0)
            return r;
    if (archive_write_close(w.get()) != ARCHIVE_OK)
        return fail_write(error, w.get(), "Cannot finish the backup");
    if (sink.err)
        return fail_errno(error, sink.err, "Cannot write the backup");
    if (::fsync(out_fd) < 0 && errno != EINVAL)
        return fail_errno(error, errno, "Cannot sync the backup");
    if (progress)
        progress(done, done);
    return 0;
}

json BackupInfo::to_json() const {
    json snaps = json::array();
    auto map_json = [](const IdMap& m) {
        json a = json::array();
        for (auto& r : m)
            a.push_back({r.uid, r.gid, r.host, r.ns, r.range});
        return a;
    };
    for (auto& s : snapshots)
        snaps.push_back({{"name", s.name},
                         {"config", json::parse(serialize_container_config(s.config))},
                         {"created_usec", s.created_usec},
                         {"expires_usec", s.expires_usec},
                         {"idmap", map_json(s.idmap)}});
    return {{"name", name},
            {"type", type},
            {"config", json::parse(serialize_container_config(config))},
            {"idmap", map_json(idmap)},
            {"snapshots", snaps},
            {"notes", notes}};
}

bool BackupInfo::from_json(const json& j, BackupInfo& out) {
    try {
        auto map_of = [](const json& a, IdMap& m) {
            for (auto& r : a)
                m.push_back({r.at(0).get<bool>(), r.at(1).get<bool>(), r.at(2).get<uint64_t>(),
                             r.at(3).get<uint64_t>(), r.at(4).get<uint64_t>()});
        };
        out.name = j.at("name").get<std::string>();
        out.type = j.at("type").get<std::string>();
        if (!parse_container_config(j.at("config").dump(), out.config).empty())
            return false;
        map_of(j.at("idmap"), out.idmap);
        for (auto& s : j.at("snapshots")) {
            BackupSnapshot snap;
            snap.name = s.at("name").get<std::string>();
            if (!parse_container_config(s.at("config").dump(), snap.config).empty())
                return false;
            snap.created_usec = s.at("created_usec").get<uint64_t>();
            snap.expires_usec = s.at("expires_usec").get<uint64_t>();
            map_of(s.at("idmap"), snap.idmap);
            out.snapshots.push_back(std::move(snap));
        }
        out.notes = j.at("notes").get<std::vector<std::string>>();
        return true;
    } catch (const std::exception&) {
        return false;
    }
}

int read_backup_info(int fd, BackupInfo& info, std::string& error) {
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return fail_errno(error, errno, "Cannot stat the backup");
    if (!S_ISREG(st.st_mode))
        return fail_invalid(error, "The backup must be a regular file (it is read twice)");
    ReadArchive a;
    if (int r = open_reader(fd, a, error); r < 0)
        return r;
    std::string index_text, backup_text, why;
    bool have_index = false, have_backup = false;
    struct archive_entry* e;
    int r;
    while (!(have_index && have_backup) && (r = next_header(a.get(), &e, error)) == ARCHIVE_OK) {
        const char* raw = archive_entry_pathname(e);
        if (!raw)
            return fail_invalid(error, "The backup has an entry with an unreadable name");
        std::string name = normalize(raw, why);
        if (!why.empty())
            return fail_invalid(error, "refusing entry '" + std::string(raw) + "': " + why);
        if (name == index_path) {
            if ((r = read_text(a.get(), e, name, index_text, error)) < 0)
                return r;
            have_index = true;
        } else if (name == container_yaml) {
            if ((r = read_text(a.get(), e, name, backup_text, error)) < 0)
                return r;
            have_backup = true;
        } else if (name.rfind("backup/virtual-machine", 0) == 0) {
            return fail_invalid(error, "The backup is of a virtual machine; lodge runs containers");
        }
    }
    if (r < 0)
        return r;
    if (!have_index)
        return fail_invalid(error, "Not a container backup: it has no backup/index.yaml");
    if (!have_backup)
        return fail_invalid(error, "The backup has no backup/container/backup.yaml");

    json index, backup;
    if ((r = parse_yaml(index_text, "backup/index.yaml", index, error)) < 0 ||
        (r = parse_yaml(backup_text, "backup/container/backup.yaml", backup, error)) < 0)
        return r;
    info.type = index.contains("type") ? string_of(index["type"]) : "container";
    if (info.type.empty())
        info.type = "container";
    if (info.type != "container")
        return fail_invalid(error,
                            "The backup is of a " + info.type + "; lodge imports containers");
    if (index.contains("optimized") && string_of(index["optimized"]) == "true")
        return fail_invalid(error, "The backup is in a storage driver's own format (optimized); "
                                   "export it again without --optimized-storage");
    info.name = string_of(index.value("name", json("")));
    const json& container = backup.contains("container") && backup["container"].is_object()
                                ? backup["container"]
                                : json::object();
    if (info.name.empty())
        info.name = string_of(container.value("name", json("")));
    info.config.name = info.name;
    if (auto why = adopt(container, "container", info.config, info.notes); !why.empty())
        return fail_invalid(error, "Refusing the backup: " + why);
    if (container.contains("profiles") && container["profiles"].is_array() &&
        !container["profiles"].empty())
        info.notes.push_back("container: its profiles (" + container["profiles"].dump() +
                             ") are LXD's: their devices and keys are not imported");
    if (auto it = container.find("config"); it != container.end() && it->is_object()) {
        std::string map = string_of(it->value("volatile.last_state.idmap", json("")));
        if (!parse_lxd_idmap(map, info.idmap))
            return fail_invalid(error, "Invalid volatile.last_state.idmap in backup.yaml");
    }
    // The name is checked where it is chosen (the caller may give another).
    ContainerConfig named = info.config;
    named.name = "imported";
    if (auto why_cfg = check_container_config(named); !why_cfg.empty())
        return fail_invalid(error,
                            "The backup's container config is not one lodge takes: " + why_cfg);

    // The snapshots in the tarball are those index.yaml lists; backup.yaml describes them.
    std::map<std::string, const json*> described;
    if (backup.contains("snapshots") && backup["snapshots"].is_array())
        for (auto& s : backup["snapshots"])
            if (s.is_object() && s.contains("name"))
                described[string_of(s["name"])] = &s;
    if (index.contains("snapshots") && index["snapshots"].is_array())
        for (auto& n : index["snapshots"]) {
            std::string name = string_of(n);
            if (!valid_snapshot_name(name))
                return fail_invalid(error, "refusing snapshot name '" + name + "' in the backup");
            BackupSnapshot snap;
            snap.name = name;
            snap.config.name = info.name;
            snap.idmap = info.idmap;
            if (auto d = described.find(name); d != described.end()) {
                const json& def = *d->second;
                if (auto why = adopt(def, "snapshot " + name, snap.config, info.notes);
                    !why.empty())
                    return fail_invalid(error, "Refusing the backup: " + why);
                snap.created_usec = parse_rfc3339(string_of(def.value("created_at", json(""))));
                snap.expires_usec = parse_rfc3339(string_of(def.value("expires_at", json(""))));
                if (auto it = def.find("config"); it != def.end() && it->is_object()) {
                    std::string map = string_of(it->value("volatile.last_state.idmap", json("")));
                    if (!map.empty() && !parse_lxd_idmap(map, snap.idmap))
                        return fail_invalid(error, "Invalid volatile.last_state.idmap of "
                                                   "snapshot " +
                                                       name);
                }
            } else {
                snap.config = info.config;
            }
            info.snapshots.push_back(std::move(snap));
        }
    return 0;
}

int extract_backup(int fd, const BackupInfo& info, const std::string& container_dir,
                   const CopyProgress& progress, std::string& error) {
    std::vector<std::unique_ptr<Volume>> volumes;
    auto add_volume = [&](const std::string& prefix, const std::string& dir, const IdMap& map) {
        auto v = std::make_unique<Volume>();
        v->prefix = prefix;
        v->idmap = map.empty() ? nullptr : &map;
        int r = open_dir(dir, v->root, v->root_fd, error);
        if (r >= 0)
            volumes.push_back(std::move(v));
        return r;
    };
    if (int r = add_volume(container_rootfs, container_dir + "/rootfs", info.idmap); r < 0)
        return r;
    if (!info.snapshots.empty())
        if (int r = make_dir(container_dir + "/snapshots", 0700, error); r < 0)
            return r;
    for (auto& s : info.snapshots) {
        std::string dir = container_dir + "/snapshots/" + s.name;
        int r = make_dir(dir, 0700, error);
        if (r >= 0)
            r = make_dir(dir + "/rootfs", 0755, error);
        if (r >= 0)
            r = add_volume(std::string(snapshots_prefix) + s.name + "/rootfs", dir + "/rootfs",
                           s.idmap);
        if (r < 0)
            return r;
    }
    struct stat st {};
    uint64_t total = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;

    ReadArchive a;
    if (int r = open_reader(fd, a, error); r < 0)
        return r;
    WriteArchive w(archive_write_disk_new());
    if (!w)
        return fail_errno(error, ENOMEM, "Cannot extract the backup");
    // No ARCHIVE_EXTRACT_FFLAGS: a backup does not get to make immutable files either.
    archive_write_disk_set_options(
        w.get(), ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                     ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                     ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    std::set<std::string> dropped_xattrs;
    uint64_t last = 0;
    struct archive_entry* e;
    std::string why;
    int r;
    while ((r = next_header(a.get(), &e, error)) == ARCHIVE_OK) {
        const char* raw_c = archive_entry_pathname(e);
        if (!raw_c)
            return fail_invalid(error, "The backup has an entry with an unreadable name");
        std::string raw = raw_c;
        std::string name = normalize(raw_c, why);
        if (!why.empty())
            return fail_invalid(error, "refusing entry '" + raw + "': " + why);
        Volume* vol = nullptr;
        for (auto& v : volumes)
            if (name == v->prefix || name.rfind(v->prefix + "/", 0) == 0) {
                vol = v.get();
                break;
            }
        if (!vol)
            continue; // index.yaml, backup.yaml, metadata.yaml, templates/, unlisted snapshots
        std::string rel =
            name.size() > vol->prefix.size() ? name.substr(vol->prefix.size() + 1) : std::string();
        archive_entry_set_uid(e, unshift(vol->idmap, archive_entry_uid(e), true));
        archive_entry_set_gid(e, unshift(vol->idmap, archive_entry_gid(e), false));
        if (rel.empty()) {
            // The rootfs's own entry: its attributes go on the directory at the end.
            if (archive_entry_filetype(e) != AE_IFDIR)
                return fail_invalid(error,
                                    "refusing entry '" + raw + "': the root is not a directory");
            RootAttrs& ra = vol->attrs;
            ra.set = true;
            ra.mode = archive_entry_perm(e) & 07777;
            ra.uid = static_cast<uid_t>(archive_entry_uid(e));
            ra.gid = static_cast<gid_t>(archive_entry_gid(e));
            ra.times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
            ra.times[0] = ra.times[1];
            continue;
        }
        const char* hl = archive_entry_hardlink(e);
        std::string target;
        if (hl) {
            target = normalize(hl, why);
            if (why.empty() && target.rfind(vol->prefix + "/", 0) != 0)
                why = "hard link target " + std::string(hl) + " is outside " + vol->prefix;
            if (!why.empty())
                return fail_invalid(error, "refusing entry '" + raw + "': " + why);
            target = target.substr(vol->prefix.size() + 1);
            archive_entry_set_hardlink(e, (vol->root + "/" + target).c_str());
            auto node = vol->device_nodes.find(target);
            if (node != vol->device_nodes.end() &&
                (!node->second.kept || !daemon::import_detail::keeps_device_node(rel))) {
                daemon::import_detail::log_skipped_node(rel, node->second.block, node->second.major,
                                                        node->second.minor);
                continue;
            }
        } else {
            vol->device_nodes.erase(rel);
            mode_t type = archive_entry_filetype(e);
            if (type == AE_IFBLK || type == AE_IFCHR) {
                DeviceNode node{daemon::import_detail::keeps_device_node(rel), type == AE_IFBLK,
                                static_cast<unsigned>(archive_entry_rdevmajor(e)),
                                static_cast<unsigned>(archive_entry_rdevminor(e))};
                vol->device_nodes[rel] = node;
                if (!node.kept) {
                    daemon::import_detail::log_skipped_node(rel, node.block, node.major,
                                                            node.minor);
                    continue;
                }
            }
        }
        filter_xattrs(e, dropped_xattrs, rel);
        archive_entry_set_pathname(e, (vol->root + "/" + rel).c_str());
        r = archive_write_header(w.get(), e);
        if (r == ARCHIVE_WARN) {
            log_warning("%s: %s", raw.c_str(), archive_msg(w.get()));
        } else if (r != ARCHIVE_OK) {
            // libarchive reports its path checks (a symlink in the way) with errno 0 or -1.
            int err = archive_errno(w.get());
            if (err <= 0 || hl)
                return fail_invalid(error, "refusing entry '" + raw + "': " + archive_msg(w.get()));
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
                return fail_invalid(error, "Cannot read '" + raw +
                                               "' in the backup: " + archive_msg(a.get()));
            if (archive_write_data_block(w.get(), buf, size, offset) < ARCHIVE_WARN)
                return fail_errno(error, archive_err(w.get()),
                                  "Cannot write '" + raw + "': " + archive_msg(w.get()));
        }
        r = archive_write_finish_entry(w.get());
        if (r == ARCHIVE_WARN)
            log_warning("%s: %s", raw.c_str(), archive_msg(w.get()));
        else if (r != ARCHIVE_OK)
            return fail_errno(error, archive_err(w.get()),
                              "Cannot extract '" + raw + "': " + archive_msg(w.get()));
        vol->entries++;
        uint64_t read = static_cast<uint64_t>(archive_filter_bytes(a.get(), -1));
        if (progress && read - last >= (8u << 20)) {
            last = read;
            progress(read, total);
        }
    }
    if (r < 0)
        return r;
    if (archive_write_close(w.get()) < ARCHIVE_WARN)
        return fail_errno(error, archive_err(w.get()),
                          std::string("Cannot finish extracting the backup: ") +
                              archive_msg(w.get()));
    for (auto& v : volumes) {
        if (v->entries == 0 && !v->attrs.set)
            return fail_invalid(error, "The backup has nothing under " + v->prefix + "/");
        if (v->attrs.set && (::fchown(v->root_fd.get(), v->attrs.uid, v->attrs.gid) < 0 ||
                             ::fchmod(v->root_fd.get(), v->attrs.mode) < 0 ||
                             ::futimens(v->root_fd.get(), v->attrs.times) < 0))
            return fail_errno(error, errno, "Cannot set the attributes of " + v->root);
    }
    for (auto& s : info.snapshots) {
        std::string dir = container_dir + "/snapshots/" + s.name;
        json meta{{"created_usec", s.created_usec}, {"expires_usec", s.expires_usec}};
        if (int rr = save_container_config(dir + "/config.json", s.config); rr < 0)
            return fail_errno(error, rr, "Cannot write the config of snapshot " + s.name);
        if (int rr = write_file_atomic(dir + "/snapshot.json", meta.dump() + "\n", 0600); rr < 0)
            return fail_errno(error, rr, "Cannot write snapshot.json of " + s.name);
    }
    if (progress)
        progress(total, total);
    return 0;
}

} // namespace lodge::image
