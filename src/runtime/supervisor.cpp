// lodge-supervisor: owns one container's life (CONTRACT §1). One sd-event loop drives PID 1's
// pidfd, the console pty, the control socket and the stop-escalation timer.
#include "cgroup.hpp"
#include "common/config.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/ownership.hpp"
#include "common/paths.hpp"
#include "common/sd-util.hpp"
#include "common/validate.hpp"
#include "console.hpp"
#include "control.hpp"
#include "lifecycle.hpp"
#include "net.hpp"
#include "security.hpp"
#include "setup.hpp"
#include "spawn.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {

// A client on the control socket. Waiting ones get their reply when the container stops
// (stop) or runs again (restart); `attached` ones receive console output.
class Supervisor;
struct Client {
    Supervisor* owner = nullptr;
    Fd fd;
    SourcePtr source;
    bool attached = false;
    bool watching = false; // gets the status JSON at every state change
    std::string pending;   // console output not yet taken by a slow attached client
    // What the client waits for: the container stopped, or running again after a restart.
    enum class Wait { nothing, stopped, restarted } wait = Wait::nothing;
    unsigned wait_boot = 0; // with Wait::restarted: the boot number that answers it
};

enum class State { starting, running, stopping, stopped, error };

const char* state_name(State s) {
    switch (s) {
    case State::starting:
        return "starting";
    case State::running:
        return "running";
    case State::stopping:
        return "stopping";
    case State::stopped:
        return "stopped";
    case State::error:
        return "error";
    }
    return "error";
}

class Supervisor {
public:
    Supervisor(std::string name, std::string cgroup_base, bool own_base)
        : name_(std::move(name)), cgroup_(std::move(cgroup_base)), own_base_(own_base) {}

    int run(int notify_fd);
    // With --bus-controller: the connection systemd sends the scope's RequestStop to.
    void set_bus(sd_bus* bus) { bus_ = bus; }

private:
    int setup_runtime_dir();
    int load_config();
    int start_container(std::string& error);
    void on_init_exit(const siginfo_t& si);
    void finish(State state, const std::string& reason);
    void release_and_reply();
    int listen_control();
    void handle_request(Client& client, const std::string& request);
    void request_stop(unsigned timeout, bool force, bool restart);
    void send_json(Client& c, const nlohmann::json& j);
    nlohmann::json status_json() const;
    void write_state();
    void drop_client(Client* c);
    void queue_console(Client& c, const char* data, size_t len);
    void flush_console(Client& c);
    void reply_waiters(Client::Wait what, const nlohmann::json& j);
    int plug_nics(pid_t child, std::string& error);
    void unplug_nics();
    void nic_add(Client& c, const std::string& device, const std::string& spec_json);
    void nic_remove(Client& c, const std::string& device);

