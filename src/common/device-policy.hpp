// The device allow-list every container gets (LXD's list, runtime.md §3.6): deny everything,
// then allow mknod of any node and read/write/mknod of the nodes lodge itself puts in /dev.
// One table, written three ways: v1 `devices.allow` lines and the cgroup2 BPF program (the
// supervisor, src/runtime/device-bpf.cpp) and `DeviceAllow=` entries (lodged's systemd scope).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace lodge {

struct DeviceRule {
    static constexpr uint32_t any = UINT32_MAX;               // "*" for a major or minor
    static constexpr unsigned mknod = 1, read = 2, write = 4; // BPF_DEVCG_ACC_* values
    char type;                                                // 'b' or 'c'
    uint32_t major = any;
    uint32_t minor = any;
    unsigned access = 0;
    const char* what = ""; // what lodge puts there, for readers of the table
};

std::span<const DeviceRule> device_allow_list();

// "c 1:3 rwm", as v1 devices.allow takes it.
std::string device_rule_v1(const DeviceRule& r);
// The (path, access) pair systemd's DeviceAllow= takes: "/dev/char/1:3" names one node without
// needing it to exist, "char-136" a whole major, "char-*" every node of a type.
std::string device_rule_systemd_node(const DeviceRule& r);
std::string device_rule_access(const DeviceRule& r); // "rwm"

} // namespace lodge
