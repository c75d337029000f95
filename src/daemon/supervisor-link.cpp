// ControlSocketLink: SupervisorLink over lodge-supervisor's control socket. Non-blocking all
// the way: a supervisor that stopped reading or answering never holds lodged's loop.
#include "daemon/supervisor-link.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/sd-util.hpp"
#include "runtime/control-proto.hpp"
#include "runtime/control.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#ifndef LODGE_SUPERVISOR_PATH
#define LODGE_SUPERVISOR_PATH "/usr/libexec/lodge/lodge-supervisor"
#endif

namespace lodge::daemon {

std::string supervisor_binary() {
    const char* env = std::getenv("LODGE_SUPERVISOR");
    return env && *env ? env : LODGE_SUPERVISOR_PATH;
}

namespace {

constexpr uint64_t place_deadline_usec = 30 * 1000000ULL;

Error not_running(const std::string& name) {
    return make_error(errors::not_running, ENOTCONN, "Container \"" + name + "\" is not running");
}

// The status stream ("watch") and, through its peer's pidfd, the supervisor's exit.
class SocketWatch : public SupervisorLink::Watch {
public:
    SocketWatch(sd_event* event, std::string name, SupervisorLink::WatchEvents events)
        : event_(event), name_(std::move(name)), events_(std::move(events)) {}

