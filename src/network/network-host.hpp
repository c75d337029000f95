// A managed network on the host: the bridge and its addresses (libnl-route), forwarding
// sysctls, lodge's nftables table (`nft -f`, one transaction), dnsmasq, and the checks that
// turn the usual failures (port 53 taken, a FORWARD policy of drop, no free subnet) into
// messages naming the fix.
#pragma once

#include "common/fd.hpp"
#include "network/network-config.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::network {

// Creates the bridge if missing, sets MTU and MAC as the keys say, brings it up and gives it
// exactly the addresses of ipv4.address/ipv6.address (others it holds are removed, link-local
// ones kept). Returns 0 or -errno with `error` set.
int ensure_bridge(const Network& n, std::string& error);
// Deletes the bridge; gone already is fine.
int delete_bridge(const std::string& name);
bool link_exists(const std::string& name);

// Every IPv4/IPv6 route and address prefix on the host (all tables) except default routes
// and the bridges of `skip` networks: what `auto` must not overlap.
void host_subnets(std::vector<Cidr4>& v4, std::vector<Cidr6>& v6,
                  const std::vector<std::string>& skip);

// Writes and loads lodge's nftables table for these networks (all of them: the table is
// replaced whole) with `extra_chains` (proxy DNAT). Returns 0 or -errno with `error` holding
// nft's message.
int apply_firewall(const std::vector<Network>& networks, const std::string& extra_chains,
                   std::string& error);
bool firewall_table_exists();

// net.ipv4.ip_forward / net.ipv6.conf.all.forwarding on, as LXD does for a network with NAT.
// Returns "" or a warning.
std::string enable_forwarding(bool v4, bool v6);
bool forwarding_enabled(bool v6);

// Base chains of other tables that hook forward with policy drop (Docker's "ip filter FORWARD"),
// as a warning naming the table and what to add; "" if none.
std::string forward_policy_warning(const std::string& bridge);

// The process (name and pid) bound to port 53 on `address` or on the wildcard address, or "".
std::string port53_holder(const std::string& address);

// dnsmasq for network `n`, as a daemon that outlives lodged: started with lodge's config file,
// it has reported its startup (dnsmasq's own parent waits for the daemon's init) when this
// returns. Returns the daemon's pid, or -errno with `error` naming the cause and the fix.
pid_t start_dnsmasq(const Network& n, std::string& error);
// The running dnsmasq of `name` started by lodge (its pid file, checked against
// /proc/PID/cmdline), or 0.
pid_t find_dnsmasq(const std::string& name);
// Stops it (SIGTERM, waits for it through its pidfd). Returns 0 or -errno.
int stop_dnsmasq(const std::string& name);
// Writes the hosts file; returns whether it changed (then dnsmasq needs SIGHUP).
bool write_hosts(const std::string& name, const std::vector<Member>& members);

// Where systemd-resolved runs: the bridge's per-link DNS server (its dnsmasq) and routing
// domain ~dns.domain, so the host resolves NAME.lodge too (`resolvectl dns|domain`). Nothing
// where it does not run; a failure is logged, not fatal.
void register_with_resolved(const Network& n);

std::string dnsmasq_binary(); // $LODGE_DNSMASQ, else dnsmasq from PATH
std::string leases_path(const std::string& name);
std::string config_path(const std::string& name);

} // namespace lodge::network
