// lodge-supervisor's lifecycle state machine: start, stop, restart, guest reboot, and what
// every state change leaves behind (state.json, watchers, waiters).
#include "runtime/supervisor.hpp"
#include "common/fileio.hpp"
#include "common/limits.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/ownership.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "runtime/lifecycle.hpp"
#include "runtime/lxcfs-probe.hpp"
#include "runtime/setup/security.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {

// The lock (flock, kept by a forked child) says no other supervisor runs this container here.
Result<> Supervisor::lock_runtime_dir() {
    std::string dir = paths::container_runtime(name_);
    if (int r = mkdir_p(dir, 0755); r < 0)
        return log_error_value(r, "Cannot create %s", dir.c_str());
    lock_fd_.reset(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_fd_)
        return log_error_value(errno, "Cannot open %s/lock", dir.c_str());
    if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) {
        std::string message = "Container \"" + name_ + "\" is already running";
        log_error("%s", message.c_str());
        return make_error(errors::failed, EBUSY, std::move(message));
    }
    return {};
}

Result<> Supervisor::setup_runtime_dir() {
    std::string dir = paths::container_runtime(name_);
    // Another node (or lodged with another runtime dir) may run it from shared storage.
    std::string error;
    if (int r = ownership::acquire(name_, owner_lock_, error); r < 0)
        return make_error(errors::failed, r, error); // logged by acquire
    if (int r = mkdir_p(dir + "/rootfs", 0755); r < 0)
        return log_error_value(r, "Cannot create %s/rootfs", dir.c_str());
    return {};
}

Result<> Supervisor::load_config() {
    // Logged once here; the caller hands the same text on (to lodged or a control client).
    auto invalid = [&](const std::string& what) {
        std::string message = "Container \"" + name_ + "\": " + what;
        log_error("%s", message.c_str());
        return make_error(errors::failed, EINVAL, std::move(message));
    };
    std::string error;
    ContainerConfig c;
    if (load_container_config(paths::container_config(name_), c, error) < 0)
        return invalid(error);
    if (c.name != name_)
        return invalid("config.json names \"" + c.name + "\"");
    if (auto e = check_syscall_policy(c); !e.empty())
        return invalid(e);
    config_ = std::move(c);
    return {};
}

int Supervisor::start_container(std::string& error, bool config_loaded) {
    state_ = State::starting;
    reason_.clear();
    stop_reason_.clear();
    if (!config_loaded) {
        if (auto loaded = load_config(); !loaded)
            return pass_up(loaded.error(), error);
    }
    // lodged persists volatile.<dev>.name/hwaddr before it starts us; a config written by
    // someone else (tests drive the supervisor directly) gets values for this boot only.
    fill_nic_volatile(config_);
    if (auto made = cgroup_.create_payload(); !made)
        return pass_up(made.error(), error);
    // limits.* on the payload only, in a systemd scope too (it is delegated to us): the
    // supervisor next to it stays outside the guest's limits.
    if (auto limited = cgroup_.apply_limits(limits_of(config_)); !limited) {
        cgroup_.destroy_payload();
        return pass_up(limited.error(), error);
    }
    if (!config_.privileged()) {
        uid_t root = config_.idmap_base();
        if (auto delegated = cgroup_.delegate_payload(root, root); !delegated) {
            cgroup_.destroy_payload();
            return pass_up(delegated.error(), error);
        }
    }
    // Every container, privileged or not (the cgroup2 program is on the base, see run()).
    if (auto policed = cgroup_.apply_device_policy(); !policed) {
        cgroup_.destroy_payload();
        return pass_up(policed.error(), error);
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
    opts.before_go = [this](pid_t child, std::string& why) {
        return nics_.plug_all(config_, child, why);
    };

    Spawned spawned;
    if (int r = spawn_container(opts, spawned, error); r < 0) {
        nics_.unplug_all();
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

proto::Status Supervisor::status() const {
    proto::Status s;
    s.name = name_;
    s.state = state_;
    s.reason = reason_;
    s.pid = alive() ? spawned_.init.pid() : 0;
    s.supervisor_pid = ::getpid();
    s.boot_id = boot_id_;
    s.cgroup = cgroup_.base();
    s.boots = boots_;
    s.lxcfs = lxcfs_;
    s.nics = nics_.nics();
    return s;
}

// Every state change lands in state.json (for readers that come later) and reaches watchers.
void Supervisor::write_state() {
    std::string text = proto::encode(status());
    if (int r = write_file_atomic(paths::runtime_state(name_), text + "\n", 0644, false); r < 0)
        log_warning_errno(r, "Failed to write %s", paths::runtime_state(name_).c_str());
    for (auto& c : clients_)
        if (c.watching)
            send(c, text);
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
    reply_waiters(Client::Wait::stopped, proto::encode(status()));
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
    nics_.unplug_all();
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
        reply_waiters(Client::Wait::restarted, proto::encode(status()));
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
        // Ours once the lock was taken (lodged's scope removes a base it made).
        if (own_base_ && cgroup_.prepared())
            cgroup_.destroy_base();
        lock_fd_.reset(); // a retry the caller makes at once must not find it taken
        owner_lock_.reset();
        report("ERROR " + why);
        return 1;
    };

    if (auto e = check_container_name(name_); !e.empty()) {
        log_error("%s", e.c_str());
        return fail(e);
    }
    if (auto locked = lock_runtime_dir(); !locked)
        return fail(locked.error().message);
    if (detach_) {
        // Before anything records this process's pid (the ownership record) or ties an object
        // to it (sd-event): the child goes on, the caller reaps this one at once.
        if (auto prepared = cgroup_.prepare_supervisor(); !prepared)
            return fail(prepared.error().message);
        pid_t child = cgroup_.fork_into_supervisor();
        if (child < 0)
            return fail(std::string("Cannot fork the supervisor: ") + std::strerror(errno));
        if (child > 0)
            _exit(0);
    }
    if (auto ready = setup_runtime_dir(); !ready)
        return fail(ready.error().message);
    if (auto loaded = load_config(); !loaded)
        return fail(loaded.error().message);
    if (auto opened = console_.open(paths::console_log(name_), 1024 * 1024); !opened)
        return fail(opened.error().message);

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

    if (auto made = cgroup_.create_base(); !made)
        return fail(made.error().message);
    // In a systemd scope, DevicePolicy=closed on the scope (lodged) does this.
    if (own_base_) {
        if (auto attached = cgroup_.attach_device_program(); !attached)
            return fail(attached.error().message);
    }
    if (auto listening = listen_control(); !listening)
        return fail(listening.error().message);
    std::string error;
    if (start_container(error, true) < 0) {
        state_ = State::error;
        reason_ = error;
        write_state();
        ::unlink(paths::control_socket(name_).c_str());
        return fail(error);
    }
    // The status along with READY: lodged answers the start without asking for it.
    report("STATUS " + proto::encode(status()) + "\nREADY " + std::to_string(spawned_.init.pid()));

    int r = sd_event_loop(event_.get());
    release_and_reply();
    return r < 0 ? 1 : 0;
}

} // namespace lodge::runtime
