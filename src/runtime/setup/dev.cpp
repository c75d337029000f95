// The container's /dev (runtime.md §3): a small tmpfs with the standard nodes, a private devpts
// instance, the console pty, mqueue, optional host pass-through nodes and the per-boot boot_id.
#include "common/log.hpp"
#include "runtime/setup/mountapi.hpp"
#include "runtime/setup/setup.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {

struct Node {
    const char* name;
    unsigned major, minor;
};
constexpr Node standard_nodes[] = {
    {"full", 1, 7}, {"null", 1, 3},    {"random", 1, 8},
    {"tty", 5, 0},  {"urandom", 1, 9}, {"zero", 1, 5},
};

int create_placeholder(int dev, const char* name) {
    int fd = ::openat(dev, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0000);
    if (fd < 0)
        return -errno;
    ::close(fd);
    return 0;
}

int bind_host_node(int dev, const char* host_path, const char* name) {
    Fd tree = clone_tree(AT_FDCWD, host_path, false);
    if (!tree)
        return -errno;
    if (int r = create_placeholder(dev, name); r < 0 && r != -EEXIST)
        return r;
    Fd target = open_in_root(dev, name, O_PATH, false);
    if (!target)
        return -errno;
    return attach_tree(tree.get(), target.get());
}

Result<> fill_nodes(const SetupContext& ctx, int dev) {
    for (auto& n : standard_nodes) {
        if (!ctx.userns) {
            // Real nodes on our own tmpfs: a container that chmods them changes nothing on the
            // host, which a bind of the host's nodes would.
            if (::mknodat(dev, n.name, S_IFCHR | 0666, makedev(n.major, n.minor)) < 0 &&
                errno != EEXIST)
                return log_error_value(errno, "Failed to create /dev/%s", n.name);
            if (::fchmodat(dev, n.name, 0666, 0) < 0)
                return log_error_value(errno, "Failed to set the mode of /dev/%s", n.name);
        } else {
            // mknod is refused in a user namespace: bind the host's node (LXC does the same).
            std::string host = std::string("/dev/") + n.name;
            if (int r = bind_host_node(dev, host.c_str(), n.name); r < 0)
                return log_error_value(r, "Failed to bind %s", host.c_str());
        }
    }
    struct Link {
        const char* name;
        const char* target;
    };
    static const Link links[] = {
        {"fd", "/proc/self/fd"},
        {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"},
        // CONTRACT §5: journald and syslog daemons both accept this path.
        {"log", "/run/systemd/journal/dev-log"},
    };
    for (auto& l : links)
        if (::symlinkat(l.target, dev, l.name) < 0 && errno != EEXIST)
            return log_error_value(errno, "Failed to create /dev/%s", l.name);
    return {};
}

// /dev/fuse and /dev/net/tun iff the host has them. Privileged containers get nodes of their
// own with the host's mode; a bind would let them chmod the host's node.
Result<> add_optional_host_nodes(const SetupContext& ctx, int dev) {
    struct Optional {
        const char* host;
        const char* dir; // parent inside /dev, or nullptr
        const char* name;
    };
    static const Optional nodes[] = {{"/dev/fuse", nullptr, "fuse"},
                                     {"/dev/net/tun", "net", "tun"}};
    for (auto& n : nodes) {
        struct stat st {};
        if (::stat(n.host, &st) < 0 || !S_ISCHR(st.st_mode))
            continue;
        Fd parent;
        int dirfd = dev;
        if (n.dir) {
            if (::mkdirat(dev, n.dir, 0755) < 0 && errno != EEXIST)
                return log_error_value(errno, "Failed to create /dev/%s", n.dir);
            parent = open_in_root(dev, n.dir, O_DIRECTORY | O_RDONLY, false);
            if (!parent)
                return log_error_value(errno, "Failed to open /dev/%s", n.dir);
            dirfd = parent.get();
        }
        if (!ctx.userns) {
            if (::mknodat(dirfd, n.name, S_IFCHR | (st.st_mode & 07777), st.st_rdev) < 0 &&
                errno != EEXIST)
                return log_error_value(errno, "Failed to create %s", n.host);
        } else if (int r = bind_host_node(dirfd, n.host, n.name); r < 0) {
            log_warning_errno(r, "Failed to bind %s", n.host);
        }
    }
    return {};
}

Result<> mount_devpts_and_console(SetupContext& ctx, int dev) {
    if (::mkdirat(dev, "pts", 0755) < 0 && errno != EEXIST)
        return log_error_value(errno, "Failed to create /dev/pts");
    Fd pts = make_fs("devpts", "newinstance,gid=5,mode=0620,ptmxmode=0666,max=1024",
                     MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
    if (!pts)
        return log_error_value(errno, "Failed to create the container's devpts instance");
    if (int r = mount_in_root(dev, "pts", pts.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /dev/pts");

    // /dev/ptmx: a bind of the instance's ptmx (not a symlink), as LXC does.
    Fd ptmx_tree = clone_tree(dev, "pts/ptmx", false);
    if (!ptmx_tree)
        return log_error_value(errno, "Failed to clone /dev/pts/ptmx");
    if (int r = create_placeholder(dev, "ptmx"); r < 0 && r != -EEXIST)
        return log_error_value(r, "Failed to create /dev/ptmx");
    if (int r = mount_in_root(dev, "ptmx", ptmx_tree.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /dev/ptmx");

    // The console: a pty pair from the container's own devpts instance.
    Fd master(::openat(dev, "pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
    if (!master)
        return log_error_value(errno, "Failed to allocate the console pty");
    int unlock = 0;
    if (::ioctl(master.get(), TIOCSPTLCK, &unlock) < 0)
        return log_error_value(errno, "Failed to unlock the console pty");
    Fd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave)
        return log_error_value(errno, "Failed to open the console pty");
    if (::fchmod(slave.get(), 0620) < 0)
        return log_error_value(errno, "Failed to set the console's mode");
    struct termios tio {};
    if (::tcgetattr(slave.get(), &tio) == 0) {
        tio.c_cflag |= CLOCAL;
        ::tcsetattr(slave.get(), TCSANOW, &tio);
    }
    Fd console_tree = clone_tree(slave.get(), "", false);
    if (!console_tree)
        return log_error_value(errno, "Failed to clone the console pty");
    if (int r = create_placeholder(dev, "console"); r < 0 && r != -EEXIST)
        return log_error_value(r, "Failed to create /dev/console");
    if (int r = mount_in_root(dev, "console", console_tree.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /dev/console");
    ctx.console_master = std::move(master);
    ctx.console_slave = std::move(slave);
    return {};
}

Result<> mount_mqueue(int dev) {
    if (::mkdirat(dev, "mqueue", 0755) < 0 && errno != EEXIST)
        return log_error_value(errno, "Failed to create /dev/mqueue");
    // Fresh mqueue from the container's IPC namespace, privileged or not (CONTRACT §5).
    Fd mq = make_fs("mqueue", "", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    if (!mq)
        return log_error_value(errno, "Failed to create the container's mqueue");
    if (int r = mount_in_root(dev, "mqueue", mq.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /dev/mqueue");
    return {};
}

Result<> mount_boot_id(const SetupContext& ctx, int dev) {
    int fd = ::openat(dev, ".lxc-boot-id", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0)
        return log_error_value(errno, "Failed to create /dev/.lxc-boot-id");
    std::string text = ctx.boot_id + "\n";
    ssize_t n = ::write(fd, text.data(), text.size());
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        return log_error_value(EIO, "Failed to write /dev/.lxc-boot-id");
    Fd tree = clone_tree(dev, ".lxc-boot-id", false);
    if (!tree)
        return log_error_value(errno, "Failed to clone /dev/.lxc-boot-id");
    if (int r = set_mount_attr(tree.get(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
                                               MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        r < 0)
        return log_error_value(r, "Failed to make the boot id read-only");
    if (int r = mount_in_root(ctx.root, "proc/sys/kernel/random/boot_id", tree.get(), Create::none);
        r < 0)
        return log_error_value(r, "Failed to mount the boot id");
    return {};
}

Result<> mount_devlxd(const SetupContext& ctx, int dev) {
    if (ctx.devlxd_dir.empty() || ctx.devlxd_tree < 0)
        return {};
    if (int r = mount_in_root(dev, "lxd", ctx.devlxd_tree, Create::dir); r < 0)
        return log_error_value(r, "Failed to mount /dev/lxd");
    return {};
}

} // namespace

Result<> setup_dev(SetupContext& ctx) {
    Fd tmpfs = make_fs("tmpfs", "size=500000,mode=755", 0);
    if (!tmpfs)
        return log_error_value(errno, "Failed to create the container's /dev");
    if (int r = mount_in_root(ctx.root, "dev", tmpfs.get(), Create::none); r < 0)
        return log_error_value(r, "Failed to mount /dev");
    Fd dev = open_in_root(ctx.root, "dev", O_DIRECTORY | O_RDONLY, false);
    if (!dev)
        return log_error_value(errno, "Failed to open the container's /dev");
    ::umask(0);
    Result<> r = add_optional_host_nodes(ctx, dev.get());
    if (r)
        r = mount_mqueue(dev.get());
    if (r)
        r = mount_devlxd(ctx, dev.get());
    if (r)
        r = fill_nodes(ctx, dev.get());
    if (r)
        r = mount_devpts_and_console(ctx, dev.get());
    if (r)
        r = mount_boot_id(ctx, dev.get());
    ::umask(022);
    return r;
}

} // namespace lodge::runtime