    static int on_child(sd_event_source*, const siginfo_t* si, void* userdata);
    static int on_console(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_accept(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_client(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_stop_timeout(sd_event_source*, uint64_t usec, void* userdata);
    static int on_term_signal(sd_event_source*, const struct signalfd_siginfo*, void* userdata);

    std::string name_;
    sd_bus* bus_ = nullptr;
    CgroupFs cgroup_;
    bool own_base_;
    ContainerConfig config_;
    EventPtr event_;
    Spawned spawned_;
    SourcePtr child_source_, console_source_, listen_source_, timer_source_;
    Fd listen_fd_, lock_fd_, console_peer_;
    Fd owner_lock_; // the container's lock on its (maybe shared) directory: ownership.hpp
    ConsoleLog console_;
    std::list<Client> clients_;
    State state_ = State::starting;
    std::string reason_;
    std::string boot_id_;
    std::string stop_reason_; // set when lodge itself ends the container
    bool restart_pending_ = false;
    int last_signal_ = 0;
    unsigned boots_ = 0; // how many times PID 1 was started by this supervisor
    bool lxcfs_ = false; // the container has lxcfs binds
    // The running container's network namespace (held so that unplugging at stop still reaches
    // devices inside it) and the nics plugged into it, with this boot's host names.
    Fd netns_;
    std::vector<net::PluggedNic> nics_;
};

nlohmann::json nic_json(const net::PluggedNic& n) {
    return {{"device", n.device},       {"nictype", n.nictype},
            {"name", n.name},           {"hwaddr", n.hwaddr},
            {"host_name", n.host_name}, {"host_ifindex", n.host_ifindex},
            {"ifindex", n.ifindex},     {"mtu", n.mtu},
            {"host_mtu", n.host_mtu}};
}

int Supervisor::setup_runtime_dir() {
    std::string dir = paths::container_runtime(name_);
    if (int r = mkdir_p(dir, 0755); r < 0)
        return log_error_errno(r, "Cannot create %s", dir.c_str());
    lock_fd_.reset(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_fd_)
        return log_error_errno(errno, "Cannot open %s/lock", dir.c_str());
    if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) {
        log_error("Container \"%s\" is already running", name_.c_str());
        return -EBUSY;
    }
    // Another node (or lodged with another runtime dir) may run it from shared storage.
    std::string held_by;
    if (int r = ownership::acquire(name_, owner_lock_, held_by); r < 0)
        return r;
    if (int r = mkdir_p(dir + "/rootfs", 0755); r < 0)
        return log_error_errno(r, "Cannot create %s/rootfs", dir.c_str());
    return 0;
}

int Supervisor::load_config() {
    std::string error;
    ContainerConfig c;
    if (load_container_config(paths::container_config(name_), c, error) < 0) {
        log_error("Container \"%s\": %s", name_.c_str(), error.c_str());
        return -EINVAL;
    }
    if (c.name != name_) {
        log_error("Container \"%s\": config.json names \"%s\"", name_.c_str(), c.name.c_str());
        return -EINVAL;
    }
    if (auto e = check_syscall_policy(c); !e.empty()) {
        log_error("Container \"%s\": %s", name_.c_str(), e.c_str());
        return -EINVAL;
    }
    config_ = std::move(c);
    return 0;
}

int Supervisor::start_container(std::string& error) {
    state_ = State::starting;
    reason_.clear();
    stop_reason_.clear();
    if (load_config() < 0) {
        error = log_last_error();
        return -EINVAL;
    }
    // lodged persists volatile.<dev>.name/hwaddr before it starts us; a config written by
    // someone else (tests drive the supervisor directly) gets values for this boot only.
    fill_nic_volatile(config_);
    if (int r = cgroup_.create_payload(); r < 0) {
        error = log_last_error();
        return r;
    }
    // limits.* on the payload only, in a systemd scope too (it is delegated to us): the
    // supervisor next to it stays outside the guest's limits.
    if (int r = cgroup_.apply_limits(config_); r < 0) {
        error = log_last_error();
        cgroup_.destroy_payload();
        return r;
    }
    if (!config_.privileged()) {
        uid_t root = config_.idmap_base();
        if (int r = cgroup_.delegate_payload(root, root); r < 0) {
            error = log_last_error();
            cgroup_.destroy_payload();
            return r;
        }
    }
    // Every container, privileged or not (the cgroup2 program is on the base, see run()).
    if (int r = cgroup_.apply_device_policy(); r < 0) {
        error = log_last_error();
        cgroup_.destroy_payload();
        return r;
    }

    SpawnOptions opts;
    opts.config = &config_;
    opts.rootfs = paths::container_rootfs(name_);
    opts.staging = paths::container_runtime(name_) + "/rootfs";
    std::string lxcfs = paths::lxcfs_dir();
    if (is_lxcfs_mount(lxcfs))
        opts.lxcfs_dir = lxcfs;
    lxcfs_ = !opts.lxcfs_dir.empty();
    if (config_.get_bool("security.devlxd", true)) {
        opts.devlxd_dir = paths::devlxd_dir();
        // lodged makes these (prepare_devlxd_dirs); a supervisor run alone gets the same modes.
        mkdir_p(paths::devlxd_host_dir(), 0700);
        mkdir_p(opts.devlxd_dir, 0755);
    }
    boot_id_ = new_boot_id();
    opts.boot_id = boot_id_;
    opts.cgroup = &cgroup_;
    opts.before_go = [this](pid_t child, std::string& why) { return plug_nics(child, why); };

    Spawned spawned;
    if (int r = spawn_container(opts, spawned, error); r < 0) {
        unplug_nics();
        cgroup_.destroy_payload();
        return r;
    }
    spawned_ = std::move(spawned);

    sd_event_source* s = nullptr;
    if (int r = sd_event_add_child_pidfd(event_.get(), &s, spawned_.init.get(), WEXITED, on_child,
                                         this);
        r < 0) {
        error = "Cannot watch PID 1";
        return log_error_errno(r, "Failed to watch PID 1");
    }
    child_source_.reset(s);
    // Holding a peer open keeps the master readable while no guest process has the console.
    console_peer_.reset(
        ::ioctl(spawned_.console_master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (int r = sd_event_add_io(event_.get(), &s, spawned_.console_master.get(), EPOLLIN,
                                on_console, this);
        r < 0)
        return log_error_errno(r, "Failed to watch the console");
    console_source_.reset(s);
    state_ = State::running;
    boots_++;
    log_info("Container \"%s\" started, PID 1 is %d", name_.c_str(), spawned_.init.pid());
    write_state();
    return 0;
}

nlohmann::json Supervisor::status_json() const {
    nlohmann::json j;
    j["name"] = name_;
    j["state"] = state_name(state_);
    j["reason"] = reason_;
    j["pid"] = state_ == State::running || state_ == State::stopping ? spawned_.init.pid() : 0;
    j["supervisor_pid"] = ::getpid();
    j["boot_id"] = boot_id_;
    j["cgroup"] = cgroup_.base();
    j["boots"] = boots_;
    j["lxcfs"] = lxcfs_;
    j["nics"] = nlohmann::json::array();
    for (auto& n : nics_)
        j["nics"].push_back(nic_json(n));
    return j;
}

// Every state change lands in state.json (for readers that come later) and reaches watchers.
void Supervisor::write_state() {
    auto j = status_json();
    if (int r = write_file_atomic(paths::runtime_state(name_), j.dump() + "\n", 0644, false); r < 0)
        log_warning_errno(r, "Failed to write %s", paths::runtime_state(name_).c_str());
    for (auto& c : clients_)
        if (c.watching)
            send_json(c, j);
}

void Supervisor::send_json(Client& c, const nlohmann::json& j) {
    std::string text = j.dump();
    if (::send(c.fd.get(), text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug_errno(errno, "Failed to reply to a control client");
}

void Supervisor::reply_waiters(Client::Wait what, const nlohmann::json& j) {
    for (auto& c : clients_)
        if ((c.wait == what && boots_ >= c.wait_boot) ||
            (what == Client::Wait::stopped && c.wait != Client::Wait::nothing)) {
            send_json(c, j);
            c.wait = Client::Wait::nothing;
        }
}

void Supervisor::drop_client(Client* c) {
    clients_.remove_if([c](const Client& x) { return &x == c; });
}

void Supervisor::request_stop(unsigned timeout, bool force, bool restart) {
    if (restart)
        restart_pending_ = true;
    if (state_ != State::running && state_ != State::stopping)
        return;
    pid_t pid = spawned_.init.pid();
    if (force) {
        stop_reason_ = "stopped (forced): SIGKILL";
        spawned_.init.send_signal(SIGKILL);
        state_ = State::stopping;
        write_state();
        return;
    }
    if (state_ == State::stopping)
        return;
    int sig = choose_stop_signal(config_, pid);
    last_signal_ = sig;
    log_info("Stopping container \"%s\" with %s (timeout %us)", name_.c_str(),
             signal_name(sig).c_str(), timeout);
    if (int r = spawned_.init.send_signal(sig); r < 0)
        log_warning_errno(r, "Failed to send %s to PID 1", signal_name(sig).c_str());
    state_ = State::stopping;
    stop_reason_ = "stopped";
    write_state();
    sd_event_source* s = nullptr;
    if (sd_event_add_time_relative(event_.get(), &s, CLOCK_MONOTONIC,
                                   static_cast<uint64_t>(timeout) * 1000000ULL, 0, on_stop_timeout,
                                   this) >= 0)
        timer_source_.reset(s);
}

int Supervisor::on_stop_timeout(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<Supervisor*>(userdata);
        self->timer_source_.reset();
        if (self->state_ != State::stopping)
            return 0;
        log_notice("Container \"%s\" did not stop in time; killing it", self->name_.c_str());
        self->stop_reason_ = "did not stop in time after " + signal_name(self->last_signal_) +
                             "; killed with SIGKILL";
        self->spawned_.init.send_signal(SIGKILL);
        return 0;
    });
}

int Supervisor::on_term_signal(sd_event_source*, const struct signalfd_siginfo*, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<Supervisor*>(userdata);
        self->request_stop(self->config_.shutdown_timeout(), false, false);
        return 0;
    });
}

// The waiters hear "stopped" only in run(), once this supervisor has let go of everything a
// new one for the same container needs.
void Supervisor::finish(State state, const std::string& reason) {
    state_ = state;
    reason_ = reason;
    write_state();
    sd_event_exit(event_.get(), 0);
}

// The control socket, the cgroup base and the lock go first: whoever hears "stopped" (a stop
// request, `wait`) may start the container again at once, and a new supervisor must find none
// of them taken (it fails on the lock with "already running" otherwise) nor see us remove its
// own socket or cgroup afterwards.
void Supervisor::release_and_reply() {
    ::unlink(paths::control_socket(name_).c_str());
    if (own_base_)
        cgroup_.destroy_base();
    lock_fd_.reset();
    reply_waiters(Client::Wait::stopped, status_json());
    clients_.clear();
}

void Supervisor::on_init_exit(const siginfo_t& si) {
    child_source_.reset();
    timer_source_.reset();
    // Drain what the guest wrote last before the console goes away.
    char buf[4096];
    ssize_t n;
    while ((n = ::read(spawned_.console_master.get(), buf, sizeof buf)) > 0)
        console_.append(buf, static_cast<size_t>(n));
    console_source_.reset();
    console_peer_.reset();
    spawned_.console_master.reset();
    spawned_.init.reset();
    unplug_nics();
    cgroup_.destroy_payload();

    InitOutcome out = decode_init_exit(si.si_code, si.si_status);
    log_info("Container \"%s\": PID 1 ended: %s", name_.c_str(), out.reason.c_str());
    bool again = out.end == InitEnd::rebooted || restart_pending_;
    if (out.end == InitEnd::rebooted && !stop_reason_.empty() && !restart_pending_)
        again = false; // a stop we asked for wins over a reboot the guest raced with it
    restart_pending_ = false;
    if (again) {
        std::string error;
        if (start_container(error) < 0) {
            finish(State::error, "restart failed: " + error);
            return;
        }
        reply_waiters(Client::Wait::restarted, status_json());
        return;
    }
    std::string reason = stop_reason_.empty() ? out.reason : stop_reason_;
    if (out.end == InitEnd::seccomp)
        reason = out.reason;
    finish(State::stopped, reason);
}

int Supervisor::on_child(sd_event_source*, const siginfo_t* si, void* userdata) {
    return guarded([&] {
        static_cast<Supervisor*>(userdata)->on_init_exit(*si);
        return 0;
    });
}

int Supervisor::on_console(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<Supervisor*>(userdata);
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
            self->console_source_.reset(); // EIO once the pty is gone; PID 1's end follows
            return 0;
        }
        self->console_.append(buf, static_cast<size_t>(n));
        for (auto& c : self->clients_)
            if (c.attached)
                self->queue_console(c, buf, static_cast<size_t>(n));
        return 0;
    });
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

