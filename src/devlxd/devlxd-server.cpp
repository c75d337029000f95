// The guest API server: MHD on lodged's loop, connection caps and deadlines, and the routing of
// requests and events; the feeds are in feeds.cpp, the socket and its directories in
// devlxd-socket.cpp.
#include "devlxd/devlxd-server-parts.hpp"

#include "common/log.hpp"
#include "devlxd/devlxd-api.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <microhttpd.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <vector>

namespace lodge::daemon {

uint64_t now_monotonic() {
    struct timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

namespace {

// LXD reports the host's current name; re-read at most once a second, not per request.
const std::string& host_name() {
    static std::string name;
    static uint64_t read_at = 0;
    uint64_t now = now_monotonic();
    if (name.empty() || now - read_at > 1000000) {
        struct utsname u {};
        ::uname(&u);
        name = u.nodename;
        read_at = now;
    }
    return name;
}

bool header_has_token(const char* value, const char* token) {
    if (!value)
        return false;
    std::string v = value;
    size_t pos = 0;
    while (pos <= v.size()) {
        size_t comma = v.find(',', pos);
        std::string t = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        t.erase(0, t.find_first_not_of(" \t"));
        t.erase(t.find_last_not_of(" \t") + 1);
        if (strcasecmp(t.c_str(), token) == 0)
            return true;
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return false;
}

} // namespace

// The C entry points MHD calls; none lets an exception out.
struct MhdCallbacks {
    static void on_connection(void* cls, MHD_Connection* mhd, void** socket_context,
                              MHD_ConnectionNotificationCode code) {
        auto* self = static_cast<DevlxdServer*>(cls);
        try {
            if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                auto conn = std::make_unique<DevlxdServer::Connection>();
                const MHD_ConnectionInfo* info =
                    MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
                conn->fd = info ? info->connect_fd : -1;
                conn->peer_error = conn->fd >= 0 ? identify_peer(conn->fd, conn->peer) : -EBADF;
                conn->deadline = now_monotonic() + self->limits_.header_timeout_sec * 1000000ULL;
                // Who it is decides which cap it counts against, before it may send anything.
                if (conn->peer_error == 0)
                    if (auto guest = self->guests_.find(conn->peer)) {
                        conn->container = guest->name;
                        conn->generation = guest->generation;
                    }
                self->connections_.insert(conn.get());
                if (!self->admit(conn.get()) && conn->fd >= 0) {
                    // Over its cap: MHD sees the end at once and closes it.
                    ::shutdown(conn->fd, SHUT_RDWR);
                    conn->deadline = 0;
                    self->kick();
                }
                *socket_context = conn.release();
                // The deadline tick runs only while there are connections: an idle lodged
                // must be able to notice it is idle.
                if (self->connections_.size() == 1)
                    sd_event_source_set_enabled(self->tick_.get(), SD_EVENT_ON);
            } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
                auto* conn = static_cast<DevlxdServer::Connection*>(*socket_context);
                self->connections_.erase(conn);
                if (conn) {
                    self->release(conn);
                    if (conn->upgrading) { // the client left before the upgrade completed
                        self->pending_upgrades_[conn->upgrading->container]--;
                        delete conn->upgrading;
                    }
                    if (conn->stream)
                        static_cast<DevlxdServer::StreamFeed*>(conn->stream)->conn = nullptr;
                }
                delete conn;
                if (self->connections_.empty())
                    sd_event_source_set_enabled(self->tick_.get(), SD_EVENT_OFF);
                *socket_context = nullptr;
            }
        } catch (...) {
            log_error("devlxd: out of memory tracking a connection");
        }
    }

    struct RequestBody {
        std::string data;
        bool too_large = false;
    };

    static MHD_Result on_request(void* cls, MHD_Connection* mhd, const char* url,
                                 const char* method, const char*, const char* upload,
                                 size_t* upload_size, void** request_context) {
        auto* self = static_cast<DevlxdServer*>(cls);
        try {
            auto* conn = connection_of(mhd);
            if (!*request_context) {
                // The request line and headers are in: the header deadline is met.
                if (conn)
                    conn->deadline = 0;
                *request_context = new RequestBody;
                return MHD_YES;
            }
            auto* body = static_cast<RequestBody*>(*request_context);
            if (*upload_size) {
                if (body->data.size() + *upload_size > self->limits_.body_bytes)
                    body->too_large = true;
                else
                    body->data.append(upload, *upload_size);
                *upload_size = 0;
                return MHD_YES;
            }
            if (!conn)
                return MHD_NO;
            return self->respond(mhd, conn, url, method, body->data, body->too_large) < 0 ? MHD_NO
                                                                                          : MHD_YES;
        } catch (const std::exception& e) {
            log_error("devlxd: %s", e.what());
            return MHD_NO;
        } catch (...) {
            return MHD_NO;
        }
    }

    static void on_completed(void* cls, MHD_Connection* mhd, void** request_context,
                             MHD_RequestTerminationCode) {
        auto* self = static_cast<DevlxdServer*>(cls);
        delete static_cast<RequestBody*>(*request_context);
        *request_context = nullptr;
        // Keep-alive: the next request's headers have the idle timeout to arrive in full.
        if (auto* conn = connection_of(mhd); conn && !conn->long_lived)
            conn->deadline = now_monotonic() + self->limits_.idle_timeout_sec * 1000000ULL;
    }

    static void on_upgrade(void*, MHD_Connection* mhd, void*, const char* extra, size_t extra_size,
                           MHD_socket sock, MHD_UpgradeResponseHandle* urh) {
        auto* conn = connection_of(mhd);
        auto* pending = conn ? static_cast<DevlxdServer::SocketFeed*>(conn->upgrading) : nullptr;
        if (!pending) {
            MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
            return;
        }
        conn->upgrading = nullptr;
        DevlxdServer* self = pending->server;
        self->pending_upgrades_[pending->container]--;
        try {
            std::unique_ptr<DevlxdServer::SocketFeed> feed(pending);
            feed->fd = sock;
            feed->urh = urh;
            sd_event_source* s = nullptr;
            if (sd_event_add_io(self->event_, &s, sock, EPOLLIN, DevlxdServer::SocketFeed::on_io,
                                feed.get()) < 0) {
                MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
                return;
            }
            feed->io.reset(s);
            uint64_t now = 0;
            sd_event_now(self->event_, CLOCK_MONOTONIC, &now);
            if (sd_event_add_time(self->event_, &s, CLOCK_MONOTONIC, now + ping_interval_usec, 0,
                                  DevlxdServer::SocketFeed::on_ping, feed.get()) >= 0) {
                feed->ping.reset(s);
                sd_event_source_set_enabled(s, SD_EVENT_ON);
            }
            auto* raw = feed.get();
            self->socket_feeds_[raw] = std::move(feed);
            self->add_feed(raw);
            if (extra_size)
                raw->on_frames(std::string_view(extra, extra_size));
        } catch (...) {
            log_error("devlxd: cannot set up an event websocket");
            MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        }
    }

    static DevlxdServer::Connection* connection_of(MHD_Connection* mhd) {
        const MHD_ConnectionInfo* info =
            MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return info ? static_cast<DevlxdServer::Connection*>(info->socket_context) : nullptr;
    }
};

namespace {

// `close`: the connection ends after this response (no keep-alive).
int queue(MHD_Connection* mhd, const devlxd::Response& res, bool close = false) {
    MHD_Response* r = MHD_create_response_from_buffer(
        res.body.size(), const_cast<char*>(res.body.data()), MHD_RESPMEM_MUST_COPY);
    if (!r)
        return -ENOMEM;
    if (close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (!res.content_type.empty())
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res.content_type.c_str());
    if (res.status >= 400 && res.content_type.rfind("text/plain", 0) == 0)
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_Result ok = MHD_queue_response(mhd, res.status, r);
    MHD_destroy_response(r);
    return ok == MHD_YES ? 0 : -EIO;
}

} // namespace

DevlxdServer::DevlxdServer(sd_event* event, GuestDirectory& guests, DevlxdLimits limits)
    : event_(event), guests_(guests), limits_(limits) {}

DevlxdServer::~DevlxdServer() {
    if (!daemon_)
        return;
    // MHD must not be stopped with a connection suspended.
    for (auto& [name, feeds] : feeds_)
        for (Feed* f : feeds)
            if (auto* s = dynamic_cast<StreamFeed*>(f); s && s->suspended) {
                s->suspended = false;
                MHD_resume_connection(s->mhd);
            }
    for (auto& [raw, feed] : socket_feeds_) {
        feed->io.reset();
        feed->ping.reset();
        if (!feed->closing)
            MHD_upgrade_action(feed->urh, MHD_UPGRADE_ACTION_CLOSE);
    }
    socket_feeds_.clear();
    io_.reset();
    timer_.reset();
    tick_.reset();
    defer_.reset();
    MHD_stop_daemon(daemon_);
}

int DevlxdServer::start(int listener) {
    unsigned flags = MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE;
    daemon_ = MHD_start_daemon(
        flags, 0, nullptr, nullptr, &MhdCallbacks::on_request, this, MHD_OPTION_LISTEN_SOCKET,
        listener, MHD_OPTION_CONNECTION_LIMIT, limits_.connections, MHD_OPTION_CONNECTION_TIMEOUT,
        limits_.idle_timeout_sec, MHD_OPTION_CONNECTION_MEMORY_LIMIT, limits_.header_bytes,
        MHD_OPTION_NOTIFY_CONNECTION, &MhdCallbacks::on_connection, this,
        MHD_OPTION_NOTIFY_COMPLETED, &MhdCallbacks::on_completed, this, MHD_OPTION_END);
    if (!daemon_)
        return log_error_errno(EINVAL, "devlxd: cannot start the HTTP server");
    const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info)
        return log_error_errno(EINVAL, "devlxd: the HTTP server has no epoll fd");
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, info->epoll_fd, EPOLLIN, on_io, this); r < 0)
        return log_error_errno(r, "devlxd: cannot watch the HTTP server");
    io_.reset(s);
    if (int r = sd_event_add_time(event_, &s, CLOCK_MONOTONIC, UINT64_MAX, 0, on_timer, this);
        r < 0)
        return log_error_errno(r, "devlxd: cannot add the HTTP timer");
    timer_.reset(s);
    // Header deadlines are checked once a second: they only ever need to be roughly on time.
    if (int r =
            sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, 1000000, 250000, on_tick, this);
        r < 0)
        return log_error_errno(r, "devlxd: cannot add the deadline timer");
    tick_.reset(s);
    sd_event_source_set_enabled(s, SD_EVENT_OFF);
    if (int r = sd_event_add_defer(event_, &s, on_defer, this); r < 0)
        return log_error_errno(r, "devlxd: cannot add the deferred run");
    defer_.reset(s);
    sd_event_source_set_enabled(s, SD_EVENT_OFF);
    run();
    return 0;
}

