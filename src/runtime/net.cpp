#include "net.hpp"
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

namespace lodge::runtime::net {
namespace {

struct SockDeleter {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDeleter {
    void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct VethDeleter {
    void operator()(rtnl_link* l) const { rtnl_link_veth_release(l); }
};
struct AddrDeleter {
    void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct CacheDeleter {
    void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using SockPtr = std::unique_ptr<nl_sock, SockDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using VethPtr = std::unique_ptr<rtnl_link, VethDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, AddrDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;

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
SockPtr host_socket() {
    SockPtr sock(nl_socket_alloc());
    if (!sock) {
        log_error_errno(ENOMEM, "Failed to allocate a netlink socket");
        return nullptr;
    }
    if (int r = nl_connect(sock.get(), NETLINK_ROUTE); r < 0) {
        log_error_errno(nl_to_errno(r), "Failed to open a netlink socket");
        return nullptr;
    }
    return sock;
}

// A route socket that lives in the namespace `netns_fd`. A socket belongs to the namespace its
// creator was in, so a short-lived thread joins the namespace (setns changes only the calling
// thread) and creates it; the calling thread's namespace never changes.
SockPtr netns_socket(int netns_fd) {
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
    if (fd < 0) {
        log_error_errno(err,
                        "Failed to open a netlink socket in the container's network namespace");
        return nullptr;
    }
    SockPtr sock = sock_from_fd(fd);
    if (!sock)
        log_error_errno(errno, "Failed to set up a netlink socket in the container's namespace");
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

// The parent's MTU and queue length, or an error naming the device and its "parent" key.
struct Parent {
    int ifindex = 0;
    unsigned mtu = 0, txqlen = 0;
};
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

int plug_veth(nl_sock* host, int netns_fd, const NicSpec& s, PluggedNic& out, std::string& error) {
    Parent parent;
    if (s.nictype == "bridged")
        if (int r = look_up_parent(host, s, parent, error); r < 0)
            return r;
    // LXD's rule: the container gets `mtu`, else the parent's; the host end never lowers the
    // bridge (max of both).
    unsigned mtu = s.mtu ? s.mtu : parent.mtu;
    unsigned host_mtu = std::max(mtu, parent.mtu);
    NlAddrPtr mac = parse_mac(s.hwaddr);
    if (!mac) {
        error = dev_error(s, "invalid \"hwaddr\" \"" + s.hwaddr + "\"");
        return -EINVAL;
    }
    // A generated host name that happens to exist is drawn again; a configured one is an error.
    for (int attempt = 0;; attempt++) {
        std::string host_name = s.host_name.empty() ? random_host_name() : s.host_name;
        VethPtr veth(rtnl_link_veth_alloc());
        if (!veth) {
            error = "Out of memory";
            return -ENOMEM;
        }
        LinkPtr peer(rtnl_link_veth_get_peer(veth.get()));
        rtnl_link_set_name(veth.get(), host_name.c_str());
        rtnl_link_set_flags(veth.get(), IFF_UP);
        if (parent.ifindex)
            rtnl_link_set_master(veth.get(), parent.ifindex);
        if (host_mtu)
            rtnl_link_set_mtu(veth.get(), host_mtu);
        if (parent.txqlen) {
            rtnl_link_set_txqlen(veth.get(), parent.txqlen);
            rtnl_link_set_txqlen(peer.get(), parent.txqlen);
        }
        rtnl_link_set_name(peer.get(), s.name.c_str());
        rtnl_link_set_addr(peer.get(), mac.get());
        if (mtu)
            rtnl_link_set_mtu(peer.get(), mtu);
        // Not IFF_UP yet: the kernel opens the peer before the pair is joined (ENOTCONN); plug()
        // brings it up inside the namespace.
        rtnl_link_set_ns_fd(peer.get(), netns_fd);
        int r = rtnl_link_add(host, veth.get(), NLM_F_CREATE | NLM_F_EXCL);
        if (r < 0 && nl_to_errno(r) == EEXIST && s.host_name.empty() && attempt < 8 &&
            ::if_nametoindex(host_name.c_str()))
            continue;
        if (r < 0) {
            int err = nl_to_errno(r);
            error = dev_error(s, "cannot create the veth pair " + host_name + "/" + s.name + ": " +
                                     std::strerror(err));
            if (err == EEXIST)
                error = dev_error(s, ::if_nametoindex(host_name.c_str())
                                         ? "host interface \"" + host_name + "\" already exists"
                                         : "interface \"" + s.name +
                                               "\" already exists in the container");
            log_error_errno(err, "%s", error.c_str());
            return -err;
        }
        int err = 0;
        LinkPtr made = get_link(host, 0, host_name, err);
        out.host_name = host_name;
        out.host_ifindex = made ? rtnl_link_get_ifindex(made.get()) : 0;
        out.host_mtu = made ? rtnl_link_get_mtu(made.get()) : host_mtu;
        out.mtu = mtu;
        return 0;
    }
}

int plug_macvlan(nl_sock* host, int netns_fd, const NicSpec& s, std::string& error) {
    Parent parent;
    if (int r = look_up_parent(host, s, parent, error); r < 0)
        return r;
    NlAddrPtr mac = parse_mac(s.hwaddr);
    LinkPtr link(rtnl_link_macvlan_alloc());
    if (!mac || !link) {
        error = dev_error(s, "cannot prepare the macvlan");
        return -EINVAL;
    }
    rtnl_link_set_link(link.get(), parent.ifindex);
    rtnl_link_macvlan_set_mode(link.get(), MACVLAN_MODE_BRIDGE);
    rtnl_link_set_name(link.get(), s.name.c_str());
    rtnl_link_set_addr(link.get(), mac.get());
    if (s.mtu)
        rtnl_link_set_mtu(link.get(), s.mtu);
    rtnl_link_set_flags(link.get(), IFF_UP);
    rtnl_link_set_ns_fd(link.get(), netns_fd);
    if (int r = rtnl_link_add(host, link.get(), NLM_F_CREATE | NLM_F_EXCL); r < 0) {
        int err = nl_to_errno(r);
        error = err == EEXIST
                    ? dev_error(s, "interface \"" + s.name + "\" already exists in the container")
                    : dev_error(s, "cannot create the macvlan on \"" + s.parent +
                                       "\": " + std::strerror(err));
        log_error_errno(err, "%s", error.c_str());
        return -err;
    }
    return 0;
}

int delete_link(nl_sock* sock, int ifindex) {
    LinkPtr link(rtnl_link_alloc());
    if (!link)
        return -ENOMEM;
    rtnl_link_set_ifindex(link.get(), ifindex);
    int r = rtnl_link_delete(sock, link.get());
    if (r < 0 && nl_to_errno(r) != ENODEV)
        return -nl_to_errno(r);
    return 0;
}

} // namespace

Fd open_netns(pid_t pid) {
    return Fd(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
}

int bring_up_loopback(pid_t pid) {
    Fd netns = open_netns(pid);
    if (!netns)
        return log_error_errno(errno, "Cannot open the container's network namespace");
    SockPtr sock = netns_socket(netns.get());
    if (!sock)
        return -EIO;
    int err = 0;
    LinkPtr lo = get_link(sock.get(), 0, "lo", err);
    if (!lo)
        return log_error_errno(err ? err : -ENODEV, "Cannot find lo in the container");
    LinkPtr up(rtnl_link_alloc());
    if (!up)
        return log_error_errno(ENOMEM, "Cannot bring up lo in the container");
    rtnl_link_set_flags(up.get(), IFF_UP);
    if (int r = rtnl_link_change(sock.get(), lo.get(), up.get(), 0); r < 0)
        return log_error_errno(nl_to_errno(r), "Cannot bring up lo in the container");
    return 0;
}

std::string check_host_side(const NicSpec& s) {
    SockPtr host = host_socket();
    if (!host)
        return dev_error(s, "cannot talk to the kernel: " + log_last_error());
    std::string error;
    Parent parent;
    if (s.nictype != "p2p" && look_up_parent(host.get(), s, parent, error) < 0)
        return error;
    if (!s.host_name.empty() && ::if_nametoindex(s.host_name.c_str()))
        return dev_error(s, "\"host_name\" \"" + s.host_name + "\" is already in use on the host");
    if (s.nictype == "macvlan" && s.mtu && s.mtu > parent.mtu)
        return dev_error(s, "\"mtu\" " + std::to_string(s.mtu) +
                                " is above the MTU of \"parent\" " + s.parent + " (" +
                                std::to_string(parent.mtu) + ")");
    return {};
}

int plug(int netns_fd, const NicSpec& s, PluggedNic& out, std::string& error) {
    SockPtr host = host_socket();
    if (!host) {
        error = dev_error(s, log_last_error());
        return -EIO;
    }
    PluggedNic nic;
    nic.device = s.device;
    nic.nictype = s.nictype;
    nic.name = s.name;
    nic.hwaddr = s.hwaddr;
    int r = s.nictype == "macvlan" ? plug_macvlan(host.get(), netns_fd, s, error)
                                   : plug_veth(host.get(), netns_fd, s, nic, error);
    if (r < 0)
        return r;
    // Inside the container: learn the index (unplug finds the device by it even after the guest
    // renamed it) and bring the interface up.
    int err = 0;
    SockPtr inner = netns_socket(netns_fd);
    LinkPtr link = inner ? get_link(inner.get(), 0, s.name, err) : nullptr;
    LinkPtr up(rtnl_link_alloc());
    if (link && up) {
        nic.ifindex = rtnl_link_get_ifindex(link.get());
        nic.mtu = rtnl_link_get_mtu(link.get());
        rtnl_link_set_flags(up.get(), IFF_UP);
        if (int r = rtnl_link_change(inner.get(), link.get(), up.get(), 0); r < 0)
            err = -nl_to_errno(r);
    } else if (!err) {
        err = -EIO;
    }
    if (err < 0 || !link) {
        error = dev_error(s, "cannot bring up \"" + s.name +
                                 "\" in the container: " + std::strerror(-err));
        log_error_errno(err, "%s", error.c_str());
        unplug(netns_fd, nic);
        return err;
    }
    out = std::move(nic);
    return 0;
}

int unplug(int netns_fd, const PluggedNic& nic) {
    if (nic.host_ifindex) {
        SockPtr host = host_socket();
        if (!host)
            return -EIO;
        // Only the veth we made: an index can be reused once our pair died on its own.
        int err = 0;
        LinkPtr link = get_link(host.get(), nic.host_ifindex, "", err);
        if (!link)
            return 0;
        const char* name = rtnl_link_get_name(link.get());
        if (link_type(link.get()) != "veth" || !name || nic.host_name != name)
            return 0;
        if (int r = delete_link(host.get(), nic.host_ifindex); r < 0)
            return log_error_errno(r, "Failed to delete host interface %s of device \"%s\"",
                                   nic.host_name.c_str(), nic.device.c_str());
        return 0;
    }
    if (netns_fd < 0 || !nic.ifindex)
        return 0;
    SockPtr inner = netns_socket(netns_fd);
    if (!inner)
        return -EIO;
    if (int r = delete_link(inner.get(), nic.ifindex); r < 0)
        return log_error_errno(r, "Failed to delete interface %s of device \"%s\"",
                               nic.name.c_str(), nic.device.c_str());
    return 0;
}

int addresses(int netns_fd, std::vector<Address>& out) {
    SockPtr sock = netns_socket(netns_fd);
    if (!sock)
        return -EIO;
    nl_cache* raw = nullptr;
    if (int r = rtnl_addr_alloc_cache(sock.get(), &raw); r < 0)
        return log_error_errno(nl_to_errno(r), "Failed to read the container's addresses");
    CachePtr cache(raw);
    nl_cache* links_raw = nullptr;
    CachePtr links(rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &links_raw) < 0 ? nullptr
                                                                                : links_raw);
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
        auto* a = reinterpret_cast<rtnl_addr*>(o);
        nl_addr* local = rtnl_addr_get_local(a);
        int family = rtnl_addr_get_family(a);
        if (!local || (family != AF_INET && family != AF_INET6))
            continue;
        auto* bytes = static_cast<const uint8_t*>(nl_addr_get_binary_addr(local));
        unsigned len = nl_addr_get_len(local);
        bool loopback =
            family == AF_INET
                ? len == 4 && bytes[0] == 127
                : len == 16 && std::all_of(bytes, bytes + 15, [](uint8_t b) { return b == 0; }) &&
                      bytes[15] == 1;
        if (loopback)
            continue;
        Address addr;
        addr.family = family;
        addr.bytes.assign(bytes, bytes + len);
        char name[IF_NAMESIZE] = "";
        if (links)
            rtnl_link_i2name(links.get(), rtnl_addr_get_ifindex(a), name, sizeof name);
        addr.ifname = name;
        out.push_back(std::move(addr));
    }
    return 0;
}

int link_names(int netns_fd, std::vector<std::string>& out) {
    SockPtr sock = netns_socket(netns_fd);
    if (!sock)
        return -EIO;
    nl_cache* raw = nullptr;
    if (int r = rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &raw); r < 0)
        return log_error_errno(nl_to_errno(r), "Failed to list the container's interfaces");
    CachePtr cache(raw);
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o))
        if (const char* name = rtnl_link_get_name(reinterpret_cast<rtnl_link*>(o)))
            out.emplace_back(name);
    return 0;
}

} // namespace lodge::runtime::net
