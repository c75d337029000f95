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
