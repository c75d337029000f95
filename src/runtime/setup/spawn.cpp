#include "runtime/setup/spawn.hpp"
#include "common/fdpass.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "runtime/net.hpp"
#include "runtime/setup/idmap-shift.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/security.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::runtime {
namespace {

// Hands the failure (logged where it happened) to the parent, which makes it the start's
// reason, and ends the child.
[[noreturn]] void child_fail(int sync, const Error& e) {
    send_with_fd(sync, "E" + e.message);
    _exit(1);
}

std::vector<std::string> init_environment(const ContainerConfig& c) {
    std::vector<std::string> env;
    for (auto& [k, v] : c.config)
        if (k.rfind("environment.", 0) == 0)
            env.push_back(k.substr(12) + "=" + v);
    env.push_back("container=lxc");
    return env;
}

// `lo` up, as LXD's containers start (inits such as busybox's never do it themselves). The child
// is in the container's network namespace already: one ioctl, where the supervisor would need a
// thread in that namespace and a netlink socket.
Result<> bring_up_loopback() {
    Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock)
        return log_error_value(errno, "Cannot open a socket to bring up lo in the container");
    struct ifreq ifr {};
    std::memcpy(ifr.ifr_name, "lo", 3);
    if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0)
        return log_error_value(errno, "Cannot find lo in the container");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0)
        return log_error_value(errno, "Cannot bring up lo in the container");
    return {};
}

