// Creating a container's first process: clone3 into new namespaces, id maps and cgroup from the
// parent side, then the setup steps of setup.hpp in the child, then execve("/sbin/init").
#pragma once

#include "runtime/cgroup.hpp"
#include "common/config.hpp"
#include "common/fd.hpp"

#include <functional>
#include <string>

namespace lodge::runtime {

struct SpawnOptions {
    const ContainerConfig* config = nullptr;
    std::string rootfs;     // host path of the root filesystem
    std::string staging;    // empty host dir; the child attaches the rootfs there in its own mntns
    std::string lxcfs_dir;  // empty: no lxcfs binds
    std::string devlxd_dir; // empty: no /dev/lxd
    std::string boot_id;
    CgroupFs* cgroup = nullptr;
    // Runs in the parent once the child's namespaces exist and before the child may go on to
    // exec /sbin/init (network interfaces are plugged here). 0 or -errno with `error` set.
    std::function<int(pid_t child, std::string& error)> before_go;
};

struct Spawned {
    PidFd init;
    Fd console_master;
};

// Returns 0 once PID 1 has been exec'd, or -errno with `error` naming the reason.
int spawn_container(const SpawnOptions& opts, Spawned& out, std::string& error);

std::string new_boot_id();

} // namespace lodge::runtime
