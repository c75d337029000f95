#include "common/log.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace lodge {
namespace {

LogLevel max_level = [] {
    const char* env = std::getenv("LODGE_LOG_LEVEL");
    if (env && std::strcmp(env, "debug") == 0)
        return LogLevel::debug;
    return LogLevel::info;
}();
std::string prefix;

void emit(LogLevel level, const char* text) {
    if (level > max_level)
        return;
    // One write(2) per line keeps lines whole when several processes share stderr.
    char line[4096];
    int n = std::snprintf(line, sizeof line, "<%d>%s%s%s\n", static_cast<int>(level),
                          prefix.c_str(), prefix.empty() ? "" : ": ", text);
    if (n < 0)
        return;
    size_t len = std::min(static_cast<size_t>(n), sizeof line - 1);
    ssize_t ignored = ::write(STDERR_FILENO, line, len);
    (void)ignored;
}

} // namespace

void log_set_max_level(LogLevel level) {
    max_level = level;
}
void log_set_prefix(std::string p) {
    prefix = std::move(p);
}

void log_msg(LogLevel level, const char* fmt, ...) {
    int saved = errno;
    char buf[3072];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(level, buf);
    errno = saved;
}

namespace {

// Logs "<fmt...>: <strerror(err)>" at `level` and returns that text.
std::string emit_errno(LogLevel level, int err, const char* fmt, va_list ap) {
    char buf[3072];
    int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    if (n >= 0 && static_cast<size_t>(n) < sizeof buf)
        std::snprintf(buf + n, sizeof buf - n, ": %s", std::strerror(err));
    emit(level, buf);
    return buf;
}

} // namespace

int log_errno(LogLevel level, int err, const char* fmt, ...) {
    err = err < 0 ? -err : err;
    va_list ap;
    va_start(ap, fmt);
    emit_errno(level, err, fmt, ap);
    va_end(ap);
    return -err;
}

Error log_error_value(int err, const char* fmt, ...) {
    err = err < 0 ? -err : err;
    va_list ap;
    va_start(ap, fmt);
    std::string text = emit_errno(LogLevel::error, err, fmt, ap);
    va_end(ap);
    return make_error(errors::failed, err, std::move(text));
}

Error log_error_message(int err, const char* fmt, ...) {
    char buf[3072];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(LogLevel::error, buf);
    return make_error(errors::failed, err, buf);
}

} // namespace lodge
