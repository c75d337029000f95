// Containers in transient systemd scopes (CONTRACT §2): lodge-NAME.scope in machine.slice with
// Delegate=yes, made by lodged through PID 1 when systemd runs the host, with the device
// allow-list as DevicePolicy=closed + DeviceAllow= (limits.* are the supervisor's, on the
// payload cgroup inside the scope, so the supervisor is outside them). Without systemd the
// supervisor makes its cgroups on cgroupfs and none of this runs.
#pragma once

#include "common/config.hpp"

#include <string>
#include <sys/types.h>
#include <systemd/sd-bus.h>

namespace lodge::daemon {

// True when systemd is PID 1 and no LODGE_CGROUP_ROOT asks for a cgroupfs subtree instead.
bool use_systemd_scopes();

std::string scope_unit_name(const std::string& container);

struct ScopeRequest {
    const ContainerConfig* config = nullptr;
    pid_t pid = 0;          // the supervisor, held (--wait-go-fd) until the scope exists
    std::string controller; // the bus name PID 1 sends RequestStop to instead of signalling
};

// StartTransientUnit and wait for its job (a failed unit of the same name left behind is reset
// and the start tried once more). 0, or -errno with `error` set for the caller.
int start_scope(const ScopeRequest& req, std::string& error);

} // namespace lodge::daemon
