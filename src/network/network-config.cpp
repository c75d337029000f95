#include "network/network-config.hpp"

#include "common/fileio.hpp"
#include "common/nic.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <sys/random.h>
#include <unistd.h>

namespace lodge::network {
namespace {

uint32_t random_u32() {
    uint32_t v = 0;
    while (::getrandom(&v, sizeof v, 0) != sizeof v) {
    }
    return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    std::istringstream in(s);
    while (std::getline(in, cur, sep))
        out.push_back(cur);
    return out;
}

std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t");
    size_t b = s.find_last_not_of(" \t");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool is_domain(const std::string& d) {
    if (d.empty() || d.size() > 253)
        return false;
    for (auto& label : split(d, '.')) {
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
            return false;
        for (char c : label)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-')
                return false;
    }
    return d.back() != '.';
}

std::string key_error(const std::string& key, const std::string& value, const std::string& want) {
    return "Invalid value \"" + value + "\" for \"" + key + "\": " + want;
}

// "A-B" with both ends IPv4 addresses, A <= B.
std::optional<std::pair<uint32_t, uint32_t>> parse_range(const std::string& r) {
    auto dash = r.find('-');
    if (dash == std::string::npos)
        return std::nullopt;
    auto a = parse_ipv4(trim(r.substr(0, dash))), b = parse_ipv4(trim(r.substr(dash + 1)));
    if (!a || !b || *a > *b)
        return std::nullopt;
    return std::make_pair(*a, *b);
}

} // namespace

std::string Network::get(const std::string& key, const std::string& fallback) const {
    auto it = config.find(key);
    return it == config.end() ? fallback : it->second;
}

bool Network::get_bool(const std::string& key, bool fallback) const {
    auto v = parse_bool(get(key));
    return v ? *v : fallback;
}

std::string check_network_name(const std::string& name) {
    if (auto e = check_container_name(name); !e.empty())
        return "Invalid network name: " + e;
    if (name.size() > 15)
        return "Invalid network name \"" + name +
               "\": at most 15 characters (it is the bridge's interface name)";
    return {};
}

std::optional<uint32_t> parse_ipv4(const std::string& s) {
    in_addr a{};
    if (::inet_pton(AF_INET, s.c_str(), &a) != 1)
        return std::nullopt;
    return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t v) {
    in_addr a{htonl(v)};
    char buf[INET_ADDRSTRLEN];
    return ::inet_ntop(AF_INET, &a, buf, sizeof buf);
}

std::string format_ipv6(const std::array<uint8_t, 16>& a) {
    char buf[INET6_ADDRSTRLEN];
    return ::inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
}

std::optional<Cidr4> parse_cidr4(const std::string& s) {
    auto slash = s.find('/');
    if (slash == std::string::npos)
        return std::nullopt;
    auto addr = parse_ipv4(s.substr(0, slash));
    auto prefix = parse_uint(s.substr(slash + 1), 32);
    if (!addr || !prefix)
        return std::nullopt;
    return Cidr4{*addr, static_cast<unsigned>(*prefix)};
}

std::optional<Cidr6> parse_cidr6(const std::string& s) {
    auto slash = s.find('/');
    if (slash == std::string::npos)
        return std::nullopt;
    Cidr6 c;
    auto prefix = parse_uint(s.substr(slash + 1), 128);
    if (!prefix || ::inet_pton(AF_INET6, s.substr(0, slash).c_str(), c.addr.data()) != 1)
        return std::nullopt;
    c.prefix = static_cast<unsigned>(*prefix);
    return c;
}

bool Cidr4::overlaps(const Cidr4& o) const {
    unsigned p = std::min(prefix, o.prefix);
    uint32_t m = p ? ~uint32_t(0) << (32 - p) : 0;
    return (addr & m) == (o.addr & m);
}

bool Cidr6::overlaps(const Cidr6& o) const {
    unsigned p = std::min(prefix, o.prefix);
    for (unsigned i = 0; i < 16 && p > 0; i++, p = p >= 8 ? p - 8 : 0) {
        uint8_t m = p >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - p));
        if ((addr[i] & m) != (o.addr[i] & m))
            return false;
    }
    return true;
}

