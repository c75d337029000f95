#include "daemon/tree-copy.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::daemon {
namespace {

// The root directory of a btrfs subvolume always has this inode number.
constexpr ino_t btrfs_subvolume_root_ino = 256;

bool is_btrfs(int fd) {
    struct statfs fs {};
    return ::fstatfs(fd, &fs) == 0 && fs.f_type == BTRFS_SUPER_MAGIC;
}

bool is_subvolume(int fd) {
    struct stat st {};
    return is_btrfs(fd) && ::fstat(fd, &st) == 0 && st.st_ino == btrfs_subvolume_root_ino;
}

std::string parent_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

template <typename Args> bool set_name(Args& args, const std::string& name) {
    if (name.empty() || name.size() >= sizeof args.name)
        return false;
    std::memcpy(args.name, name.c_str(), name.size() + 1);
    return true;
}

// A writable snapshot of the subvolume `src` as `dst`. -EXDEV and the like: not possible here.
int btrfs_snapshot(int src_fd, const std::string& dst) {
    Fd parent(::open(parent_of(dst).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent)
        return -errno;
    if (!is_btrfs(parent.get()))
        return -EXDEV;
    struct btrfs_ioctl_vol_args_v2 args {};
    args.fd = src_fd;
    if (!set_name(args, base_of(dst)))
        return -ENAMETOOLONG;
    return ::ioctl(parent.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) < 0 ? -errno : 0;
}

// Sets up the jail and execs cp; never returns. Runs in a child of the worker.
[[noreturn]] void exec_jailed_cp(const std::string& jail, int src_fd, const std::string& dst,
                                 int stderr_fd, pid_t parent) {
    auto die = [&](const char* what) {
        dprintf(stderr_fd, "cannot set up the copy (%s): %s\n", what, std::strerror(errno));
        _exit(125);
    };
    // cp goes with the worker (which goes with lodged): nothing writes into a work directory
    // that the next lodged is removing.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || ::getppid() != parent)
        _exit(125);
    if (::dup2(stderr_fd, STDERR_FILENO) < 0)
        die("stderr");
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0)
        ::dup2(null, STDIN_FILENO), ::dup2(null, STDOUT_FILENO);
    // Detached clones, made in lodged's namespace, where the source fd's mount lives;
    // non-recursive for the source and target: nothing mounted below them comes along.
    auto clone = [](int dirfd, const char* path, unsigned extra) {
        return Fd(::open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | extra));
    };
    // The source as the worker opened it (O_NOFOLLOW), never its path again.
    Fd source = clone(src_fd, "", AT_EMPTY_PATH);
    if (!source)
        die("source");
    struct mount_attr read_only {};
    read_only.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
    if (::mount_setattr(source.get(), "", AT_EMPTY_PATH, &read_only, sizeof read_only) < 0)
        die("read-only source");
    Fd target = clone(AT_FDCWD, dst.c_str(), 0);
    Fd usr = clone(AT_FDCWD, "/usr", AT_RECURSIVE);
    if (!target || !usr)
        die("target");
    // cp's loader and libraries: /lib* and /bin are symlinks into /usr on merged-/usr hosts.
    struct Top {
        std::string name, link;
        Fd tree;
    };
    std::vector<Top> tops;
    for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
        std::string host = std::string("/") + top;
        struct stat st {};
        if (::lstat(host.c_str(), &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            char link[PATH_MAX];
            ssize_t n = ::readlink(host.c_str(), link, sizeof link - 1);
            if (n > 0)
                tops.push_back({top, std::string(link, static_cast<size_t>(n)), Fd()});
        } else if (S_ISDIR(st.st_mode)) {
            Fd tree = clone(AT_FDCWD, host.c_str(), AT_RECURSIVE);
            if (!tree)
                die(top);
            tops.push_back({top, "", std::move(tree)});
        }
    }
    if (::unshare(CLONE_NEWNS) < 0)
        die("unshare");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
        die("private mounts");
    if (::mount("tmpfs", jail.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0)
        die("tmpfs");
    auto attach = [&](Fd& tree, const char* name) {
        std::string at = jail + "/" + name;
        if (::mkdir(at.c_str(), 0755) < 0 ||
            ::move_mount(tree.get(), "", AT_FDCWD, at.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            die(name);
    };
    attach(source, "src");
    attach(target, "dst");
    attach(usr, "usr");
    for (auto& top : tops) {
        if (!top.link.empty()) {
            if (::symlink(top.link.c_str(), (jail + "/" + top.name).c_str()) < 0)
                die(top.name.c_str());
        } else {
            attach(top.tree, top.name.c_str());
        }
    }
    if (::chdir(jail.c_str()) < 0 || ::chroot(".") < 0 || ::chdir("/") < 0)
        die("chroot");
    const char* argv[] = {"cp", "--archive", "--reflink=auto", "--one-file-system",
                          "-T", "/src",      "/dst",           nullptr};
    const char* envp[] = {"LC_ALL=C", "PATH=/usr/bin:/bin", nullptr};
    ::execve("/usr/bin/cp", const_cast<char**>(argv), const_cast<char**>(envp));
    die("exec /usr/bin/cp");
    _exit(127);
}

// cp's write count so far, from /proc/PID/io (reflinked extents are not written).
uint64_t bytes_written(pid_t pid) {
    std::string text;
    if (read_file("/proc/" + std::to_string(pid) + "/io", text) < 0)
        return 0;
    auto at = text.find("wchar: ");
    return at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + 7, nullptr, 10);
}

int jailed_cp(const std::string& src, int src_fd, const std::string& dst,
              const CopyProgress& progress, std::string& error) {
    std::string base = paths::runtime_dir();
    if (int r = mkdir_p(base, 0755); r < 0) {
        error = "Cannot create " + base + ": " + std::strerror(-r);
        return r;
    }
    // An empty mount point in the host's namespace; the jail's tmpfs is mounted on it only in
    // cp's own namespace. lodged removes any that a crash left (Registry::leftovers).
    std::string jail = base + "/copy-XXXXXX";
    if (!::mkdtemp(jail.data())) {
        int err = errno;
        error = "Cannot create a directory in " + base + ": " + std::strerror(err);
        return -err;
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) < 0) {
        int err = errno;
        ::rmdir(jail.c_str());
        error = std::string("Cannot create a pipe: ") + std::strerror(err);
        return -err;
    }
    Fd err_read(pipe_fds[0]), err_write(pipe_fds[1]);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        int err = errno;
        ::rmdir(jail.c_str());
        error = std::string("Cannot fork: ") + std::strerror(err);
        return -err;
    }
    if (pid == 0) {
        err_read.reset();
        exec_jailed_cp(jail, src_fd, dst, err_write.get(), parent);
    }
    err_write.reset();
    PidFd child = PidFd::open(pid);
    std::string messages;
    bool exited = false;
    while (!exited) {
        struct pollfd p[2] = {{err_read.get(), POLLIN, 0}, {child.get(), POLLIN, 0}};
        int n = ::poll(p, child.valid() ? 2 : 1, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (p[0].revents & (POLLIN | POLLHUP))) {
            char buf[4096];
            ssize_t got = ::read(err_read.get(), buf, sizeof buf);
            if (got > 0 && messages.size() < 4096)
                messages.append(buf, static_cast<size_t>(got));
            if (got == 0 && !child.valid())
                break;
        }
        if (n > 0 && child.valid() && (p[1].revents & POLLIN))
            exited = true;
        if (progress && !exited)
            progress(bytes_written(pid));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    ::rmdir(jail.c_str());
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    while (!messages.empty() && messages.back() == '\n')
        messages.pop_back();
    error = "Copy of " + src + " failed" + (messages.empty() ? "" : ": " + messages);
    log_error("%s", error.c_str());
    return -EIO;
}

// Deletes the subvolume `name` in `dir_fd`; one holding subvolumes of its own has them
// deleted first.
void destroy_below(int dir_fd, int depth);

void destroy_subvolume(int parent_fd, const char* name) {
    struct btrfs_ioctl_vol_args args {};
    if (!set_name(args, name))
        return;
    if (::ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0)
        return;
    if (errno == ENOTEMPTY) {
        Fd sub(::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub)
            destroy_below(sub.get(), 64);
        if (::ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0)
            return;
    }
    log_warning("Cannot delete the btrfs subvolume %s: %s", name, std::strerror(errno));
}

void destroy_below(int dir_fd, int depth) {
    if (depth <= 0)
        return;
    int copy = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = copy < 0 ? nullptr : ::fdopendir(copy);
    if (!d) {
        if (copy >= 0)
            ::close(copy);
        return;
    }
    std::vector<std::string> subvolumes, dirs;
    struct stat self {};
    ::fstat(dir_fd, &self);
    while (dirent* e = ::readdir(d)) {
        if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN)
            continue;
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st {};
        if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (st.st_ino == btrfs_subvolume_root_ino && st.st_dev != self.st_dev)
            subvolumes.push_back(e->d_name);
        else if (st.st_dev == self.st_dev)
            dirs.push_back(e->d_name);
    }
    ::closedir(d);
    for (auto& name : subvolumes)
        destroy_subvolume(dir_fd, name.c_str());
    for (auto& name : dirs) {
        Fd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub)
            destroy_below(sub.get(), depth - 1);
    }
}

} // namespace

