#include "common/validate.hpp"
#include "common/limits.hpp"
#include "common/snapshot-schedule.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <csignal>
#include <cstring>
#include <string_view>

namespace lodge {

std::string check_container_name(const std::string& name) {
    if (name.empty())
        return "Container name must not be empty";
    if (name.size() > 63)
        return "Container name must be at most 63 characters long";
    for (char c : name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-') || c & 0x80)
            return "Container name may only contain letters, digits and '-'";
    if (std::isdigit(static_cast<unsigned char>(name.front())))
        return "Container name must not start with a digit";
    if (name.front() == '-')
        return "Container name must not start with '-'";
    if (name.back() == '-')
        return "Container name must not end with '-'";
    return {};
}

std::optional<bool> parse_bool(const std::string& v) {
    std::string l = v;
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
    if (l == "true" || l == "1" || l == "yes" || l == "on")
        return true;
    if (l == "false" || l == "0" || l == "no" || l == "off")
        return false;
    return std::nullopt;
}

std::optional<uint64_t> parse_uint(const std::string& v, uint64_t max) {
    if (v.empty() || v.size() > 20)
        return std::nullopt;
    uint64_t r = 0;
    for (char c : v) {
        if (c < '0' || c > '9')
            return std::nullopt;
        uint64_t d = static_cast<uint64_t>(c - '0');
        if (r > (UINT64_MAX - d) / 10)
            return std::nullopt;
        r = r * 10 + d;
    }
    if (r > max)
        return std::nullopt;
    return r;
}

std::optional<uint64_t> parse_size(const std::string& v, bool* percent) {
    if (percent)
        *percent = false;
    if (v.empty())
        return std::nullopt;
    size_t i = 0;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i])))
        i++;
    auto num = parse_uint(v.substr(0, i));
    if (!num)
        return std::nullopt;
    std::string unit = v.substr(i);
    if (unit == "%") {
        if (!percent || *num == 0 || *num > 100)
            return std::nullopt;
        *percent = true;
        return num;
    }
    static const std::array<std::pair<std::string_view, uint64_t>, 14> units{{
        {"", 1},
        {"B", 1},
        {"kB", 1000ULL},
        {"MB", 1000ULL * 1000},
        {"GB", 1000ULL * 1000 * 1000},
        {"TB", 1000ULL * 1000 * 1000 * 1000},
        {"KiB", 1ULL << 10},
        {"MiB", 1ULL << 20},
        {"GiB", 1ULL << 30},
        {"TiB", 1ULL << 40},
        {"k", 1000ULL},
        {"M", 1000ULL * 1000},
        {"G", 1000ULL * 1000 * 1000},
        {"T", 1000ULL * 1000 * 1000 * 1000},
    }};
    for (auto& [name, mult] : units)
        if (unit == name) {
            if (*num > UINT64_MAX / mult)
                return std::nullopt;
            return *num * mult;
        }
    return std::nullopt;
}

