// limits.* (LXD's names and meanings) parsed once into one typed value. lodged validates with
// it, the supervisor reads config.json into it at start, and apply-limits carries it in the
// message; the cgroupfs writer (runtime/cgroup-fs.cpp) only writes what it holds.
#pragma once

#include "common/config.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace lodge {

struct CpuQuota {
    uint64_t quota_usec = 0;
    uint64_t period_usec = 0;
    bool operator==(const CpuQuota&) const = default;
};

struct Limits {
    // limits.memory: bytes, or a share of the host's memory (resolved when written).
    std::optional<uint64_t> memory_bytes;
    std::optional<unsigned> memory_percent;
    // limits.memory.enforce=soft: memory.high / soft_limit instead of the hard limit.
    bool memory_soft = false;
    // limits.cpu: a count of CPUs (a quota of that many) or a set of CPUs to pin to.
    std::optional<unsigned> cpu_count;
    std::string cpu_set; // empty: every CPU the parent has
    // limits.cpu.allowance: "50%" (a relative weight, 100% is the default) or "25ms/100ms"
    // (a hard quota, which wins over a count).
    std::optional<unsigned> cpu_allowance_percent;
    std::optional<CpuQuota> cpu_quota;
    // limits.processes
    std::optional<uint64_t> processes;

    bool operator==(const Limits&) const = default;
    // limits.memory in bytes against `host_memory` bytes, if set.
    std::optional<uint64_t> memory(uint64_t host_memory) const;
    // The CFS quota per period the cpu keys ask for, if any.
    std::optional<CpuQuota> cpu_max() const;
};

inline constexpr uint64_t cpu_period_usec = 100000;

bool is_limits_key(const std::string& key);
// Parses one limits.* key into `out`. Returns "" or the problem, naming the key and the value;
// an unknown limits.* key is "Unknown config key".
std::string parse_limit(const std::string& key, const std::string& value, Limits& out);
// Every limits.* key of `config`; the first bad one, if any, in `error` (config.json is
// validated when written, so a bad one here means a hand edit: it is left out).
Limits limits_of(const ContainerConfig& config, std::string* error = nullptr);

} // namespace lodge
