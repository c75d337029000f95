#include "manager.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "devlxd-api.hpp"
#include "machined.hpp"
#include "runtime/control.hpp"
#include "scope.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <unistd.h>

#ifndef LODGE_SUPERVISOR_PATH
#define LODGE_SUPERVISOR_PATH "/usr/libexec/lodge/lodge-supervisor"
#endif

namespace lodge::daemon {

std::string supervisor_binary() {
    const char* env = std::getenv("LODGE_SUPERVISOR");
    return env && *env ? env : LODGE_SUPERVISOR_PATH;
}

std::string Container::object_path() const {
    char* path = nullptr;
    if (sd_bus_path_encode("/io/lodge1/container", name().c_str(), &path) < 0)
        return "/io/lodge1/container/_";
    std::string out = path;
    std::free(path);
    return out;
}

Manager::Manager(sd_event* event, sd_bus* bus)
    : event_(event), bus_(bus), use_scopes_(use_systemd_scopes()) {}

int Manager::load() {
    registry_.collect_garbage();
    for (auto& name : registry_.list()) {
        auto c = std::make_unique<Container>();
        c->manager = this;
        std::string error;
        if (registry_.load(name, c->config, error) < 0) {
            log_error("Skipping container \"%s\": %s", name.c_str(), error.c_str());
            continue;
        }
        Container& ref = *c;
        containers_[name] = std::move(c);
        attach_watch(ref);
        // Stopped while lodged was away: the guest's readiness went with it.
        if (!ref.running() && ref.ready())
            container_stopped(ref);
    }
    return 0;
}

Container* Manager::find(const std::string& name) {
    auto it = containers_.find(name);
    return it == containers_.end() ? nullptr : it->second.get();
}

Container* Manager::find_by_path(const std::string& path) {
    char* name = nullptr;
    if (sd_bus_path_decode(path.c_str(), "/io/lodge1/container", &name) <= 0)
        return nullptr;
    std::string n = name;
    std::free(name);
    return find(n);
}

Container* Manager::find_by_pidns(const std::vector<NamespaceId>& chain) {
    for (auto& ns : chain)
        for (auto& [name, c] : containers_)
            if (c->leader > 0 && c->running() && c->pidns == ns)
                return c.get();
    return nullptr;
}

void Manager::set_leader(Container& c, pid_t leader) {
    if (leader == c.leader && (leader <= 0 || c.pidns.ino != 0))
        return;
    c.leader = leader;
    c.pidns = {};
    c.root_uid = 0;
    if (leader <= 0)
        return;
    if (int r = pidns_of(leader, c.pidns); r < 0)
        log_error_errno(r, "Cannot read the pid namespace of %s's PID 1 (%d)", c.name().c_str(),
                        leader);
    // The first line of uid_map says where uid 0 went: "0 <host uid> <count>".
    std::ifstream map("/proc/" + std::to_string(leader) + "/uid_map");
    unsigned long inside = 1, outside = 0;
    if (map >> inside >> outside && inside == 0)
        c.root_uid = static_cast<uid_t>(outside);
}

// The container is down (stopped, crashed, or its guest rebooted): what the guest said about
// itself no longer holds.
void Manager::container_stopped(Container& c) {
    if (on_stopped_)
        on_stopped_(c);
    if (!c.ready())
        return;
    std::string error;
    if (set_ready(c, false, error) < 0)
        log_error("Cannot clear the ready state of %s: %s", c.name().c_str(), error.c_str());
}

Container* Manager::find_by_pid(pid_t pid) {
    // A process belongs to a container when it shares PID 1's pid namespace (kept per leader).
    NamespaceId ns;
    return pidns_of(pid, ns) < 0 ? nullptr : find_by_pidns({ns});
}

// Live state comes from the supervisor's watch stream; without a supervisor, from the state
// file it left behind.
void Manager::attach_watch(Container& c) {
    Fd sock;
    if (runtime::control_connect(c.name(), sock) < 0 ||
        ::send(sock.get(), "watch", 5, MSG_NOSIGNAL) < 0) {
        std::string text;
        if (read_file(paths::runtime_state(c.name()), text) == 0) {
            auto j = nlohmann::json::parse(text, nullptr, false);
            if (j.is_object() && j.value("state", "") == "error")
                c.reason = j.value("reason", "");
            else if (j.is_object())
                c.reason = j.value("reason", "");
        }
        c.state = "stopped";
        set_leader(c, 0);
        return;
    }
    sd_event_source* s = nullptr;
    if (sd_event_add_io(event_, &s, sock.get(), EPOLLIN, on_watch, &c) < 0)
        return;
    c.watch = std::move(sock);
    c.watch_source.reset(s);
    track_supervisor(c, c.watch.get());
    c.state = "running";
    // The supervisor answers "watch" with its status at once: take that now, so that the next
    // call (an exec right after Start needs the cgroup) never sees the container half known.
    struct pollfd first {
        c.watch.get(), POLLIN, 0
    };
    char buf[65536];
    ssize_t n =
        ::poll(&first, 1, 30000) > 0 ? ::recv(c.watch.get(), buf, sizeof buf, MSG_DONTWAIT) : -1;
    if (n > 0)
        on_status(c, std::string(buf, static_cast<size_t>(n)));
}

// The watch socket's peer is the supervisor (it listens on the control socket itself).
void Manager::track_supervisor(Container& c, int watch_fd) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(watch_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0) {
        log_error_errno(-errno, "Cannot learn the supervisor of %s", c.name().c_str());
        return;
    }
    if (c.supervisor.valid() && c.supervisor.pid() == cred.pid)
        return;
    PidFd pidfd = PidFd::open(cred.pid);
    if (!pidfd.valid()) {
        // Gone already (ESRCH): nothing to wait for.
        if (errno != ESRCH)
            log_error_errno(-errno, "Cannot open a pidfd for the supervisor of %s (%d)",
                            c.name().c_str(), cred.pid);
        return;
    }
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, pidfd.get(), EPOLLIN, on_supervisor_exit, &c); r < 0) {
        log_error_errno(r, "Cannot watch the supervisor of %s", c.name().c_str());
        return;
    }
    // A supervisor we were still waiting for is replaced only once it is gone (see start()).
    c.supervisor = std::move(pidfd);
    c.supervisor_source.reset(s);
}

