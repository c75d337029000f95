// lodge-supervisor's control socket server: accepts root's connections, reads one request per
// message and dispatches it from a table of verbs (control-proto.hpp says what each carries
// and answers); attached clients get the console.
#include "common/fileio.hpp"
#include "common/limits.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "runtime/lxcfs-probe.hpp"
#include "runtime/setup/setup.hpp"
#include "runtime/supervisor.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace lodge::runtime {

using proto::Request;
using proto::Verb;

namespace {

// What a verb needs of the container before its handler runs.
enum class Needs {
    nothing,
    alive,   // PID 1 exists: running or stopping
    running, // running (not on its way down)
};

struct VerbHandler {
    Verb verb;
    Needs needs;
    void (Supervisor::*handle)(Client&, const Request&);
};

} // namespace

// The dispatch table: one line per verb (arguments are parsed by proto::decode).
// A member of Supervisor by way of a static local, so that it may name private handlers.
void Supervisor::handle_request(Client& c, const std::string& text) {
    static const std::array<VerbHandler, 17> table{{
        {Verb::status, Needs::nothing, &Supervisor::do_status},
        {Verb::watch, Needs::nothing, &Supervisor::do_watch},
        {Verb::wait, Needs::nothing, &Supervisor::do_wait},
        {Verb::wait_boot, Needs::nothing, &Supervisor::do_wait_boot},
        {Verb::stop, Needs::alive, &Supervisor::do_stop},
        {Verb::restart, Needs::alive, &Supervisor::do_stop},
        {Verb::stop_force, Needs::alive, &Supervisor::do_stop_force},
        {Verb::reboot, Needs::alive, &Supervisor::do_signal},
        {Verb::kill, Needs::alive, &Supervisor::do_signal},
        {Verb::attach, Needs::nothing, &Supervisor::do_attach},
        {Verb::nic_add, Needs::running, &Supervisor::do_nic_add},
        {Verb::nic_remove, Needs::nothing, &Supervisor::do_nic_remove},
        {Verb::apply_limits, Needs::nothing, &Supervisor::do_apply_limits},
        {Verb::lxcfs_attach, Needs::running, &Supervisor::do_lxcfs},
        {Verb::lxcfs_detach, Needs::running, &Supervisor::do_lxcfs},
        {Verb::devlxd_attach, Needs::running, &Supervisor::do_devlxd},
        {Verb::devlxd_detach, Needs::running, &Supervisor::do_devlxd},
    }};
    Request req;
    if (auto e = proto::decode(text, req); !e.empty())
        return send(c, proto::error_reply(e));
    auto it = std::find_if(table.begin(), table.end(),
                           [&](const VerbHandler& h) { return h.verb == req.verb; });
    if (it == table.end())
        return send(c, proto::error_reply(std::string("unknown request \"") +
                                          proto::verb_name(req.verb) + "\""));
    bool ready = it->needs == Needs::nothing || (it->needs == Needs::alive && alive()) ||
                 (it->needs == Needs::running && state_ == State::running && spawned_.init.valid());
    if (!ready)
        return send(c, proto::error_reply("container is not running"));
    (this->*(it->handle))(c, req);
}

void Supervisor::do_status(Client& c, const Request&) {
    send(c, proto::encode(status()));
}

void Supervisor::do_watch(Client& c, const Request&) {
    c.watching = true;
    send(c, proto::encode(status()));
}

void Supervisor::do_wait(Client& c, const Request&) {
    if (!alive())
        return send(c, proto::encode(status()));
    c.wait = Client::Wait::stopped;
}

// Replies once PID 1 has been started N times (guest reboots included).
void Supervisor::do_wait_boot(Client& c, const Request& req) {
    if (boots_ >= req.boot || !alive())
        return send(c, proto::encode(status()));
    c.wait = Client::Wait::restarted;
    c.wait_boot = req.boot;
}

// stop and restart: the reply waits until the container stopped, or runs again.
void Supervisor::do_stop(Client& c, const Request& req) {
    unsigned timeout = req.timeout.value_or(config_.shutdown_timeout());
    bool restart = req.verb == Verb::restart;
    c.wait = restart ? Client::Wait::restarted : Client::Wait::stopped;
    c.wait_boot = boots_ + 1;
    request_stop(timeout, timeout == 0, restart);
}

void Supervisor::do_stop_force(Client& c, const Request&) {
    c.wait = Client::Wait::stopped;
    request_stop(0, true, false);
}

void Supervisor::do_signal(Client& c, const Request& req) {
    int sig = req.verb == Verb::kill ? req.signal : config_.reboot_signal();
    if (int r = spawned_.init.send_signal(sig); r < 0)
        return send(c,
                    proto::error_reply(std::string("cannot signal PID 1: ") + std::strerror(-r)));
    send(c, proto::signal_reply(signal_name(sig)));
}

void Supervisor::do_attach(Client& c, const Request&) {
    send(c, proto::ok_reply());
    c.attached = true;
    queue_console(c, console_.ring().data(), console_.ring().size());
}

// lodged persisted nothing yet: it commits the device once this succeeded.
void Supervisor::do_nic_add(Client& c, const Request& req) {
    net::PluggedNic nic;
    if (auto e = nics_.add(name_, spawned_.init.pid(), req.device, req.nic, nic); !e.empty())
        return send(c, proto::error_reply(e));
    write_state();
    send(c, proto::nic_reply(nic));
}

void Supervisor::do_nic_remove(Client& c, const Request& req) {
    std::string error;
    int r = nics_.remove(req.device, error);
    if (r < 0)
        return send(c, proto::error_reply(error));
    if (r > 0) {
        log_info("Container \"%s\": device \"%s\" unplugged", name_.c_str(), req.device.c_str());
        write_state();
    }
    send(c, proto::plugged_reply(r > 0));
}

