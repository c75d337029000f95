// One container as lodged knows it: its config as on disk, and its live state as its supervisor
// reports it (machined's Machine is the model). Manager owns every Container.
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"
#include "common/sd-util.hpp"
#include "daemon/supervisor-link.hpp"
#include "devlxd/peer.hpp"
#include "runtime/control-proto.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lodge::daemon {

class Manager;

// The State property (CONTRACT §7): what the supervisor last said, or stopped/error without one.
// One enum with the supervisor's (runtime/control-proto.hpp).
using ContainerState = runtime::proto::State;

inline const char* to_string(ContainerState state) {
    return runtime::proto::state_name(state);
}

// A nic plugged into the running container, as its supervisor reports it (per boot).
struct LiveNic {
    std::string device, name, host_name;
    int host_ifindex = 0;
};

struct Container {
    Manager* manager = nullptr;
    ContainerConfig config;
    ContainerState state = ContainerState::stopped;
    std::string reason;
    pid_t leader = 0;
    std::string boot_id;
    std::string cgroup;         // the supervisor's cgroup base (payload is below it)
    bool lxcfs = false;         // the supervisor reports lxcfs binds in place
    bool lxcfs_pending = false; // an attach/detach request is under way
    uint64_t started_usec = 0;  // CLOCK_REALTIME of the last start
    NamespaceId pidns;          // PID 1's pid namespace: how guest API callers are told apart
    // PID 1 and its pid namespace, held open while it runs: as long as lodged holds the
    // namespace, no other namespace can be given its inode number (`pidns` stays unique),
    // and a PID 1 that is gone shows on its pidfd before lodged has read the supervisor's word.
    PidFd leader_fd;
    Fd pidns_fd;
    uint64_t generation = 0; // of this PID 1: unique in lodged's life, never reused
    uid_t root_uid = 0;      // the host uid the container's root maps to
    // The supervisor's status stream and process, while it exists: it outlives its "stopped"
    // by a little (it lets go of its socket, cgroup and lock, then exits), and no new one may
    // start before.
    std::unique_ptr<SupervisorLink::Watch> watch;
    std::vector<LiveNic> nics; // empty while stopped
    // Readiness changes are announced on the bus at most every ready_announce_interval; a
    // change inside the window is coalesced into one announcement at its end.
    SourcePtr ready_announce;
    bool ready_announced = false;
    uint64_t ready_announced_usec = 0; // CLOCK_MONOTONIC
    // A start that replies once the watch stream's first status is in (cgroup, nics known).
    std::function<void(const Result<>&)> start_done;

    // config.config plus volatile.<dev>.host_name of the nics plugged now (never on disk).
    KeyMap visible_config() const;
    // visible_config() without the keys that may hold secrets: what any bus caller may read.
    KeyMap public_config() const;
    // The host ends of the veths (for machined's NetworkInterfaces).
    std::vector<int> host_ifindices() const;

    const std::string& name() const { return config.name; }
    std::string object_path() const;
    bool running() const {
        return state == ContainerState::running || state == ContainerState::stopping ||
               state == ContainerState::starting;
    }
    // The supervisor process of the last start still exists.
    bool supervisor_alive() const { return watch && watch->supervisor_alive(); }
    // The guest said it is ready (PATCH /1.0 on /dev/lxd/sock), kept as LXD keeps it: in
    // memory and in the runtime dir while the container runs, in config.json once it stops.
    bool ready() const { return config.get_bool("volatile.last_state.ready", false); }
};

} // namespace lodge::daemon