std::string check_network_key(const std::string& key, const std::string& v) {
    if (key.rfind("user.", 0) == 0 && key.size() > 5)
        return {};
    if (key == "ipv4.address") {
        if (v == "auto" || v == "none")
            return {};
        auto c = parse_cidr4(v);
        if (!c || c->prefix < 8 || c->prefix > 30)
            return key_error(key, v,
                             "expected auto, none or the bridge's address with a prefix "
                             "of 8 to 30, such as 10.10.10.1/24");
        uint32_t host = c->addr & ~c->mask();
        if (host == 0 || host == ~c->mask())
            return key_error(key, v,
                             "the bridge needs a host address, not the subnet's network "
                             "or broadcast address (such as 10.10.10.1/24)");
        return {};
    }
    if (key == "ipv6.address") {
        if (v == "auto" || v == "none")
            return {};
        auto c = parse_cidr6(v);
        if (!c || c->prefix < 48 || c->prefix > 64)
            return key_error(key, v,
                             "expected auto, none or the bridge's address with a prefix "
                             "of 48 to 64, such as fd42:1:2:3::1/64");
        return {};
    }
    if (key == "ipv4.nat" || key == "ipv6.nat" || key == "ipv4.dhcp" || key == "ipv6.dhcp" ||
        key == "lodge.default")
        return parse_bool(v) ? "" : key_error(key, v, "expected true or false");
    if (key == "ipv4.dhcp.ranges") {
        for (auto& r : split(v, ','))
            if (!parse_range(r))
                return key_error(key, v,
                                 "expected comma-separated ranges FIRST-LAST of IPv4 "
                                 "addresses, such as 10.10.10.50-10.10.10.99");
        return v.empty() ? key_error(key, v, "expected at least one range FIRST-LAST") : "";
    }
    if (key == "dns.domain")
        return is_domain(v) ? "" : key_error(key, v, "expected a domain name such as lodge");
    if (key == "dns.mode")
        return v == "managed" || v == "dynamic" || v == "none"
                   ? ""
                   : key_error(key, v, "expected managed, dynamic or none");
    if (key == "bridge.mtu") {
        auto mtu = parse_uint(v, 65535);
        return mtu && *mtu >= 1280 ? "" : key_error(key, v, "expected 1280 to 65535");
    }
    if (key == "bridge.hwaddr")
        return is_unicast_hwaddr(v) ? ""
                                    : key_error(key, v,
                                                "expected a unicast MAC such as "
                                                "00:16:3e:01:02:03");
    if (key == "raw.dnsmasq")
        return {};
    return "Unknown network key \"" + key + "\"";
}

std::string check_network_config(const KeyMap& config) {
    for (auto& [k, v] : config)
        if (auto e = check_network_key(k, v); !e.empty())
            return e;
    auto get = [&](const std::string& k) {
        auto it = config.find(k);
        return it == config.end() ? std::string() : it->second;
    };
    auto subnet = parse_cidr4(get("ipv4.address"));
    if (!get("ipv4.dhcp.ranges").empty()) {
        if (!subnet)
            return "\"ipv4.dhcp.ranges\" needs a concrete \"ipv4.address\"";
        for (auto& r : split(get("ipv4.dhcp.ranges"), ',')) {
            auto range = parse_range(r);
            Cidr4 first{range->first, subnet->prefix}, last{range->second, subnet->prefix};
            if (!first.overlaps(*subnet) || !last.overlaps(*subnet))
                return "\"ipv4.dhcp.ranges\" range " + trim(r) + " is outside ipv4.address " +
                       get("ipv4.address");
        }
    }
    return {};
}

Cidr4 ipv4_pool() {
    const char* env = std::getenv("LODGE_NETWORK_POOL4");
    if (env && *env)
        if (auto c = parse_cidr4(env); c && c->prefix <= 24)
            return Cidr4{c->network(), c->prefix};
    return Cidr4{0x0a000000, 8};
}

