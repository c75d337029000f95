// Proxy devices on the host (lodge.conf(5), lodge-network(7)).
//
// nat=false: a forwarder per device. lodged makes the listening socket in the host's network
// namespace and hands it (socket activation: LISTEN_FDS) to a forwarder that runs in the
// container's network and pid namespaces, so it connects from inside the container:
// systemd-socket-proxyd (Debian package systemd) for TCP, lodge-proxy-udp for UDP (no Debian
// program forwards datagrams from an inherited socket). Being in the container's pid
// namespace, the kernel kills the forwarder when the container's PID 1 ends; it is not
// lodged's child, so it outlives lodged's restarts. It runs as nobody.
//
// nat=true: DNAT rules in lodge's nftables table (network-config's nft_script).
#pragma once

#include "common/fd.hpp"
#include "common/proxy-device.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::network {

// The listening socket (TCP: listening; UDP: bound), close-on-exec. IPv6 sockets are IPv6 only.
// Returns an invalid Fd with `error` naming the device, the address and the cause.
Fd open_listener(const ProxyDevice& p, std::string& error);

struct ForwarderSpawn {
    const ProxyDevice* proxy = nullptr;
    int netns_fd = -1;  // the container's network namespace
    int pidns_fd = -1;  // the container's pid namespace
    int listen_fd = -1; // from open_listener()
    // cgroup.procs files the forwarder is moved into (the container's supervisor cgroup), so a
    // lodged.service restart under systemd does not take it along.
    std::vector<std::string> cgroup_procs;
};
// Starts the forwarder; returns its host pid, or -errno with `error` set.
pid_t spawn_forwarder(const ForwarderSpawn& s, std::string& error);
// The program for a protocol: $LODGE_SOCKET_PROXYD or /lib/systemd/systemd-socket-proxyd for
// tcp, $LODGE_PROXY_UDP or the installed lodge-proxy-udp for udp.
std::string forwarder_program(const std::string& protocol);
// Whether `pid` is a forwarder in the network namespace `netns_fd` (pid reuse is told apart by
// the program and the namespace).
bool is_forwarder(pid_t pid, int netns_fd);
// SIGTERM through a pidfd; 0 or -errno.
int stop_forwarder(pid_t pid);

// One nat=true device as DNAT rules.
struct NatForward {
    std::string container, device;
    ProxyEndpoint listen, connect;
};
// The chains for lodge's table (inside "table inet ... { }"): prerouting and output DNAT.
std::string nft_nat_chains(const std::vector<NatForward>& forwards);

} // namespace lodge::network
