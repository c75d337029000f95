// rtnetlink plumbing shared by the nic plugging (supervisor) and the read side (lodged):
// libnl owners, error mapping and route sockets in a given network namespace.
#pragma once

#include "common/error.hpp"
#include "common/nic.hpp"

#include <memory>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/socket.h>
#include <string>

namespace lodge::runtime::net::rtnl {

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
int nl_to_errno(int nlerr);
SockPtr sock_from_fd(int fd);
// A route socket in the caller's own namespace, or why there is none (logged).
lodge::Result<SockPtr> host_socket();
// A route socket that lives in the namespace `netns_fd`, made by a short-lived thread that joins
// it.
lodge::Result<SockPtr> netns_socket(int netns_fd);
LinkPtr get_link(nl_sock* sock, int ifindex, const std::string& name, int& err);
std::string link_type(rtnl_link* link);
NlAddrPtr parse_mac(const std::string& mac);
std::string dev_error(const NicSpec& s, const std::string& what);

// The parent's MTU and queue length, or an error naming the device and its "parent" key.
struct Parent {
    int ifindex = 0;
    unsigned mtu = 0, txqlen = 0;
};
int look_up_parent(nl_sock* sock, const NicSpec& s, Parent& out, std::string& error);

} // namespace lodge::runtime::net::rtnl
