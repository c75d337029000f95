// The steps lodged's bus methods share, written once: reading the arguments, polkit's verdict,
// a reply built and sent in one place, arrays appended from a range, a call held for a reply
// sent later, and an errno mapped to the typed error the failure site chose.
#pragma once

#include "daemon/bus-util.hpp"

#include "common/fd.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fcntl.h>
#include <initializer_list>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <tuple>
#include <vector>

namespace lodge::daemon {

// Reads the basic arguments `Args...` (signature `types`) and runs `body(args...)` with them.
template <typename... Args, typename Body>
int with_args(sd_bus_message* m, const char* types, Body&& body) {
    std::tuple<Args...> args{};
    int r = std::apply([&](auto&... a) { return sd_bus_message_read(m, types, &a...); }, args);
    return r < 0 ? r : std::apply(body, args);
}

// Runs `body` once polkit's `verdict` allows (1). 0: polkit was asked and the call will be
// dispatched again, so the handler returns 1 without a reply; < 0: refused, the error is set.
template <typename Body> int if_allowed(int verdict, Body&& body) {
    if (verdict <= 0)
        return verdict == 0 ? 1 : verdict;
    return body();
}

// Builds the method return of `call` with `fill(reply)` and sends it.
template <typename Fill> int reply_with(sd_bus_message* call, Fill&& fill) {
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(call, &raw);
    if (r < 0)
        return r;
    MessagePtr reply(raw);
    if ((r = fill(raw)) < 0)
        return r;
    return sd_bus_send(nullptr, raw, nullptr);
}

// Appends an array of `contents`: `append(item)` for each item of `items`.
template <typename Items, typename Append>
int append_array(sd_bus_message* reply, const char* contents, const Items& items, Append&& append) {
    int r = sd_bus_message_open_container(reply, 'a', contents);
    for (auto& item : items) {
        if (r < 0)
            break;
        r = append(item);
    }
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

inline int append_strings(sd_bus_message* reply, const std::vector<std::string>& items) {
    return append_array(reply, "s", items, [reply](const std::string& s) {
        return sd_bus_message_append(reply, "s", s.c_str());
    });
}

// Reads an `as` into `out`.
inline int read_strings(sd_bus_message* m, std::vector<std::string>& out) {
    int r = sd_bus_message_enter_container(m, 'a', "s");
    if (r < 0)
        return r;
    const char* s;
    while ((r = sd_bus_message_read(m, "s", &s)) > 0)
        out.push_back(s);
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

// A call whose reply is sent later, when an operation ends.
using HeldCall = std::shared_ptr<sd_bus_message>;
inline HeldCall hold_call(sd_bus_message* m) {
    return HeldCall(sd_bus_message_ref(m), sd_bus_message_unref);
}

// One errno and the bus error name a failure site gives it.
struct ErrnoName {
    int code;
    const char* bus_name;
};

// The Error for `r` (-errno) and `msg`, named by `names` (errors::failed for any other errno).
inline Error error_for(int r, const std::string& msg, std::initializer_list<ErrnoName> names) {
    for (auto& n : names)
        if (n.code == -r)
            return make_error(n.bus_name, r, msg);
    return make_error(errors::failed, r, msg);
}

// Reads a descriptor passed in the call: our own close-on-exec copy of it, or -errno.
inline int read_fd(sd_bus_message* m, Fd& out) {
    int fd = -1;
    if (int r = sd_bus_message_read(m, "h", &fd); r < 0)
        return r;
    out.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    return out ? 0 : -errno;
}

// How long an import may go without data: LODGE_IMPORT_IDLE_TIMEOUT seconds (default 600) for
// a pipe or socket, which may be fed slowly or never; 0 (no limit) for a regular file or a
// directory, which always make progress.
inline uint64_t import_idle_timeout_usec(const Fd& source) {
    struct stat st {};
    if (::fstat(source.get(), &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return 0;
    const char* v = std::getenv("LODGE_IMPORT_IDLE_TIMEOUT");
    auto secs = v ? parse_uint(v, 86400) : std::nullopt;
    return (secs && *secs > 0 ? *secs : 600) * 1000000ULL;
}

} // namespace lodge::daemon
