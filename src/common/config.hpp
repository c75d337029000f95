// A container's definition as stored in config.json: name, flat config map, devices.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace lodge {

using KeyMap = std::map<std::string, std::string>;

struct ContainerConfig {
    std::string name;
    KeyMap config;
    std::map<std::string, KeyMap> devices;

    std::string get(const std::string& key, const std::string& fallback = {}) const;
    bool get_bool(const std::string& key, bool fallback) const;

    bool privileged() const { return get_bool("security.privileged", false); }
    uint32_t idmap_base() const;
    uint32_t idmap_size() const;
    // Stop escalation timeout in seconds (boot.host_shutdown_timeout, default 30).
    unsigned shutdown_timeout() const;
    // Explicit boot.stop.signal, or nullopt for "auto" (decided from PID 1's SigBlk).
    std::optional<int> stop_signal() const;
    int reboot_signal() const;
};

// Parses config.json text. Returns an empty string or the reason it is invalid.
std::string parse_container_config(const std::string& json, ContainerConfig& out);
std::string serialize_container_config(const ContainerConfig& c);
// 1 to 64 of [A-Za-z0-9._-], not starting with '.'; returns the problem or an empty string.
std::string check_device_name(const std::string& name);
// Every key and device checked; returns the first problem or an empty string.
std::string check_container_config(const ContainerConfig& c);

int load_container_config(const std::string& path, ContainerConfig& out, std::string& error);
int save_container_config(const std::string& path, const ContainerConfig& c);

} // namespace lodge
