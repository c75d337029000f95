// The steps that turn a root filesystem into a container, run by the container's first process
// between clone() and execve("/sbin/init"). This folder (src/runtime/setup/) is lodge's privileged
// perimeter, linked by lodge-supervisor alone; the steps run in the order spawn.cpp gives.
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "runtime/lxcfs-probe.hpp"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace lodge::runtime {

// A disk device's source, opened and cloned on the host side as host root before the container's
// user namespace exists (LXD mounts sources below directories only root may traverse).
struct DiskSource {
    std::string device;
    std::string path; // inside the container
    bool is_dir = false;
    Fd tree; // detached clone of the source, read-only when the device says so
};

struct SetupContext {
    const ContainerConfig* config = nullptr;
    bool userns = false;    // unprivileged: every mount happens inside the user namespace
    int root = -1;          // O_PATH fd of the attached rootfs mount
    std::string boot_id;    // per-boot id, 36-char UUID text
    std::string lxcfs_dir;  // empty when no lxcfs mount was found at start
    std::string devlxd_dir; // host dir bind-mounted on /dev/lxd; empty when disabled
    int devlxd_tree = -1; // its clone, read-only, made by the parent (the child cannot walk to it)
    const std::vector<DiskSource>* disk_sources = nullptr;
    Fd console_master; // filled by setup_dev()
    Fd console_slave;  // filled by setup_dev(); becomes fds 0-2 of PID 1
};

// Every step returns its failure as an Error, logged once where it happened, which the child
// hands to the parent as the start's reason.

// rootfs.cpp
Result<> check_init(const SetupContext& ctx, const std::string& name);
Result<> ensure_base_dirs(const SetupContext& ctx);
Result<> enter_root(const SetupContext& ctx); // pivot_root into ctx.root and drop the old root
// After enter_root(), privileged containers: join a copy of the mount namespace in which no
// mount can be unmounted or made writable again (masks over /proc/sys, /sys, ...). Reopens
// ctx.console_slave there.
Result<> lock_mounts(SetupContext& ctx);

// mounts.cpp
Result<> mount_proc_sys(const SetupContext& ctx);
Result<> mount_cgroup(const SetupContext& ctx);
Result<> mount_passthrough(const SetupContext& ctx);
// Host side, before clone: every disk device's source resolved from the host's root, refusing
// symlinks a container could have written. 0, or -errno with `error` naming device and source.
int open_disk_sources(const ContainerConfig& config, std::vector<DiskSource>& out,
                      std::string& error);
Result<> mount_disk_devices(const SetupContext& ctx);

// dev.cpp
Result<> setup_dev(SetupContext& ctx);

// lxcfs.cpp
Result<> mount_lxcfs(const SetupContext& ctx);
// A running container: add the binds a fresh start would get (paths that already hold a mount
// are left alone), or take every lxcfs bind out so reads fall back to the kernel's files.
Result<> lxcfs_attach_running(pid_t init_pid, const std::string& lxcfs_dir);
Result<> lxcfs_detach_running(pid_t init_pid);

// live-mount.cpp
// Runs `fn` in a child that joined PID 1's mount (and user) namespace, after `prepare` ran
// in the child on the host side.
Result<> in_container_mntns(pid_t init_pid, const std::function<Result<>()>& prepare,
                            const std::function<Result<>()>& fn);
// PID 1's mount points and types, read from the host through its mountinfo.
std::vector<std::pair<std::string, std::string>> container_mounts(pid_t init_pid);
// security.devlxd changed on a running container: /dev/lxd appears, or goes (and its dir too).
Result<> devlxd_attach_running(pid_t init_pid, const std::string& devlxd_dir);
Result<> devlxd_detach_running(pid_t init_pid);

} // namespace lodge::runtime
