// The bridge and its addresses (libnl-route), and the subnets the host already uses.
#include "network/network-host.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "network/host-util.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/if_addr.h>
#include <memory>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>

namespace lodge::network {
namespace {

struct SockDeleter {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDeleter {
    void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrDeleter {
    void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrDeleter {
    void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct CacheDeleter {
    void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using SockPtr = std::unique_ptr<nl_sock, SockDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;

SockPtr route_socket() {
    SockPtr s(nl_socket_alloc());
    if (s && nl_connect(s.get(), NETLINK_ROUTE) < 0)
        s.reset();
    return s;
}

std::string nl_message(int r) {
    return nl_geterror(r);
}

} // namespace

bool link_exists(const std::string& name) {
    return ::if_nametoindex(name.c_str()) != 0;
}

int ensure_bridge(const Network& n, std::string& error) {
    SockPtr s = route_socket();
    if (!s) {
        error = "Cannot talk to the kernel (rtnetlink)";
        return -EIO;
    }
    rtnl_link* raw = nullptr;
    if (rtnl_link_get_kernel(s.get(), 0, n.name.c_str(), &raw) < 0) {
        LinkPtr fresh(rtnl_link_alloc());
        rtnl_link_set_name(fresh.get(), n.name.c_str());
        if (int r = rtnl_link_set_type(fresh.get(), "bridge"); r < 0) {
            error = "Cannot create bridge " + n.name + ": " + nl_message(r);
            return -EIO;
        }
        if (int r = rtnl_link_add(s.get(), fresh.get(), NLM_F_CREATE | NLM_F_EXCL); r < 0) {
            error = "Cannot create bridge " + n.name + ": " + nl_message(r);
            log_error("%s", error.c_str());
            return -EIO;
        }
        if (rtnl_link_get_kernel(s.get(), 0, n.name.c_str(), &raw) < 0) {
            error = "Bridge " + n.name + " vanished right after it was created";
            return -ENODEV;
        }
    }
    LinkPtr link(raw);
    if (const char* type = rtnl_link_get_type(link.get()); !type || std::strcmp(type, "bridge")) {
        error = "Interface " + n.name + " exists and is not a bridge; pick another network name";
        return -EEXIST;
    }
    int ifindex = rtnl_link_get_ifindex(link.get());
    // IPv6 addresses on a bridge are usable at once (no DAD on a link lodge owns), so dnsmasq
    // can bind them before any container is plugged.
    write_sysctl("/proc/sys/net/ipv6/conf/" + n.name + "/accept_dad", "0");

    LinkPtr change(rtnl_link_alloc());
    rtnl_link_set_flags(change.get(), IFF_UP);
    if (auto mtu = n.get("bridge.mtu"); !mtu.empty())
        rtnl_link_set_mtu(change.get(), static_cast<unsigned>(std::stoul(mtu)));
    if (auto mac = n.get("bridge.hwaddr"); !mac.empty()) {
        nl_addr* a = nullptr;
        if (nl_addr_parse(mac.c_str(), AF_LLC, &a) == 0) {
            rtnl_link_set_addr(change.get(), a);
            nl_addr_put(a);
        }
    }
    if (int r = rtnl_link_change(s.get(), link.get(), change.get(), 0); r < 0) {
        error = "Cannot configure bridge " + n.name + ": " + nl_message(r);
        log_error("%s", error.c_str());
        return -EIO;
    }

    // Addresses: exactly the configured ones (link-local ones are the kernel's).
    std::vector<std::string> wanted;
    if (parse_cidr4(n.get("ipv4.address")))
        wanted.push_back(n.get("ipv4.address"));
    if (auto v6 = parse_cidr6(n.get("ipv6.address")))
        wanted.push_back(format_ipv6(v6->addr) + "/" + std::to_string(v6->prefix));
    nl_cache* cache_raw = nullptr;
    if (int r = rtnl_addr_alloc_cache(s.get(), &cache_raw); r < 0) {
        error = "Cannot list addresses: " + nl_message(r);
        return -EIO;
    }
    CachePtr cache(cache_raw);
    std::vector<std::string> present;
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
        auto* a = reinterpret_cast<rtnl_addr*>(o);
        if (rtnl_addr_get_ifindex(a) != ifindex)
            continue;
        char buf[128];
        nl_addr* local = rtnl_addr_get_local(a);
        std::string text = nl_addr2str(local, buf, sizeof buf);
        if (text.find('/') == std::string::npos)
            text += "/" + std::to_string(rtnl_addr_get_prefixlen(a));
        if (rtnl_addr_get_family(a) == AF_INET6 && text.rfind("fe80:", 0) == 0)
            continue;
        if (std::find(wanted.begin(), wanted.end(), text) != wanted.end()) {
            present.push_back(text);
            continue;
        }
        if (int r = rtnl_addr_delete(s.get(), a, 0); r < 0)
            log_warning("Cannot remove address %s from %s: %s", text.c_str(), n.name.c_str(),
                        nl_message(r).c_str());
    }
    for (auto& w : wanted) {
        if (std::find(present.begin(), present.end(), w) != present.end())
            continue;
        nl_addr* local = nullptr;
        bool v6 = w.find(':') != std::string::npos;
        if (nl_addr_parse(w.c_str(), v6 ? AF_INET6 : AF_INET, &local) < 0) {
            error = "Cannot parse address " + w;
            return -EINVAL;
        }
        NlAddrPtr owned_local(local);
        AddrPtr a(rtnl_addr_alloc());
        rtnl_addr_set_ifindex(a.get(), ifindex);
        rtnl_addr_set_local(a.get(), local);
        if (v6) {
            rtnl_addr_set_flags(a.get(), IFA_F_NODAD);
        } else if (auto c = parse_cidr4(w)) {
            nl_addr* bcast = nullptr;
            if (nl_addr_parse(format_ipv4(c->network() | ~c->mask()).c_str(), AF_INET, &bcast) ==
                0) {
                rtnl_addr_set_broadcast(a.get(), bcast);
                nl_addr_put(bcast);
            }
        }
        if (int r = rtnl_addr_add(s.get(), a.get(), 0); r < 0 && r != -NLE_EXIST) {
            error = "Cannot add address " + w + " to bridge " + n.name + ": " + nl_message(r);
            log_error("%s", error.c_str());
            return -EIO;
        }
    }
    return 0;
}

int delete_bridge(const std::string& name) {
    SockPtr s = route_socket();
    if (!s)
        return -EIO;
    LinkPtr l(rtnl_link_alloc());
    rtnl_link_set_name(l.get(), name.c_str());
    int r = rtnl_link_delete(s.get(), l.get());
    if (r < 0 && r != -NLE_NODEV && r != -NLE_OBJ_NOTFOUND)
        return log_error_errno(EIO, "Cannot delete bridge %s: %s", name.c_str(),
                               nl_message(r).c_str());
    return 0;
}

void host_subnets(std::vector<Cidr4>& v4, std::vector<Cidr6>& v6,
                  const std::vector<std::string>& skip) {
    SockPtr s = route_socket();
    if (!s)
        return;
    std::vector<int> skip_index;
    for (auto& n : skip)
        if (unsigned i = ::if_nametoindex(n.c_str()))
            skip_index.push_back(static_cast<int>(i));
    auto add = [&](nl_addr* a) {
        if (!a || nl_addr_get_prefixlen(a) == 0)
            return;
        unsigned prefix = nl_addr_get_prefixlen(a);
        if (nl_addr_get_family(a) == AF_INET && nl_addr_get_len(a) == 4) {
            uint32_t be;
            std::memcpy(&be, nl_addr_get_binary_addr(a), 4);
            v4.push_back(Cidr4{ntohl(be), prefix});
        } else if (nl_addr_get_family(a) == AF_INET6 && nl_addr_get_len(a) == 16) {
            Cidr6 c;
            std::memcpy(c.addr.data(), nl_addr_get_binary_addr(a), 16);
            c.prefix = prefix;
            v6.push_back(c);
        }
    };
    nl_cache* raw = nullptr;
    if (rtnl_route_alloc_cache(s.get(), AF_UNSPEC, 0, &raw) == 0) {
        CachePtr cache(raw);
        for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
            auto* r = reinterpret_cast<rtnl_route*>(o);
            bool ours = false;
            if (rtnl_route_get_nnexthops(r) > 0)
                if (auto* nh = rtnl_route_nexthop_n(r, 0))
                    ours = std::count(skip_index.begin(), skip_index.end(),
                                      rtnl_route_nh_get_ifindex(nh)) > 0;
            if (!ours)
                add(rtnl_route_get_dst(r));
        }
    }
    raw = nullptr;
    if (rtnl_addr_alloc_cache(s.get(), &raw) == 0) {
        CachePtr cache(raw);
        for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
            auto* a = reinterpret_cast<rtnl_addr*>(o);
            if (std::count(skip_index.begin(), skip_index.end(), rtnl_addr_get_ifindex(a)))
                continue;
            nl_addr* local = rtnl_addr_get_local(a);
            if (!local)
                continue;
            NlAddrPtr copy(nl_addr_clone(local));
            nl_addr_set_prefixlen(copy.get(), rtnl_addr_get_prefixlen(a));
            add(copy.get());
        }
    }
}

} // namespace lodge::network
