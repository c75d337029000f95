// The `proxy` device (LXD's keys, lodge.conf(5)): `listen` and `connect` as
// PROTOCOL:ADDRESS:PORT (tcp or udp; IPv6 addresses in brackets), `nat` and `bind`. Parsing
// and the checks that need nothing but the keys; lodged's proxy manager checks the rest
// (nat=true needs the container's static address on a managed network).
#pragma once

#include "common/config.hpp"

#include <cstdint>
#include <string>

namespace lodge {

struct ProxyEndpoint {
    std::string protocol; // "tcp" or "udp"
    std::string address;  // numeric, without brackets
    bool ipv6 = false;
    uint16_t port = 0;

    bool wildcard() const { return address == "0.0.0.0" || address == "::"; }
    bool loopback() const;
    // As written in the keys: tcp:1.2.3.4:80, tcp:[::1]:80.
    std::string text() const;
    // ADDRESS:PORT with brackets for IPv6, as systemd-socket-proxyd takes it.
    std::string host_port() const;
};

struct ProxyDevice {
    std::string device;
    ProxyEndpoint listen, connect;
    bool nat = false;
};

bool is_proxy(const KeyMap& keys);
// "" or a message naming the device and the key.
std::string parse_proxy_endpoint(const std::string& device, const std::string& key,
                                 const std::string& value, ProxyEndpoint& out);
std::string parse_proxy_device(const std::string& device, const KeyMap& keys, ProxyDevice& out);
std::string check_proxy_device(const std::string& device, const KeyMap& keys);

} // namespace lodge