// limits.* changed: lodged sends them; without them (a supervisor driven by hand, a lodged
// from before they were sent) they come from config.json.
void Supervisor::do_apply_limits(Client& c, const Request& req) {
    Limits limits;
    if (req.limits) {
        limits = *req.limits;
    } else {
        if (auto loaded = load_config(); !loaded)
            return send(c, proto::error_reply(loaded.error().message));
        limits = limits_of(config_);
    }
    if (auto applied = cgroup_.apply_limits(limits); !applied)
        return send(c, proto::error_reply(applied.error().message));
    send(c, proto::ok_reply());
}

// lxcfs appeared or went away: follow it in the running container (lodged asks).
void Supervisor::do_lxcfs(Client& c, const Request& req) {
    std::string dir = paths::lxcfs_dir();
    bool attach = req.verb == Verb::lxcfs_attach;
    if (attach && !is_lxcfs_mount(dir))
        return send(c, proto::error_reply("no live lxcfs at " + dir));
    Result<> r = attach ? lxcfs_attach_running(spawned_.init.pid(), dir)
                        : lxcfs_detach_running(spawned_.init.pid());
    if (!r)
        return send(c, proto::error_reply(r.error().message));
    lxcfs_ = attach;
    write_state();
    send(c, proto::lxcfs_reply(lxcfs_));
}

// security.devlxd changed while running: /dev/lxd follows it live, as in LXD.
void Supervisor::do_devlxd(Client& c, const Request& req) {
    std::string dir = paths::devlxd_dir();
    bool attach = req.verb == Verb::devlxd_attach;
    if (attach)
        mkdir_p(dir, 0755);
    Result<> r = attach ? devlxd_attach_running(spawned_.init.pid(), dir)
                        : devlxd_detach_running(spawned_.init.pid());
    if (!r)
        return send(c, proto::error_reply(r.error().message));
    send(c, proto::ok_reply());
}

void Supervisor::send(Client& c, const std::string& reply) {
    if (::send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug_errno(errno, "Failed to reply to a control client");
}

void Supervisor::reply_waiters(Client::Wait what, const std::string& reply) {
    for (auto& c : clients_)
        if ((c.wait == what && boots_ >= c.wait_boot) ||
            (what == Client::Wait::stopped && c.wait != Client::Wait::nothing)) {
            send(c, reply);
            c.wait = Client::Wait::nothing;
        }
}

void Supervisor::drop_client(Client* c) {
    clients_.remove_if([c](const Client& x) { return &x == c; });
}

// Console output to an attached client never blocks the supervisor: what the client does not
// take at once waits in its queue (the newest 1 MiB) until its socket is writable again.
void Supervisor::queue_console(Client& c, const char* data, size_t len) {
    constexpr size_t max_pending = 1024 * 1024;
    c.pending.append(data, len);
    if (c.pending.size() > max_pending)
        c.pending.erase(0, c.pending.size() - max_pending);
    flush_console(c);
}

void Supervisor::flush_console(Client& c) {
    while (!c.pending.empty()) {
        size_t chunk = std::min<size_t>(4096, c.pending.size());
        ssize_t n = ::send(c.fd.get(), c.pending.data(), chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            break;
        c.pending.erase(0, static_cast<size_t>(n));
    }
    sd_event_source_set_io_events(c.source.get(), c.pending.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT);
}

Result<> Supervisor::listen_control() {
    std::string path = paths::control_socket(name_);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return log_error_value(ENAMETOOLONG, "Control socket path %s", path.c_str());
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    listen_fd_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_fd_)
        return log_error_value(errno, "socket() failed");
    ::unlink(path.c_str()); // we hold the lock, so a socket file here is stale
    if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return log_error_value(errno, "Cannot bind %s", path.c_str());
    ::chmod(path.c_str(), 0600);
    if (::listen(listen_fd_.get(), 64) < 0)
        return log_error_value(errno, "Cannot listen on %s", path.c_str());
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_.get(), &s, listen_fd_.get(), EPOLLIN, on_accept, this);
        r < 0)
        return log_error_value(r, "Failed to watch the control socket");
    listen_source_.reset(s);
    return {};
}

int Supervisor::on_accept(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<Supervisor*>(userdata);
        int cfd = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
            return 0;
        // Only root (or the container's owner, root too) may drive the container.
        struct ucred cred {};
        socklen_t len = sizeof cred;
        if (::getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
            ::close(cfd);
            return 0;
        }
        self->clients_.emplace_back();
        Client& c = self->clients_.back();
        c.owner = self;
        c.fd.reset(cfd);
        sd_event_source* s = nullptr;
        if (sd_event_add_io(self->event_.get(), &s, cfd, EPOLLIN, on_client, &c) < 0) {
            self->clients_.pop_back();
            return 0;
        }
        c.source.reset(s);
        return 0;
    });
}

int Supervisor::on_client(sd_event_source*, int fd, uint32_t revents, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Client*>(userdata);
        Supervisor* self = c->owner;
        if (revents & EPOLLOUT)
            self->flush_console(*c);
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            return 0;
        char buf[4096];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            self->drop_client(c);
            return 0;
        }
        if (c->attached) {
            if (self->spawned_.console_master)
                (void)!::write(self->spawned_.console_master.get(), buf, static_cast<size_t>(n));
            return 0;
        }
        self->handle_request(*c, std::string(buf, static_cast<size_t>(n)));
        return 0;
    });
}

} // namespace lodge::runtime