int Supervisor::listen_control() {
    std::string path = paths::control_socket(name_);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return log_error_errno(ENAMETOOLONG, "Control socket path %s", path.c_str());
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    listen_fd_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_fd_)
        return log_error_errno(errno, "socket() failed");
    ::unlink(path.c_str()); // we hold the lock, so a socket file here is stale
    if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return log_error_errno(errno, "Cannot bind %s", path.c_str());
    ::chmod(path.c_str(), 0600);
    if (::listen(listen_fd_.get(), 64) < 0)
        return log_error_errno(errno, "Cannot listen on %s", path.c_str());
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_.get(), &s, listen_fd_.get(), EPOLLIN, on_accept, this);
        r < 0)
        return log_error_errno(r, "Failed to watch the control socket");
    listen_source_.reset(s);
    return 0;
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

int Supervisor::plug_nics(pid_t child, std::string& error) {
    auto specs = nic_specs(config_);
    if (specs.empty())
        return 0;
    netns_ = net::open_netns(child);
    if (!netns_) {
        error =
            std::string("Cannot open the container's network namespace: ") + std::strerror(errno);
        return log_error_errno(errno, "Failed to open the network namespace of %d", child);
    }
    for (auto& spec : specs) {
        net::PluggedNic nic;
        if (int r = net::plug(netns_.get(), spec, nic, error); r < 0) {
            unplug_nics();
            return r;
        }
        log_info("Container \"%s\": device \"%s\" is %s (host side %s)", name_.c_str(),
                 nic.device.c_str(), nic.name.c_str(),
                 nic.host_name.empty() ? spec.parent.c_str() : nic.host_name.c_str());
        nics_.push_back(std::move(nic));
    }
    return 0;
}

