#include "common/fileio.hpp"
#include "common/log.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {

Result<> check_init(const SetupContext& ctx, const std::string& name) {
    // Resolved the way the guest's own exec will resolve it, but never outside the rootfs.
    Fd init = open_in_root(ctx.root, "sbin/init", O_PATH);
    if (!init)
        return log_error_value(errno, "Container \"%s\": cannot start /sbin/init", name.c_str());
    struct stat st {};
    if (::fstat(init.get(), &st) < 0)
        return log_error_value(errno, "Container \"%s\": cannot stat /sbin/init", name.c_str());
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0)
        return log_error_message(EACCES, "Container \"%s\": /sbin/init is not an executable file",
                                 name.c_str());
    return {};
}

Result<> ensure_base_dirs(const SetupContext& ctx) {
    for (const char* dir : {"dev", "proc", "sys"}) {
        struct stat st {};
        if (::fstatat(ctx.root, dir, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            // A link here would point a mount somewhere the guest chose; refuse it.
            if (!S_ISDIR(st.st_mode))
                return log_error_message(
                    ENOTDIR, "The image's /%s is not a directory (%s); refusing to mount over it",
                    dir, S_ISLNK(st.st_mode) ? "a symlink" : "another file type");
            continue;
        }
        if (errno != ENOENT)
            return log_error_value(errno, "Cannot inspect /%s in the rootfs", dir);
        Fd rootdir = open_in_root(ctx.root, ".", O_DIRECTORY | O_RDONLY);
        if (!rootdir || (::mkdirat(rootdir.get(), dir, 0755) < 0 && errno != EEXIST))
            return log_error_value(errno, "Cannot create /%s in the rootfs", dir);
    }
    return {};
}

Result<> enter_root(const SetupContext& ctx) {
    if (::fchdir(ctx.root) < 0)
        return log_error_value(errno, "Failed to enter the container root");
    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it.
    if (::syscall(SYS_pivot_root, ".", ".") < 0)
        return log_error_value(errno, "pivot_root failed");
    if (::umount2(".", MNT_DETACH) < 0)
        return log_error_value(errno, "Failed to detach the old root");
    if (::chdir("/") < 0)
        return log_error_value(errno, "chdir(/) failed");
    return {};
}

namespace {

// The console pty was opened in the namespace we left; PID 1 must hold it through this one's
// /dev/pts, or /proc/1/fd would name a path of a namespace nobody sees.
Result<> reopen_console(SetupContext& ctx) {
    struct stat old {};
    if (::fstat(ctx.console_slave.get(), &old) < 0)
        return log_error_value(errno, "Cannot inspect the console pty");
    // devpts numbers pty N as major 136 + N / 256, minor N % 256.
    unsigned index = (major(old.st_rdev) - 136) * 256 + minor(old.st_rdev);
    std::string path = "/dev/pts/" + std::to_string(index);
    Fd pty(::open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    struct stat now {};
    if (!pty || ::fstat(pty.get(), &now) < 0)
        return log_error_value(errno, "Cannot reopen the console %s", path.c_str());
    if (now.st_rdev != old.st_rdev || now.st_dev != old.st_dev)
        return log_error_value(EIO, "%s is not the console pty", path.c_str());
    ctx.console_slave = std::move(pty);
    return {};
}

} // namespace

Result<> lock_mounts(SetupContext& ctx) {
    // The kernel locks mounts when it copies a mount namespace into a user namespace that is
    // less privileged than the original's owner: each mount becomes MNT_LOCKED (no umount that
    // would reveal what it covers) and its read-only, nosuid, nodev and noexec flags stay set,
    // for every process, root in the init user namespace included. A helper makes that copy
    // from a new user namespace with the identity map; we join its mount namespace and stay in
    // the init user namespace ourselves.
    int ready[2], release[2];
    if (::pipe2(ready, O_CLOEXEC) < 0)
        return log_error_value(errno, "Failed to create a pipe");
    Fd ready_r(ready[0]), ready_w(ready[1]);
    if (::pipe2(release, O_CLOEXEC) < 0)
        return log_error_value(errno, "Failed to create a pipe");
    Fd release_r(release[0]), release_w(release[1]);
    pid_t helper = ::fork();
    if (helper < 0)
        return log_error_value(errno, "Failed to fork the mount-locking helper");
    if (helper == 0) {
        ready_r.reset();
        release_w.reset();
        int err = ::unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0 ? errno : 0;
        if (::write(ready_w.get(), &err, sizeof err) != sizeof err)
            _exit(1);
        // Keeps the namespaces alive until the parent has joined them (EOF when it is done).
        char c;
        while (::read(release_r.get(), &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    ready_w.reset();
    release_r.reset();
    auto reap = [&]() {
        release_w.reset();
        while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
        }
    };
    int err = 0;
    ssize_t n;
    while ((n = ::read(ready_r.get(), &err, sizeof err)) < 0 && errno == EINTR) {
    }
    if (n != sizeof err) {
        reap();
        return log_error_value(EIO, "The mount-locking helper died");
    }
    if (err != 0) {
        reap();
        return log_error_value(err, "Failed to create the namespaces that lock the mounts");
    }
    std::string proc = "/proc/" + std::to_string(helper);
    const char* identity = "0 0 4294967295\n";
    int r = write_file(proc + "/uid_map", identity);
    if (r == 0)
        r = write_file(proc + "/gid_map", identity);
    if (r < 0) {
        reap();
        return log_error_value(r, "Failed to map the mount-locking user namespace");
    }
    Fd mntns(::open((proc + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC));
    if (!mntns || ::setns(mntns.get(), CLONE_NEWNS) < 0) {
        int e = errno;
        reap();
        return log_error_value(e, "Failed to join the locked mount namespace");
    }
    reap();
    // setns() put us at the namespace's root, which is the container's.
    if (::chdir("/") < 0)
        return log_error_value(errno, "chdir(/) failed");
    return reopen_console(ctx);
}

} // namespace lodge::runtime
