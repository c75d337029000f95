#include "common/limits.hpp"
#include "common/validate.hpp"

#include <cctype>

namespace lodge {

namespace {

std::string bad(const std::string& key, const std::string& value, const char* expected) {
    return "Invalid value \"" + value + "\" for \"" + key + "\": " + expected;
}

// "25ms", "100ms", "1s", "500us": a duration in microseconds (positive).
std::optional<uint64_t> parse_duration_usec(const std::string& v) {
    size_t i = 0;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i])))
        i++;
    auto n = parse_uint(v.substr(0, i), 1ULL << 40);
    if (!n || *n == 0)
        return std::nullopt;
    std::string unit = v.substr(i);
    if (unit == "us")
        return *n;
    if (unit == "ms")
        return *n * 1000;
    if (unit == "s")
        return *n * 1000000;
    return std::nullopt;
}

} // namespace

std::optional<uint64_t> Limits::memory(uint64_t host_memory) const {
    if (memory_percent)
        return host_memory > UINT64_MAX / 100 ? host_memory / 100 * *memory_percent
                                              : host_memory * *memory_percent / 100;
    return memory_bytes;
}

std::optional<CpuQuota> Limits::cpu_max() const {
    if (cpu_quota)
        return cpu_quota;
    if (cpu_count)
        return CpuQuota{*cpu_count * cpu_period_usec, cpu_period_usec};
    return std::nullopt;
}

bool is_limits_key(const std::string& key) {
    return key.rfind("limits.", 0) == 0;
}

std::string parse_limit(const std::string& key, const std::string& value, Limits& out) {
    if (key == "limits.memory") {
        bool percent = false;
        auto n = parse_size(value, &percent);
        if (!n || (!percent && *n < 4096))
            return bad(key, value, "expected a size such as 256MiB or 50%");
        out.memory_bytes.reset();
        out.memory_percent.reset();
        if (percent)
            out.memory_percent = static_cast<unsigned>(*n);
        else
            out.memory_bytes = *n;
        return {};
    }
    if (key == "limits.memory.enforce") {
        if (value != "hard" && value != "soft")
            return bad(key, value, "expected hard or soft");
        out.memory_soft = value == "soft";
        return {};
    }
    if (key == "limits.cpu") {
        // A bare number is a count (LXD: "1-1" pins to CPU 1 alone).
        bool count = is_cpu_count(value);
        if (!count && !is_cpuset(value))
            return bad(key, value, "expected a CPU count such as 2 or a set such as 0-1,3");
        out.cpu_count.reset();
        out.cpu_set.clear();
        if (count)
            out.cpu_count = static_cast<unsigned>(*parse_uint(value));
        else
            out.cpu_set = value;
        return {};
    }
    if (key == "limits.cpu.allowance") {
        if (!value.empty() && value.back() == '%') {
            auto n = parse_uint(value.substr(0, value.size() - 1), 100);
            if (!n || *n == 0)
                return bad(key, value,
                           "expected a percentage such as 50% or a time such as "
                           "25ms/100ms");
            out.cpu_quota.reset();
            out.cpu_allowance_percent = static_cast<unsigned>(*n);
            return {};
        }
        size_t slash = value.find('/');
        auto quota = parse_duration_usec(value.substr(0, slash));
        auto period = slash == std::string::npos ? std::nullopt
                                                 : parse_duration_usec(value.substr(slash + 1));
        // The kernel's bounds for a CFS period: 1 ms to 1 s.
        if (!quota || !period || *period < 1000 || *period > 1000000)
            return bad(key, value,
                       "expected a percentage such as 50% or a time such as 25ms/100ms");
        out.cpu_allowance_percent.reset();
        out.cpu_quota = CpuQuota{*quota, *period};
        return {};
    }
    if (key == "limits.processes") {
        auto n = parse_uint(value, 4194304);
        if (!n || *n == 0)
            return bad(key, value, "expected a positive number");
        out.processes = *n;
        return {};
    }
    return "Unknown config key \"" + key + "\"";
}

Limits limits_of(const ContainerConfig& config, std::string* error) {
    Limits limits;
    for (auto& [key, value] : config.config) {
        if (!is_limits_key(key))
            continue;
        if (auto e = parse_limit(key, value, limits); !e.empty() && error && error->empty())
            *error = e;
    }
    return limits;
}

} // namespace lodge
