// The LXD side of a backup: index.yaml and backup.yaml written from a container and read back
// into what lodge takes of them (keys, devices, snapshots, idmaps); see backup.hpp.
#include "image/backup-detail.hpp"

#include "common/validate.hpp"
#include "image/import-error.hpp"
#include "image/yaml.hpp"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <sys/utsname.h>

namespace lodge::image {
namespace {

using daemon::fail_invalid;
using json = nlohmann::json;

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

namespace backup_detail {

void backup_documents(const BackupSource& src, std::string& index_text, std::string& backup_text) {
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
    index_text = yaml_block(index);
    backup_text = yaml_block(backup);
}

int parse_backup_documents(const std::string& index_text, const std::string& backup_text,
                           BackupInfo& info, std::string& error) {
    int r;
    json index, backup;
    if ((r = yaml_to_json(index_text, "backup/index.yaml", index, error)) < 0 ||
        (r = yaml_to_json(backup_text, "backup/container/backup.yaml", backup, error)) < 0)
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

} // namespace backup_detail
} // namespace lodge::image