int Manager::on_supervisor_exit(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Container*>(userdata);
        c->supervisor_source.reset();
        c->supervisor.reset();
        c->manager->run_exit_waiters(c->name());
        return 0;
    });
}

void Manager::run_exit_waiters(const std::string& name) {
    auto range = exit_waiters_.equal_range(name);
    std::vector<std::function<void()>> ready;
    for (auto it = range.first; it != range.second; ++it)
        ready.push_back(std::move(it->second));
    exit_waiters_.erase(range.first, range.second);
    // Each may start the container again (and so track a new supervisor): run them after.
    for (auto& fn : ready)
        fn();
}

void Manager::after_supervisor_exit(const std::string& name, std::function<void()> then) {
    Container* c = find(name);
    if (!c || !c->supervisor.valid()) {
        then();
        return;
    }
    exit_waiters_.emplace(name, std::move(then));
}

int Manager::on_watch(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Container*>(userdata);
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            // The supervisor is gone: the container stopped; its last words are in state.json.
            c->watch_source.reset();
            c->watch.reset();
            std::string text;
            read_file(paths::runtime_state(c->name()), text);
            auto j = nlohmann::json::parse(text, nullptr, false);
            c->state = "stopped";
            c->manager->set_leader(*c, 0);
            c->manager->update_nics(*c, nlohmann::json::object());
            if (j.is_object()) {
                c->reason = j.value("reason", "");
                if (j.value("state", "") == "error")
                    c->state = "error";
            }
            c->manager->container_stopped(*c);
            c->manager->emit_state_changed(*c);
            return 0;
        }
        c->manager->on_status(*c, std::string(buf, static_cast<size_t>(n)));
        return 0;
    });
}

void Manager::on_status(Container& c, const std::string& text) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return;
    c.state = j.value("state", "stopped");
    c.reason = j.value("reason", "");
    pid_t leader = j.value("pid", 0);
    update_nics(c, j);
    // A guest reboot brings a new PID 1 (and new host veths): machined must follow it.
    if (use_scopes_ && leader > 0 && c.leader > 0 && leader != c.leader)
        machined_register(bus_, c.name(), leader, paths::container_rootfs(c.name()),
                          c.host_ifindices());
    set_leader(c, leader);
    std::string boot_id = j.value("boot_id", "");
    // A new boot id without a stop in between: the guest rebooted.
    if (!c.boot_id.empty() && !boot_id.empty() && boot_id != c.boot_id)
        container_stopped(c);
    c.boot_id = boot_id;
    c.cgroup = j.value("cgroup", "");
    bool had_lxcfs = c.lxcfs;
    c.lxcfs = j.value("lxcfs", false);
    emit_state_changed(c);
    if (had_lxcfs != c.lxcfs)
        sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container",
                                       "LXCFS", nullptr);
    if (c.state == "running" && on_running_)
        on_running_();
    // A container re-attached after a lodged restart, or one that started while lxcfs moved.
    if (lxcfs_known_ && c.state == "running" && c.lxcfs != lxcfs_live_)
        set_lxcfs_live(lxcfs_live_);
}

