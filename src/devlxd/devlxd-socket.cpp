// The guest API's socket and its directories (CONTRACT §2).
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "devlxd/devlxd-server.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace lodge::daemon {

namespace {

// `path` as a root-owned directory of exactly `mode`, made if missing; a symlink or anything
// else in its place is refused rather than followed.
int own_dir(const std::string& path, mode_t mode) {
    if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST)
        return log_error_errno(errno, "Cannot create %s", path.c_str());
    Fd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir)
        return log_error_errno(errno, "Cannot open %s", path.c_str());
    if (::fchown(dir.get(), 0, 0) < 0 || ::fchmod(dir.get(), mode) < 0)
        return log_error_errno(errno, "Cannot set the owner and mode of %s", path.c_str());
    return 0;
}

} // namespace

int prepare_devlxd_dirs() {
    std::string runtime = paths::runtime_dir();
    if (int r = mkdir_p(runtime, 0755); r < 0)
        return log_error_errno(r, "Cannot create %s", runtime.c_str());
    // systemd makes every missing parent of the socket with DirectoryMode= (0700): the
    // runtime directory itself must stay open, supervisors' children walk it from their
    // user namespaces.
    if (int r = own_dir(runtime, 0755); r < 0)
        return r;
    std::string host = paths::devlxd_host_dir();
    if (int r = own_dir(host, 0700); r < 0)
        return r;
    if (int r = own_dir(paths::devlxd_dir(), 0755); r < 0)
        return r;
    // CONTRACT §2's path names the socket too (for root on the host). An older lodge kept the
    // socket itself there: replace it.
    std::string link = host + "/sock";
    char target[64] = {};
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
        std::strcmp(target, "guest/sock") == 0)
        return 0;
    ::unlink(link.c_str());
    if (::symlink("guest/sock", link.c_str()) < 0)
        return log_error_errno(errno, "Cannot create %s", link.c_str());
    return 0;
}

int open_devlxd_listener(Fd& out) {
    if (int r = prepare_devlxd_dirs(); r < 0)
        return r;
    std::string path = paths::devlxd_dir() + "/sock";
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return log_error_errno(ENAMETOOLONG, "devlxd socket path %s", path.c_str());
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd)
        return log_error_errno(errno, "Cannot create the devlxd socket");
    ::unlink(path.c_str()); // a stale socket from an earlier lodged
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return log_error_errno(errno, "Cannot bind %s", path.c_str());
    // Connectable by everyone who can reach it: inside containers, who may talk is decided
    // per request from the credentials; on the host, the root-only parent keeps users out.
    if (::chmod(path.c_str(), 0666) < 0)
        return log_error_errno(errno, "Cannot chmod %s", path.c_str());
    if (::listen(fd.get(), SOMAXCONN) < 0)
        return log_error_errno(errno, "Cannot listen on %s", path.c_str());
    out = std::move(fd);
    return 0;
}

} // namespace lodge::daemon