    int open() {
        if (int r = runtime::control_connect(name_, sock_, true); r < 0)
            return r;
        std::string watch =
            runtime::proto::encode(runtime::proto::Request::of(runtime::proto::Verb::watch));
        if (::send(sock_.get(), watch.data(), watch.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            return -errno;
        sd_event_source* s = nullptr;
        if (int r = sd_event_add_io(event_, &s, sock_.get(), EPOLLIN, on_stream, this); r < 0)
            return r;
        stream_.reset(s);
        track_supervisor();
        return 0;
    }
    bool supervisor_alive() const override { return supervisor_.valid(); }
    void take_first_status(int timeout_ms) override {
        if (!sock_ || got_status_)
            return;
        struct pollfd first {
            sock_.get(), POLLIN, 0
        };
        if (::poll(&first, 1, timeout_ms) > 0)
            read_stream();
    }

private:
    // The watch socket's peer is the supervisor (it listens on the control socket itself).
    void track_supervisor() {
        struct ucred cred {};
        socklen_t len = sizeof cred;
        if (::getsockopt(sock_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0) {
            log_error_errno(-errno, "Cannot learn the supervisor of %s", name_.c_str());
            return;
        }
        PidFd pidfd = PidFd::open(cred.pid);
        if (!pidfd.valid()) {
            // Gone already (ESRCH): nothing to wait for.
            if (errno != ESRCH)
                log_error_errno(-errno, "Cannot open a pidfd for the supervisor of %s (%d)",
                                name_.c_str(), cred.pid);
            return;
        }
        sd_event_source* s = nullptr;
        if (int r = sd_event_add_io(event_, &s, pidfd.get(), EPOLLIN, on_exit, this); r < 0) {
            log_error_errno(r, "Cannot watch the supervisor of %s", name_.c_str());
            return;
        }
        exit_.reset(s);
        supervisor_ = std::move(pidfd);
    }
    static int on_stream(sd_event_source*, int, uint32_t, void* userdata) {
        return guarded([&] {
            static_cast<SocketWatch*>(userdata)->read_stream();
            return 0;
        });
    }
    void read_stream() {
        char buf[65536];
        ssize_t n = ::recv(sock_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            // The source goes while its fd is still open.
            stream_.reset();
            sock_.reset();
            auto end = events_.end; // may destroy this
            if (end)
                end();
            return;
        }
        got_status_ = true;
        auto status = events_.status;
        if (status)
            status(std::string(buf, static_cast<size_t>(n)));
    }
    static int on_exit(sd_event_source*, int, uint32_t, void* userdata) {
        return guarded([&] {
            auto* w = static_cast<SocketWatch*>(userdata);
            // The source before its pidfd (a watched fd closed first leaves a stale epoll entry
            // wherever a forked copy of it lives on).
            w->exit_.reset();
            w->supervisor_.reset();
            auto exit = w->events_.exit; // may destroy w
            if (exit)
                exit();
            return 0;
        });
    }

    sd_event* event_;
    std::string name_;
    SupervisorLink::WatchEvents events_;
    Fd sock_;
    SourcePtr stream_;
    bool got_status_ = false;
    PidFd supervisor_;
    SourcePtr exit_;
};

// LODGE_SUPERVISOR_STANDBY=0 starts every supervisor by exec (the start path's system calls
// then all descend from lodged, as a trace of it expects).
bool standby_wanted() {
    const char* env = std::getenv("LODGE_SUPERVISOR_STANDBY");
    return !env || std::strcmp(env, "0") != 0;
}

class ControlSocketLink : public SupervisorLink {
public:
    explicit ControlSocketLink(sd_event* event) : event_(event) { refill_standby_later(); }

    Result<> launch(LaunchSpec spec, std::function<void(Result<Launched>)> done) override;
    Result<> request(const std::string& name, const std::string& request, Reply done,
                     RequestOptions options) override;
    std::unique_ptr<Watch> watch(const std::string& name, WatchEvents events) override {
        // A container that stopped makes room for the next start's standby (see refill_).
        events.end = [this, end = std::move(events.end)] {
            refill_standby_later();
            if (end)
                end();
        };
        auto w = std::make_unique<SocketWatch>(event_, name, std::move(events));
        if (w->open() < 0)
            return nullptr;
        return w;
    }
    std::string last_status(const std::string& name) override {
        std::string text;
        return read_file(paths::runtime_state(name), text) == 0 ? text : std::string();
    }
    bool idle() const override { return pending_.empty() && launches_.empty(); }

private:
    // A start under way: the supervisor's notify pipe, read on the loop until READY or ERROR.
    struct Launch {
        ControlSocketLink* link = nullptr;
        LaunchSpec spec;
        runtime::SupervisorLaunch supervisor;
        SourcePtr notify, deadline;
        std::string error; // set when lodged called the start off
        std::function<void(Result<Launched>)> done;
    };
    struct Pending {
        ControlSocketLink* link = nullptr;
        Fd fd;
        SourcePtr source, timeout;
        Reply done;
        bool keep_connection = false;
    };
    static int on_launch(sd_event_source*, int, uint32_t, void* userdata);
    static int on_launch_deadline(sd_event_source*, uint64_t, void* userdata);
    static int on_reaped(sd_event_source* s, const siginfo_t*, void*) {
        sd_event_source_unref(s); // freed once dispatched; sd-event reaps the process first
        return 0;
    }
    // A supervisor's short-lived first process exits once it has forked the supervisor proper.
    void reap_soon(pid_t pid) {
        sd_event_source* s = nullptr;
        if (sd_event_add_child(event_, &s, pid, WEXITED, on_reaped, nullptr) < 0)
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR)
                ;
    }
    // The next start's standby is exec'd when lodged starts, when a container stops, and a
    // second after a start began (for starts in a row, and whatever became of that one): not
    // right after a start, where its ~2 ms of loading would compete with the client's next step
    // (typically an exec) for the CPUs.
    void refill_standby_later(uint64_t delay_usec = 0) {
        if (!standby_wanted() || standby_ || (refill_ && delay_usec > 0))
            return;
        sd_event_source* s = nullptr;
        int r = delay_usec > 0 ? sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, delay_usec,
                                                            0, on_refill_timer, this)
                               : sd_event_add_defer(event_, &s, on_refill, this);
        if (r >= 0)
            refill_.reset(s);
    }
    static int on_refill_timer(sd_event_source* s, uint64_t, void* userdata) {
        return on_refill(s, userdata);
    }
    static int on_refill(sd_event_source*, void* userdata) {
        return guarded([&] {
            auto* link = static_cast<ControlSocketLink*>(userdata);
            link->refill_.reset();
            if (link->standby_)
                return 0;
            auto standby = std::make_unique<runtime::SupervisorStandby>();
            if (int r = standby->spawn(supervisor_binary()); r < 0) {
                log_warning_errno(r, "Cannot start a standby lodge-supervisor");
                return 0;
            }
            link->reap_soon(standby->intermediate());
            link->standby_ = std::move(standby);
            return 0;
        });
    }
    void step_launch(Launch& launch);
    void finish_launch(Launch* launch);
    static int on_reply(sd_event_source*, int fd, uint32_t, void* userdata);
    static int on_timeout(sd_event_source*, uint64_t, void* userdata);
    void end_request(Pending* p, const std::string& reply);

    sd_event* event_;
    std::unique_ptr<runtime::SupervisorStandby> standby_;
    SourcePtr refill_;
    std::map<Launch*, std::unique_ptr<Launch>> launches_;
    std::map<Pending*, std::unique_ptr<Pending>> pending_;
};

Result<> ControlSocketLink::launch(LaunchSpec spec, std::function<void(Result<Launched>)> done) {
    auto launch = std::make_unique<Launch>();
    launch->link = this;
    launch->done = std::move(done);
    launch->spec = std::move(spec);
    const std::string& name = launch->spec.name;
    bool hold = static_cast<bool>(launch->spec.place);
    std::unique_ptr<runtime::SupervisorStandby> standby = std::move(standby_);
    int r = launch->supervisor.spawn(supervisor_binary(), name, launch->spec.args, hold, hold,
                                     false, standby.get());
    standby.reset(); // used up, or the start did not take it
    refill_standby_later(1000000);
    if (r < 0)
        return make_error(errors::start_failed, r,
                          "Cannot start lodge-supervisor for " + name + ": " + std::strerror(-r));
    // A new supervisor's first process is reaped by sd-event; lodged does not wait for it.
    if (launch->supervisor.intermediate() > 0)
        reap_soon(launch->supervisor.intermediate());
    // READY comes once PID 1 has been exec'd, which may take a rootfs shift: off the loop.
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, launch->supervisor.notify_fd(), EPOLLIN, on_launch,
                                launch.get());
        r < 0) {
        launch->supervisor.release(false);
        return make_error(errors::start_failed, r, "Cannot watch the supervisor of " + name);
    }
    launch->notify.reset(s);
    if (hold && sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, place_deadline_usec, 0,
                                           on_launch_deadline, launch.get()) >= 0)
        launch->deadline.reset(s);
    launches_[launch.get()] = std::move(launch);
    return {};
}