void Manager::emit_state_changed(Container& c) {
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", "State",
                                   "Reason", "Leader", nullptr);
}

int Manager::create(ContainerConfig config, const FillRootfs& fill, std::string& error) {
    if (auto e = check_container_name(config.name); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    for (auto& [k, v] : config.config)
        if (auto e = check_config_key(k, v); !e.empty()) {
            error = e;
            return -EINVAL;
        }
    if (auto e = check_container_config(config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (find(config.name)) {
        error = "Container \"" + config.name + "\" already exists";
        return -EEXIST;
    }
    if (int r = registry_.create(config, fill, error); r < 0)
        return r;
    auto c = std::make_unique<Container>();
    c->manager = this;
    c->config = std::move(config);
    std::string path = c->object_path();
    containers_[c->name()] = std::move(c);
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerNew", "so",
                       containers_.rbegin()->first.c_str(), path.c_str());
    sd_bus_emit_object_added(bus_, path.c_str());
    return 0;
}

int Manager::remove(Container& c, bool force, std::string& error) {
    if (c.running()) {
        if (!force) {
            error = "Container \"" + c.name() + "\" is running; stop it first or use --force";
            return -EBUSY;
        }
        std::string reply;
        if (request(c, "stop-force", reply, error) < 0 && c.running())
            return -EBUSY;
    }
    std::string name = c.name(), path = c.object_path();
    if (int r = registry_.remove(name); r < 0) {
        error = "Cannot delete \"" + name + "\": " + std::strerror(-r);
        return r;
    }
    remove_tree(paths::container_runtime(name));
    containers_.erase(name);
    run_exit_waiters(name); // they find the container gone and say so
    sd_bus_emit_object_removed(bus_, path.c_str());
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerRemoved", "so",
                       name.c_str(), path.c_str());
    return 0;
}

int Manager::start(Container& c, std::string& error) {
    if (c.running()) {
        error = "Container \"" + c.name() + "\" is already running";
        return -EALREADY;
    }
    std::vector<std::string> args;
    if (const char* root = std::getenv("LODGE_CGROUP_ROOT"); root && *root)
        args.push_back(std::string("--cgroup=") + root + "/lodge-" + c.name() + ".scope");
    // Under systemd the supervisor waits until lodged has put it into lodge-NAME.scope, whose
    // Controller it is (PID 1 asks it, not the whole scope, to stop), and only then makes its
    // supervisor/ and payload/ cgroups below the scope.
    std::string e;
    ContainerConfig config = c.config;
    registry_.load(c.name(), config, e); // what the supervisor will start from
    // nic names and MACs are made once and kept (volatile.<dev>.name/hwaddr), before any start.
    if (fill_nic_volatile(config) && commit_config(c, config, "Config", error) < 0)
        return -EIO;
    runtime::LaunchHold hold;
    hold.bus_controller = true;
    hold.before_go = [&](pid_t pid, const std::string& bus_name, std::string& why) {
        return start_scope(ScopeRequest{&config, pid, bus_name}, why);
    };
    runtime::LaunchResult res;
    if (runtime::launch_supervisor(supervisor_binary(), c.name(), args, res,
                                   use_scopes_ ? &hold : nullptr) < 0) {
        error = res.error;
        c.state = "error";
        c.reason = res.error;
        emit_state_changed(c);
        return -EIO;
    }
    // Re-read: the supervisor started from what is on disk now.
    registry_.load(c.name(), c.config, e);
    c.started_usec = static_cast<uint64_t>(std::time(nullptr)) * 1000000ULL;
    set_leader(c, res.init_pid);
    if (use_scopes_) {
        // The host ends of the veths go to machined with the machine.
        std::string reply, why;
        if (request(c, "status", reply, why) == 0)
            update_nics(c, nlohmann::json::parse(reply, nullptr, false));
        machined_register(bus_, c.name(), res.init_pid, paths::container_rootfs(c.name()),
                          c.host_ifindices());
    }
    attach_watch(c);
    return 0;
}

int Manager::request(Container& c, const std::string& req, std::string& reply, std::string& error) {
    int r = runtime::control_request(c.name(), req, reply, 600 * 1000);
    if (r < 0) {
        error = "Container \"" + c.name() + "\" is not running";
        return -ENOTCONN;
    }
    auto j = nlohmann::json::parse(reply, nullptr, false);
    if (j.is_object() && j.contains("error")) {
        error = j["error"].get<std::string>();
        return -EINVAL;
    }
    return 0;
}

int Manager::request_async(Container& c, const std::string& req,
                           std::function<void(const std::string& reply)> done, std::string& error) {
    auto p = std::make_unique<Pending>();
    p->manager = this;
    p->done = std::move(done);
    if (runtime::control_connect(c.name(), p->fd) < 0 ||
        ::send(p->fd.get(), req.data(), req.size(), MSG_NOSIGNAL) < 0) {
        error = "Container \"" + c.name() + "\" is not running";
        return -ENOTCONN;
    }
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, p->fd.get(), EPOLLIN, on_async_reply, p.get()); r < 0) {
        error = "Cannot watch the supervisor";
        return r;
    }
    p->source.reset(s);
    pending_[p.get()] = std::move(p);
    return 0;
}

