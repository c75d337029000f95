#include "daemon/registry.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "daemon/snapshot-store.hpp"
#include "daemon/tree-copy.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <memory>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

// Owner-only, as Docker and Podman keep their stores (LXD uses 0100; both keep every host user
// out, and 0700 also lets root's own tools list what is there).
constexpr mode_t root_only = 0700;

std::string containers_dir() {
    return paths::state_dir() + "/containers";
}

struct DirCloser {
    void operator()(DIR* d) const { ::closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// A DIR stream over its own copy of `fd`, so the caller's fd (and offset) stays its own.
DirPtr open_dir_stream(int fd) {
    int copy = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (copy < 0)
        return nullptr;
    DirPtr d(::fdopendir(copy));
    if (!d)
        ::close(copy);
    return d;
}

// The state dir keeps tmpfiles.d's 0711; containers/ below it is root-only.
int make_containers_dir(std::string& error) {
    int r = mkdir_p(paths::state_dir(), 0711);
    if (r == 0 && ::mkdir(containers_dir().c_str(), root_only) < 0 && errno != EEXIST)
        r = -errno;
    if (r < 0)
        error = "Cannot create " + containers_dir() + ": " + std::strerror(-r);
    return r;
}

// Makes the open directory `fd` root:root 0700 unless it already is.
int make_root_only(int fd, const std::string& path) {
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return log_error_errno(errno, "Cannot stat %s", path.c_str());
    if (st.st_uid == 0 && st.st_gid == 0 && (st.st_mode & 07777) == root_only)
        return 0;
    if (::fchown(fd, 0, 0) < 0 || ::fchmod(fd, root_only) < 0)
        return log_error_errno(errno, "Cannot make %s root-only", path.c_str());
    log_info("Made %s root-only (it was %04o, owned by %u:%u)", path.c_str(),
             static_cast<unsigned>(st.st_mode & 07777), static_cast<unsigned>(st.st_uid),
             static_cast<unsigned>(st.st_gid));
    return 0;
}

// Hidden names never pass check_container_name(), so they cannot clash with a container.
// mkdtemp makes them 0700: the work directories are as root-only as the containers.
std::string temp_dir(const char* kind, const std::string& name) {
    std::string t = containers_dir() + "/." + kind + "-" + name + "-XXXXXX";
    if (!::mkdtemp(t.data()))
        return {};
    return t;
}

void clear_undeletable_flags(int fd) {
    int flags = 0;
    if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
        return;
    int wanted = flags & ~(FS_IMMUTABLE_FL | FS_APPEND_FL);
    if (wanted != flags)
        ::ioctl(fd, FS_IOC_SETFLAGS, &wanted);
}

// Takes the immutable and append-only flags off everything below the open directory `dir_fd`
// that can carry them (directories and regular files; a device node is never opened, that
// would reach the device), without following symlinks or leaving the filesystem `dev`.
void clear_tree_flags(int dir_fd, dev_t dev) {
    clear_undeletable_flags(dir_fd);
    DirPtr d = open_dir_stream(dir_fd);
    if (!d)
        return;
    while (dirent* e = ::readdir(d.get())) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st {};
        if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            Fd sub(::openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (sub)
                clear_tree_flags(sub.get(), dev);
        } else if (S_ISREG(st.st_mode)) {
            Fd f(::openat(dir_fd, e->d_name,
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
            struct stat now {};
            if (f && ::fstat(f.get(), &now) == 0 && S_ISREG(now.st_mode))
                clear_undeletable_flags(f.get());
        }
    }
}

// Removes a trash or unfinished-create directory. Such a tree may hold files that cannot be
// unlinked as they are (an immutable file from an older import, or one a privileged guest
// made): their flags are cleared, and the removal tried again. Returns 0 or -errno.
int remove_work_dir(const std::string& path) {
    // Rootfs on btrfs are subvolumes, which remove_tree() (one filesystem) does not enter.
    destroy_subvolumes(path);
    if (remove_tree(path) == 0)
        return 0;
    Fd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (dir && ::fstat(dir.get(), &st) == 0)
        clear_tree_flags(dir.get(), st.st_dev);
    return remove_tree(path);
}

} // namespace

std::vector<std::string> Registry::list() const {
    std::vector<std::string> names;
    DIR* d = ::opendir(containers_dir().c_str());
    if (!d)
        return names;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (!check_container_name(n).empty())
            continue;
        struct stat st {};
        if (::stat(paths::container_config(n).c_str(), &st) == 0)
            names.push_back(n);
    }
    ::closedir(d);
    return names;
}

int Registry::load(const std::string& name, ContainerConfig& out, std::string& error) const {
    int r = load_container_config(paths::container_config(name), out, error);
    // The directory's name is the container's (a rename cut short before config.json caught up).
    out.name = name;
    return r;
}

int Registry::save(const ContainerConfig& c) const {
    return save_container_config(paths::container_config(c.name), c);
}

int Registry::prepare(const std::string& name, std::string& work_dir, std::string& error) const {
    if (int r = make_containers_dir(error); r < 0)
        return r;
    struct stat st {};
    if (::lstat(paths::container_dir(name).c_str(), &st) == 0) {
        error = "Container \"" + name + "\" already exists";
        return -EEXIST;
    }
    std::string tmp = temp_dir("new", name);
    if (tmp.empty()) {
        error = "Cannot create a directory in " + containers_dir() + ": " + std::strerror(errno);
        return -errno;
    }
    if (int r = make_rootfs_dir(tmp + "/rootfs", 0755); r < 0) {
        int err = -r;
        error = std::string("Cannot create the rootfs directory: ") + std::strerror(err);
        remove_tree(tmp);
        return -err;
    }
    work_dir = tmp;
    return 0;
}

int Registry::commit(ContainerConfig& c, const std::string& work_dir, const KeyMap& image_keys,
                     std::string& error) const {
    for (auto& [k, v] : image_keys)
        if (k.rfind("image.", 0) == 0 || k == "volatile.base_image")
            c.config[k] = v;
    if (int r = save_container_config(work_dir + "/config.json", c); r < 0) {
        error = std::string("Cannot write config.json: ") + std::strerror(-r);
        return r;
    }
    // RENAME_NOREPLACE: two creates of one name race here, and exactly one wins.
    if (::renameat2(AT_FDCWD, work_dir.c_str(), AT_FDCWD, paths::container_dir(c.name).c_str(),
                    RENAME_NOREPLACE) < 0) {
        int err = errno;
        error = err == EEXIST
                    ? "Container \"" + c.name + "\" already exists"
                    : std::string("Cannot put the container in place: ") + std::strerror(err);
        return -err;
    }
    return 0;
}

int Registry::retire(const std::string& name, std::string& trash) const {
    std::string dir = temp_dir("trash", name);
    if (dir.empty())
        return -errno;
    // The rename (over the empty trash dir) is the delete; removing the files afterwards may be
    // cut short by a crash or fail, and lodged removes the leftovers at its next start.
    if (::rename(paths::container_dir(name).c_str(), dir.c_str()) < 0) {
        int err = errno;
        ::rmdir(dir.c_str());
        if (err != ENOENT)
            return -err;
        log_warning("Container \"%s\": its directory was already gone", name.c_str());
        trash.clear();
        return 0;
    }
    trash = dir;
    return 0;
}

int Registry::remove_retired(const std::string& trash) {
    return remove_work_dir(trash);
}

void Registry::secure() const {
    std::string error;
    if (make_containers_dir(error) < 0) {
        log_error("%s", error.c_str());
        return;
    }
    std::string top = containers_dir();
    Fd dir(::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) {
        log_error_errno(errno, "Cannot open %s", top.c_str());
        return;
    }
    make_root_only(dir.get(), top);
    if (DirPtr d = open_dir_stream(dir.get())) {
        while (dirent* e = ::readdir(d.get())) {
            if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
                continue;
            Fd sub(::openat(dir.get(), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (sub)
                make_root_only(sub.get(), top + "/" + e->d_name);
        }
    }
}

std::vector<std::string> Registry::leftovers() const {
    std::vector<std::string> stale;
    if (DirPtr d{::opendir(containers_dir().c_str())}) {
        while (dirent* e = ::readdir(d.get())) {
            std::string n = e->d_name;
            if (n.rfind(".new-", 0) == 0 || n.rfind(".trash-", 0) == 0)
                stale.push_back(containers_dir() + "/" + n);
        }
    }
    // Unfinished snapshots and restores (a restore whose swap happened is finished first).
    for (auto& path : snapshots::recover(list()))
        stale.push_back(path);
    // The copy jails' empty mount points (tree-copy.cpp).
    if (DirPtr d{::opendir(paths::runtime_dir().c_str())}) {
        while (dirent* e = ::readdir(d.get()))
            if (std::string(e->d_name).rfind("copy-", 0) == 0)
                ::unlinkat(::dirfd(d.get()), e->d_name, AT_REMOVEDIR);
    }
    return stale;
}

} // namespace lodge::daemon
