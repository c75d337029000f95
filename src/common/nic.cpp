#include "common/nic.hpp"
#include "common/validate.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cstdio>
#include <set>
#include <sys/random.h>

namespace lodge {
namespace {

std::string device_error(const std::string& device, const std::string& what) {
    return "Device \"" + device + "\": " + what;
}

std::string get(const KeyMap& keys, const std::string& key) {
    auto it = keys.find(key);
    return it == keys.end() ? std::string() : it->second;
}

// Random bytes for names and MACs; getrandom(2) blocks only before the pool is initialised.
void random_bytes(unsigned char* buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = ::getrandom(buf + done, len - done, 0);
        if (n > 0)
            done += static_cast<size_t>(n);
    }
}

std::string effective_name(const ContainerConfig& c, const std::string& dev, const KeyMap& keys) {
    std::string name = get(keys, "name");
    return name.empty() ? c.get("volatile." + dev + ".name") : name;
}

} // namespace

bool is_ipv4_address(const std::string& s) {
    in_addr a{};
    return ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6_address(const std::string& s) {
    in6_addr a{};
    return ::inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

bool is_nic(const KeyMap& keys) {
    return get(keys, "type") == "nic";
}

bool is_interface_name(const std::string& name) {
    // The kernel's rules (dev_valid_name): 1-15 bytes, not "." or "..", no '/', ':' or space.
    if (name.empty() || name.size() > 15 || name == "." || name == "..")
        return false;
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '/' || c == ':')
            return false;
    }
    return true;
}

bool is_unicast_hwaddr(const std::string& mac) {
    if (mac.size() != 17)
        return false;
    unsigned bytes[6];
    char tail;
    for (size_t i = 0; i < mac.size(); i++) {
        bool colon = i % 3 == 2;
        if (colon ? mac[i] != ':' : !std::isxdigit(static_cast<unsigned char>(mac[i])))
            return false;
    }
    if (std::sscanf(mac.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &bytes[0], &bytes[1], &bytes[2],
                    &bytes[3], &bytes[4], &bytes[5], &tail) != 6)
        return false;
    bool zero = std::all_of(std::begin(bytes), std::end(bytes), [](unsigned b) { return b == 0; });
    return !zero && (bytes[0] & 1) == 0; // multicast/broadcast addresses cannot name an interface
}

std::string check_nic_device(const std::string& device, const KeyMap& keys) {
    static const std::set<std::string> known{"type",         "nictype",     "parent",    "name",
                                             "hwaddr",       "mtu",         "host_name", "network",
                                             "ipv4.address", "ipv6.address"};
    for (auto& [k, v] : keys)
        if (!known.count(k))
            return device_error(device, "unknown key \"" + k + "\" for a nic");
    // network=NAME (a managed network, lodge-network(7)): nictype and parent come from it.
    bool managed = keys.count("network") != 0;
    if (managed) {
        if (!is_interface_name(get(keys, "network")))
            return device_error(device, "invalid \"network\" \"" + get(keys, "network") +
                                            "\" (a network name)");
        if (keys.count("parent"))
            return device_error(device, "\"parent\" does not apply with \"network\" (the "
                                        "network's bridge is the parent)");
        if (keys.count("nictype") && get(keys, "nictype") != "bridged")
            return device_error(device, "\"network\" makes a bridged nic; drop \"nictype\"");
    } else {
        for (const char* k : {"ipv4.address", "ipv6.address"})
            if (keys.count(k))
                return device_error(device, "\"" + std::string(k) +
                                                "\" needs \"network\" (a managed network "
                                                "gives the static lease)");
    }
    if (keys.count("ipv4.address") && !is_ipv4_address(get(keys, "ipv4.address")))
        return device_error(device, "invalid \"ipv4.address\" \"" + get(keys, "ipv4.address") +
                                        "\" (expected an IPv4 address such as 10.0.3.10)");
    if (keys.count("ipv6.address") && !is_ipv6_address(get(keys, "ipv6.address")))
        return device_error(device, "invalid \"ipv6.address\" \"" + get(keys, "ipv6.address") +
                                        "\" (expected an IPv6 address)");
    std::string nictype = managed ? "bridged" : get(keys, "nictype");
    if (nictype.empty())
        return device_error(device, "nic needs \"nictype\" (bridged, p2p or macvlan)");
    if (nictype != "bridged" && nictype != "p2p" && nictype != "macvlan")
        return device_error(device, "unknown \"nictype\" \"" + nictype +
                                        "\" (expected bridged, p2p or macvlan)");
    bool has_parent = keys.count("parent") != 0;
    if (nictype == "p2p" && has_parent)
        return device_error(device, "\"parent\" does not apply to nictype=p2p");
    if (nictype != "p2p" && !managed && !is_interface_name(get(keys, "parent")))
        return device_error(device, "nictype=" + nictype + " needs \"parent\", an interface name");
    if (keys.count("name") && !is_interface_name(get(keys, "name")))
        return device_error(device, "invalid \"name\" \"" + get(keys, "name") +
                                        "\" (1-15 characters, no '/', ':' or spaces)");
    if (keys.count("hwaddr") && !is_unicast_hwaddr(get(keys, "hwaddr")))
        return device_error(device, "invalid \"hwaddr\" \"" + get(keys, "hwaddr") +
                                        "\" (expected a unicast MAC such as 00:16:3e:01:02:03)");
    if (keys.count("mtu")) {
        auto mtu = parse_uint(get(keys, "mtu"), 65535);
        if (!mtu || *mtu < 1280)
            return device_error(device, "invalid \"mtu\" \"" + get(keys, "mtu") +
                                            "\" (expected 1280 to 65535)");
    }
    if (keys.count("host_name")) {
        if (nictype == "macvlan")
            return device_error(device, "\"host_name\" does not apply to nictype=macvlan");
        if (!is_interface_name(get(keys, "host_name")))
            return device_error(device, "invalid \"host_name\" \"" + get(keys, "host_name") +
                                            "\" (1-15 characters, no '/', ':' or spaces)");
    }
    return {};
}

