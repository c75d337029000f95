#include "common/fileio.hpp"
#include "common/fd.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge {

int read_file_at(int dirfd, const std::string& path, std::string& out) {
    Fd fd(::openat(dirfd, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd)
        return -errno;
    out.clear();
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    return 0;
}

int read_file(const std::string& path, std::string& out) {
    return read_file_at(AT_FDCWD, path, out);
}

static int write_all(int fd, const std::string& content) {
    size_t off = 0;
    while (off < content.size()) {
        ssize_t n = ::write(fd, content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += static_cast<size_t>(n);
    }
    return 0;
}

int write_file(const std::string& path, const std::string& content) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd)
        return -errno;
    // Kernel knobs want the whole value in one write.
    ssize_t n = ::write(fd.get(), content.data(), content.size());
    if (n < 0)
        return -errno;
    return static_cast<size_t>(n) == content.size() ? 0 : -EIO;
}

int write_file_atomic(const std::string& path, const std::string& content, unsigned mode,
                      bool durable) {
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    if (dir.empty())
        dir = "/";
    std::string tmp = path + ".tmp.XXXXXX";
    Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
    if (!fd)
        return -errno;
    int r = write_all(fd.get(), content);
    if (r == 0 && ::fchmod(fd.get(), mode) < 0)
        r = -errno;
    if (r == 0 && durable && ::fsync(fd.get()) < 0)
        r = -errno;
    if (r == 0 && ::rename(tmp.c_str(), path.c_str()) < 0)
        r = -errno;
    if (r < 0) {
        ::unlink(tmp.c_str());
        return r;
    }
    if (!durable)
        return 0;
    Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd)
        ::fsync(dfd.get());
    return 0;
}

int mkdir_p(const std::string& path, unsigned mode) {
    if (path.empty())
        return -EINVAL;
    for (size_t i = 1; i <= path.size(); i++) {
        if (i != path.size() && path[i] != '/')
            continue;
        std::string prefix(path.data(), i);
        if (::mkdir(prefix.c_str(), mode) < 0 && errno != EEXIST)
            return -errno;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int remove_tree(const std::string& path) {
    auto rm = [](const char* p, const struct stat*, int type, struct FTW*) -> int {
        int r = type == FTW_DP ? ::rmdir(p) : ::unlink(p);
        return r < 0 && errno != ENOENT ? -1 : 0;
    };
    if (::nftw(path.c_str(), rm, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return errno == ENOENT ? 0 : -errno;
    return 0;
}

} // namespace lodge
