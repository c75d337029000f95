#include "devlxd/peer.hpp"
#include "common/fd.hpp"

#include <cerrno>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef PIDFD_GET_PID_NAMESPACE
#define PIDFD_GET_PID_NAMESPACE _IO(0xFF, 5)
#endif

namespace lodge::daemon {
namespace {

// Deep enough for any real nesting; the kernel allows 32 levels.
constexpr int max_pidns_depth = 33;

Fd pidns_from_pidfd(int pidfd, pid_t pid) {
    int ns = ::ioctl(pidfd, PIDFD_GET_PID_NAMESPACE, 0);
    if (ns >= 0)
        return Fd(ns);
    // Older kernels: /proc, which is only safe while the pidfd says the process still lives.
    Fd fallback(::open(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), O_RDONLY | O_CLOEXEC));
    if (fallback && ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) < 0)
        return Fd();
    return fallback;
}

} // namespace

int pidns_of(pid_t pid, NamespaceId& out) {
    struct stat st {};
    if (::stat(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), &st) < 0)
        return -errno;
    out = NamespaceId{st.st_dev, st.st_ino};
    return 0;
}

int open_pidns(const PidFd& pidfd, Fd& out, NamespaceId& id) {
    Fd ns = pidns_from_pidfd(pidfd.get(), pidfd.pid());
    if (!ns)
        return errno ? -errno : -ESRCH;
    struct stat st {};
    if (::fstat(ns.get(), &st) < 0)
        return -errno;
    id = NamespaceId{st.st_dev, st.st_ino};
    out = std::move(ns);
    return 0;
}

int identify_peer(int fd, PeerIdentity& out) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return -errno;
    out.pid = cred.pid;
    out.uid = cred.uid;
    out.gid = cred.gid;
    out.pidns_chain.clear();
    if (cred.pid <= 0)
        return -ESRCH; // the peer lives in a pid namespace we cannot see

    Fd ns;
    int pidfd = -1;
    len = sizeof pidfd;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
        Fd owned(pidfd);
        ns = pidns_from_pidfd(owned.get(), cred.pid);
    } else {
        ns = Fd(::open(("/proc/" + std::to_string(cred.pid) + "/ns/pid").c_str(),
                       O_RDONLY | O_CLOEXEC));
    }
    if (!ns)
        return -ESRCH;
    for (int depth = 0; depth < max_pidns_depth && ns; depth++) {
        struct stat st {};
        if (::fstat(ns.get(), &st) < 0)
            return -errno;
        out.pidns_chain.push_back(NamespaceId{st.st_dev, st.st_ino});
        // EPERM once the parent is outside lodged's own pid namespace: the chain ends there.
        ns = Fd(::ioctl(ns.get(), NS_GET_PARENT));
    }
    return 0;
}

} // namespace lodge::daemon
