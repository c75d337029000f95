// nic devices (CONTRACT §3): key checks, LXD's naming rules (first free ethN, 00:16:3e MACs,
// vethXXXXXXXX host ends) and the resolved form the runtime plugs. No netlink here: lodged,
// the supervisor and lodgectl all share these rules.
#pragma once

#include "common/config.hpp"

#include <string>
#include <vector>

namespace lodge {

bool is_nic(const KeyMap& keys);

// Checks one nic device's own keys. Returns an empty string or a message naming the device
// and the key.
std::string check_nic_device(const std::string& device, const KeyMap& keys);
// Names across all nic devices (`name` or volatile.<dev>.name) and host names must be unique.
std::string check_nic_names(const ContainerConfig& c);

bool is_interface_name(const std::string& name);
bool is_unicast_hwaddr(const std::string& mac);
bool is_ipv4_address(const std::string& s);
bool is_ipv6_address(const std::string& s);

// 00:16:3e plus three bytes from getrandom(2); "veth" plus 8 hex digits from getrandom(2).
std::string random_hwaddr();
std::string random_host_name();

// Gives every nic without `name` or volatile.<dev>.name the first free ethN (in device order,
// skipping static names, volatile names and `in_use`, e.g. interfaces already in the running
// container) and every nic without `hwaddr` or volatile.<dev>.hwaddr a random MAC. Returns
// whether anything was set.
bool fill_nic_volatile(ContainerConfig& c, const std::vector<std::string>& in_use = {});
// Removes volatile.<device>.* (a removed device takes its volatile keys with it).
void drop_device_volatile(ContainerConfig& c, const std::string& device);

// One nic as the runtime plugs it. mtu 0: not set (the parent's, or the kernel default).
struct NicSpec {
    std::string device;
    std::string nictype; // bridged, p2p, macvlan
    std::string parent;
    std::string name;      // inside the container
    std::string hwaddr;    // inside the container
    std::string host_name; // `host_name` key, else empty: the runtime picks one per boot
    unsigned mtu = 0;
};

// The nic `device` of `c` resolved: name and hwaddr from the keys, else their volatile keys.
// `c` must have been through fill_nic_volatile().
NicSpec nic_spec(const ContainerConfig& c, const std::string& device);
// Every nic of `c` in device order.
std::vector<NicSpec> nic_specs(const ContainerConfig& c);

} // namespace lodge
