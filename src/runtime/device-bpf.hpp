// The device allow-list (common/device-policy.hpp) as a cgroup2 device program
// (BPF_PROG_TYPE_CGROUP_DEVICE), for cgroups lodge makes itself. The kernel runs it besides the
// v1 devices controller, so on hybrid hosts it guards the unified hierarchy's cgroup too.
#pragma once

#include "common/device-policy.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

#include <linux/bpf.h>
#include <span>
#include <string>
#include <vector>

namespace lodge::runtime {

// The program's instructions: 1 (allow) when the device and the access asked for match a rule.
std::vector<bpf_insn> device_program(std::span<const DeviceRule> rules);

// Loads the program for `rules`; on failure the Error, logged once.
Result<Fd> load_device_program(std::span<const DeviceRule> rules);

// Loads the default allow-list's program now (at a descriptor >= 10, close-on-exec), for
// attach_device_policy() to take later: a standby supervisor runs the verifier while it waits
// instead of during a start. Best effort and quiet: a failure shows when the attach loads it.
void preload_device_program();
// Closes it unused (a supervisor in a systemd scope, whose DevicePolicy does the same).
void drop_preloaded_device_program();

// Attaches the allow-list program (the preloaded one for the default rules, else one loaded
// now) to the cgroup2 directory `cgroup_dir` (BPF_F_ALLOW_MULTI, so programs the guest's own
// manager attaches below can only narrow it), then detaches the programs a previous attach
// left on that directory. Failures are logged.
Result<> attach_device_policy(const std::string& cgroup_dir,
                              std::span<const DeviceRule> rules = device_allow_list());

} // namespace lodge::runtime
