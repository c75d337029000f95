// The container's cgroup when lodge places it itself on cgroupfs (no systemd as PID 1, or a
// scope that systemd already made for us). Layout under the base B (the scope):
//   B/supervisor  the lodge-supervisor process
//   B/payload     the container; its cgroup namespace root, delegated to the container's root
// On hybrid hosts every v1 hierarchy gets the same layout next to the unified one.
// limits.* and the v1 device list go on B/payload; the cgroup2 device program on B.
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/limits.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime {

struct Hierarchy {
    std::string mountpoint;  // e.g. /sys/fs/cgroup/memory
    std::string controllers; // "memory", "name=systemd", "" for cgroup2
    bool unified = false;
};

// Every cgroup hierarchy mounted on the host (libmount reading /proc/self/mountinfo).
std::vector<Hierarchy> host_hierarchies();
// Reads them now, and host_hierarchies() answers from that from then on: a standby supervisor
// parses mountinfo while it waits instead of during a start.
void remember_host_hierarchies();
// The calling process's cgroup path in a hierarchy, from /proc/self/cgroup.
std::string own_cgroup(const Hierarchy& h);
bool host_is_pure_cgroup2();

// How a new process joins B/payload without a cgroup.procs write for it (each such write
// waits for an RCU grace period under the global threadgroup lock, 6-16 ms): it is born in the
// cgroup2 payload (clone3 CLONE_INTO_CGROUP with `cgroup2_dir`) and, single-threaded as it
// is, moves itself into each v1 payload by writing "0" to `tasks`, which takes no such lock.
struct PayloadJoin {
    std::vector<Fd> v1_tasks;
    Fd cgroup2_dir;
    Fd cgroup2_procs; // for a process that could not be born there
};
// Run by the new process itself. A failure comes back logged.
Result<> join_payload(const PayloadJoin& join, bool born_in_cgroup2);

class CgroupFs {
public:
    // `base` is relative to each hierarchy's root, e.g. "machine.slice/lodge-c1.scope".
    explicit CgroupFs(std::string base);
    // On `hierarchies` instead of the host's (tests: a directory tree standing in for them).
    CgroupFs(std::string base, std::vector<Hierarchy> hierarchies);
    // The cgroups above B are lodge's to set up too (no systemd placed B): on cgroup2 the
    // controllers are passed down through them (never through the hierarchy's root).
    void set_own_path(bool own) { own_path_ = own; }

    // mkdir B/supervisor in every hierarchy, noting where this process came from (once).
    Result<> prepare_supervisor();
    // fork() whose child is born in the cgroup2 B/supervisor (clone3 CLONE_INTO_CGROUP), so
    // that it never writes cgroup.procs for itself (a grace period, see PayloadJoin); a plain
    // fork where that cannot be. After prepare_supervisor().
    pid_t fork_into_supervisor();
    Result<> create_base(); // prepare_supervisor(), then move self there (enter_supervisor)
    // This process into B/supervisor (once): v1 by `tasks` while single-threaded (no grace
    // period), cgroup2 by cgroup.procs unless it is there already (born there).
    Result<> enter_supervisor();
    bool prepared() const { return prepared_; }
    Result<> create_payload();                       // fresh B/payload
    Result<> open_payload(PayloadJoin& out) const;   // for join_payload()
    Result<> delegate_payload(uid_t uid, gid_t gid); // chown so the container's root manages it
    Result<> apply_limits(const Limits& limits);     // on B/payload (never on the supervisor)
    Result<> apply_device_policy(); // the allow-list on B/payload where a v1 devices controller is
    // The allow-list as a cgroup2 device program on B (cgroupfs mode; under systemd the scope's
    // DevicePolicy= does the same). On B, not on the payload, so the guest, whose cgroup
    // namespace begins at B/payload, never holds the cgroup it is attached to.
    Result<> attach_device_program();
    int destroy_payload(); // rmdir B/payload and everything below
    // Moves this process back where it came from and removes B (cgroupfs mode only).
    int destroy_base();

    const std::string& base() const { return base_; }
    std::string payload_path(const Hierarchy& h) const;

private:
    std::string base_;
    std::vector<Hierarchy> hierarchies_;
    std::vector<std::string> origin_; // own cgroup per hierarchy before create_base()
    bool own_path_ = false;
    bool prepared_ = false; // B/supervisor made, origin_ known
    bool entered_ = false;  // this process sits in B/supervisor (in some hierarchy)
    bool joined_ = false;   // ... in every hierarchy
};

} // namespace lodge::runtime
