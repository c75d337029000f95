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
namespace {

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

int plug(int netns_fd, const NicSpec& s, PluggedNic& out, std::string& error) {
    auto opened = host_socket();
    if (!opened) {
        error = dev_error(s, opened.error().message);
        return -EIO;
    }
    SockPtr host = std::move(*opened);
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
    auto opened_inner = netns_socket(netns_fd);
    SockPtr inner = opened_inner ? std::move(*opened_inner) : nullptr;
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
        (void)unplug(netns_fd, nic); // best effort: a failure is logged, this one is reported
        return err;
    }
    out = std::move(nic);
    return 0;
}

Result<> unplug(int netns_fd, const PluggedNic& nic) {
    if (nic.host_ifindex) {
        auto opened = host_socket();
        if (!opened)
            return opened.error();
        SockPtr host = std::move(*opened);
        // Only the veth we made: an index can be reused once our pair died on its own.
        int err = 0;
        LinkPtr link = get_link(host.get(), nic.host_ifindex, "", err);
        if (!link)
            return {};
        const char* name = rtnl_link_get_name(link.get());
        if (link_type(link.get()) != "veth" || !name || nic.host_name != name)
            return {};
        if (int r = delete_link(host.get(), nic.host_ifindex); r < 0)
            return log_error_value(r, "Failed to delete host interface %s of device \"%s\"",
                                   nic.host_name.c_str(), nic.device.c_str());
        return {};
    }
    if (netns_fd < 0 || !nic.ifindex)
        return {};
    auto opened_inner = netns_socket(netns_fd);
    if (!opened_inner) // netns_socket() logged why
        return make_error(errors::failed, EIO,
                          "Cannot open a netlink socket in the container's network namespace");
    SockPtr inner = std::move(*opened_inner);
    if (int r = delete_link(inner.get(), nic.ifindex); r < 0)
        return log_error_value(r, "Failed to delete interface %s of device \"%s\"",
                               nic.name.c_str(), nic.device.c_str());
    return {};
}

} // namespace lodge::runtime::net