// At every stop, guest reboot and failed start: host ends go now, not whenever the kernel gets
// round to the dead namespace.
void Supervisor::unplug_nics() {
    for (auto& nic : nics_)
        net::unplug(netns_.get(), nic);
    nics_.clear();
    netns_.reset();
}

void Supervisor::nic_add(Client& c, const std::string& device, const std::string& spec_json) {
    auto fail = [&](const std::string& msg) { send_json(c, nlohmann::json{{"error", msg}}); };
    if (state_ != State::running || !spawned_.init.valid())
        return fail("container is not running");
    for (auto& n : nics_)
        if (n.device == device)
            return fail("Device \"" + device + "\" is already plugged");
    auto j = nlohmann::json::parse(spec_json, nullptr, false);
    if (!j.is_object())
        return fail("nic-add: bad JSON");
    ContainerConfig one;
    one.name = name_;
    for (auto& [k, v] : j.items()) {
        if (!v.is_string())
            return fail("nic-add: key \"" + k + "\" must be a string");
        if (k == "volatile.name" || k == "volatile.hwaddr")
            one.config["volatile." + device + k.substr(8)] = v.get<std::string>();
        else
            one.devices[device][k] = v.get<std::string>();
    }
    if (auto e = check_container_config(one); !e.empty())
        return fail(e);
    if (!netns_) {
        netns_ = net::open_netns(spawned_.init.pid());
        if (!netns_)
            return fail(std::string("Cannot open the container's network namespace: ") +
                        std::strerror(errno));
    }
    // Without a name from lodged: the first ethN the container does not have yet.
    std::vector<std::string> in_use;
    net::link_names(netns_.get(), in_use);
    fill_nic_volatile(one, in_use);
    net::PluggedNic nic;
    std::string why;
    if (net::plug(netns_.get(), nic_spec(one, device), nic, why) < 0)
        return fail(why);
    log_info("Container \"%s\": device \"%s\" plugged as %s", name_.c_str(), device.c_str(),
             nic.name.c_str());
    nics_.push_back(nic);
    write_state();
    send_json(c, nlohmann::json{{"ok", true}, {"nic", nic_json(nic)}});
}

