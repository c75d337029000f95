#include "runtime/rtnl.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/if_link.h>
#include <memory>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvlan.h>
#include <netlink/route/link/veth.h>
#include <netlink/socket.h>
#include <sched.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace lodge::runtime::net::rtnl {

// libnl reports its own error codes; callers here speak errno.
int nl_to_errno(int nlerr) {
    switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_EXIST:
        return EEXIST;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
        return ENODEV;
    case NLE_PERM:
        return EPERM;
    case NLE_NOACCESS:
        return EACCES;
    case NLE_INVAL:
        return EINVAL;
    case NLE_NOMEM:
        return ENOMEM;
    case NLE_BUSY:
        return EBUSY;
    case NLE_RANGE:
        return ERANGE;
    case NLE_OPNOTSUPP:
        return EOPNOTSUPP;
    case NLE_AGAIN:
        return EAGAIN;
    default:
        return EIO;
    }
}

SockPtr sock_from_fd(int fd) {
    SockPtr sock(nl_socket_alloc());
    if (!sock) {
        ::close(fd);
        errno = ENOMEM;
        return nullptr;
    }
    if (int r = nl_socket_set_fd(sock.get(), NETLINK_ROUTE, fd); r < 0) {
        ::close(fd);
        errno = nl_to_errno(r);
        return nullptr;
    }
    return sock;
}

// A route socket in the caller's own namespace.
Result<SockPtr> host_socket() {
    SockPtr sock(nl_socket_alloc());
    if (!sock)
        return log_error_value(ENOMEM, "Failed to allocate a netlink socket");
    if (int r = nl_connect(sock.get(), NETLINK_ROUTE); r < 0)
        return log_error_value(nl_to_errno(r), "Failed to open a netlink socket");
    return sock;
}

// A route socket that lives in the namespace `netns_fd`. A socket belongs to the namespace its
// creator was in, so a short-lived thread joins the namespace (setns changes only the calling
// thread) and creates it; the calling thread's namespace never changes.
Result<SockPtr> netns_socket(int netns_fd) {
    int fd = -1, err = 0;
    try {
        std::thread t([&]() noexcept {
            if (::setns(netns_fd, CLONE_NEWNET) < 0) {
                err = errno;
                return;
            }
            fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
            if (fd < 0)
                err = errno;
        });
        t.join();
    } catch (...) {
        err = EAGAIN;
    }
    if (fd < 0)
        return log_error_value(
            err, "Failed to open a netlink socket in the container's network namespace");
    SockPtr sock = sock_from_fd(fd);
    if (!sock)
        return log_error_value(errno,
                               "Failed to set up a netlink socket in the container's namespace");
    return sock;
}

LinkPtr get_link(nl_sock* sock, int ifindex, const std::string& name, int& err) {
    rtnl_link* link = nullptr;
    int r = rtnl_link_get_kernel(sock, ifindex, ifindex ? nullptr : name.c_str(), &link);
    err = r < 0 ? -nl_to_errno(r) : 0;
    return LinkPtr(link);
}

std::string link_type(rtnl_link* link) {
    const char* t = rtnl_link_get_type(link);
    return t ? t : "";
}

NlAddrPtr parse_mac(const std::string& mac) {
    nl_addr* a = nullptr;
    if (nl_addr_parse(mac.c_str(), AF_LLC, &a) < 0)
        return nullptr;
    return NlAddrPtr(a);
}

std::string dev_error(const NicSpec& s, const std::string& what) {
    return "Device \"" + s.device + "\": " + what;
}

int look_up_parent(nl_sock* sock, const NicSpec& s, Parent& out, std::string& error) {
    int err = 0;
    LinkPtr link = get_link(sock, 0, s.parent, err);
    if (!link) {
        error = err == -ENODEV ? dev_error(s, "\"parent\" \"" + s.parent + "\" does not exist")
                               : dev_error(s, "cannot look up \"parent\" \"" + s.parent +
                                                  "\": " + std::strerror(-err));
        return err ? err : -ENODEV;
    }
    if (s.nictype == "bridged" && link_type(link.get()) != "bridge") {
        error = dev_error(s, "\"parent\" \"" + s.parent + "\" is not a bridge");
        return -EINVAL;
    }
    out.ifindex = rtnl_link_get_ifindex(link.get());
    out.mtu = rtnl_link_get_mtu(link.get());
    out.txqlen = rtnl_link_get_txqlen(link.get());
    return 0;
}

} // namespace lodge::runtime::net::rtnl