int Manager::on_async_reply(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* p = static_cast<Pending*>(userdata);
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        std::string reply = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
        auto done = std::move(p->done);
        Manager* m = p->manager;
        m->pending_.erase(p); // frees p and its source
        done(reply);
        return 0;
    });
}

int Manager::set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                        std::string& error) {
    ContainerConfig next = c.config;
    for (auto& [k, v] : set) {
        if (auto e = check_config_key(k, v); !e.empty()) {
            error = e;
            return -EINVAL;
        }
        next.config[k] = v;
    }
    for (auto& k : unset) {
        if (auto e = check_config_key(k, "x");
            e.find("Unknown") != std::string::npos || e.find("read-only") != std::string::npos) {
            error = e;
            return -EINVAL;
        }
        next.config.erase(k);
    }
    ContainerConfig before = c.config;
    if (int r = commit_config(c, std::move(next), "Config", error); r < 0)
        return r;
    if (c.running()) {
        // The guest hears of user.* changes only (LXD's rule), old and new value alike.
        uint64_t now = realtime_usec();
        std::set<std::string> keys;
        for (auto& [k, v] : set)
            keys.insert(k);
        keys.insert(unset.begin(), unset.end());
        for (auto& k : keys) {
            std::string was = before.get(k), is = c.config.get(k);
            if (k.rfind("user.", 0) == 0 && was != is)
                guest_event(c, devlxd::event_config, devlxd::config_event(k, was, is, now));
        }
        bool devlxd_was = before.get_bool("security.devlxd", true);
        bool devlxd_is = c.config.get_bool("security.devlxd", true);
        if (devlxd_was != devlxd_is) {
            std::string target = c.name();
            auto done = [target](const std::string& reply) {
                if (reply.find("\"ok\"") == std::string::npos)
                    log_error("Cannot follow security.devlxd in %s: %s", target.c_str(),
                              reply.c_str());
            };
            std::string why;
            if (request_async(c, devlxd_is ? "devlxd-attach" : "devlxd-detach", done, why) < 0)
                log_error("Cannot follow security.devlxd in %s: %s", target.c_str(), why.c_str());
        }
    }
    // limits.* apply to a running container at once.
    bool limits = false;
    for (auto& [k, v] : set)
        limits |= k.rfind("limits.", 0) == 0;
    for (auto& k : unset)
        limits |= k.rfind("limits.", 0) == 0;
    if (limits && c.running()) {
        // A scope's limits are its unit properties (systemd owns the scope's cgroup
        // attributes); without systemd the supervisor writes them into its own cgroups.
        std::string reply;
        if (use_scopes_ ? set_scope_limits(bus_, c.config, error) < 0
                        : request(c, "apply-limits", reply, error) < 0)
            return -EIO;
    }
    return 0;
}

// Writes `next` to disk (atomically) and only then makes it the container's config.
int Manager::commit_config(Container& c, ContainerConfig next, const char* property,
                           std::string& error) {
    if (int r = registry_.save(next); r < 0) {
        error = std::string("Cannot write config.json: ") + std::strerror(-r);
        return r;
    }
    c.config = std::move(next);
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", property,
                                   nullptr);
    return 0;
}