void DevlxdServer::run() {
    if (MHD_run(daemon_) != MHD_YES)
        log_error("devlxd: the HTTP server failed to run");
    arm_timer();
}

void DevlxdServer::kick() {
    if (defer_)
        sd_event_source_set_enabled(defer_.get(), SD_EVENT_ONESHOT);
}

void DevlxdServer::arm_timer() {
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(daemon_, &ms) != MHD_YES) {
        sd_event_source_set_enabled(timer_.get(), SD_EVENT_OFF);
        return;
    }
    uint64_t now = 0;
    sd_event_now(event_, CLOCK_MONOTONIC, &now);
    sd_event_source_set_time(timer_.get(), now + ms * 1000);
    sd_event_source_set_enabled(timer_.get(), SD_EVENT_ONESHOT);
}

int DevlxdServer::on_io(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        static_cast<DevlxdServer*>(userdata)->run();
        return 0;
    });
}

int DevlxdServer::on_timer(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        static_cast<DevlxdServer*>(userdata)->run();
        return 0;
    });
}

int DevlxdServer::on_defer(sd_event_source*, void* userdata) {
    return guarded([&] {
        static_cast<DevlxdServer*>(userdata)->run();
        return 0;
    });
}

int DevlxdServer::on_tick(sd_event_source* s, uint64_t usec, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<DevlxdServer*>(userdata);
        self->expire_deadlines();
        sd_event_source_set_time(s, usec + 1000000);
        sd_event_source_set_enabled(s, self->connections_.empty() ? SD_EVENT_OFF : SD_EVENT_ON);
        return 0;
    });
}

