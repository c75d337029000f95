#include "runtime/setup/mountapi.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lodge::runtime {

Fd open_in_root(int root, const std::string& path, int flags, bool follow_symlinks) {
    struct open_how how {};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    if (!follow_symlinks)
        how.resolve |= RESOLVE_NO_SYMLINKS;
    std::string rel = path;
    while (!rel.empty() && rel.front() == '/')
        rel.erase(0, 1);
    if (rel.empty())
        rel = ".";
    // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a ".." was resolved while any rename
    // or mount happened anywhere on the host (it cannot prove the walk stayed inside); callers
    // are meant to retry. Busybox's sbin/init -> ../bin/busybox hits this when many containers
    // start at once. Bounded, so a guest that renames without pause cannot make us spin.
    int fd = -1;
    for (int i = 0; i < 1000; i++) {
        fd = static_cast<int>(::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
        if (fd >= 0 || errno != EAGAIN)
            break;
    }
    return Fd(fd);
}

Fd make_fs(const char* fstype, const std::string& options, unsigned attr_flags) {
    Fd fs(::fsopen(fstype, FSOPEN_CLOEXEC));
    if (!fs)
        return fs;
    size_t pos = 0;
    while (pos < options.size()) {
        size_t comma = options.find(',', pos);
        std::string opt =
            options.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? options.size() : comma + 1;
        if (opt.empty())
            continue;
        size_t eq = opt.find('=');
        int r = eq == std::string::npos
                    ? ::fsconfig(fs.get(), FSCONFIG_SET_FLAG, opt.c_str(), nullptr, 0)
                    : ::fsconfig(fs.get(), FSCONFIG_SET_STRING, opt.substr(0, eq).c_str(),
                                 opt.substr(eq + 1).c_str(), 0);
        if (r < 0)
            return Fd();
    }
    if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
        return Fd();
    return Fd(::fsmount(fs.get(), FSMOUNT_CLOEXEC, attr_flags));
}

Fd clone_tree(int dirfd, const std::string& path, bool recursive) {
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
    if (path.empty())
        flags |= AT_EMPTY_PATH;
    Fd tree(::open_tree(dirfd, path.c_str(), flags));
    // A clone of a shared mount (everything is shared under systemd) joins its peer group:
    // mounts made on the clone would show up on the host, and pivot_root refuses a shared new
    // root. As a slave it still sees the host's mounts but sends none back.
    struct mount_attr attr {};
    attr.propagation = MS_SLAVE;
    if (tree &&
        ::mount_setattr(tree.get(), "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
                        sizeof attr) < 0 &&
        errno != ENOSYS)
        return Fd();
    return tree;
}

int set_mount_attr(int tree, unsigned attr_set, unsigned attr_clr, int userns_fd, bool recursive) {
    struct mount_attr attr {};
    attr.attr_set = attr_set;
    attr.attr_clr = attr_clr;
    if (userns_fd >= 0)
        attr.userns_fd = static_cast<uint64_t>(userns_fd);
    unsigned flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
    if (::mount_setattr(tree, "", flags, &attr, sizeof attr) < 0)
        return -errno;
    return 0;
}

int attach_tree(int tree, int target) {
    if (::move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        return -errno;
    return 0;
}

static int mkdir_in_root_depth(int root, const std::string& path, Fd& out, int links_left) {
    std::string prefix;
    Fd cur = open_in_root(root, ".", O_PATH | O_DIRECTORY);
    if (!cur)
        return -errno;
    size_t pos = 0;
    while (pos < path.size()) {
        while (pos < path.size() && path[pos] == '/')
            pos++;
        if (pos >= path.size())
            break;
        size_t slash = path.find('/', pos);
        std::string comp =
            path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
        pos = slash == std::string::npos ? path.size() : slash;
        if (comp == ".")
            continue;
        if (comp == "..")
            return -EINVAL;
        std::string parent = prefix.empty() ? "." : prefix;
        prefix += "/" + comp;
        // Each step resolves from the container root, so symlinks in the image are followed
        // as the guest would see them and can never lead out of it.
        Fd next = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
        if (!next) {
            if (errno != ENOENT)
                return -errno;
            Fd dir = open_in_root(root, parent, O_DIRECTORY | O_RDONLY);
            if (!dir)
                return -errno;
            if (::mkdirat(dir.get(), comp.c_str(), 0755) < 0) {
                if (errno != EEXIST)
                    return -errno;
                // A dangling symlink: create its target, inside the root, and go on from there.
                char target[4096];
                ssize_t n = ::readlinkat(dir.get(), comp.c_str(), target, sizeof target - 1);
                if (n < 0)
                    return -ENOTDIR;
                if (links_left == 0)
                    return -ELOOP;
                target[n] = '\0';
                std::string t = target;
                std::string resolved = t[0] == '/' ? t : parent + "/" + t;
                return mkdir_in_root_depth(root, resolved + path.substr(pos), out, links_left - 1);
            }
            next = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
            if (!next)
                return -errno;
        }
        cur = std::move(next);
    }
    out = std::move(cur);
    return 0;
}

int mkdir_in_root(int root, const std::string& path, Fd& out) {
    return mkdir_in_root_depth(root, path, out, 40);
}

int mount_in_root(int root, const std::string& path, int tree, Create create) {
    Fd target = open_in_root(root, path, O_PATH);
    if (!target && errno == ENOENT && create != Create::none) {
        size_t slash = path.rfind('/');
        std::string parent = slash == std::string::npos ? "." : path.substr(0, slash);
        std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
        Fd pdir;
        if (int r = mkdir_in_root(root, parent, pdir); r < 0)
            return r;
        Fd dir = open_in_root(pdir.get(), ".", O_DIRECTORY | O_RDONLY);
        if (!dir)
            return -errno;
        if (create == Create::dir) {
            if (::mkdirat(dir.get(), leaf.c_str(), 0755) < 0 && errno != EEXIST)
                return -errno;
        } else {
            int fd = ::openat(dir.get(), leaf.c_str(),
                              O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0000);
            if (fd < 0 && errno != EEXIST)
                return -errno;
            if (fd >= 0)
                ::close(fd);
        }
        target = open_in_root(root, path, O_PATH);
    }
    if (!target)
        return -errno;
    return attach_tree(tree, target.get());
}

} // namespace lodge::runtime