int ControlSocketLink::on_launch(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* launch = static_cast<Launch*>(userdata);
        launch->link->step_launch(*launch);
        return 0;
    });
}

int ControlSocketLink::on_launch_deadline(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* launch = static_cast<Launch*>(userdata);
        launch->error = "lodge-supervisor did not get ready to start " + launch->spec.name;
        log_error("%s within 30 s", launch->error.c_str());
        launch->supervisor.release(false); // it exits untouched; EOF ends the launch
        return 0;
    });
}

void ControlSocketLink::step_launch(Launch& launch) {
    auto step = launch.supervisor.read();
    if (step == runtime::SupervisorLaunch::Step::held) {
        // The supervisor waits, before it touched anything, to be placed.
        launch.deadline.reset();
        Result<> placed =
            launch.spec.place(launch.supervisor.supervisor_pid(), launch.supervisor.bus_name());
        if (!placed)
            launch.error = placed.error().message;
        if (launch.supervisor.release(placed.ok()) < 0 && launch.error.empty())
            launch.error = "Cannot let lodge-supervisor start " + launch.spec.name;
        step = launch.supervisor.read();
    }
    if (step == runtime::SupervisorLaunch::Step::finished)
        finish_launch(&launch);
}

void ControlSocketLink::finish_launch(Launch* l) {
    auto it = launches_.find(l);
    if (it == launches_.end())
        return;
    std::unique_ptr<Launch> launch = std::move(it->second);
    launches_.erase(it);
    launch->notify.reset();
    launch->deadline.reset();
    runtime::LaunchResult res;
    int r = launch->supervisor.result(res);
    if (r < 0 || !launch->error.empty())
        return launch->done(make_error(errors::start_failed, r < 0 ? r : -EIO,
                                       !launch->error.empty() ? launch->error : res.error));
    launch->done(Launched{res.init_pid, res.status});
}

Result<> ControlSocketLink::request(const std::string& name, const std::string& request, Reply done,
                                    RequestOptions options) {
    auto p = std::make_unique<Pending>();
    p->link = this;
    p->done = std::move(done);
    p->keep_connection = options.keep_connection;
    if (runtime::control_connect(name, p->fd, true) < 0 ||
        ::send(p->fd.get(), request.data(), request.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        return not_running(name);
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, p->fd.get(), EPOLLIN, on_reply, p.get()); r < 0)
        return make_error(errors::failed, r,
                          "Cannot watch the supervisor of \"" + name + "\": " + std::strerror(-r));
    p->source.reset(s);
    if (options.timeout_usec > 0 &&
        sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, options.timeout_usec, 0, on_timeout,
                                   p.get()) >= 0)
        p->timeout.reset(s);
    pending_[p.get()] = std::move(p);
    return {};
}

int ControlSocketLink::on_reply(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* p = static_cast<Pending*>(userdata);
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        p->link->end_request(p, n > 0 ? std::string(buf, static_cast<size_t>(n)) : "");
        return 0;
    });
}

int ControlSocketLink::on_timeout(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* p = static_cast<Pending*>(userdata);
        p->link->end_request(p, "");
        return 0;
    });
}

void ControlSocketLink::end_request(Pending* p, const std::string& reply) {
    auto it = pending_.find(p);
    if (it == pending_.end())
        return;
    std::unique_ptr<Pending> owned = std::move(it->second);
    pending_.erase(it);
    owned->source.reset();
    owned->timeout.reset();
    if (!owned->keep_connection)
        owned->fd.reset();
    if (owned->done)
        owned->done(reply, std::move(owned->fd));
}

} // namespace

std::unique_ptr<SupervisorLink> make_control_socket_link(sd_event* event) {
    return std::make_unique<ControlSocketLink>(event);
}

} // namespace lodge::daemon