// Slow clients (slowloris) lose their socket: shutting it down makes MHD see the end and
// close the connection on its next run.
void DevlxdServer::expire_deadlines() {
    uint64_t now = now_monotonic();
    bool any = false;
    for (Connection* c : connections_)
        if (c->deadline && c->deadline < now && c->fd >= 0) {
            ::shutdown(c->fd, SHUT_RDWR);
            c->deadline = 0;
            any = true;
        }
    if (any)
        kick();
}

void DevlxdServer::add_feed(Feed* feed) {
    feeds_[feed->container].insert(feed);
}

void DevlxdServer::remove_feed(Feed* feed) {
    auto it = feeds_.find(feed->container);
    if (it == feeds_.end())
        return;
    it->second.erase(feed);
    if (it->second.empty())
        feeds_.erase(it);
    // A closed websocket's feed goes once nothing on the stack uses it any more.
    if (auto* s = dynamic_cast<SocketFeed*>(feed)) {
        auto owned = socket_feeds_.find(s);
        if (owned != socket_feeds_.end()) {
            owned->second.release();
            socket_feeds_.erase(owned);
            sd_event_source* d = nullptr;
            if (sd_event_add_defer(
                    event_, &d,
                    [](sd_event_source* src, void* p) -> int {
                        delete static_cast<SocketFeed*>(p);
                        sd_event_source_unref(src);
                        return 0;
                    },
                    s) < 0)
                log_error("devlxd: cannot free a closed feed");
        }
    }
}

