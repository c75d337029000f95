#include "common/proxy-device.hpp"

#include "common/validate.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace lodge {

namespace {

std::string get(const KeyMap& keys, const std::string& key) {
    auto it = keys.find(key);
    return it == keys.end() ? std::string() : it->second;
}

} // namespace

bool ProxyEndpoint::loopback() const {
    if (ipv6)
        return address == "::1";
    return address.rfind("127.", 0) == 0;
}

std::string ProxyEndpoint::host_port() const {
    return (ipv6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::string ProxyEndpoint::text() const {
    return protocol + ":" + host_port();
}

bool is_proxy(const KeyMap& keys) {
    return get(keys, "type") == "proxy";
}

std::string parse_proxy_endpoint(const std::string& device, const std::string& key,
                                 const std::string& value, ProxyEndpoint& out) {
    std::string where = "Device \"" + device + "\": \"" + key + "\" " + value + ": ";
    auto colon = value.find(':');
    if (colon == std::string::npos)
        return where + "expected PROTOCOL:ADDRESS:PORT, e.g. tcp:127.0.0.1:8080 or tcp:[::1]:8080";
    out.protocol = value.substr(0, colon);
    if (out.protocol == "unix")
        return where + "unix sockets are not supported by lodge (tcp or udp)";
    if (out.protocol != "tcp" && out.protocol != "udp")
        return where + "unknown protocol \"" + out.protocol + "\" (tcp or udp)";
    std::string rest = value.substr(colon + 1), port;
    if (!rest.empty() && rest[0] == '[') {
        auto close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            return where + "an IPv6 address goes in brackets followed by :PORT, e.g. [::1]:8080";
        out.address = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
        out.ipv6 = true;
    } else {
        auto last = rest.rfind(':');
        if (last == std::string::npos)
            return where + "no port (expected ADDRESS:PORT)";
        out.address = rest.substr(0, last);
        port = rest.substr(last + 1);
        if (out.address.find(':') != std::string::npos)
            return where + "an IPv6 address goes in brackets, e.g. tcp:[::1]:8080";
        out.ipv6 = false;
    }
    unsigned char buf[sizeof(in6_addr)];
    if (::inet_pton(out.ipv6 ? AF_INET6 : AF_INET, out.address.c_str(), buf) != 1)
        return where + "\"" + out.address + "\" is not an IP" + (out.ipv6 ? "v6" : "v4") +
               " address (host names are not resolved)";
    if (port.find_first_of(",-") != std::string::npos)
        return where + "port ranges and lists are not supported by lodge; add one device per port";
    auto p = parse_uint(port);
    if (!p || *p < 1 || *p > 65535)
        return where + "\"" + port + "\" is not a port (1-65535)";
    out.port = static_cast<uint16_t>(*p);
    return {};
}

std::string parse_proxy_device(const std::string& device, const KeyMap& keys, ProxyDevice& out) {
    static const char* supported[] = {"type", "listen", "connect", "nat", "bind"};
    for (auto& [k, v] : keys) {
        bool known = false;
        for (const char* s : supported)
            known = known || k == s;
        if (!known)
            return "Device \"" + device + "\": key \"" + k +
                   "\" is not supported for a proxy (lodge knows listen, connect, nat, bind)";
    }
    out.device = device;
    if (get(keys, "listen").empty() || get(keys, "connect").empty())
        return "Device \"" + device + "\": a proxy needs \"listen\" and \"connect\"";
    if (auto e = parse_proxy_endpoint(device, "listen", get(keys, "listen"), out.listen);
        !e.empty())
        return e;
    if (auto e = parse_proxy_endpoint(device, "connect", get(keys, "connect"), out.connect);
        !e.empty())
        return e;
    if (out.listen.protocol != out.connect.protocol)
        return "Device \"" + device + "\": \"listen\" is " + out.listen.protocol +
               " but \"connect\" is " + out.connect.protocol + "; both must be the same protocol";
    if (out.connect.wildcard())
        return "Device \"" + device + "\": \"connect\" needs a concrete address, not " +
               out.connect.address;
    if (auto bind = get(keys, "bind"); !bind.empty() && bind != "host")
        return "Device \"" + device + "\": \"bind\" " + bind +
               " is not supported by lodge (only bind=host: listen on the host, connect in the "
               "container)";
    std::string nat = get(keys, "nat");
    if (!nat.empty() && !parse_bool(nat))
        return "Device \"" + device + "\": \"nat\" must be true or false";
    out.nat = !nat.empty() && *parse_bool(nat);
    if (out.nat) {
        if (out.listen.ipv6 != out.connect.ipv6)
            return "Device \"" + device +
                   "\": with nat=true \"listen\" and \"connect\" must be the same address family";
        if (out.listen.loopback())
            return "Device \"" + device + "\": nat=true cannot listen on a loopback address (" +
                   out.listen.address + "); use nat=false, or listen on 0.0.0.0 or [::]";
    }
    return {};
}

std::string check_proxy_device(const std::string& device, const KeyMap& keys) {
    ProxyDevice ignored;
    return parse_proxy_device(device, keys, ignored);
}

} // namespace lodge
