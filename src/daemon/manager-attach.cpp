// Live state: each running container's supervisor streams its status to lodged (at a start,
// and again for every supervisor found running when lodged starts); without a supervisor,
// the state file it left behind says how the container ended.
#include "common/log.hpp"
#include "common/paths.hpp"
#include "daemon/machined.hpp"
#include "daemon/manager.hpp"

#include <cerrno>
#include <fstream>

namespace lodge::daemon {

namespace proto = runtime::proto;

// What a supervisor that is gone left behind (state.json): no PID 1, no nics, and stopped
// unless its last word was that the container failed. The one reading of state.json, for a
// stream that ended and for a container found without a supervisor alike.
proto::Status Manager::left_status(const std::string& name) {
    proto::Status s = proto::decode_status(link_->last_status(name)).value_or(proto::Status{});
    if (s.state != ContainerState::error)
        s.state = ContainerState::stopped;
    s.pid = 0;
    s.nics.clear();
    return s;
}

void Manager::set_leader(Container& c, pid_t leader) {
    if (leader == c.leader && (leader <= 0 || c.pidns_fd))
        return;
    c.leader = leader;
    c.pidns = {};
    c.pidns_fd.reset();
    c.leader_fd = PidFd();
    c.root_uid = 0;
    if (leader <= 0)
        return;
    c.generation = ++last_generation_;
    c.leader_fd = PidFd::open(leader);
    if (!c.leader_fd.valid()) {
        log_error_errno(errno, "Cannot open %s's PID 1 (%d)", c.name().c_str(), leader);
        return;
    }
    if (int r = open_pidns(c.leader_fd, c.pidns_fd, c.pidns); r < 0) {
        log_error_errno(r, "Cannot read the pid namespace of %s's PID 1 (%d)", c.name().c_str(),
                        leader);
        return;
    }
    // The first line of uid_map says where uid 0 went: "0 <host uid> <count>".
    std::ifstream map("/proc/" + std::to_string(leader) + "/uid_map");
    unsigned long inside = 1, outside = 0;
    if (map >> inside >> outside && inside == 0)
        c.root_uid = static_cast<uid_t>(outside);
}

void Manager::attach_watch(Container& c) {
    std::string name = c.name();
    // The events find the container again by name: it may be gone by then.
    SupervisorLink::WatchEvents events;
    events.status = [this, name](const std::string& status) {
        if (Container* found = find(name))
            on_status(*found, status);
    };
    events.end = [this, name] {
        if (Container* found = find(name))
            on_watch_end(*found);
    };
    events.exit = [this, name] { on_supervisor_exit(name); };
    auto watch = link_->watch(name, std::move(events));
    if (!watch) {
        // No supervisor: the container is stopped (or failed); its last words are in the state
        // file.
        proto::Status left = left_status(name);
        c.state = left.state;
        c.reason = left.reason;
        set_leader(c, 0);
        started(c); // PID 1 ran, and is gone already
        return;
    }
    c.watch = std::move(watch); // a previous supervisor's watch goes now
    // The first status corrects this at once; a start waiting for it replies then (started()),
    // so an exec right after Start never sees the container half known.
    c.state = ContainerState::running;
}

// The supervisor closed its stream: the container stopped; its last words are in state.json.
void Manager::on_watch_end(Container& c) {
    proto::Status left = left_status(c.name());
    c.state = left.state;
    c.reason = left.reason;
    set_leader(c, 0);
    update_nics(c, left.nics);
    container_stopped(c);
    emit_state_changed(c);
    started(c);
}

// The watch stays: its stream's end may still be queued behind the exit, and says the stop.
void Manager::on_supervisor_exit(const std::string& name) {
    run_exit_waiters(name);
}

void Manager::run_exit_waiters(const std::string& name) {
    auto range = exit_waiters_.equal_range(name);
    std::vector<std::function<void()>> ready;
    for (auto it = range.first; it != range.second; ++it)
        ready.push_back(std::move(it->second));
    exit_waiters_.erase(range.first, range.second);
    // Each may start the container again (and so follow a new supervisor): run them after.
    for (auto& fn : ready)
        fn();
}

void Manager::after_supervisor_exit(const std::string& name, std::function<void()> then) {
    Container* c = find(name);
    if (!c || !c->supervisor_alive()) {
        then();
        return;
    }
    exit_waiters_.emplace(name, std::move(then));
}

void Manager::on_status(Container& c, const std::string& text) {
    auto status = proto::decode_status(text);
    if (!status)
        return;
    c.state = status->state;
    c.reason = status->reason;
    pid_t leader = status->pid;
    update_nics(c, status->nics);
    // A guest reboot brings a new PID 1 (and new host veths): machined must follow it.
    if (use_scopes_ && leader > 0 && c.leader > 0 && leader != c.leader)
        machined_register(bus_, c.name(), leader, paths::container_rootfs(c.name()),
                          c.host_ifindices());
    const std::string& boot_id = status->boot_id;
    // A new boot id without a stop in between: the guest rebooted. A new boot is a new guest
    // API identity, even should its PID 1 have the old one's pid.
    bool rebooted = !c.boot_id.empty() && !boot_id.empty() && boot_id != c.boot_id;
    if (rebooted)
        set_leader(c, 0);
    set_leader(c, leader);
    if (rebooted)
        container_stopped(c);
    c.boot_id = boot_id;
    c.cgroup = status->cgroup;
    bool had_lxcfs = c.lxcfs;
    c.lxcfs = status->lxcfs;
    emit_state_changed(c);
    if (had_lxcfs != c.lxcfs)
        sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container",
                                       "LXCFS", nullptr);
    if (c.state == ContainerState::running && on_running_)
        on_running_();
    if (on_change_)
        on_change_(c);
    // A container re-attached after a lodged restart, or one that started while lxcfs moved.
    if (lxcfs_known_ && c.state == ContainerState::running && c.lxcfs != lxcfs_live_)
        set_lxcfs_live(lxcfs_live_);
    started(c);
}

void Manager::started(Container& c) {
    if (auto done = std::move(c.start_done)) {
        c.start_done = nullptr;
        done({});
    }
}

} // namespace lodge::daemon
