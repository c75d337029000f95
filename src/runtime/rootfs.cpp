#include "common/log.hpp"
#include "mountapi.hpp"
#include "setup.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lodge::runtime {

int check_init(const SetupContext& ctx, const std::string& name) {
    // Resolved the way the guest's own exec will resolve it, but never outside the rootfs.
    Fd init = open_in_root(ctx.root, "sbin/init", O_PATH);
    if (!init)
        return log_error_errno(errno, "Container \"%s\": cannot start /sbin/init", name.c_str());
    struct stat st {};
    if (::fstat(init.get(), &st) < 0)
        return log_error_errno(errno, "Container \"%s\": cannot stat /sbin/init", name.c_str());
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
        log_error("Container \"%s\": /sbin/init is not an executable file", name.c_str());
        return -EACCES;
    }
    return 0;
}

int ensure_base_dirs(const SetupContext& ctx) {
    for (const char* dir : {"dev", "proc", "sys"}) {
        struct stat st {};
        if (::fstatat(ctx.root, dir, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            // A link here would point a mount somewhere the guest chose; refuse it.
            if (!S_ISDIR(st.st_mode)) {
                log_error("The image's /%s is not a directory (%s); refusing to mount over it", dir,
                          S_ISLNK(st.st_mode) ? "a symlink" : "another file type");
                return -ENOTDIR;
            }
            continue;
        }
        if (errno != ENOENT)
            return log_error_errno(errno, "Cannot inspect /%s in the rootfs", dir);
        Fd rootdir = open_in_root(ctx.root, ".", O_DIRECTORY | O_RDONLY);
        if (!rootdir || (::mkdirat(rootdir.get(), dir, 0755) < 0 && errno != EEXIST))
            return log_error_errno(errno, "Cannot create /%s in the rootfs", dir);
    }
    return 0;
}

int enter_root(const SetupContext& ctx) {
    if (::fchdir(ctx.root) < 0)
        return log_error_errno(errno, "Failed to enter the container root");
    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it.
    if (::syscall(SYS_pivot_root, ".", ".") < 0)
        return log_error_errno(errno, "pivot_root failed");
    if (::umount2(".", MNT_DETACH) < 0)
        return log_error_errno(errno, "Failed to detach the old root");
    if (::chdir("/") < 0)
        return log_error_errno(errno, "chdir(/) failed");
    return 0;
}

} // namespace lodge::runtime