std::optional<Cidr4> pick_ipv4_subnet(const Cidr4& pool, const std::vector<Cidr4>& used) {
    if (pool.prefix > 24)
        return std::nullopt;
    uint32_t count = uint32_t(1) << (24 - pool.prefix);
    auto free = [&](uint32_t i) {
        Cidr4 c{pool.network() + (i << 8) + 1, 24};
        return std::none_of(used.begin(), used.end(),
                            [&](const Cidr4& u) { return u.overlaps(c); });
    };
    for (int tries = 0; tries < 32; tries++)
        if (uint32_t i = random_u32() % count; free(i))
            return Cidr4{pool.network() + (i << 8) + 1, 24};
    uint32_t start = random_u32() % count;
    for (uint32_t k = 0; k < count; k++)
        if (uint32_t i = (start + k) % count; free(i))
            return Cidr4{pool.network() + (i << 8) + 1, 24};
    return std::nullopt;
}

std::optional<Cidr6> pick_ipv6_subnet(const std::vector<Cidr6>& used) {
    for (int tries = 0; tries < 64; tries++) {
        Cidr6 c;
        c.prefix = 64;
        c.addr[0] = 0xfd;
        while (::getrandom(c.addr.data() + 1, 7, 0) != 7) {
        }
        c.addr[15] = 1;
        if (std::none_of(used.begin(), used.end(), [&](const Cidr6& u) { return u.overlaps(c); }))
            return c;
    }
    return std::nullopt;
}

void apply_create_defaults(KeyMap& config) {
    for (const char* family : {"ipv4", "ipv6"}) {
        std::string addr = std::string(family) + ".address", nat = std::string(family) + ".nat";
        if (!config.count(addr))
            config[addr] = "auto";
        if (config[addr] == "auto" && !config.count(nat))
            config[nat] = "true";
    }
}

std::string resolve_auto(KeyMap& config, const std::vector<Cidr4>& used4,
                         const std::vector<Cidr6>& used6) {
    if (config["ipv4.address"] == "auto") {
        Cidr4 pool = ipv4_pool();
        auto c = pick_ipv4_subnet(pool, used4);
        if (!c)
            return "No free subnet for ipv4.address=auto: every /24 in " +
                   format_ipv4(pool.network()) + "/" + std::to_string(pool.prefix) +
                   " overlaps a host route or another lodge network; give ipv4.address an "
                   "explicit free subnet (such as ipv4.address=192.168.200.1/24)";
        config["ipv4.address"] = format_ipv4(c->addr) + "/24";
    }
    if (config["ipv6.address"] == "auto") {
        auto c = pick_ipv6_subnet(used6);
        if (!c)
            return "No free subnet for ipv6.address=auto: give ipv6.address an explicit subnet";
        config["ipv6.address"] = format_ipv6(c->addr) + "/64";
    }
    return {};
}

std::vector<Cidr4> ipv4_subnets(const Network& n) {
    if (auto c = parse_cidr4(n.get("ipv4.address")))
        return {*c};
    return {};
}

std::vector<Cidr6> ipv6_subnets(const Network& n) {
    if (auto c = parse_cidr6(n.get("ipv6.address")))
        return {*c};
    return {};
}

std::string networks_dir() {
    return paths::state_dir() + "/networks";
}
std::string network_dir(const std::string& n) {
    return networks_dir() + "/" + n;
}
std::string network_runtime_dir(const std::string& n) {
    return paths::runtime_dir() + "/networks/" + n;
}

int load_network(const std::string& name, Network& out, std::string& error) {
    std::string text;
    if (int r = read_file(network_dir(name) + "/config.json", text); r < 0) {
        error = "Cannot read network \"" + name + "\": " + std::strerror(-r);
        return r;
    }
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("config") || !j["config"].is_object()) {
        error = "Network \"" + name + "\": config.json is not a network definition";
        return -EINVAL;
    }
    out.name = name;
    out.config.clear();
    for (auto& [k, v] : j["config"].items())
        if (v.is_string())
            out.config[k] = v.get<std::string>();
    return 0;
}