namespace {
struct SigName {
    const char* name;
    int sig;
};
constexpr SigName signal_names[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},     {"BUS", SIGBUS},   {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT},
    {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
    {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
    {"IO", SIGIO},     {"PWR", SIGPWR},       {"SYS", SIGSYS},
};
} // namespace

std::optional<int> parse_signal(const std::string& input) {
    std::string v = input;
    if (v.rfind("SIG", 0) == 0)
        v = v.substr(3);
    if (auto n = parse_uint(v, 64)) {
        if (*n >= 1)
            return static_cast<int>(*n);
        return std::nullopt;
    }
    for (auto& s : signal_names)
        if (v == s.name)
            return s.sig;
    struct Rt {
        const char* prefix;
        int base, sign;
    };
    for (Rt rt : {Rt{"RTMIN", SIGRTMIN, 1}, Rt{"RTMAX", SIGRTMAX, -1}}) {
        auto [prefix, base, sign] = rt;
        std::string p = prefix;
        if (v == p)
            return base;
        if (v.rfind(p + (sign > 0 ? "+" : "-"), 0) == 0) {
            auto off = parse_uint(v.substr(p.size() + 1), 30);
            if (!off)
                return std::nullopt;
            int sig = base + sign * static_cast<int>(*off);
            if (sig >= SIGRTMIN && sig <= SIGRTMAX)
                return sig;
        }
    }
    return std::nullopt;
}

std::string signal_name(int sig) {
    for (auto& s : signal_names)
        if (s.sig == sig)
            return std::string("SIG") + s.name;
    if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        return sig == SIGRTMIN ? "SIGRTMIN" : "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
    return std::to_string(sig);
}

bool is_cpu_count(const std::string& v) {
    auto n = parse_uint(v, 4096);
    return n && *n > 0;
}

bool is_cpuset(const std::string& v) {
    if (v.empty())
        return false;
    size_t pos = 0;
    while (pos <= v.size()) {
        size_t comma = v.find(',', pos);
        std::string part =
            v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        size_t dash = part.find('-');
        if (dash == std::string::npos) {
            if (!parse_uint(part, 4095))
                return false;
        } else {
            auto a = parse_uint(part.substr(0, dash), 4095);
            auto b = parse_uint(part.substr(dash + 1), 4095);
            if (!a || !b || *a > *b)
                return false;
        }
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return true;
}

namespace {

bool starts_with(const std::string& s, std::string_view p) {
    return s.rfind(p, 0) == 0;
}

std::string bad_value(const std::string& key, const std::string& value, const char* expected) {
    return "Invalid value \"" + value + "\" for \"" + key + "\": " + expected;
}

} // namespace

bool is_secret_config_key(const std::string& key) {
    return starts_with(key, "cloud-init.") || starts_with(key, "environment.") ||
           starts_with(key, "user.");
}

std::string check_config_key(const std::string& key, const std::string& value, KeySource source) {
    if (key.empty())
        return "Config key must not be empty";
    for (char c : key)
        if (static_cast<unsigned char>(c) < 0x21 || c == '=' || c & 0x80)
            return "Config key \"" + key + "\" contains an invalid character";

    if (starts_with(key, "user.") && key.size() > 5)
        return {};
    if (starts_with(key, "environment.") && key.size() > 12) {
        if (value.find('\0') != std::string::npos)
            return bad_value(key, value, "must not contain NUL");
        return {};
    }
    if (starts_with(key, "image.") || starts_with(key, "volatile.")) {
        if (source == KeySource::user)
            return "Config key \"" + key + "\" is read-only: only lodge sets it";
        return {};
    }
    if (key == "cloud-init.user-data" || key == "cloud-init.vendor-data" ||
        key == "cloud-init.network-config")
        return {};

    static const char* const bool_keys[] = {
        "security.privileged",           "security.devlxd",
        "security.idmap.isolated",       "security.syscalls.deny_default",
        "security.syscalls.deny_compat",
    };
    for (auto* k : bool_keys)
        if (key == k)
            return parse_bool(value) ? std::string()
                                     : bad_value(key, value, "expected true or false");

    if (key == "security.idmap.base") {
        auto n = parse_uint(value, UINT32_MAX - 65536);
        if (!n)
            return bad_value(key, value, "expected a host id");
        // Container root would be a host system id (owning the host's /dev/null binds, open to
        // signals from that host user). Containers loaded from disk are refused at start.
        if (*n < 65536 && source == KeySource::user)
            return bad_value(key, value,
                             "container root would be a host system id; expected 65536 or more");
        return {};
    }
    if (key == "security.idmap.size") {
        auto n = parse_uint(value, UINT32_MAX);
        if (!n || *n < 65536)
            return bad_value(key, value, "expected at least 65536 ids");
        if (*n > (1ULL << 30))
            return bad_value(key, value, "expected at most 1073741824 ids");
        return {};
    }
    if (key == "security.syscalls.deny") {
        // Syscall names are resolved by the runtime; here only the shape is checked.
        for (char c : value)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '\n' ||
                  c == ' ' || c == ','))
                return bad_value(key, value, "expected syscall names separated by newlines");
        return {};
    }
    if (is_limits_key(key)) {
        Limits ignored;
        return parse_limit(key, value, ignored);
    }
    if (key == "boot.stop.signal")
        return value == "auto" || parse_signal(value)
                   ? std::string()
                   : bad_value(key, value, "expected auto or a signal such as SIGPWR");
    if (key == "boot.reboot.signal")
        return parse_signal(value) ? std::string()
                                   : bad_value(key, value, "expected a signal such as SIGINT");
    if (key == "boot.host_shutdown_timeout")
        return parse_uint(value, 86400 * 7) ? std::string()
                                            : bad_value(key, value, "expected a number of seconds");
    if (key == "snapshots.schedule") {
        CronSchedule cron;
        auto e = value.empty() ? std::string() : cron.parse(value);
        return e.empty() ? e : bad_value(key, value, e.c_str());
    }
    if (key == "snapshots.expiry") {
        uint64_t seconds = 0;
        auto e = value.empty() ? std::string() : parse_expiry(value, seconds);
        return e.empty() ? e : bad_value(key, value, e.c_str());
    }
    if (key == "snapshots.pattern") {
        auto e = check_snapshot_pattern(value);
        return e.empty() ? e : bad_value(key, value, e.c_str());
    }
    return "Unknown config key \"" + key + "\"";
}

} // namespace lodge