void Supervisor::nic_remove(Client& c, const std::string& device) {
    for (auto it = nics_.begin(); it != nics_.end(); ++it) {
        if (it->device != device)
            continue;
        if (int r = net::unplug(netns_.get(), *it); r < 0)
            return send_json(
                c, nlohmann::json{{"error", "Device \"" + device + "\": " + log_last_error()}});
        log_info("Container \"%s\": device \"%s\" unplugged", name_.c_str(), device.c_str());
        nics_.erase(it);
        write_state();
        return send_json(c, nlohmann::json{{"ok", true}, {"plugged", true}});
    }
    send_json(c, nlohmann::json{{"ok", true}, {"plugged", false}});
}

void Supervisor::handle_request(Client& c, const std::string& request) {
    std::vector<std::string> words;
    size_t pos = 0;
    while (pos < request.size()) {
        size_t sp = request.find(' ', pos);
        std::string w = request.substr(pos, sp == std::string::npos ? std::string::npos : sp - pos);
        if (!w.empty())
            words.push_back(w);
        pos = sp == std::string::npos ? request.size() : sp + 1;
    }
    auto error = [&](const std::string& msg) {
        nlohmann::json j{{"error", msg}};
        send_json(c, j);
    };
    if (words.empty())
        return error("empty request");
    const std::string& verb = words[0];
    bool alive = state_ == State::running || state_ == State::stopping;
    if (verb == "status") {
        send_json(c, status_json());
    } else if (verb == "lxcfs-attach" || verb == "lxcfs-detach") {
        // lxcfs appeared or went away: follow it in the running container (lodged asks).
        if (state_ != State::running)
            return error("container is not running");
        std::string dir = paths::lxcfs_dir();
        bool attach = verb == "lxcfs-attach";
        if (attach && !is_lxcfs_mount(dir))
            return error("no live lxcfs at " + dir);
        int r = attach ? lxcfs_attach_running(spawned_.init.pid(), dir)
                       : lxcfs_detach_running(spawned_.init.pid());
        if (r < 0)
            return error(log_last_error());
        lxcfs_ = attach;
        write_state();
        send_json(c, nlohmann::json{{"ok", true}, {"lxcfs", lxcfs_}});
    } else if (verb == "devlxd-attach" || verb == "devlxd-detach") {
        // security.devlxd changed while running: /dev/lxd follows it live, as in LXD.
        if (state_ != State::running)
            return error("container is not running");
        std::string dir = paths::devlxd_dir();
        bool attach = verb == "devlxd-attach";
        if (attach)
            mkdir_p(dir, 0755);
        int r = attach ? devlxd_attach_running(spawned_.init.pid(), dir)
                       : devlxd_detach_running(spawned_.init.pid());
        if (r < 0)
            return error(log_last_error());
        send_json(c, nlohmann::json{{"ok", true}});
    } else if (verb == "nic-add") {
        // lodged persisted nothing yet: it commits the device once this succeeded.
        if (words.size() < 3)
            return error("nic-add needs a device and its JSON description");
        size_t at = request.find(words[1], verb.size()) + words[1].size();
        nic_add(c, words[1], request.substr(at));
    } else if (verb == "nic-remove") {
        if (words.size() != 2)
            return error("nic-remove needs a device");
        nic_remove(c, words[1]);
    } else if (verb == "apply-limits") {
        // limits.* changed in config.json: apply them to the running container now.
        if (load_config() < 0)
            return error(log_last_error());
        if (cgroup_.apply_limits(config_) < 0)
            return error(log_last_error());
        send_json(c, nlohmann::json{{"ok", true}});
    } else if (verb == "watch") {
        c.watching = true;
        send_json(c, status_json());
    } else if (verb == "wait-boot") {
        // Replies once PID 1 has been started N times (guest reboots included).
        auto n = words.size() > 1 ? parse_uint(words[1], 1u << 30) : std::nullopt;
        if (!n)
            return error("wait-boot needs a boot number");
        if (boots_ >= *n || !alive)
            return send_json(c, status_json());
        c.wait = Client::Wait::restarted;
        c.wait_boot = static_cast<unsigned>(*n);
    } else if (verb == "wait") {
        if (!alive)
            return send_json(c, status_json());
        c.wait = Client::Wait::stopped;
    } else if (verb == "stop" || verb == "restart") {
        unsigned timeout = config_.shutdown_timeout();
        if (words.size() > 1) {
            auto t = parse_uint(words[1], 86400 * 7);
            if (!t)
                return error("invalid timeout \"" + words[1] + "\"");
            timeout = static_cast<unsigned>(*t);
        }
        if (!alive)
            return error("container is not running");
        c.wait = verb == "restart" ? Client::Wait::restarted : Client::Wait::stopped;
        c.wait_boot = boots_ + 1;
        request_stop(timeout, timeout == 0, verb == "restart");
    } else if (verb == "stop-force") {
        if (!alive)
            return error("container is not running");
        c.wait = Client::Wait::stopped;
        request_stop(0, true, false);
    } else if (verb == "reboot" || verb == "kill") {
        if (!alive)
            return error("container is not running");
        int sig = config_.reboot_signal();
        if (verb == "kill") {
            auto parsed = words.size() > 1 ? parse_signal(words[1]) : std::optional<int>(SIGTERM);
            if (!parsed)
                return error("invalid signal \"" + (words.size() > 1 ? words[1] : "") + "\"");
            sig = *parsed;
        }
        if (int r = spawned_.init.send_signal(sig); r < 0)
            return error(std::string("cannot signal PID 1: ") + std::strerror(-r));
        send_json(c, nlohmann::json{{"ok", true}, {"signal", signal_name(sig)}});
    } else if (verb == "attach") {
        send_json(c, nlohmann::json{{"ok", true}});
        c.attached = true;
        queue_console(c, console_.ring().data(), console_.ring().size());
    } else {
        error("unknown request \"" + verb + "\"");
    }
}