int save_network(const Network& n) {
    if (int r = mkdir_p(networks_dir(), 0700); r < 0)
        return r;
    if (int r = mkdir_p(network_dir(n.name), 0700); r < 0)
        return r;
    nlohmann::json j;
    j["name"] = n.name;
    j["config"] = n.config;
    return write_file_atomic(network_dir(n.name) + "/config.json", j.dump(2) + "\n", 0600);
}

std::vector<std::string> list_networks() {
    std::vector<std::string> out;
    DIR* d = ::opendir(networks_dir().c_str());
    if (!d)
        return out;
    while (auto* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != ".." && check_network_name(n).empty() &&
            ::access((network_dir(n) + "/config.json").c_str(), F_OK) == 0)
            out.push_back(n);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

std::string dnsmasq_config(const Network& n, const DnsmasqPaths& p) {
    std::ostringstream o;
    o << "# Written by lodge for network " << n.name << "; change it with lodgectl network set.\n"
      << "strict-order\nbind-interfaces\nexcept-interface=lo\ninterface=" << n.name << "\n"
      << "no-ping\nno-hosts\nuser=nobody\ngroup=nogroup\n"
      << "pid-file=" << p.pid_file << "\n"
      << "dhcp-leasefile=" << p.leases_file << "\n"
      << "dhcp-hostsfile=" << p.hosts_file << "\n"
      << "dhcp-no-override\ndhcp-authoritative\n";
    auto v4 = parse_cidr4(n.get("ipv4.address"));
    auto v6 = parse_cidr6(n.get("ipv6.address"));
    if (v4) {
        o << "listen-address=" << format_ipv4(v4->addr) << "\n";
        if (n.get_bool("ipv4.dhcp", true)) {
            std::string mask = format_ipv4(v4->mask());
            std::vector<std::pair<uint32_t, uint32_t>> ranges;
            if (auto r = n.get("ipv4.dhcp.ranges"); !r.empty()) {
                for (auto& one : split(r, ','))
                    ranges.push_back(*parse_range(one));
            } else {
                uint32_t first = v4->network() + 1, last = (v4->network() | ~v4->mask()) - 1;
                // Every host address but the bridge's own.
                if (v4->addr > first)
                    ranges.emplace_back(first, v4->addr - 1);
                if (v4->addr < last)
                    ranges.emplace_back(v4->addr + 1, last);
            }
            for (auto& [a, b] : ranges)
                o << "dhcp-range=" << format_ipv4(a) << "," << format_ipv4(b) << "," << mask
                  << ",1h\n";
        }
        if (auto mtu = n.get("bridge.mtu"); !mtu.empty())
            o << "dhcp-option-force=26," << mtu << "\n";
    }
    if (v6) {
        o << "listen-address=" << format_ipv6(v6->addr) << "\n"
          << "enable-ra\n"
          << "dhcp-range=::,constructor:" << n.name << ","
          << (n.get_bool("ipv6.dhcp", true) ? "ra-stateless,ra-names" : "ra-only") << ",64,1h\n";
        if (auto mtu = n.get("bridge.mtu"); !mtu.empty())
            o << "ra-param=" << n.name << ",mtu:" << mtu << "\n";
    }
    std::string mode = n.get("dns.mode", "managed");
    if (mode == "none") {
        o << "port=0\n";
    } else {
        std::string domain = n.get("dns.domain", "lodge");
        o << "domain=" << domain << "\nlocal=/" << domain << "/\n";
        // managed: names come from lodge's hosts file only; a guest's DHCP hostname cannot take
        // another container's name. dynamic: what clients send counts too (LXD's dns.mode).
        if (mode == "managed")
            o << "dhcp-ignore-names\n";
    }
    if (auto raw = n.get("raw.dnsmasq"); !raw.empty())
        o << "# raw.dnsmasq\n" << raw << (raw.back() == '\n' ? "" : "\n");
    return o.str();
}

std::string dnsmasq_hosts(const std::vector<Member>& members) {
    std::ostringstream o;
    for (auto& m : members) {
        if (m.hwaddr.empty())
            continue;
        o << m.hwaddr;
        if (!m.ipv4.empty())
            o << "," << m.ipv4;
        if (!m.ipv6.empty())
            o << ",[" << m.ipv6 << "]";
        o << "," << m.container << "\n";
    }
    return o.str();
}

std::string nft_table() {
    const char* dir = std::getenv("LODGE_STATE_DIR");
    std::string state = dir && *dir ? dir : "";
    while (state.size() > 1 && state.back() == '/')
        state.pop_back();
    if (state.empty() || state == "/var/lib/lodge")
        return "lodge";
    uint32_t h = 2166136261u; // FNV-1a: stable across builds and runs
    for (unsigned char ch : state)
        h = (h ^ ch) * 16777619u;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", h);
    return std::string("lodge-") + buf;
}

std::string nft_script(const std::vector<Network>& networks, bool table_exists,
                       const std::string& extra_chains) {
    std::ostringstream o;
    const std::string nft_table = network::nft_table();
    // "add" then "delete" makes the delete succeed whether or not the table exists; the new
    // table follows in the same transaction, so nothing ever sees a half-made ruleset.
    o << "add table inet " << nft_table << "\n";
    o << "delete table inet " << nft_table << "\n";
    (void)table_exists;
    if (networks.empty())
        return o.str();
    o << "table inet " << nft_table << " {\n";
    for (auto& n : networks) {
        const std::string& b = n.name;
        auto v4 = parse_cidr4(n.get("ipv4.address"));
        auto v6 = parse_cidr6(n.get("ipv6.address"));
        // DHCP, DNS and router advertisements reach dnsmasq on the bridge.
        o << "  chain in." << b << " {\n"
          << "    type filter hook input priority 0; policy accept;\n"
          << "    iifname \"" << b << "\" udp dport { 53, 67, 547 } accept\n"
          << "    iifname \"" << b << "\" tcp dport 53 accept\n"
          << "    iifname \"" << b
          << "\" icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } "
             "accept\n"
          << "  }\n";
        o << "  chain fwd." << b << " {\n"
          << "    type filter hook forward priority 0; policy accept;\n"
          << "    iifname \"" << b << "\" accept\n"
          << "    oifname \"" << b << "\" accept\n"
          << "  }\n";
        bool nat4 = v4 && n.get_bool("ipv4.nat", false);
        bool nat6 = v6 && n.get_bool("ipv6.nat", false);
        if (nat4 || nat6) {
            o << "  chain pstrt." << b << " {\n"
              << "    type nat hook postrouting priority 100; policy accept;\n";
            if (nat4) {
                std::string net = format_ipv4(v4->network()) + "/" + std::to_string(v4->prefix);
                o << "    ip saddr " << net << " ip daddr != " << net << " masquerade\n";
            }
            if (nat6) {
                Cidr6 net = *v6;
                for (unsigned i = net.prefix / 8; i < 16; i++)
                    net.addr[i] =
                        i == net.prefix / 8 && net.prefix % 8
                            ? static_cast<uint8_t>(net.addr[i] & (0xff << (8 - net.prefix % 8)))
                            : 0;
                std::string s = format_ipv6(net.addr) + "/" + std::to_string(net.prefix);
                o << "    ip6 saddr " << s << " ip6 daddr != " << s << " masquerade\n";
            }
            o << "  }\n";
        }
    }
    o << extra_chains << "}\n";
    return o.str();
}

std::vector<Lease> parse_leases(const std::string& text) {
    std::vector<Lease> out;
    std::istringstream in(text);
    std::string line;
    bool v6 = false;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::vector<std::string> w;
        for (std::string x; f >> x;)
            w.push_back(x);
        if (w.size() >= 2 && w[0] == "duid") {
            v6 = true;
            continue;
        }
        if (w.size() < 4)
            continue;
        Lease l;
        l.expiry = parse_uint(w[0]).value_or(0);
        // IPv4: expiry MAC IP NAME CLIENTID; IPv6: expiry IAID IP NAME DUID.
        l.hwaddr = v6 ? "" : w[1];
        l.address = w[2];
        l.hostname = w[3] == "*" ? "" : w[3];
        l.type = "dynamic";
        out.push_back(l);
    }
    return out;
}

} // namespace lodge::network
