#include "common/config.hpp"
#include "common/fileio.hpp"
#include "common/nic.hpp"
#include "common/proxy-device.hpp"
#include "common/validate.hpp"

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>

namespace lodge {

std::string ContainerConfig::get(const std::string& key, const std::string& fallback) const {
    auto it = config.find(key);
    return it == config.end() ? fallback : it->second;
}

bool ContainerConfig::get_bool(const std::string& key, bool fallback) const {
    auto it = config.find(key);
    if (it == config.end())
        return fallback;
    return parse_bool(it->second).value_or(fallback);
}

uint32_t ContainerConfig::idmap_base() const {
    auto v = parse_uint(get("security.idmap.base"), UINT32_MAX);
    // An isolated container without an explicit base runs on the range lodged allocated.
    if (!v && get_bool("security.idmap.isolated", false))
        v = parse_uint(get("volatile.idmap.base"), UINT32_MAX);
    return v ? static_cast<uint32_t>(*v) : 1000000;
}

uint32_t ContainerConfig::idmap_size() const {
    auto v = parse_uint(get("security.idmap.size"), UINT32_MAX);
    return v ? static_cast<uint32_t>(*v) : 65536;
}

unsigned ContainerConfig::shutdown_timeout() const {
    auto v = parse_uint(get("boot.host_shutdown_timeout"), 86400 * 7);
    return v ? static_cast<unsigned>(*v) : 30;
}

std::optional<int> ContainerConfig::stop_signal() const {
    std::string v = get("boot.stop.signal", "auto");
    if (v == "auto")
        return std::nullopt;
    return parse_signal(v);
}

int ContainerConfig::reboot_signal() const {
    return parse_signal(get("boot.reboot.signal", "SIGINT")).value_or(SIGINT);
}

std::string parse_container_config(const std::string& text, ContainerConfig& out) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return "config.json is not a JSON object";
    ContainerConfig c;
    auto name = j.find("name");
    if (name == j.end() || !name->is_string())
        return "config.json has no \"name\" string";
    c.name = name->get<std::string>();
    if (auto cfg = j.find("config"); cfg != j.end()) {
        if (!cfg->is_object())
            return "\"config\" must be an object of strings";
        for (auto& [k, v] : cfg->items()) {
            if (!v.is_string())
                return "config key \"" + k + "\" must have a string value";
            c.config[k] = v.get<std::string>();
        }
    }
    if (auto devs = j.find("devices"); devs != j.end()) {
        if (!devs->is_object())
            return "\"devices\" must be an object";
        for (auto& [dev, keys] : devs->items()) {
            if (!keys.is_object())
                return "device \"" + dev + "\" must be an object of strings";
            for (auto& [k, v] : keys.items()) {
                if (!v.is_string())
                    return "device \"" + dev + "\" key \"" + k + "\" must be a string";
                c.devices[dev][k] = v.get<std::string>();
            }
        }
    }
    out = std::move(c);
    return {};
}

std::string serialize_container_config(const ContainerConfig& c) {
    nlohmann::json j;
    j["name"] = c.name;
    j["config"] = nlohmann::json::object();
    for (auto& [k, v] : c.config)
        j["config"][k] = v;
    j["devices"] = nlohmann::json::object();
    for (auto& [dev, keys] : c.devices) {
        j["devices"][dev] = nlohmann::json::object();
        for (auto& [k, v] : keys)
            j["devices"][dev][k] = v;
    }
    return j.dump(2) + "\n";
}

namespace {
// A name quoted in an error message, control characters shown as '?'.
std::string printable(const std::string& text) {
    std::string out = text;
    for (char& ch : out)
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)
            ch = '?';
    return out;
}
} // namespace

std::string check_device_name(const std::string& name) {
    // Names become file names (proxy records) and nft comments: only plain characters.
    if (name.empty())
        return "A device needs a name";
    if (name.size() > 64)
        return "Device name \"" + name.substr(0, 64) + "...\" is longer than 64 characters";
    if (name[0] == '.')
        return "Device name \"" + name + "\" must not start with \".\"";
    for (char ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-')
            return "Device name \"" + printable(name) +
                   "\" may hold only letters, digits, \".\", \"_\" and \"-\"";
    return {};
}

std::string check_container_config(const ContainerConfig& c) {
    if (auto e = check_container_name(c.name); !e.empty())
        return e;
    for (auto& [k, v] : c.config)
        if (auto e = check_config_key(k, v, KeySource::lodge); !e.empty())
            return e;
    for (auto& [dev, keys] : c.devices) {
        if (auto e = check_device_name(dev); !e.empty())
            return e;
        auto type = keys.find("type");
        if (type == keys.end())
            return "Device \"" + dev + "\" has no type";
        if (type->second == "disk") {
            for (auto& [k, v] : keys)
                if (k != "type" && k != "source" && k != "path" && k != "readonly")
                    return "Device \"" + dev + "\": unknown key \"" + k + "\" for a disk";
            if (keys.count("path") == 0 || keys.at("path").empty() || keys.at("path")[0] != '/')
                return "Device \"" + dev + "\": disk needs an absolute \"path\"";
            if (keys.count("source") == 0 || keys.at("source").empty() ||
                keys.at("source")[0] != '/')
                return "Device \"" + dev + "\": disk needs an absolute \"source\"";
            if (keys.count("readonly") && !parse_bool(keys.at("readonly")))
                return "Device \"" + dev + "\": \"readonly\" must be true or false";
        } else if (type->second == "nic") {
            if (auto e = check_nic_device(dev, keys); !e.empty())
                return e;
        } else if (type->second == "proxy") {
            if (auto e = check_proxy_device(dev, keys); !e.empty())
                return e;
        } else {
            return "Device \"" + dev + "\": unknown type \"" + type->second + "\"";
        }
    }
    return check_nic_names(c);
}

int load_container_config(const std::string& path, ContainerConfig& out, std::string& error) {
    std::string text;
    int r = read_file(path, text);
    if (r < 0) {
        error = "Cannot read " + path + ": " + std::strerror(-r);
        return r;
    }
    error = parse_container_config(text, out);
    if (error.empty())
        error = check_container_config(out);
    return error.empty() ? 0 : -EINVAL;
}

int save_container_config(const std::string& path, const ContainerConfig& c) {
    return write_file_atomic(path, serialize_container_config(c), 0600);
}

} // namespace lodge
