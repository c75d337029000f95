// The guest API's dialect (LXD's devlxd, CONTRACT §6): one request in, one response out.
// Nothing here touches sockets or the Manager, so the fuzz target and unit tests drive it
// directly; devlxd-server.cpp supplies the caller's container and carries out the effects.
#pragma once

#include "common/config.hpp"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace lodge::daemon::devlxd {

// What a handler needs to know about the caller's container.
struct GuestView {
    const ContainerConfig* config = nullptr;
    bool ready = false;        // volatile.last_state.ready
    std::string location;      // the host's name, as LXD reports it when not clustered
};

struct Request {
    std::string method;
    std::string url;           // path only, as sent (percent-encoded)
    std::string query_type;    // the `type` query argument of /1.0/events, if any
    bool has_type = false;
    std::string body;
};

enum class Kind { plain, events };

struct Response {
    unsigned status = 200;
    std::string content_type;
    std::string body;
    Kind kind = Kind::plain;
    unsigned event_types = 0;         // for Kind::events: a mask of EventType
    std::optional<bool> set_ready;    // PATCH /1.0 asks for volatile.last_state.ready
};

enum EventType : unsigned { event_config = 1, event_device = 2 };

// Answers one request from a caller already known to be root of a container whose
// security.devlxd is on.
Response handle(const Request& req, const GuestView& guest);

// The plain-text error responses, as Go's http.Error writes them.
Response error(unsigned status, const std::string& message);
// GET /1.0/images/.../export errors use LXD's main API envelope.
Response api_error(unsigned status, const std::string& message);

// Parses "config,device": nullopt on an unknown type.
std::optional<unsigned> parse_event_types(const std::string& spec);

// Event objects as LXD serialises them (one line each on a stream, one frame on a websocket).
std::string config_event(const std::string& key, const std::string& old_value,
                         const std::string& value, uint64_t realtime_usec);
std::string device_event(const std::string& action, const std::string& name, const KeyMap& config,
                         uint64_t realtime_usec);
// RFC 3339 with nanoseconds, UTC, as Go's time.RFC3339Nano formats it.
std::string rfc3339_nano(uint64_t realtime_usec);

// The devices map with volatile.<dev>.hwaddr filled into nics that have no hwaddr.
nlohmann::ordered_json devices_json(const ContainerConfig& config);

} // namespace lodge::daemon::devlxd
