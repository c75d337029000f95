// Best-effort registration of running containers with systemd-machined (CONTRACT §1), so that
// `machinectl list` and `machinectl status NAME` show them. A host without machined is fine.
#pragma once

#include <string>
#include <vector>
#include <sys/types.h>
#include <systemd/sd-bus.h>

namespace lodge::daemon {

// RegisterMachineWithNetwork for a container whose PID 1 (`leader`, a host pid) already runs
// in its scope: machined takes the unit from the leader's cgroup, and forgets the machine by
// itself once that unit is gone. `ifindices` are the host ends of the container's veths (as
// nspawn passes its own). Never fails: problems are logged and ignored.
void machined_register(sd_bus* bus, const std::string& name, pid_t leader,
                       const std::string& root_directory, const std::vector<int>& ifindices = {});

} // namespace lodge::daemon
