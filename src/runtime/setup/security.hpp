// Seccomp policy and capability bounding set for PID 1 (runtime.md §8, CONTRACT §5).
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"

#include <string>

namespace lodge::runtime {

// Checks security.syscalls.deny names against libseccomp; empty string when fine.
std::string check_syscall_policy(const ContainerConfig& c);

// Loads the container's filters into the calling process (the child, just before exec):
// LXD's default deny list plus finit_module (ENOSYS), umount2(MNT_FORCE) → EACCES, every
// security.syscalls.deny entry (kill), and for deny_compat a filter that refuses foreign
// architectures. The failure comes back logged, as an Error.
Result<> load_seccomp(const ContainerConfig& c);

// Privileged containers lose sys_time sys_module sys_rawio mac_admin mac_override from the
// bounding and inheritable sets. Unprivileged ones keep everything (scoped by the userns).
Result<> drop_capabilities(const ContainerConfig& c);

} // namespace lodge::runtime
