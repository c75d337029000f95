// Validation of container names, config keys and values (CONTRACT §3). Each check returns an
// empty string when the input is fine, else a message that names the rule that was broken.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace lodge {

std::string check_container_name(const std::string& name);

enum class KeySource { user, lodge };
// `user` refuses volatile.* and image.* keys (only lodge writes those).
std::string check_config_key(const std::string& key, const std::string& value,
                             KeySource source = KeySource::user);

// Keys that may hold secrets (passwords, keys, tokens): cloud-init.*, environment.*, user.*
// (user.user-data and friends among them). Only authorized bus callers see their values.
bool is_secret_config_key(const std::string& key);

std::optional<bool> parse_bool(const std::string& v);
std::optional<uint64_t> parse_uint(const std::string& v, uint64_t max = UINT64_MAX);
// "256MiB", "1GB", "1048576", "50%": bytes, or a percentage when `percent` is set.
std::optional<uint64_t> parse_size(const std::string& v, bool* percent = nullptr);
// "SIGPWR", "PWR", "30", "SIGRTMIN+3", "RTMIN+3".
std::optional<int> parse_signal(const std::string& v);
std::string signal_name(int sig);
// limits.cpu: "2" (count) or a cpuset "0-1,3".
bool is_cpu_count(const std::string& v);
bool is_cpuset(const std::string& v);

} // namespace lodge
