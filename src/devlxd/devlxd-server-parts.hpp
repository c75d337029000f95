// The server's pieces shared by devlxd-server.cpp and feeds.cpp: a connection's state and the
// two kinds of event feed. Private to the guest API library.
#pragma once

#include "devlxd/devlxd-server.hpp"
#include "devlxd/peer.hpp"
#include "devlxd/websocket.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <sys/types.h>

struct MHD_UpgradeResponseHandle;

namespace lodge::daemon {

// CLOCK_MONOTONIC in µs.
uint64_t now_monotonic();

inline constexpr uint64_t ping_interval_usec = 10 * 1000000ULL; // LXD pings every 10 s ...
inline constexpr unsigned max_missed_pongs = 2; // ... and gives up after 2 missed pongs

// One accepted socket: who is on the other end, read once at accept.
struct DevlxdServer::Connection {
    int fd = -1;
    PeerIdentity peer;
    int peer_error = 0;
    // The container the peer was found in at accept, and that boot's generation; empty: in
    // none, counted against its uid instead.
    std::string container;
    uint64_t generation = 0;
    bool counted = false;      // against container or uid
    SourcePtr hangup;          // a plain event stream's watch for its reader going away
    Feed* stream = nullptr;    // that stream, while it lasts (owned by its MHD response)
    uint64_t deadline = 0;     // CLOCK_MONOTONIC µs by which the next request's headers must be in
    bool long_lived = false;   // an event feed: no deadline applies
    Feed* upgrading = nullptr; // a websocket feed waiting for its 101 to be sent; owned here
};

// A subscriber to one container's events.
struct DevlxdServer::Feed {
    DevlxdServer* server = nullptr;
    std::string container;
    unsigned types = 0;
    virtual ~Feed() = default;
    virtual void deliver(const std::string& line) = 0;
    virtual void finish() = 0;
};

// GET /1.0/events without an upgrade: newline-delimited JSON in a chunked response.
struct DevlxdServer::StreamFeed : Feed {
    MHD_Connection* mhd = nullptr;
    Connection* conn = nullptr; // cleared by whichever of the two goes first
    std::string pending;
    bool suspended = false;
    bool finished = false;

    void deliver(const std::string& line) override;
    void finish() override;
    void wake();
    // MHD's content reader and its release callback.
    static ssize_t read(void* cls, uint64_t, char* buf, size_t max);
    static void release(void* cls);
    // A parked stream is out of MHD's sight: only this notices its reader leaving, which
    // would otherwise hold the connection until the next event for the container.
    static int on_hangup(sd_event_source* s, int, uint32_t, void* userdata);
};

// GET /1.0/events with Upgrade: websocket: one text frame per event, pings every 10 s.
struct DevlxdServer::SocketFeed : Feed {
    int fd = -1;
    MHD_UpgradeResponseHandle* urh = nullptr;
    SourcePtr io, ping;
    std::string out;
    ws::Decoder decoder;
    unsigned missed_pongs = 0;
    bool closing = false;

    void deliver(const std::string& line) override;
    void finish() override;
    void send(const std::string& data);
    void flush();
    // Hands the socket back to MHD to close; the feed is freed on the next loop iteration.
    void close();
    void on_frames(std::string_view data);
    static int on_io(sd_event_source*, int, uint32_t revents, void* userdata);
    static int on_ping(sd_event_source* s, uint64_t usec, void* userdata);
};

} // namespace lodge::daemon
