// The guest API's event feeds: a plain stream of JSON lines (StreamFeed) or a websocket
// (SocketFeed), each with a capped backlog so that a stalled reader is cut, not buffered.
#include "devlxd/devlxd-server-parts.hpp"

#include "common/sd-util.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <microhttpd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <vector>

namespace lodge::daemon {

void DevlxdServer::StreamFeed::deliver(const std::string& line) {
    if (pending.size() + line.size() > server->limits_.subscriber_backlog) {
        finish(); // a reader this far behind is gone or stuck
        return;
    }
    pending += line;
    pending += '\n';
    wake();
}

void DevlxdServer::StreamFeed::finish() {
    finished = true;
    wake();
}

void DevlxdServer::StreamFeed::wake() {
    if (suspended) {
        suspended = false;
        MHD_resume_connection(mhd);
        server->kick();
    }
}

ssize_t DevlxdServer::StreamFeed::read(void* cls, uint64_t, char* buf, size_t max) {
    auto* f = static_cast<StreamFeed*>(cls);
    if (!f->pending.empty()) {
        size_t n = std::min(max, f->pending.size());
        std::memcpy(buf, f->pending.data(), n);
        f->pending.erase(0, n);
        return static_cast<ssize_t>(n);
    }
    if (f->finished)
        return MHD_CONTENT_READER_END_OF_STREAM;
    // Nothing to send: park the connection until an event (or the end) arrives.
    f->suspended = true;
    MHD_suspend_connection(f->mhd);
    return 0;
}

void DevlxdServer::StreamFeed::release(void* cls) {
    auto* f = static_cast<StreamFeed*>(cls);
    f->server->remove_feed(f);
    if (f->conn) {
        f->conn->stream = nullptr;
        f->conn->hangup.reset();
    }
    delete f;
}

int DevlxdServer::StreamFeed::on_hangup(sd_event_source* s, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* conn = static_cast<Connection*>(userdata);
        sd_event_source_set_enabled(s, SD_EVENT_OFF);
        ::shutdown(conn->fd, SHUT_RDWR);
        if (auto* f = static_cast<StreamFeed*>(conn->stream))
            f->finish();
        return 0;
    });
}

void DevlxdServer::SocketFeed::deliver(const std::string& line) {
    send(ws::frame(ws::Opcode::text, line));
}

void DevlxdServer::SocketFeed::finish() {
    send(ws::frame(ws::Opcode::close, std::string("\x03\xe9", 2))); // 1001: going away
    close();
}

void DevlxdServer::SocketFeed::send(const std::string& data) {
    if (closing)
        return;
    if (out.size() + data.size() > server->limits_.subscriber_backlog) {
        close();
        return;
    }
    out += data;
    flush();
}

void DevlxdServer::SocketFeed::flush() {
    while (!out.empty()) {
        ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            close();
            return;
        }
        out.erase(0, static_cast<size_t>(n));
    }
    if (io)
        sd_event_source_set_io_events(io.get(), out.empty() ? uint32_t{EPOLLIN}
                                                            : uint32_t{EPOLLIN | EPOLLOUT});
}

void DevlxdServer::SocketFeed::close() {
    if (closing)
        return;
    closing = true;
    io.reset();
    ping.reset();
    ::shutdown(fd, SHUT_RDWR);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    server->remove_feed(this);
    server->kick();
}

void DevlxdServer::SocketFeed::on_frames(std::string_view data) {
    std::vector<ws::Frame> frames;
    bool ok = decoder.feed(data, frames);
    for (auto& f : frames) {
        if (closing)
            return;
        switch (f.op) {
        case ws::Opcode::ping:
            send(ws::frame(ws::Opcode::pong, f.payload));
            break;
        case ws::Opcode::pong:
            missed_pongs = 0;
            break;
        case ws::Opcode::close:
            send(ws::frame(ws::Opcode::close, f.payload.substr(0, 2)));
            close();
            return;
        default:
            break; // the feed is one-way: data from the client is read and dropped
        }
    }
    if (!ok) {
        send(ws::frame(ws::Opcode::close, std::string("\x03\xea", 2))); // 1002: protocol error
        close();
    }
}

int DevlxdServer::SocketFeed::on_io(sd_event_source*, int, uint32_t revents, void* userdata) {
    return guarded([&] {
        auto* f = static_cast<SocketFeed*>(userdata);
        if (revents & EPOLLOUT)
            f->flush();
        if (f->closing || !(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            return 0;
        char buf[4096];
        ssize_t n = ::recv(f->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            f->close();
            return 0;
        }
        f->on_frames(std::string_view(buf, static_cast<size_t>(n)));
        return 0;
    });
}

int DevlxdServer::SocketFeed::on_ping(sd_event_source* s, uint64_t usec, void* userdata) {
    return guarded([&] {
        auto* f = static_cast<SocketFeed*>(userdata);
        if (f->missed_pongs >= max_missed_pongs) {
            f->close();
            return 0;
        }
        f->missed_pongs++;
        f->send(ws::frame(ws::Opcode::ping, ""));
        if (!f->closing)
            sd_event_source_set_time(s, usec + ping_interval_usec);
        return 0;
    });
}

} // namespace lodge::daemon