int Supervisor::run(int notify_fd) {
    Fd notify(notify_fd);
    auto report = [&](const std::string& line) {
        if (notify) {
            std::string text = line + "\n";
            (void)!::write(notify.get(), text.data(), text.size());
            notify.reset();
        }
    };
    auto fail = [&](const std::string& why) {
        lock_fd_.reset(); // a retry the caller makes at once must not find it taken
        owner_lock_.reset();
        report("ERROR " + why);
        return 1;
    };

    if (auto e = check_container_name(name_); !e.empty()) {
        log_error("%s", e.c_str());
        return fail(e);
    }
    if (setup_runtime_dir() < 0 || load_config() < 0)
        return fail(log_last_error());
    if (console_.open(paths::console_log(name_), 1024 * 1024) < 0)
        return fail(log_last_error());

    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP})
        sigaddset(&mask, sig);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    sd_event* e = nullptr;
    if (int r = sd_event_new(&e); r < 0)
        return fail("sd_event_new failed");
    event_.reset(e);
    if (bus_) {
        if (int r = sd_bus_attach_event(bus_, event_.get(), SD_EVENT_PRIORITY_NORMAL); r < 0)
            return fail("Failed to attach the system bus to the event loop");
    }
    for (int sig : {SIGTERM, SIGINT})
        sd_event_add_signal(event_.get(), nullptr, sig, on_term_signal, this);
    sd_event_add_signal(event_.get(), nullptr, SIGHUP, nullptr, nullptr);

    if (cgroup_.create_base() < 0)
        return fail(log_last_error());
    // In a systemd scope, DevicePolicy=closed on the scope (lodged) does this.
    if (own_base_ && cgroup_.attach_device_program() < 0) {
        cgroup_.destroy_base();
        return fail(log_last_error());
    }
    if (listen_control() < 0) {
        if (own_base_)
            cgroup_.destroy_base();
        return fail(log_last_error());
    }
    std::string error;
    if (start_container(error) < 0) {
        state_ = State::error;
        reason_ = error;
        write_state();
        ::unlink(paths::control_socket(name_).c_str());
        if (own_base_)
            cgroup_.destroy_base();
        return fail(error);
    }
    report("READY " + std::to_string(spawned_.init.pid()));

    int r = sd_event_loop(event_.get());
    release_and_reply();
    return r < 0 ? 1 : 0;
}

