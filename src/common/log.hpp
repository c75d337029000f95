// Logging: one line per event on stderr, with the errno text for failures.
// Under systemd the "<N>" prefixes become journal priorities.
#pragma once

#include "common/error.hpp"

#include <string>

namespace lodge {

enum class LogLevel { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

void log_set_max_level(LogLevel level);
void log_set_prefix(std::string prefix);

[[gnu::format(printf, 2, 3)]] void log_msg(LogLevel level, const char* fmt, ...);

// Logs "<message>: <strerror(err)>" and returns -|err|, so a failure is logged once where it
// happens and passed up as a plain -errno.
[[gnu::format(printf, 3, 4)]] int log_errno(LogLevel level, int err, const char* fmt, ...);

// Logs "<message>: <strerror(err)>" at error level, once, and returns that failure as an Error
// (code |err|, the generic bus name unless the caller picks another): the value callers pass up.
[[gnu::format(printf, 2, 3)]] Error log_error_value(int err, const char* fmt, ...);

// Logs the message at error level, once, and returns it as an Error with code |err|: for a
// failure whose message says it all, without errno text.
[[gnu::format(printf, 2, 3)]] Error log_error_message(int err, const char* fmt, ...);

} // namespace lodge

#define log_error(...) ::lodge::log_msg(::lodge::LogLevel::error, __VA_ARGS__)
#define log_warning(...) ::lodge::log_msg(::lodge::LogLevel::warning, __VA_ARGS__)
#define log_notice(...) ::lodge::log_msg(::lodge::LogLevel::notice, __VA_ARGS__)
#define log_info(...) ::lodge::log_msg(::lodge::LogLevel::info, __VA_ARGS__)
#define log_debug(...) ::lodge::log_msg(::lodge::LogLevel::debug, __VA_ARGS__)
#define log_error_errno(err, ...) ::lodge::log_errno(::lodge::LogLevel::error, (err), __VA_ARGS__)
#define log_warning_errno(err, ...)                                                                \
    ::lodge::log_errno(::lodge::LogLevel::warning, (err), __VA_ARGS__)
#define log_debug_errno(err, ...) ::lodge::log_errno(::lodge::LogLevel::debug, (err), __VA_ARGS__)
