#include "common/device-policy.hpp"

namespace lodge {

namespace {

constexpr unsigned rwm = DeviceRule::read | DeviceRule::write | DeviceRule::mknod;

constexpr DeviceRule allow_list[] = {
    {'b', DeviceRule::any, DeviceRule::any, DeviceRule::mknod, "mknod of any block node"},
    {'c', DeviceRule::any, DeviceRule::any, DeviceRule::mknod, "mknod of any char node"},
    {'c', 136, DeviceRule::any, rwm, "/dev/pts/*"},
    {'c', 1, 3, rwm, "/dev/null"},
    {'c', 1, 5, rwm, "/dev/zero"},
    {'c', 1, 7, rwm, "/dev/full"},
    {'c', 1, 8, rwm, "/dev/random"},
    {'c', 1, 9, rwm, "/dev/urandom"},
    {'c', 5, 0, rwm, "/dev/tty"},
    {'c', 5, 1, rwm, "/dev/console"},
    {'c', 5, 2, rwm, "/dev/ptmx"},
    {'c', 10, 229, rwm, "/dev/fuse"},
    {'c', 10, 200, rwm, "/dev/net/tun"},
};

std::string number(uint32_t n) {
    return n == DeviceRule::any ? "*" : std::to_string(n);
}

} // namespace

std::span<const DeviceRule> device_allow_list() {
    return allow_list;
}

std::string device_rule_access(const DeviceRule& r) {
    std::string a;
    if (r.access & DeviceRule::read)
        a += 'r';
    if (r.access & DeviceRule::write)
        a += 'w';
    if (r.access & DeviceRule::mknod)
        a += 'm';
    return a;
}

std::string device_rule_v1(const DeviceRule& r) {
    return std::string(1, r.type) + " " + number(r.major) + ":" + number(r.minor) + " " +
           device_rule_access(r);
}

std::string device_rule_systemd_node(const DeviceRule& r) {
    std::string kind = r.type == 'b' ? "block" : "char";
    if (r.major == DeviceRule::any)
        return kind + "-*";
    if (r.minor == DeviceRule::any)
        return kind + "-" + std::to_string(r.major);
    return "/dev/" + kind + "/" + std::to_string(r.major) + ":" + std::to_string(r.minor);
}

} // namespace lodge
