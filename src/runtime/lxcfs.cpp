// LXCFS binds, the same set lxcfs's own LXC mount hook makes (runtime.md §7.2).
#include "common/log.hpp"
#include "mountapi.hpp"
#include "setup.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace lodge::runtime {

bool is_lxcfs_mount(const std::string& dir) {
    bool found = false;
    libmnt_table* tb = mnt_new_table();
    if (!tb)
        return false;
    if (mnt_table_parse_mtab(tb, "/proc/self/mountinfo") == 0) {
        // The last mount on the path is the visible one.
        libmnt_fs* fs = mnt_table_find_target(tb, dir.c_str(), MNT_ITER_BACKWARD);
        if (fs) {
            const char* type = mnt_fs_get_fstype(fs);
            found = type && std::string(type) == "fuse.lxcfs";
        }
    }
    mnt_unref_table(tb);
    if (!found)
        return false;
    // A crashed lxcfs leaves its mount behind; a stat through it then fails with ENOTCONN.
    struct stat st {};
    return ::stat((dir + "/proc").c_str(), &st) == 0;
}

static int bind_from_lxcfs(const SetupContext& ctx, const std::string& src,
                           const std::string& dst) {
    Fd tree = clone_tree(AT_FDCWD, src, false);
    if (!tree)
        return log_error_errno(errno, "Failed to clone %s", src.c_str());
    if (int r = mount_in_root(ctx.root, dst, tree.get(), Create::none); r < 0)
        return log_error_errno(r, "Failed to bind %s on %s", src.c_str(), dst.c_str());
    return 0;
}

int mount_lxcfs(const SetupContext& ctx) {
    if (ctx.lxcfs_dir.empty())
        return 0;
    std::string proc = ctx.lxcfs_dir + "/proc";
    DIR* d = ::opendir(proc.c_str());
    if (!d)
        return log_warning_errno(errno, "lxcfs at %s is not usable; not binding it",
                                 ctx.lxcfs_dir.c_str());
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.')
            names.emplace_back(e->d_name);
    ::closedir(d);
    for (auto& n : names) {
        // Only what the container's /proc also has (e.g. no pressure/ without PSI).
        Fd target = open_in_root(ctx.root, "proc/" + n, O_PATH, false);
        if (!target)
            continue;
        if (int r = bind_from_lxcfs(ctx, proc + "/" + n, "proc/" + n); r < 0)
            return r;
    }
    std::string cpu = ctx.lxcfs_dir + "/sys/devices/system/cpu";
    struct stat st {};
    Fd ccpu = open_in_root(ctx.root, "sys/devices/system/cpu", O_PATH | O_DIRECTORY, false);
    if (::stat(cpu.c_str(), &st) == 0 && ccpu) {
        if (::stat((cpu + "/uevent").c_str(), &st) == 0)
            return bind_from_lxcfs(ctx, cpu, "sys/devices/system/cpu");
        DIR* cd = ::opendir(cpu.c_str());
        if (!cd)
            return 0;
        std::vector<std::string> entries;
        while (dirent* e = ::readdir(cd))
            if (e->d_name[0] != '.')
                entries.emplace_back(e->d_name);
        ::closedir(cd);
        for (auto& n : entries) {
            Fd target = open_in_root(ctx.root, "sys/devices/system/cpu/" + n, O_PATH, false);
            if (!target)
                continue;
            if (int r = bind_from_lxcfs(ctx, cpu + "/" + n, "sys/devices/system/cpu/" + n); r < 0)
                return r;
        }
    }
    return 0;
}

} // namespace lodge::runtime
