// LXCFS binds, the same set lxcfs's own LXC mount hook makes (runtime.md §7.2).
#include "common/log.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <libmount/libmount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::runtime {

static Result<> bind_from_lxcfs(const SetupContext& ctx, const std::string& src,
                                const std::string& dst);

static std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> names;
    DIR* d = ::opendir(path.c_str());
    if (!d)
        return names;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.')
            names.emplace_back(e->d_name);
    ::closedir(d);
    return names;
}

// Binds every entry of <lxcfs>/<dir> whose name the container also has at <dir>.
static Result<> bind_entries(const SetupContext& ctx, const std::string& dir) {
    for (auto& n : list_dir(ctx.lxcfs_dir + "/" + dir)) {
        Fd target = open_in_root(ctx.root, dir + "/" + n, O_PATH, false);
        if (!target)
            continue;
        if (auto bound = bind_from_lxcfs(ctx, ctx.lxcfs_dir + "/" + dir + "/" + n, dir + "/" + n);
            !bound)
            return bound;
    }
    return {};
}

static Result<> bind_from_lxcfs(const SetupContext& ctx, const std::string& src,
                                const std::string& dst) {
    Fd tree = clone_tree(AT_FDCWD, src, false);
    if (!tree)
        return log_error_value(errno, "Failed to clone %s", src.c_str());
    if (int r = mount_in_root(ctx.root, dst, tree.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to bind %s on %s", src.c_str(), dst.c_str());
    return {};
}

Result<> mount_lxcfs(const SetupContext& ctx) {
    if (ctx.lxcfs_dir.empty())
        return {};
    struct stat st {};
    // lxcfs died since the supervisor looked: the start goes on with the kernel's files, as a
    // running container's does (the binds come when lxcfs is back).
    if (::stat((ctx.lxcfs_dir + "/proc").c_str(), &st) < 0) {
        log_warning_errno(errno, "lxcfs at %s is not usable; not binding it",
                          ctx.lxcfs_dir.c_str());
        return {};
    }
    // Only what the container's /proc also has (e.g. no pressure/ without PSI).
    if (auto bound = bind_entries(ctx, "proc"); !bound)
        return bound;
    std::string cpu = ctx.lxcfs_dir + "/sys/devices/system/cpu";
    Fd ccpu = open_in_root(ctx.root, "sys/devices/system/cpu", O_PATH | O_DIRECTORY, false);
    if (::stat(cpu.c_str(), &st) < 0 || !ccpu)
        return {};
    // A new lxcfs virtualizes the whole directory; an old one only some files.
    if (::stat((cpu + "/uevent").c_str(), &st) == 0)
        return bind_from_lxcfs(ctx, cpu, "sys/devices/system/cpu");
    return bind_entries(ctx, "sys/devices/system/cpu");
}

} // namespace lodge::runtime

// ---- live: LXCFS binds put into or taken out of a running container ----------------------

namespace lodge::runtime {

Result<> lxcfs_attach_running(pid_t init_pid, const std::string& lxcfs_dir) {
    // Host side: detached copies of every lxcfs entry, made before joining the container.
    std::vector<std::pair<std::string, Fd>> trees;
    std::vector<std::pair<std::string, std::string>> mounts;
    auto prepare = [&]() -> Result<> {
        mounts = container_mounts(init_pid);
        for (auto& n : list_dir(lxcfs_dir + "/proc"))
            if (Fd t = clone_tree(AT_FDCWD, lxcfs_dir + "/proc/" + n, false); t)
                trees.emplace_back("/proc/" + n, std::move(t));
        std::string cpu = lxcfs_dir + "/sys/devices/system/cpu";
        struct stat st {};
        if (::stat((cpu + "/uevent").c_str(), &st) == 0) {
            if (Fd t = clone_tree(AT_FDCWD, cpu, false); t)
                trees.emplace_back("/sys/devices/system/cpu", std::move(t));
        } else {
            for (auto& n : list_dir(cpu))
                if (Fd t = clone_tree(AT_FDCWD, cpu + "/" + n, false); t)
                    trees.emplace_back("/sys/devices/system/cpu/" + n, std::move(t));
        }
        if (trees.empty())
            return log_error_value(ENOENT, "Nothing to bind from %s", lxcfs_dir.c_str());
        return {};
    };
    auto attach = [&]() -> Result<> {
        for (auto& [path, tree] : trees) {
            struct stat st {};
            if (::stat(path.c_str(), &st) < 0)
                continue; // not in this container's /proc (e.g. no PSI)
            // Already bound, or something the guest mounted there itself: leave it.
            bool taken = false;
            for (auto& [target, type] : mounts)
                taken |= target == path;
            if (taken)
                continue;
            if (::move_mount(tree.get(), "", AT_FDCWD, path.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
                log_warning_errno(errno, "Cannot bind lxcfs on %s", path.c_str());
        }
        return {};
    };
    return in_container_mntns(init_pid, prepare, attach);
}

Result<> lxcfs_detach_running(pid_t init_pid) {
    std::vector<std::pair<std::string, std::string>> mounts;
    auto prepare = [&]() -> Result<> {
        mounts = container_mounts(init_pid);
        return {};
    };
    auto detach = [&]() -> Result<> {
        for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
            auto& [target, type] = *it;
            bool ours =
                target.rfind("/proc/", 0) == 0 || target.rfind("/sys/devices/system/cpu", 0) == 0;
            if (type == "fuse.lxcfs" && ours && ::umount2(target.c_str(), MNT_DETACH) < 0)
                log_warning_errno(errno, "Cannot remove the lxcfs bind on %s", target.c_str());
        }
        return {};
    };
    return in_container_mntns(init_pid, prepare, detach);
}

} // namespace lodge::runtime
