#include "runtime/in-root.hpp"
#include "common/fileio.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <fcntl.h>
#include <linux/openat2.h>
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

uint32_t shifted_base(const std::string& container_dir) {
    std::string text;
    if (read_file(container_dir + "/" + shift_marker, text) < 0)
        return 0;
    while (!text.empty() && text.back() == '\n')
        text.pop_back();
    return static_cast<uint32_t>(parse_uint(text, UINT32_MAX).value_or(0));
}

} // namespace lodge::runtime