[[noreturn]] void child_main(const SpawnOptions& o, const std::vector<DiskSource>& disks, int sync,
                             int devlxd_tree, const PayloadJoin& join, bool born_in_cgroup2) {
    const ContainerConfig& c = *o.config;
    log_set_prefix("lodge-supervisor[" + c.name + "] setup");
    std::string go;
    Fd rootfs_tree;
    if (recv_with_fd(sync, go, rootfs_tree) <= 0 || go != "go" || !rootfs_tree)
        _exit(1); // the parent is gone or gave up; it reports the reason itself
    // Before the cgroup namespace is made: its root is where we are then.
    if (auto joined = join_payload(join, born_in_cgroup2); !joined)
        child_fail(sync, joined.error());

    bool userns = !c.privileged();
    if (userns) {
        if (::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0 || ::setgroups(0, nullptr) < 0)
            child_fail(sync, log_error_value(errno, "Failed to become root in the user namespace"));
    }
    if (::unshare(CLONE_NEWCGROUP) < 0)
        child_fail(sync, log_error_value(errno, "Failed to create the cgroup namespace"));
    if (auto up = bring_up_loopback(); !up)
        child_fail(sync, up.error());
    if (::sethostname(c.name.data(), c.name.size()) < 0)
        child_fail(sync, log_error_value(errno, "Failed to set the hostname"));
    // Nothing mounted from here on may propagate back to the host.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) < 0)
        child_fail(sync, log_error_value(errno, "Failed to make the mount namespace a slave"));
    Fd staging(::open(o.staging.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!staging || attach_tree(rootfs_tree.get(), staging.get()) < 0)
        child_fail(sync, log_error_value(errno, "Failed to attach the rootfs"));
    Fd root(::open(o.staging.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root)
        child_fail(sync, log_error_value(errno, "Failed to open the rootfs"));

    SetupContext ctx;
    ctx.config = &c;
    ctx.userns = userns;
    ctx.root = root.get();
    ctx.boot_id = o.boot_id;
    ctx.lxcfs_dir = o.lxcfs_dir;
    ctx.devlxd_dir = o.devlxd_dir;
    ctx.disk_sources = &disks;
    ctx.devlxd_tree = devlxd_tree;

    // A setup step that failed ends the child with its Error.
    auto must = [&](const Result<>& done) {
        if (!done)
            child_fail(sync, done.error());
    };
    must(check_init(ctx, c.name));
    must(ensure_base_dirs(ctx));
    must(mount_proc_sys(ctx));
    must(mount_cgroup(ctx));
    must(mount_passthrough(ctx));
    must(mount_disk_devices(ctx));
    must(setup_dev(ctx));
    if (userns)
        must(mount_lxcfs(ctx));
    if (int r = send_with_fd(sync, "console", ctx.console_master.get()); r < 0)
        _exit(1);
    ctx.console_master.reset();
    must(enter_root(ctx));
    if (!userns) {
        must(lock_mounts(ctx));
        // Binds made before the lock could never be taken out again, and lxcfs binds must go
        // when lxcfs dies: the parent adds them to the locked namespace now.
        std::string reply;
        Fd none;
        if (send_with_fd(sync, "locked") < 0 || recv_with_fd(sync, reply, none) <= 0 ||
            reply != "continue")
            _exit(1);
    }
    root.reset();
    staging.reset();

    int console = ctx.console_slave.get();
    if (::setsid() < 0 || ::ioctl(console, TIOCSCTTY, 0) < 0)
        child_fail(sync,
                   log_error_value(errno, "Failed to make the console the controlling terminal"));
    // Until exec, errors still go to the supervisor's log through a close-on-exec copy.
    int log_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    for (int fd = 0; fd < 3; fd++)
        if (::dup2(console, fd) < 0)
            child_fail(sync, log_error_value(errno, "Failed to attach the console"));
    // Only 0, 1, 2 survive exec (LXD's forkstart does the same).
    if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        int err = errno;
        ::dup2(log_fd, STDERR_FILENO);
        child_fail(sync, log_error_value(err, "Failed to mark descriptors close-on-exec"));
    }
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::prctl(PR_SET_DUMPABLE, 1);
    reset_signal_state();
    auto fail_with_stderr = [&](const Error& e) {
        ::dup2(log_fd, STDERR_FILENO);
        child_fail(sync, e);
    };
    if (auto dropped = drop_capabilities(c); !dropped)
        fail_with_stderr(dropped.error());
    if (auto loaded = load_seccomp(c); !loaded)
        fail_with_stderr(loaded.error());

    std::vector<std::string> env = init_environment(c);
    std::vector<char*> envp;
    for (auto& e : env)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    char arg0[] = "/sbin/init";
    char* argv[] = {arg0, nullptr};
    ::execve("/sbin/init", argv, envp.data());
    int err = errno;
    ::dup2(log_fd, STDERR_FILENO);
    child_fail(sync, log_error_value(err, "Container \"%s\": failed to exec \"/sbin/init\"",
                                     c.name.c_str()));
}

Result<> write_id_maps(pid_t pid, uint32_t base, uint32_t size) {
    std::string map = "0 " + std::to_string(base) + " " + std::to_string(size) + "\n";
    std::string proc = "/proc/" + std::to_string(pid);
    if (int r = write_file(proc + "/uid_map", map); r < 0)
        return log_error_value(r, "Failed to write the uid map");
    if (int r = write_file(proc + "/gid_map", map); r < 0)
        return log_error_value(r, "Failed to write the gid map");
    return {};
}

// The rootfs as the container's user namespace must see it: an idmapped mount, or, where the
// filesystem has none (or LODGE_IDMAP=shift asks for it), the tree shifted on disk once.
Result<Fd> prepare_rootfs_tree(const SpawnOptions& o, pid_t child) {
    const ContainerConfig& c = *o.config;
    std::string container_dir = o.rootfs.substr(0, o.rootfs.rfind('/'));
    uint32_t base = c.privileged() ? 0 : c.idmap_base();
    uint32_t shifted = shifted_base(container_dir);
    if (shifted != 0 && shifted != base) {
        if (auto unshifted = shift_rootfs(container_dir, shifted, 0, c.idmap_size()); !unshifted)
            return unshifted.error();
        shifted = 0;
    }
    Fd tree = clone_tree(AT_FDCWD, o.rootfs, false);
    if (!tree)
        return log_error_value(errno, "Cannot open the rootfs %s", o.rootfs.c_str());
    if (base == 0 || shifted == base)
        return tree;
    const char* mode = std::getenv("LODGE_IDMAP");
    bool force_shift = mode && std::strcmp(mode, "shift") == 0;
    if (!force_shift) {
        Fd userns(
            ::open(("/proc/" + std::to_string(child) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
        if (!userns)
            return log_error_value(errno, "Cannot open the container's user namespace");
        int r = set_mount_attr(tree.get(), MOUNT_ATTR_IDMAP, 0, userns.get());
        if (r == 0)
            return tree;
        if (r != -EINVAL && r != -EOPNOTSUPP && r != -ENOSYS && r != -EPERM)
            return log_error_value(r, "Cannot idmap the rootfs %s", o.rootfs.c_str());
        log_info("%s does not support idmapped mounts (%s)", o.rootfs.c_str(), std::strerror(-r));
    }
    if (auto shifted_now = shift_rootfs(container_dir, 0, base, c.idmap_size()); !shifted_now)
        return shifted_now.error();
    Fd shifted_tree = clone_tree(AT_FDCWD, o.rootfs, false);
    if (!shifted_tree)
        return log_error_value(errno, "Cannot open the rootfs %s", o.rootfs.c_str());
    return shifted_tree;
}

} // namespace

std::string new_boot_id() {
    unsigned char b[16];
    if (::getrandom(b, sizeof b, 0) != sizeof b)
        std::memset(b, 0, sizeof b);
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
    char out[37];
    std::snprintf(out, sizeof out,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                  b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                  b[14], b[15]);
    return out;
}

int spawn_container(const SpawnOptions& o, Spawned& out, std::string& error) {
    const ContainerConfig& c = *o.config;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        error = std::string("socketpair: ") + std::strerror(errno);
        return -errno;
    }
    Fd parent_end(pair[0]), child_end(pair[1]);
    // Opened as host root, before the user namespace exists; the child inherits the fds.
    std::vector<DiskSource> disks;
    if (int r = open_disk_sources(c, disks, error); r < 0)
        return r;

    // The guest API's directory sits below one only host root may walk (CONTRACT §2), which
    // the child, once root of its own user namespace only, cannot: it gets a clone made here.
    Fd devlxd_tree;
    if (!o.devlxd_dir.empty()) {
        devlxd_tree = clone_tree(AT_FDCWD, o.devlxd_dir, false);
        int r = devlxd_tree
                    ? set_mount_attr(devlxd_tree.get(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
                                                            MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
                    : -errno;
        if (r < 0) {
            error = "Cannot clone " + o.devlxd_dir + ": " + std::strerror(-r);
            log_error("%s", error.c_str());
            return r;
        }
    }

    PayloadJoin join;
    if (auto opened = o.cgroup->open_payload(join); !opened)
        return pass_up(opened.error(), error);
    uint64_t flags =
        CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_PIDFD;
    if (!c.privileged())
        flags |= CLONE_NEWUSER;
    int pidfd = -1;
    struct clone_args args {};
    args.flags = flags;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    bool born_in_cgroup2 = false;
    long pid = -1;
    if (join.cgroup2_dir) { // born in the cgroup2 payload; else it joins by cgroup.procs
        args.flags = flags | CLONE_INTO_CGROUP;
        args.cgroup = static_cast<uint64_t>(join.cgroup2_dir.get());
        pid = ::syscall(SYS_clone3, &args, sizeof args);
        born_in_cgroup2 = pid >= 0;
        args.flags = flags;
        args.cgroup = 0;
    }
    if (pid < 0)
        pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) {
        int err = errno;
        error = std::string("Failed to create the container's namespaces: ") + std::strerror(err);
        log_error("%s", error.c_str());
        return -err;
    }
    if (pid == 0) {
        parent_end.reset();
        child_main(o, disks, child_end.get(), devlxd_tree.get(), join, born_in_cgroup2);
    }
    child_end.reset();
    disks.clear();
    devlxd_tree.reset();
    PidFd init(pidfd, static_cast<pid_t>(pid));

    // Every failure below is logged once, where it happened; `error` carries its text.
    auto abort_child = [&](int err) {
        init.send_signal(SIGKILL);
        siginfo_t si{};
        ::waitid(P_PIDFD, static_cast<id_t>(init.get()), &si, WEXITED);
        return err;
    };
    auto abort_with = [&](const Error& e) { return abort_child(pass_up(e, error)); };

    if (!c.privileged()) {
        if (auto mapped = write_id_maps(init.pid(), c.idmap_base(), c.idmap_size()); !mapped)
            return abort_with(mapped.error());
    }
    join = PayloadJoin{}; // the child joins by itself once it may go
    auto prepared = prepare_rootfs_tree(o, init.pid());
    if (!prepared)
        return abort_with(prepared.error());
    Fd tree = std::move(*prepared);
    // Device nodes an image carries must not open host devices through a user namespace's
    // rootfs (idmapped or shifted alike); /dev is a tmpfs with binds of its own, not this mount.
    if (!c.privileged()) {
        if (int r = set_mount_attr(tree.get(), MOUNT_ATTR_NODEV); r < 0)
            return abort_with(log_error_value(r, "Cannot mount the rootfs nodev"));
    }
    if (o.before_go) {
        // The nic code's -errno + text convention does not log every failure it reports.
        if (int r = o.before_go(init.pid(), error); r < 0) {
            log_error("Container \"%s\": %s", c.name.c_str(), error.c_str());
            return abort_child(r);
        }
    }
    if (int r = send_with_fd(parent_end.get(), "go", tree.get()); r < 0)
        return abort_with(log_error_value(r, "Lost the container's setup process"));
    tree.reset();

    Fd console;
    for (;;) {
        std::string msg;
        Fd fd;
        ssize_t n = recv_with_fd(parent_end.get(), msg, fd);
        if (n < 0)
            return abort_with(
                log_error_value(static_cast<int>(n), "Lost the container's setup process"));
        if (n == 0)
            break; // close-on-exec fired: /sbin/init is running
        if (msg == "console" && fd) {
            console = std::move(fd);
        } else if (msg == "locked") {
            if (!o.lxcfs_dir.empty()) {
                if (auto bound = lxcfs_attach_running(init.pid(), o.lxcfs_dir); !bound)
                    log_warning("Container \"%s\": no lxcfs binds (%s)", c.name.c_str(),
                                bound.error().message.c_str());
            }
            if (int r = send_with_fd(parent_end.get(), "continue"); r < 0)
                return abort_with(log_error_value(r, "Lost the container's setup process"));
        } else if (!msg.empty() && msg[0] == 'E') {
            error = msg.substr(1); // logged by the child
            siginfo_t si{};
            ::waitid(P_PIDFD, static_cast<id_t>(init.get()), &si, WEXITED);
            return -EINVAL;
        }
    }
    if (!console)
        return abort_with(log_error_message(
            ECHILD, "The container's setup process died before starting /sbin/init"));
    out.init = std::move(init);
    out.console_master = std::move(console);
    return 0;
}

} // namespace lodge::runtime