std::string check_nic_names(const ContainerConfig& c) {
    std::map<std::string, std::string> names, host_names; // name -> device
    for (auto& [dev, keys] : c.devices) {
        if (!is_nic(keys))
            continue;
        std::string name = effective_name(c, dev, keys);
        if (!name.empty()) {
            auto [it, fresh] = names.emplace(name, dev);
            if (!fresh) {
                // Blame the device whose `name` key asks for it, not one lodge named earlier.
                bool mine = keys.count("name") || !c.devices.at(it->second).count("name");
                const std::string& culprit = mine ? dev : it->second;
                const std::string& other = mine ? it->second : dev;
                return device_error(culprit, "\"name\" \"" + name +
                                                 "\" is already used by device \"" + other + "\"");
            }
        }
        std::string host = get(keys, "host_name");
        if (!host.empty()) {
            auto [it, fresh] = host_names.emplace(host, dev);
            if (!fresh)
                return device_error(dev, "\"host_name\" \"" + host +
                                             "\" is already used by device \"" + it->second + "\"");
        }
    }
    return {};
}

std::string random_hwaddr() {
    unsigned char b[3];
    random_bytes(b, sizeof b);
    char out[18];
    std::snprintf(out, sizeof out, "00:16:3e:%02x:%02x:%02x", b[0], b[1], b[2]);
    return out;
}

std::string random_host_name() {
    unsigned char b[4];
    random_bytes(b, sizeof b);
    char out[13];
    std::snprintf(out, sizeof out, "veth%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
    return out;
}

bool fill_nic_volatile(ContainerConfig& c, const std::vector<std::string>& in_use) {
    std::set<std::string> used(in_use.begin(), in_use.end());
    for (auto& [dev, keys] : c.devices)
        if (is_nic(keys))
            if (auto n = effective_name(c, dev, keys); !n.empty())
                used.insert(n);
    bool changed = false;
    for (auto& [dev, keys] : c.devices) {
        if (!is_nic(keys))
            continue;
        if (effective_name(c, dev, keys).empty()) {
            std::string name;
            for (unsigned i = 0; name.empty() || used.count(name); i++)
                name = "eth" + std::to_string(i);
            used.insert(name);
            c.config["volatile." + dev + ".name"] = name;
            changed = true;
        }
        if (get(keys, "hwaddr").empty() && c.get("volatile." + dev + ".hwaddr").empty()) {
            c.config["volatile." + dev + ".hwaddr"] = random_hwaddr();
            changed = true;
        }
    }
    return changed;
}

void drop_device_volatile(ContainerConfig& c, const std::string& device) {
    std::string prefix = "volatile." + device + ".";
    for (auto it = c.config.begin(); it != c.config.end();)
        it = it->first.rfind(prefix, 0) == 0 ? c.config.erase(it) : std::next(it);
}

NicSpec nic_spec(const ContainerConfig& c, const std::string& device) {
    NicSpec s;
    auto it = c.devices.find(device);
    if (it == c.devices.end())
        return s;
    const KeyMap& keys = it->second;
    s.device = device;
    s.nictype = get(keys, "nictype");
    s.parent = get(keys, "parent");
    if (auto net = get(keys, "network"); !net.empty()) {
        s.nictype = "bridged"; // the network's bridge carries its name
        s.parent = net;
    }
    s.name = effective_name(c, device, keys);
    s.hwaddr = get(keys, "hwaddr");
    if (s.hwaddr.empty())
        s.hwaddr = c.get("volatile." + device + ".hwaddr");
    s.host_name = get(keys, "host_name");
    s.mtu = static_cast<unsigned>(parse_uint(get(keys, "mtu"), 65535).value_or(0));
    return s;
}

std::vector<NicSpec> nic_specs(const ContainerConfig& c) {
    std::vector<NicSpec> out;
    for (auto& [dev, keys] : c.devices)
        if (is_nic(keys))
            out.push_back(nic_spec(c, dev));
    return out;
}

} // namespace lodge