const char* copy_method_name(CopyMethod m) {
    return m == CopyMethod::btrfs_snapshot ? "btrfs snapshot" : "cp --reflink=auto";
}

int make_rootfs_dir(const std::string& path, unsigned mode) {
    Fd parent(::open(parent_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent)
        return -errno;
    if (is_btrfs(parent.get())) {
        struct btrfs_ioctl_vol_args args {};
        if (!set_name(args, base_of(path)))
            return -ENAMETOOLONG;
        if (::ioctl(parent.get(), BTRFS_IOC_SUBVOL_CREATE, &args) == 0)
            return ::fchmodat(parent.get(), base_of(path).c_str(), mode, 0) < 0 ? -errno : 0;
        log_warning("Cannot create the btrfs subvolume %s (%s); a plain directory instead",
                    path.c_str(), std::strerror(errno));
    }
    return ::mkdirat(parent.get(), base_of(path).c_str(), mode) < 0 ? -errno : 0;
}

int copy_tree(const std::string& src, const std::string& dst, const CopyProgress& progress,
              CopyMethod& used, std::string& error) {
    Fd source(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!source) {
        int err = errno;
        error = "Cannot open " + src + ": " + std::strerror(err);
        return -err;
    }
    if (is_subvolume(source.get())) {
        int r = btrfs_snapshot(source.get(), dst);
        if (r == 0) {
            used = CopyMethod::btrfs_snapshot;
            return 0;
        }
        if (r != -EXDEV)
            log_warning("Cannot snapshot the subvolume %s (%s); copying it instead", src.c_str(),
                        std::strerror(-r));
    }
    used = CopyMethod::cp;
    if (int r = make_rootfs_dir(dst, 0755); r < 0) {
        error = "Cannot create " + dst + ": " + std::strerror(-r);
        return r;
    }
    return jailed_cp(src, source.get(), dst, progress, error);
}

void destroy_subvolumes(const std::string& path, int depth) {
    Fd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (dir && is_btrfs(dir.get()))
        destroy_below(dir.get(), depth);
}

} // namespace lodge::daemon