bool DevlxdServer::admit(Connection* conn) {
    if (!conn->container.empty()) {
        unsigned& n = per_container_[conn->container];
        if (n >= limits_.connections_per_container)
            return false;
        n++;
    } else {
        unsigned& n = per_uid_[conn->peer.uid];
        if (n >= limits_.connections_per_uid)
            return false;
        n++;
    }
    conn->counted = true;
    return true;
}

void DevlxdServer::release(Connection* conn) {
    if (!conn->counted)
        return;
    conn->counted = false;
    if (!conn->container.empty()) {
        auto it = per_container_.find(conn->container);
        if (it != per_container_.end() && --it->second == 0)
            per_container_.erase(it);
    } else {
        auto it = per_uid_.find(conn->peer.uid);
        if (it != per_uid_.end() && --it->second == 0)
            per_uid_.erase(it);
    }
}

unsigned DevlxdServer::container_connections(const std::string& name) const {
    auto it = per_container_.find(name);
    return it == per_container_.end() ? 0 : it->second;
}

unsigned DevlxdServer::feed_count(const std::string& container) const {
    auto feeds = feeds_.find(container);
    auto pending = pending_upgrades_.find(container);
    return (feeds == feeds_.end() ? 0 : static_cast<unsigned>(feeds->second.size())) +
           (pending == pending_upgrades_.end() ? 0 : pending->second);
}

void DevlxdServer::publish(const std::string& name, unsigned type, const std::string& line) {
    auto it = feeds_.find(name);
    if (it == feeds_.end())
        return;
    // Delivering may end a feed and change the set: iterate over a copy.
    std::vector<Feed*> targets(it->second.begin(), it->second.end());
    for (Feed* f : targets)
        if (f->types & type)
            f->deliver(line);
}

void DevlxdServer::drop_container(const std::string& name) {
    auto it = feeds_.find(name);
    if (it == feeds_.end())
        return;
    std::vector<Feed*> targets(it->second.begin(), it->second.end());
    for (Feed* f : targets)
        f->finish();
}

