// Mounts changed in a running container from the host: a child joins PID 1's mount (and user)
// namespace and does the work there, so nothing lands anywhere else.
#include "common/log.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {

constexpr int live_mount_timeout_ms = 10 * 1000;

// Runs `fn` in a child that has joined PID 1's mount namespace (and user namespace, for an
// unprivileged container), so mounts land in the container and nowhere else. Host-side
// preparation happens before the join, in `prepare`.
// The child's failure comes back to the caller through a pipe, as its message.
Result<> in_container_mntns(pid_t init_pid, const std::function<Result<>()>& prepare,
                            const std::function<Result<>()>& fn) {
    PidFd init = PidFd::open(init_pid);
    if (!init.valid())
        return log_error_value(errno, "Cannot open PID 1 (%d)", init_pid);
    int report_pipe[2];
    if (::pipe2(report_pipe, O_CLOEXEC) < 0)
        return log_error_value(errno, "pipe failed");
    Fd report_read(report_pipe[0]), report_write(report_pipe[1]);
    pid_t child = ::fork();
    if (child < 0)
        return log_error_value(errno, "fork failed");
    if (child == 0) {
        auto fail = [&](const Error& e) {
            (void)!::write(report_write.get(), e.message.data(), e.message.size());
            _exit(1);
        };
        if (auto prepared = prepare(); !prepared)
            fail(prepared.error());
        char own[64] = {}, theirs[64] = {};
        ::readlink("/proc/self/ns/user", own, sizeof own - 1);
        ::readlink(("/proc/" + std::to_string(init_pid) + "/ns/user").c_str(), theirs,
                   sizeof theirs - 1);
        int flags = CLONE_NEWNS | (std::strcmp(own, theirs) != 0 ? CLONE_NEWUSER : 0);
        if (::setns(init.get(), flags) < 0)
            fail(log_error_value(errno, "Cannot join the container's mount namespace"));
        // Be the container's root, so what we create is owned by it (host root has no
        // mapping there, and files it made would fail with EOVERFLOW).
        if ((flags & CLONE_NEWUSER) && (::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0))
            fail(log_error_value(errno, "Cannot become the container's root"));
        if (auto done = fn(); !done)
            fail(done.error());
        _exit(0);
    }
    report_write.reset();
    // The child resolves paths the guest controls (a FUSE mount that never answers would hold
    // it forever): it gets a deadline, so the supervisor always comes back to its requests.
    PidFd watched = PidFd::open(child);
    struct pollfd exited {
        watched.get(), POLLIN, 0
    };
    int ready = 0;
    if (watched.valid())
        while ((ready = ::poll(&exited, 1, live_mount_timeout_ms)) < 0 && errno == EINTR) {
        }
    bool timed_out = watched.valid() && ready == 0;
    if (timed_out)
        ::kill(child, SIGKILL);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
        std::string message = "A mount change in the container did not finish within " +
                              std::to_string(live_mount_timeout_ms / 1000) +
                              " s (a guest path may be blocked); given up";
        log_error("%s", message.c_str());
        return make_error(errors::failed, ETIMEDOUT, std::move(message));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return {};
    // Logged by the child already.
    char text[1024];
    ssize_t n = ::read(report_read.get(), text, sizeof text);
    return make_error(errors::failed, EIO,
                      n > 0 ? std::string(text, static_cast<size_t>(n))
                            : "A mount change in the container failed");
}

// The container's mount points and their types, read from the host through PID 1's
// mountinfo (inside, /proc belongs to the container's pid namespace, where we have no pid).
std::vector<std::pair<std::string, std::string>> container_mounts(pid_t init_pid) {
    std::vector<std::pair<std::string, std::string>> out;
    libmnt_table* tb = mnt_new_table();
    std::string mountinfo = "/proc/" + std::to_string(init_pid) + "/mountinfo";
    if (tb && mnt_table_parse_file(tb, mountinfo.c_str()) == 0) {
        libmnt_iter* it = mnt_new_iter(MNT_ITER_FORWARD);
        libmnt_fs* fs = nullptr;
        while (mnt_table_next_fs(tb, it, &fs) == 0)
            if (mnt_fs_get_target(fs) && mnt_fs_get_fstype(fs))
                out.emplace_back(mnt_fs_get_target(fs), mnt_fs_get_fstype(fs));
        mnt_free_iter(it);
    }
    mnt_unref_table(tb);
    return out;
}

Result<> devlxd_attach_running(pid_t init_pid, const std::string& devlxd_dir) {
    Fd tree;
    struct stat host {};
    auto prepare = [&]() -> Result<> {
        if (::stat(devlxd_dir.c_str(), &host) < 0)
            return log_error_value(errno, "Cannot stat %s", devlxd_dir.c_str());
        tree = clone_tree(AT_FDCWD, devlxd_dir, false);
        if (!tree)
            return log_error_value(errno, "Failed to clone %s", devlxd_dir.c_str());
        // Read-only as at start (dev.cpp): the directory is shared by every container.
        int r = set_mount_attr(tree.get(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
                                               MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        if (r < 0)
            return log_error_value(r, "Failed to make /dev/lxd read-only");
        return {};
    };
    auto attach = [&]() -> Result<> {
        // Already the host's directory: nothing to do. Otherwise (absent, or covered by the
        // empty tmpfs a detach left over a locked bind) the bind goes on top.
        struct stat st {};
        if (::stat("/dev/lxd", &st) == 0 && st.st_dev == host.st_dev && st.st_ino == host.st_ino)
            return {};
        if (::mkdir("/dev/lxd", 0755) < 0 && errno != EEXIST)
            return log_error_value(errno, "Cannot create /dev/lxd");
        if (::move_mount(tree.get(), "", AT_FDCWD, "/dev/lxd", MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return log_error_value(errno, "Cannot mount /dev/lxd");
        return {};
    };
    return in_container_mntns(init_pid, prepare, attach);
}

Result<> devlxd_detach_running(pid_t init_pid) {
    auto detach = []() -> Result<> {
        // Every layer, in case the guest stacked its own mounts there.
        while (::umount2("/dev/lxd", MNT_DETACH) == 0) {
        }
        if (errno != EINVAL && errno != ENOENT)
            return log_error_value(errno, "Cannot unmount /dev/lxd");
        if (::rmdir("/dev/lxd") == 0 || errno == ENOENT)
            return {};
        if (errno != EBUSY)
            return log_error_value(errno, "Cannot remove /dev/lxd");
        // A privileged container's start-time bind is locked (lock_mounts()) and cannot be
        // unmounted: an empty read-only tmpfs over it hides the socket instead.
        Fd empty =
            make_fs("tmpfs", "size=4k,mode=755",
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        if (!empty ||
            ::move_mount(empty.get(), "", AT_FDCWD, "/dev/lxd", MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return log_error_value(errno, "Cannot hide /dev/lxd");
        return {};
    };
    return in_container_mntns(
        init_pid, [] { return Result<>(); }, detach);
}

} // namespace lodge::runtime
