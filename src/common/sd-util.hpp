// Thin RAII over libsystemd handles through libsystemd's own deleters, the guard every C
// callback goes through, and the a{ss} reader lodged and lodgectl share. Header-only: users
// link libsystemd themselves.
#pragma once

#include "common/log.hpp"

#include <cerrno>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

namespace lodge {

struct BusDeleter {
    void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct EventDeleter {
    void operator()(sd_event* e) const { sd_event_unref(e); }
};
struct SourceDeleter {
    void operator()(sd_event_source* s) const { sd_event_source_disable_unref(s); }
};
struct SlotDeleter {
    void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
struct MessageDeleter {
    void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using BusPtr = std::unique_ptr<sd_bus, BusDeleter>;
using EventPtr = std::unique_ptr<sd_event, EventDeleter>;
using SourcePtr = std::unique_ptr<sd_event_source, SourceDeleter>;
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotDeleter>;
using MessagePtr = std::unique_ptr<sd_bus_message, MessageDeleter>;

// An sd_bus_error freed when it goes (it is a value, not a pointer: no unique_ptr fits it).
struct BusError {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    BusError() = default;
    BusError(const BusError&) = delete;
    BusError& operator=(const BusError&) = delete;
    ~BusError() { sd_bus_error_free(&e); }
};

// Runs `f` and turns an escaping exception into -EIO: none may cross into libsystemd's C frames.
template <typename F> int guarded(F&& f) noexcept {
    try {
        return f();
    } catch (const std::exception& e) {
        log_error("Unexpected error: %s", e.what());
        return -EIO;
    } catch (...) {
        return -EIO;
    }
}

// Reads an a{ss} from `m` into `out`. Returns >= 0 or -errno.
inline int read_string_map(sd_bus_message* m, std::map<std::string, std::string>& out) {
    int r = sd_bus_message_enter_container(m, 'a', "{ss}");
    if (r < 0)
        return r;
    const char *k, *v;
    while ((r = sd_bus_message_read(m, "{ss}", &k, &v)) > 0)
        out[k] = v;
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

} // namespace lodge
