// Managed networks (issue 17, lodge-network(7)): the model, LXD's keys and their checks, the
// choice of `auto` subnets, the state on disk ($LODGE_STATE_DIR/networks/NAME/config.json) and
// the text of the two files lodge writes for a network: dnsmasq's config and lodge's nftables
// table. No netlink and no processes here: lodged's network-manager.cpp does those.
#pragma once

#include "common/config.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lodge::network {

struct Network {
    std::string name; // also the bridge's interface name, as LXD's lxdbr0
    KeyMap config;

    std::string get(const std::string& key, const std::string& fallback = {}) const;
    bool get_bool(const std::string& key, bool fallback) const;
};

// Network names: the container name rules, at most 15 characters (an interface name).
std::string check_network_name(const std::string& name);
// One key and its value; returns "" or a message naming the key.
std::string check_network_key(const std::string& key, const std::string& value);
// Every key, then what holds across keys (DHCP ranges inside the subnet). `auto` is accepted
// here; resolve_auto() replaces it before a network is stored.
std::string check_network_config(const KeyMap& config);

struct Cidr4 {
    uint32_t addr = 0; // host order; the address as written (the bridge's own address)
    unsigned prefix = 0;
    uint32_t mask() const { return prefix ? ~uint32_t(0) << (32 - prefix) : 0; }
    uint32_t network() const { return addr & mask(); }
    bool overlaps(const Cidr4& o) const;
};
struct Cidr6 {
    std::array<uint8_t, 16> addr{};
    unsigned prefix = 0;
    bool overlaps(const Cidr6& o) const;
};
std::optional<Cidr4> parse_cidr4(const std::string& s);
std::optional<Cidr6> parse_cidr6(const std::string& s);
std::optional<uint32_t> parse_ipv4(const std::string& s);
std::string format_ipv4(uint32_t host_order);
std::string format_ipv6(const std::array<uint8_t, 16>& a);

// Picks a /24 inside `pool` that overlaps nothing in `used`: a few random tries, then every
// candidate in order from a random start. The bridge gets the first host address (".1/24").
// nullopt when every /24 of the pool is taken.
std::optional<Cidr4> pick_ipv4_subnet(const Cidr4& pool, const std::vector<Cidr4>& used);
// A random ULA /64 (RFC 4193: fd00::/8, 40 random bits) overlapping nothing in `used`.
std::optional<Cidr6> pick_ipv6_subnet(const std::vector<Cidr6>& used);
// The pool `auto` draws from: $LODGE_NETWORK_POOL4 (a CIDR), else 10.0.0.0/8.
Cidr4 ipv4_pool();

// Fills in what a new network gets when a key is not given, as LXD does: ipv4.address and
// ipv6.address `auto`, and ipv4.nat / ipv6.nat true where the address is `auto`.
void apply_create_defaults(KeyMap& config);
// Replaces `auto` in ipv4.address/ipv6.address by a concrete address. Returns "" or the
// reason (no free subnet, naming the pool and what to do).
std::string resolve_auto(KeyMap& config, const std::vector<Cidr4>& used4,
                         const std::vector<Cidr6>& used6);

// The subnets a network occupies (for other networks' `auto`).
std::vector<Cidr4> ipv4_subnets(const Network& n);
std::vector<Cidr6> ipv6_subnets(const Network& n);

// State on disk.
std::string networks_dir();                            // <state>/networks (0700)
std::string network_dir(const std::string& n);         // <state>/networks/<n> (0700)
std::string network_runtime_dir(const std::string& n); // <runtime>/networks/<n>
int load_network(const std::string& name, Network& out, std::string& error);
int save_network(const Network& n);
// Names of the networks on disk, sorted.
std::vector<std::string> list_networks();

// A container's nic on this network, as dnsmasq's hosts file gets it.
struct Member {
    std::string container, hwaddr, ipv4, ipv6;
};

struct DnsmasqPaths {
    std::string pid_file, leases_file, hosts_file;
};
// dnsmasq's config for `n`: bound to the bridge only, DHCP and RA as the keys say, DNS for
// dns.domain, then raw.dnsmasq.
std::string dnsmasq_config(const Network& n, const DnsmasqPaths& paths);
// dhcp-hostsfile lines: "MAC,[IPv4,][[IPv6],]NAME" per member.
std::string dnsmasq_hosts(const std::vector<Member>& members);

// lodge's nftables table: "lodge" (inet family) for the default state directory. A lodged
// with another LODGE_STATE_DIR (tests, a second instance) gets "lodge-" and a hash of that
// directory, so one instance's table replacement never removes another's rules.
std::string nft_table();
// The table for every network, as one `nft -f` script that replaces the whole table in one
// transaction; `extra_chains` (proxy devices' DNAT) go inside it. Empty networks: the script
// only deletes it.
std::string nft_script(const std::vector<Network>& networks, bool table_exists,
                       const std::string& extra_chains = {});

struct Lease {
    uint64_t expiry = 0;
    std::string hwaddr, address, hostname, type; // type: "dynamic" or "static"
};
// dnsmasq's leases file (IPv4 lines and IPv6 ones after the "duid" line).
std::vector<Lease> parse_leases(const std::string& text);

} // namespace lodge::network
