// The guest API server: libmicrohttpd driven by lodged's sd-event loop (as
// systemd-journal-remote drives it), one listening socket for every container, the caller's
// container found from its pid namespace, and the event feeds (websocket and plain stream).
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"
#include "common/sd-util.hpp"

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

struct MHD_Daemon;
struct MHD_Connection;

namespace lodge::daemon {

struct PeerIdentity;

// What the server needs from lodged: the caller's container and a way to record readiness.
// lodged answers from its Manager; the fuzz target from a fixed guest.
class GuestDirectory {
public:
    struct Guest {
        std::string name;
        uid_t root_uid = 0;
        const ContainerConfig* config = nullptr;
        bool ready = false;
        uint64_t generation = 0; // the boot (PID 1) the guest was found in; never reused
    };
    virtual ~GuestDirectory() = default;
    // The running container the peer is in, if any.
    virtual std::optional<Guest> find(const PeerIdentity& peer) = 0;
    // Container `name`, if it still runs the boot `generation` (a connection made in an
    // earlier boot speaks for nobody now).
    virtual std::optional<Guest> current(const std::string& name, uint64_t generation) = 0;
    virtual int set_ready(const std::string& name, bool ready, std::string& error) = 0;
};

// Limits, after LXD's http.Server for devlxd (runtime.md §6.2), plus per-caller caps so that
// no one container (or host user) can use up what the others need.
struct DevlxdLimits {
    unsigned header_timeout_sec = 3; // the request line and headers must arrive in this time
    unsigned idle_timeout_sec = 30;  // an idle keep-alive connection is closed after this
    size_t header_bytes = 16 * 1024; // MHD's per-connection buffer (zeroed per request)
    size_t body_bytes = 64 * 1024;   // PATCH bodies are tiny JSON objects
    unsigned connections = 16384;    // all callers together
    // Above 64: bench/compare and the tests run 64 keep-alive clients in one container, and a
    // closed connection is only counted out once MHD has seen it go.
    unsigned connections_per_container = 128;
    unsigned connections_per_uid = 16;       // callers in no container, per uid
    unsigned feeds_per_container = 16;       // event streams and websockets
    size_t subscriber_backlog = 1024 * 1024; // queued event bytes before a stalled feed is cut
};

class DevlxdServer {
public:
    DevlxdServer(sd_event* event, GuestDirectory& guests, DevlxdLimits limits = {});
    ~DevlxdServer();
    DevlxdServer(const DevlxdServer&) = delete;
    DevlxdServer& operator=(const DevlxdServer&) = delete;

    // Serves on a listening AF_UNIX stream socket. The socket stays the caller's (systemd's).
    int start(int listener);
    // Delivers an event line to the feeds of container `name` that asked for `type`.
    void publish(const std::string& name, unsigned type, const std::string& line);
    // Ends every feed of a container that went down.
    void drop_container(const std::string& name);
    size_t connection_count() const { return connections_.size(); }
    // Open connections counted against container `name`.
    unsigned container_connections(const std::string& name) const;

    struct Connection;
    struct Feed;
    struct StreamFeed;
    struct SocketFeed;

private:
    static int on_io(sd_event_source*, int, uint32_t, void*);
    static int on_timer(sd_event_source*, uint64_t, void*);
    static int on_tick(sd_event_source*, uint64_t, void*);
    static int on_defer(sd_event_source*, void*);
    void run();
    void kick();
    void arm_timer();
    void expire_deadlines();
    void add_feed(Feed* feed);
    void remove_feed(Feed* feed);
    int respond(MHD_Connection* mhd, Connection* conn, const char* url, const char* method,
                const std::string& body, bool too_large);
    // Counts a new connection against its container (or, in none, its uid); false: over a cap.
    bool admit(Connection* conn);
    void release(Connection* conn);
    unsigned feed_count(const std::string& container) const;
    int start_events(MHD_Connection* mhd, Connection* conn, const std::string& container,
                     unsigned types);

    friend struct MhdCallbacks;

    sd_event* event_;
    GuestDirectory& guests_;
    DevlxdLimits limits_;
    MHD_Daemon* daemon_ = nullptr;
    SourcePtr io_, timer_, tick_, defer_;
    std::set<Connection*> connections_;
    std::map<std::string, std::set<Feed*>> feeds_;
    std::map<SocketFeed*, std::unique_ptr<SocketFeed>> socket_feeds_;
    std::map<std::string, unsigned> per_container_;
    std::map<uid_t, unsigned> per_uid_;
    std::map<std::string, unsigned> pending_upgrades_; // websockets not yet handed over
};

// Makes the guest API's directories as they must be (CONTRACT §2): <runtime>/devlxd root-only
// 0700, so that no host user but root reaches the socket, and <runtime>/devlxd/guest 0755, the
// directory bound onto /dev/lxd, so that every user inside a container does. Fixes the modes
// of existing ones (systemd's DirectoryMode= or an older lodge may have made them).
int prepare_devlxd_dirs();

// <runtime>/devlxd/guest/sock, for a lodged that systemd did not hand the socket to.
int open_devlxd_listener(Fd& out);

} // namespace lodge::daemon
