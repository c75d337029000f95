// Thin RAII over libsystemd handles, through libsystemd's own deleters.
#pragma once

#include <memory>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

namespace lodge::daemon {

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

// Typed errors of io.lodge1 (CONTRACT §7).
namespace errors {
constexpr const char* no_such_container = "io.lodge1.NoSuchContainer";
constexpr const char* container_exists = "io.lodge1.ContainerExists";
constexpr const char* invalid_name = "io.lodge1.InvalidName";
constexpr const char* invalid_config = "io.lodge1.InvalidConfig";
constexpr const char* not_running = "io.lodge1.NotRunning";
constexpr const char* already_running = "io.lodge1.AlreadyRunning";
constexpr const char* busy = "io.lodge1.Busy";
constexpr const char* start_failed = "io.lodge1.StartFailed";
constexpr const char* import_failed = "io.lodge1.ImportFailed";
} // namespace errors

// Runs `f` and turns an escaping exception into -EIO: none may cross into sd-bus's C frames.
template <typename F> int guarded(F&& f) noexcept {
    try {
        return f();
    } catch (...) {
        return -EIO;
    }
}

} // namespace lodge::daemon