// systemd asks the scope's Controller (this process, with --bus-controller) to stop the
// container instead of signalling the scope itself (`systemctl stop lodge-NAME.scope`, host
// shutdown). That is the graceful stop SIGTERM asks for, so it becomes one.
int on_request_stop(sd_bus_message* m, void* userdata, sd_bus_error*) {
    const auto* pid1 = static_cast<const std::string*>(userdata);
    const char* sender = sd_bus_message_get_sender(m);
    if (!sender || *pid1 != sender)
        return 0; // anyone may send us a signal; only PID 1 may stop the container
    log_info("systemd asks to stop the container's scope");
    ::kill(::getpid(), SIGTERM);
    return 0;
}

struct BusDeleter {
    void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
using BusPtr = std::unique_ptr<sd_bus, BusDeleter>;

// --bus-controller: connects to the system bus, learns PID 1's unique name (`pid1`) and
// watches for RequestStop, all before the caller creates the scope with our name as Controller.
int open_controller_bus(BusPtr& out, std::string& pid1) {
    sd_bus* b = nullptr;
    if (int r = sd_bus_open_system(&b); r < 0)
        return log_error_errno(r, "Failed to connect to the system bus");
    BusPtr bus(b);
    sd_bus_set_exit_on_disconnect(bus.get(), 0);
    sd_bus_creds* creds = nullptr;
    const char* unique = nullptr;
    int r = sd_bus_get_name_creds(bus.get(), "org.freedesktop.systemd1", SD_BUS_CREDS_UNIQUE_NAME,
                                  &creds);
    if (r >= 0)
        r = sd_bus_creds_get_unique_name(creds, &unique);
    if (r >= 0)
        pid1 = unique;
    sd_bus_creds_unref(creds);
    if (r < 0)
        return log_error_errno(r, "Failed to look up systemd on the system bus");
    r = sd_bus_match_signal(bus.get(), nullptr, nullptr, nullptr, "org.freedesktop.systemd1.Scope",
                            "RequestStop", on_request_stop, &pid1);
    if (r < 0)
        return log_error_errno(r, "Failed to watch for RequestStop");
    out = std::move(bus);
    return 0;
}

int usage() {
    std::fprintf(stderr,
                 "Usage: lodge-supervisor [--notify-fd=N] [--wait-go-fd=N [--bus-controller]]\n"
                 "                        [--cgroup=PATH] [--log-stderr] NAME\n"
                 "       lodge-supervisor ctl NAME REQUEST...\n");
    return 2;
}

int ctl_main(int argc, char** argv) {
    if (argc < 4)
        return usage();
    std::string request;
    for (int i = 3; i < argc; i++)
        request += (i > 3 ? " " : "") + std::string(argv[i]);
    std::string reply;
    if (int r = control_request(argv[2], request, reply); r < 0) {
        std::fprintf(stderr, "Container \"%s\" has no running supervisor: %s\n", argv[2],
                     std::strerror(-r));
        return 1;
    }
    std::printf("%s\n", reply.c_str());
    auto j = nlohmann::json::parse(reply, nullptr, false);
    return j.is_object() && j.contains("error") ? 1 : 0;
}

} // namespace
} // namespace lodge::runtime

