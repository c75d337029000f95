// nic devices through rtnetlink (libnl-route): veth pairs whose container end is created
// directly inside the container's network namespace (IFLA_NET_NS_FD on the peer), already named,
// addressed and up, and macvlans created the same way. Also the read side: addresses and link
// names inside a container's namespace.
//
// Lifetime: a veth dies with either end, and every virtual device inside a network namespace
// dies with it, so a dead container leaves nothing in the host namespace even when nobody cleans
// up (the kernel does it asynchronously). The supervisor still unplugs explicitly at every stop,
// so that "stopped" means the host ends are gone already.
#pragma once

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/nic.hpp"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime::net {

// One nic as plugged into a running container.
struct PluggedNic {
    std::string device;
    std::string nictype;
    std::string name;      // inside the container
    std::string hwaddr;    // inside the container
    std::string host_name; // the veth's host end; empty for macvlan
    int host_ifindex = 0;  // the veth's host end; 0 for macvlan
    int ifindex = 0;       // inside the container
    unsigned mtu = 0;      // inside the container
    unsigned host_mtu = 0; // the veth's host end
};

// The network namespace of process `pid` (for a container: its PID 1).
Fd open_netns(pid_t pid);

// Checks what the host must provide for `spec`: an existing parent, a bridge for
// nictype=bridged, a host_name nobody uses. Returns an empty string or the problem, naming
// the device and the key.
std::string check_host_side(const NicSpec& spec);

// Creates the nic inside the namespace `netns_fd`. Returns 0 or -errno with `error` set (the
// failure is logged once). Nothing is left behind on failure.
int plug(int netns_fd, const NicSpec& spec, PluggedNic& out, std::string& error);
// Deletes what plug() made: the host end of a veth (its peer goes with it) or the macvlan inside
// the namespace. A device already gone is no error. Returns 0 or -errno.
Result<> unplug(int netns_fd, const PluggedNic& nic);

struct Address {
    int family = 0; // AF_INET or AF_INET6
    std::vector<uint8_t> bytes;
    std::string ifname;
};
// Every address in the namespace except loopback ones, in the kernel's order.
int addresses(int netns_fd, std::vector<Address>& out);
// Every interface name in the namespace.
int link_names(int netns_fd, std::vector<std::string>& out);

} // namespace lodge::runtime::net
