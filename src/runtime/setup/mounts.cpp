// /proc, /sys and cgroup layouts (runtime.md §4.1), host pass-through paths (§4.2), disk devices.
#include "common/log.hpp"
#include "common/validate.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {

constexpr unsigned nosuid_nodev_noexec = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;

// Binds `path` (inside the container root) onto itself read-only.
int remount_ro_in_place(int root, const char* path) {
    Fd tree = clone_tree(root, path, false);
    if (!tree)
        return -errno;
    if (int r = set_mount_attr(tree.get(), MOUNT_ATTR_RDONLY); r < 0)
        return r;
    return mount_in_root(root, path, tree.get(), Create::none);
}

Result<> mount_proc(const SetupContext& ctx) {
    Fd proc = make_fs("proc", "", nosuid_nodev_noexec);
    if (!proc)
        return log_error_value(errno, "Failed to create the container's /proc");
    if (int r = mount_in_root(ctx.root, "proc", proc.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /proc");
    if (!ctx.config->privileged())
        return {};
    // proc:mixed: /proc/sys read-only but /proc/sys/net writable, /proc/sysrq-trigger read-only.
    Fd net = clone_tree(ctx.root, "proc/sys/net", false);
    if (!net)
        return log_error_value(errno, "Failed to clone /proc/sys/net");
    if (int r = remount_ro_in_place(ctx.root, "proc/sys"); r < 0)
        return log_error_value(r, "Failed to make /proc/sys read-only");
    if (int r = mount_in_root(ctx.root, "proc/sys/net", net.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to keep /proc/sys/net writable");
    // Kernels without CONFIG_MAGIC_SYSRQ have no sysrq-trigger.
    if (int r = remount_ro_in_place(ctx.root, "proc/sysrq-trigger"); r < 0 && r != -ENOENT)
        return log_error_value(r, "Failed to make /proc/sysrq-trigger read-only");
    return {};
}

Result<> mount_sys(const SetupContext& ctx) {
    bool privileged = ctx.config->privileged();
    Fd sys = make_fs("sysfs", "", privileged ? nosuid_nodev_noexec : 0);
    if (!sys)
        return log_error_value(errno, "Failed to create the container's /sys");
    Fd target = open_in_root(ctx.root, "sys", O_PATH);
    if (!target || attach_tree(sys.get(), target.get()) < 0)
        return log_error_value(errno, "Failed to mount /sys");
    if (!privileged)
        return {};
    // sys:mixed: read-only sysfs with the container's own network devices writable.
    Fd net = clone_tree(ctx.root, "sys/devices/virtual/net", false);
    if (!net)
        return log_error_value(errno, "Failed to clone /sys/devices/virtual/net");
    if (int r = mount_in_root(ctx.root, "sys/devices/virtual/net", net.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to keep /sys/devices/virtual/net writable");
    Fd top = open_in_root(ctx.root, "sys", O_PATH);
    if (!top)
        return log_error_value(errno, "Failed to open /sys");
    if (int r = set_mount_attr(top.get(), MOUNT_ATTR_RDONLY); r < 0)
        return log_error_value(r, "Failed to make /sys read-only");
    return {};
}

} // namespace

Result<> mount_proc_sys(const SetupContext& ctx) {
    if (auto proc = mount_proc(ctx); !proc)
        return proc;
    return mount_sys(ctx);
}

Result<> mount_cgroup(const SetupContext& ctx) {
    // Hybrid and v1 hosts: like LXC's cgroup:mixed with a cgroup namespace, nothing is mounted
    // and the guest's init mounts the hierarchies it wants. Pure cgroup2 hosts get a fresh
    // cgroup2 mount rooted at the container's own cgroup.
    if (!host_is_pure_cgroup2())
        return {};
    Fd cg = make_fs("cgroup2", "", nosuid_nodev_noexec);
    if (!cg)
        return log_error_value(errno, "Failed to create the container's cgroup2 mount");
    if (int r = mount_in_root(ctx.root, "sys/fs/cgroup", cg.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /sys/fs/cgroup");
    return {};
}

Result<> mount_passthrough(const SetupContext& ctx) {
    struct Entry {
        const char* path;
        bool privileged_only;
        unsigned long fs_magic; // nonzero: only when this filesystem is mounted there
    };
    // Kernels since 6.7 let a user namespace mount its own binfmt_misc, so LXD binds the
    // host's only into privileged containers there. Unlike LXD, an unmounted binfmt_misc
    // directory is not bound: the empty procfs directory would look like a mount point to the
    // guest's systemd-binfmt.service, which then fails registering its formats.
    static const Entry entries[] = {
        {"/proc/sys/fs/binfmt_misc", true, BINFMTFS_MAGIC},
        {"/sys/firmware/efi/efivars", false, 0},
        {"/sys/fs/fuse/connections", false, 0},
        {"/sys/fs/pstore", false, 0},
        {"/sys/kernel/config", false, 0},
        {"/sys/kernel/debug", false, 0},
        {"/sys/kernel/security", false, 0},
        {"/sys/kernel/tracing", false, 0},
    };
    for (auto& e : entries) {
        if (e.privileged_only && !ctx.config->privileged())
            continue;
        struct stat st {};
        if (::stat(e.path, &st) < 0)
            continue;
        struct statfs fs {};
        if (e.fs_magic &&
            (::statfs(e.path, &fs) < 0 || static_cast<unsigned long>(fs.f_type) != e.fs_magic))
            continue;
        // "optional" in LXC's terms: a path the kernel will not let us bind is skipped.
        Fd tree = clone_tree(AT_FDCWD, e.path, true);
        if (!tree) {
            log_debug_errno(errno, "Skipping pass-through %s", e.path);
            continue;
        }
        // Read-only, sub-mounts included, unlike LXD (whose privileged containers rely on
        // AppArmor for it): they are the host's own, and writes there act on the host
        // (binfmt_misc handlers run for host executions, debugfs/tracefs/securityfs/efivars/
        // pstore/configfs change the kernel, fusectl aborts host FUSE connections). Locked
        // with the other masks in privileged containers (lock_mounts()).
        if (int r = set_mount_attr(tree.get(),
                                   MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                       MOUNT_ATTR_NOEXEC,
                                   0, -1, true);
            r < 0) {
            log_debug_errno(r, "Skipping pass-through %s", e.path);
            continue;
        }
        if (int r = mount_in_root(ctx.root, e.path, tree.get(), Create::dir); r < 0)
            log_debug_errno(r, "Skipping pass-through %s", e.path);
    }
    return {};
}

namespace {

// A symlink on the way to a disk source is followed only when nobody but host root could have
// put it there: the link and the directory holding it are root's and that directory is not
// writable by anyone else. Anything a container can write (its own ids, world-writable
// directories, anything under its rootfs) is refused, so no guest can point the mount elsewhere.
bool trusted_symlink(int dir, const struct stat& link) {
    struct stat d {};
    return link.st_uid == 0 && ::fstat(dir, &d) == 0 && d.st_uid == 0 &&
           (d.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

// Walks `path` from the host's root one component at a time without following untrusted
// symlinks; returns an O_PATH fd of the source or -errno with `why` set.
int open_source(const std::string& path, Fd& out, std::string& why) {
    std::string rest = path;
    Fd cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cur)
        return -errno;
    std::string walked; // what we resolved so far, for messages
    for (int links = 0;;) {
        size_t start = rest.find_first_not_of('/');
        if (start == std::string::npos)
            break;
        size_t slash = rest.find('/', start);
        std::string comp = rest.substr(start, slash == std::string::npos ? slash : slash - start);
        rest = slash == std::string::npos ? "" : rest.substr(slash);
        walked += "/" + comp;
        Fd next(::openat(cur.get(), comp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!next)
            return -errno;
        struct stat st {};
        if (::fstat(next.get(), &st) < 0)
            return -errno;
        if (!S_ISLNK(st.st_mode)) {
            cur = std::move(next);
            continue;
        }
        if (!trusted_symlink(cur.get(), st)) {
            why = walked + " is a symlink that is not host root's alone; give the path it "
                           "points to instead";
            return -ELOOP;
        }
        if (++links > 40)
            return -ELOOP;
        char target[4096];
        ssize_t n = ::readlinkat(next.get(), "", target, sizeof target - 1);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        rest = std::string(target) + "/" + rest;
        if (target[0] == '/') {
            cur = Fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!cur)
                return -errno;
        }
    }
    out = std::move(cur);
    return 0;
}

} // namespace

int open_disk_sources(const ContainerConfig& config, std::vector<DiskSource>& out,
                      std::string& error) {
    for (auto& [name, dev] : config.devices) {
        auto type = dev.find("type");
        if (type == dev.end() || type->second != "disk")
            continue;
        const std::string& source = dev.at("source");
        bool ro = dev.count("readonly") && parse_bool(dev.at("readonly")).value_or(false);
        Fd fd;
        std::string why;
        if (int r = open_source(source, fd, why); r < 0) {
            error = "Device \"" + name + "\": cannot use source " + source + ": " +
                    (why.empty() ? std::strerror(-r) : why);
            log_error("%s", error.c_str());
            return r;
        }
        struct stat st {};
        if (::fstat(fd.get(), &st) < 0) {
            int r = -errno;
            error =
                "Device \"" + name + "\": cannot use source " + source + ": " + std::strerror(-r);
            log_error("%s", error.c_str());
            return r;
        }
        DiskSource d;
        d.device = name;
        d.path = dev.at("path");
        d.is_dir = S_ISDIR(st.st_mode);
        d.tree = clone_tree(fd.get(), "", true);
        int r = d.tree ? 0 : -errno;
        if (r == 0 && ro)
            r = set_mount_attr(d.tree.get(), MOUNT_ATTR_RDONLY, 0, -1, true);
        if (r < 0) {
            error = "Device \"" + name + "\": cannot bind " + source + ": " + std::strerror(-r);
            log_error("%s", error.c_str());
            return r;
        }
        out.push_back(std::move(d));
    }
    return 0;
}

Result<> mount_disk_devices(const SetupContext& ctx) {
    if (!ctx.disk_sources)
        return {};
    for (const DiskSource& d : *ctx.disk_sources) {
        if (int r = mount_in_root(ctx.root, d.path, d.tree.get(),
                                  d.is_dir ? Create::dir : Create::file);
            r < 0)
            return log_error_value(r, "Device \"%s\": cannot mount on %s", d.device.c_str(),
                                   d.path.c_str());
    }
    return {};
}

} // namespace lodge::runtime