int DevlxdServer::respond(MHD_Connection* mhd, Connection* conn, const char* url,
                          const char* method, const std::string& body, bool too_large) {
    if (too_large)
        return queue(mhd, devlxd::error(413, "Request Entity Too Large"));
    std::optional<GuestDirectory::Guest> c;
    if (conn->container.empty() && conn->peer_error == 0) {
        // Not known at accept: lodged may not have heard of a container just re-attached.
        if ((c = guests_.find(conn->peer))) {
            release(conn);
            conn->container = c->name;
            conn->generation = c->generation;
            if (!admit(conn))
                return queue(mhd, devlxd::error(503, "Too many connections"), true);
        }
    } else if (!conn->container.empty()) {
        // Only for the boot it connected from: afterwards it speaks for nobody.
        c = guests_.current(conn->container, conn->generation);
    }
    // A caller in no container has nothing to ask: it gets its answer and the door.
    if (!c)
        return queue(mhd, devlxd::error(500, "Process ID not found in container"), true);
    if (conn->peer.uid != c->root_uid)
        return queue(mhd, devlxd::error(401, "Access denied for non-root user"));
    if (!c->config->get_bool("security.devlxd", true))
        return queue(mhd, devlxd::error(403, "Forbidden"));

    devlxd::Request req;
    req.method = method;
    req.url = url;
    if (const char* type = MHD_lookup_connection_value(mhd, MHD_GET_ARGUMENT_KIND, "type")) {
        req.has_type = true;
        req.query_type = type;
    }
    req.body = body;
    devlxd::GuestView view{c->config, c->ready, host_name()};
    devlxd::Response res = devlxd::handle(req, view);
    if (res.set_ready) {
        std::string error;
        if (guests_.set_ready(c->name, *res.set_ready, error) < 0)
            return queue(mhd, devlxd::error(500, error));
    }
    if (res.kind == devlxd::Kind::events && res.status == 200)
        return start_events(mhd, conn, c->name, res.event_types);
    return queue(mhd, res);
}

int DevlxdServer::start_events(MHD_Connection* mhd, Connection* conn, const std::string& container,
                               unsigned types) {
    if (feed_count(container) >= limits_.feeds_per_container)
        return queue(mhd, devlxd::error(503, "Too many event listeners"), true);
    bool upgrade = header_has_token(
        MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE), "websocket");
    if (upgrade) {
        const char* key = MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, "Sec-WebSocket-Key");
        const char* version =
            MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, "Sec-WebSocket-Version");
        if (!key || !*key || !version || std::string(version) != "13" ||
            !header_has_token(
                MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONNECTION),
                "upgrade"))
            return queue(mhd, devlxd::error(400, "Bad Request"));
        auto feed = std::make_unique<SocketFeed>();
        feed->server = this;
        feed->container = container;
        feed->types = types;
        MHD_Response* r = MHD_create_response_for_upgrade(&MhdCallbacks::on_upgrade, nullptr);
        if (!r)
            return -ENOMEM;
        MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
        MHD_add_response_header(r, "Sec-WebSocket-Accept", ws::accept_key(key).c_str());
        MHD_Result ok = MHD_queue_response(mhd, MHD_HTTP_SWITCHING_PROTOCOLS, r);
        MHD_destroy_response(r);
        if (ok != MHD_YES)
            return -EIO;
        conn->long_lived = true;
        if (conn->upgrading)
            pending_upgrades_[conn->upgrading->container]--;
        delete conn->upgrading;
        pending_upgrades_[container]++;
        conn->upgrading = feed.release(); // on_upgrade takes it from the connection
        return 0;
    }
    auto* feed = new StreamFeed;
    feed->server = this;
    feed->container = container;
    feed->types = types;
    feed->mhd = mhd;
    MHD_Response* r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16 * 1024, &StreamFeed::read, feed, &StreamFeed::release);
    if (!r) {
        delete feed;
        return -ENOMEM;
    }
    // LXD's stream is a header block and then bare JSON lines, never chunked, so that a
    // shell's socat or nc reads events line by line. MHD chunks any HTTP/1.1 response of
    // unknown length unless told to answer as HTTP/1.0 does (the status line still says
    // HTTP/1.1): no chunking, and the connection ends with the stream.
    MHD_set_response_options(r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
    add_feed(feed);
    feed->conn = conn;
    conn->stream = feed;
    sd_event_source* hup = nullptr;
    if (sd_event_add_io(event_, &hup, conn->fd, EPOLLHUP, &StreamFeed::on_hangup, conn) >= 0)
        conn->hangup.reset(hup);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_Result ok = MHD_queue_response(mhd, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    // Feeds stay open for as long as the guest listens.
    MHD_set_connection_option(mhd, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    conn->long_lived = true;
    return ok == MHD_YES ? 0 : -EIO;
}

} // namespace lodge::daemon
