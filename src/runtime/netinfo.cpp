#include "common/log.hpp"
#include "runtime/net.hpp"
#include "runtime/rtnl.hpp"

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
using namespace rtnl;

Fd open_netns(pid_t pid) {
    return Fd(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
}

std::string check_host_side(const NicSpec& s) {
    auto opened = host_socket();
    if (!opened)
        return dev_error(s, "cannot talk to the kernel: " + opened.error().message);
    SockPtr host = std::move(*opened);
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

int addresses(int netns_fd, std::vector<Address>& out) {
    auto opened = netns_socket(netns_fd);
    if (!opened)
        return -opened.error().code;
    SockPtr sock = std::move(*opened);
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
    auto opened = netns_socket(netns_fd);
    if (!opened)
        return -opened.error().code;
    SockPtr sock = std::move(*opened);
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