int main(int argc, char** argv) {
    using namespace lodge;
    if (argc >= 2 && std::strcmp(argv[1], "ctl") == 0)
        return runtime::ctl_main(argc, argv);
    int notify_fd = -1, go_fd = -1;
    std::string cgroup, name;
    bool log_stderr = false, bus_controller = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.rfind("--notify-fd=", 0) == 0)
            notify_fd = std::atoi(a.c_str() + 12);
        else if (a.rfind("--wait-go-fd=", 0) == 0)
            go_fd = std::atoi(a.c_str() + 13);
        else if (a == "--bus-controller")
            bus_controller = true;
        else if (a.rfind("--cgroup=", 0) == 0)
            cgroup = a.substr(9);
        else if (a == "--log-stderr")
            log_stderr = true;
        else if (a[0] == '-')
            return runtime::usage();
        else
            name = a;
    }
    if (name.empty() || (bus_controller && go_fd < 0))
        return runtime::usage();
    // --bus-controller: the bus name goes to the caller first; it becomes the scope's Controller.
    runtime::BusPtr bus;
    std::string pid1_bus_name;
    if (bus_controller) {
        log_set_prefix("lodge-supervisor[" + name + "]");
        const char* unique = nullptr;
        std::string line = runtime::open_controller_bus(bus, pid1_bus_name) < 0 ||
                                   sd_bus_get_unique_name(bus.get(), &unique) < 0
                               ? "ERROR " + log_last_error() + "\n"
                               : "BUS " + std::string(unique) + "\n";
        (void)!::write(notify_fd, line.data(), line.size());
        if (!bus)
            return 1;
    }
    // --wait-go-fd: the caller places this process (into its systemd scope) before it makes any
    // cgroup or file; one byte means go, EOF means the start was called off.
    if (go_fd >= 0) {
        char go = 0;
        ssize_t n;
        while ((n = ::read(go_fd, &go, 1)) < 0 && errno == EINTR)
            ;
        ::close(go_fd);
        if (n != 1)
            return 1;
    }
    if (notify_fd >= 0)
        ::fcntl(notify_fd, F_SETFD, FD_CLOEXEC);
    log_set_prefix("lodge-supervisor[" + name + "]");
    if (!log_stderr && check_container_name(name).empty()) {
        std::string log = paths::log_dir() + "/" + name + "/lodge.log";
        if (mkdir_p(paths::log_dir() + "/" + name, 0750) == 0) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
            if (fd >= 0) {
                ::dup2(fd, STDERR_FILENO);
                ::close(fd);
            }
        }
    }
    // Without --cgroup, a supervisor already in a scope made for it (lodged did that through
    // systemd) uses that scope; anywhere else it makes machine.slice/lodge-NAME.scope itself.
    bool own_base = true;
    if (cgroup.empty()) {
        std::string scope = "lodge-" + name + ".scope";
        for (auto& h : runtime::host_hierarchies())
            if (h.unified || h.controllers == "name=systemd") {
                std::string mine = runtime::own_cgroup(h);
                if (mine.size() >= scope.size() &&
                    mine.compare(mine.size() - scope.size(), scope.size(), scope) == 0) {
                    cgroup = mine;
                    own_base = false;
                }
            }
        if (cgroup.empty())
            cgroup = "machine.slice/" + scope;
    }
    runtime::Supervisor sup(name, cgroup, own_base);
    sup.set_bus(bus.get());
    return sup.run(notify_fd);
}