int Manager::add_device(Container& c, const std::string& device, const KeyMap& keys,
                        std::string& error) {
    if (device.empty() || device.find('/') != std::string::npos) {
        error = "Invalid device name \"" + device + "\"";
        return -EINVAL;
    }
    if (c.config.devices.count(device)) {
        error = "Device \"" + device + "\" already exists";
        return -EEXIST;
    }
    ContainerConfig next = c.config;
    next.devices[device] = keys;
    if (auto e = check_container_config(next); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    bool nic = is_nic(keys);
    if (nic && prepare_nic(c, next, device, error) < 0)
        return -EINVAL;
    if (int r = commit_config(c, std::move(next), "Devices", error); r < 0) {
        std::string ignored;
        if (nic)
            unplug_nic(c, device, ignored);
        return r;
    }
    if (nic) // its volatile keys
        sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container",
                                       "Config", nullptr);
    if (c.running())
        guest_event(c, devlxd::event_device,
                    devlxd::device_event("added", device, keys, realtime_usec()));
    return 0;
}

int Manager::remove_device(Container& c, const std::string& device, std::string& error) {
    if (!c.config.devices.count(device)) {
        error = "No device \"" + device + "\" in container \"" + c.name() + "\"";
        return -ENOENT;
    }
    ContainerConfig next = c.config;
    KeyMap removed = next.devices[device];
    if (is_nic(removed) && unplug_nic(c, device, error) < 0)
        return -EIO;
    next.devices.erase(device);
    drop_device_volatile(next, device);
    if (int r = commit_config(c, std::move(next), "Devices", error); r < 0)
        return r;
    if (c.running())
        guest_event(c, devlxd::event_device,
                    devlxd::device_event("removed", device, removed, realtime_usec()));
    return 0;
}

int Manager::set_ready(Container& c, bool ready, std::string& error) {
    if (c.ready() == ready)
        return 0;
    ContainerConfig next = c.config;
    next.config["volatile.last_state.ready"] = ready ? "true" : "false";
    if (int r = commit_config(c, std::move(next), "Config", error); r < 0)
        return r;
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", "Ready",
                                   nullptr);
    if (ready) {
        log_info("Container %s is ready", c.name().c_str());
        sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerReady", "so",
                           c.name().c_str(), c.object_path().c_str());
    }
    return 0;
}

void Manager::guest_event(const Container& c, unsigned type, const std::string& line) {
    if (guest_events_)
        guest_events_(c, type, line);
}

int Manager::open_console(Container& c, Fd& out, std::string& error) {
    Fd sock;
    if (runtime::control_connect(c.name(), sock) < 0 ||
        ::send(sock.get(), "attach", 6, MSG_NOSIGNAL) < 0) {
        error = "Container \"" + c.name() + "\" is not running";
        return -ENOTCONN;
    }
    // The first message is the supervisor's {"ok":true}; after it the socket is the console.
    struct timeval tv {
        5, 0
    };
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n <= 0 || std::string(buf, static_cast<size_t>(n)).find("\"ok\"") == std::string::npos) {
        error = "The supervisor of \"" + c.name() + "\" refused the console";
        return -EIO;
    }
    struct timeval none {};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    out = std::move(sock);
    return 0;
}

void Manager::set_lxcfs_live(bool live) {
    if (!lxcfs_known_ || live != lxcfs_live_) {
        log_info("lxcfs at %s is %s", paths::lxcfs_dir().c_str(), live ? "live" : "gone");
        lxcfs_live_ = live;
        lxcfs_known_ = true;
        sd_bus_emit_properties_changed(bus_, "/io/lodge1", "io.lodge1.Manager", "LXCFS", nullptr);
    }
    for (auto& [name, c] : containers_) {
        if (c->state != "running" || c->lxcfs == live || c->lxcfs_pending)
            continue;
        std::string error, target = name;
        c->lxcfs_pending = true;
        // Looked up again on the answer: the container may be gone by then.
        auto done = [this, target](const std::string&) {
            if (Container* found = find(target))
                found->lxcfs_pending = false;
        };
        if (request_async(*c, live ? "lxcfs-attach" : "lxcfs-detach", done, error) < 0)
            c->lxcfs_pending = false;
    }
}

bool Manager::idle() const {
    if (!pending_.empty() || !exit_waiters_.empty())
        return false;
    for (auto& [name, c] : containers_)
        if (c->running())
            return false;
    return true;
}

} // namespace lodge::daemon
