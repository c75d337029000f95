// Managed networks' model (lodge-network(7)): key checks with the key named, `auto` subnets
// that avoid what is used and fail clearly when nothing is free, dnsmasq's config bound to the
// bridge only, the nftables script confined to lodge's table, and the leases file.
#include "network/network-config.hpp"
#include "network/proxy.hpp"

#include <gtest/gtest.h>

using namespace lodge;
using namespace lodge::network;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

TEST(NetworkConfig, NamesAreInterfaceNames) {
    EXPECT_EQ(check_network_name("lodgebr0"), "");
    EXPECT_NE(check_network_name("0bad"), "");
    EXPECT_NE(check_network_name("a/b"), "");
    EXPECT_TRUE(contains(check_network_name("averyveryverylongname"), "15"));
}

TEST(NetworkConfig, KeysAreCheckedAndNamed) {
    EXPECT_EQ(check_network_key("ipv4.address", "auto"), "");
    EXPECT_EQ(check_network_key("ipv4.address", "none"), "");
    EXPECT_EQ(check_network_key("ipv4.address", "10.1.2.1/24"), "");
    EXPECT_TRUE(contains(check_network_key("ipv4.address", "10.1.2.0/24"), "ipv4.address"));
    EXPECT_NE(check_network_key("ipv4.address", "10.1.2.255/24"), "");
    EXPECT_NE(check_network_key("ipv4.address", "10.1.2.1"), "");
    EXPECT_NE(check_network_key("ipv4.address", "10.1.2.1/31"), "");
    EXPECT_EQ(check_network_key("ipv6.address", "fd42:1:2:3::1/64"), "");
    EXPECT_NE(check_network_key("ipv6.address", "fd42::1/120"), "");
    EXPECT_EQ(check_network_key("ipv4.nat", "true"), "");
    EXPECT_TRUE(contains(check_network_key("ipv4.nat", "maybe"), "ipv4.nat"));
    EXPECT_EQ(check_network_key("ipv4.dhcp.ranges", "10.0.0.10-10.0.0.20,10.0.0.30-10.0.0.40"), "");
    EXPECT_NE(check_network_key("ipv4.dhcp.ranges", "10.0.0.20-10.0.0.10"), "");
    EXPECT_EQ(check_network_key("dns.domain", "lodge"), "");
    EXPECT_NE(check_network_key("dns.domain", "bad domain"), "");
    EXPECT_EQ(check_network_key("dns.mode", "dynamic"), "");
    EXPECT_NE(check_network_key("dns.mode", "other"), "");
    EXPECT_EQ(check_network_key("bridge.mtu", "1500"), "");
    EXPECT_NE(check_network_key("bridge.mtu", "100"), "");
    EXPECT_EQ(check_network_key("bridge.hwaddr", "00:16:3e:00:00:01"), "");
    EXPECT_NE(check_network_key("bridge.hwaddr", "01:00:00:00:00:01"), "");
    EXPECT_EQ(check_network_key("user.note", "x"), "");
    EXPECT_EQ(check_network_key("lodge.default", "true"), "");
    EXPECT_NE(check_network_key("lodge.default", "yes please"), "");
    EXPECT_TRUE(contains(check_network_key("ipv4.routing", "true"), "Unknown network key"));
}

TEST(NetworkConfig, RangesMustLieInTheSubnet) {
    KeyMap c{{"ipv4.address", "10.0.0.1/24"}, {"ipv4.dhcp.ranges", "10.0.1.10-10.0.1.20"}};
    EXPECT_TRUE(contains(check_network_config(c), "outside"));
    c["ipv4.dhcp.ranges"] = "10.0.0.10-10.0.0.20";
    EXPECT_EQ(check_network_config(c), "");
}

TEST(NetworkConfig, CreateDefaultsAreLxds) {
    KeyMap c;
    apply_create_defaults(c);
    EXPECT_EQ(c["ipv4.address"], "auto");
    EXPECT_EQ(c["ipv6.address"], "auto");
    EXPECT_EQ(c["ipv4.nat"], "true");
    EXPECT_EQ(c["ipv6.nat"], "true");
    KeyMap explicit_{{"ipv4.address", "10.9.9.1/24"}, {"ipv6.address", "none"}};
    apply_create_defaults(explicit_);
    EXPECT_EQ(explicit_.count("ipv4.nat"), 0u);
}

TEST(NetworkConfig, AutoAvoidsUsedSubnets) {
    Cidr4 pool{0x0a000000, 22}; // four /24s
    std::vector<Cidr4> used{*parse_cidr4("10.0.0.0/24"), *parse_cidr4("10.0.1.5/32"),
                            *parse_cidr4("10.0.3.0/25")};
    for (int i = 0; i < 50; i++) {
        auto c = pick_ipv4_subnet(pool, used);
        ASSERT_TRUE(c);
        EXPECT_EQ(format_ipv4(c->addr), "10.0.2.1");
        EXPECT_EQ(c->prefix, 24u);
    }
    used.push_back(*parse_cidr4("10.0.2.0/24"));
    EXPECT_FALSE(pick_ipv4_subnet(pool, used));
    // A covering route (10.0.0.0/8) leaves nothing in it.
    EXPECT_FALSE(pick_ipv4_subnet(Cidr4{0x0a000000, 8}, {*parse_cidr4("10.0.0.0/8")}));
}

TEST(NetworkConfig, NoFreeSubnetSaysWhatToDo) {
    ::setenv("LODGE_NETWORK_POOL4", "192.168.77.0/24", 1);
    KeyMap c{{"ipv4.address", "auto"}, {"ipv6.address", "none"}};
    std::string e = resolve_auto(c, {*parse_cidr4("192.168.77.0/24")}, {});
    ::unsetenv("LODGE_NETWORK_POOL4");
    EXPECT_TRUE(contains(e, "No free subnet")) << e;
    EXPECT_TRUE(contains(e, "192.168.77.0/24")) << e;
    EXPECT_TRUE(contains(e, "ipv4.address=")) << e;
}

TEST(NetworkConfig, UlaIsAFreshSlash64) {
    auto c = pick_ipv6_subnet({});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->addr[0], 0xfd);
    EXPECT_EQ(c->prefix, 64u);
    KeyMap k{{"ipv4.address", "none"}, {"ipv6.address", "auto"}};
    EXPECT_EQ(resolve_auto(k, {}, {}), "");
    EXPECT_EQ(check_network_key("ipv6.address", k["ipv6.address"]), "");
    EXPECT_TRUE(contains(k["ipv6.address"], "/64"));
}

TEST(NetworkConfig, DnsmasqIsBoundToTheBridgeOnly) {
    Network n{"lodgebr0",
              {{"ipv4.address", "10.5.6.1/24"},
               {"ipv6.address", "fd42:1:2:3::1/64"},
               {"raw.dnsmasq", "log-queries"}}};
    std::string conf = dnsmasq_config(n, {"/run/p", "/var/l", "/run/h"});
    EXPECT_TRUE(contains(conf, "\nbind-interfaces\n"));
    EXPECT_TRUE(contains(conf, "\ninterface=lodgebr0\n"));
    EXPECT_TRUE(contains(conf, "listen-address=10.5.6.1\n"));
    EXPECT_TRUE(contains(conf, "dhcp-range=10.5.6.2,10.5.6.254,255.255.255.0"));
    EXPECT_TRUE(contains(conf, "enable-ra\n"));
    EXPECT_TRUE(contains(conf, "constructor:lodgebr0,ra-stateless"));
    EXPECT_TRUE(contains(conf, "domain=lodge\nlocal=/lodge/\n"));
    EXPECT_TRUE(contains(conf, "dhcp-ignore-names\n"));
    EXPECT_TRUE(contains(conf, "dhcp-hostsfile=/run/h\n"));
    EXPECT_TRUE(contains(conf, "\nlog-queries\n"));
    n.config["dns.mode"] = "none";
    n.config["ipv4.dhcp.ranges"] = "10.5.6.100-10.5.6.110";
    conf = dnsmasq_config(n, {"/run/p", "/var/l", "/run/h"});
    EXPECT_TRUE(contains(conf, "port=0\n"));
    EXPECT_TRUE(contains(conf, "dhcp-range=10.5.6.100,10.5.6.110,"));
    EXPECT_FALSE(contains(conf, "10.5.6.2,"));
}

TEST(NetworkConfig, HostsEntriesGiveNamesAndStaticLeases) {
    std::string h = dnsmasq_hosts(
        {{"c1", "00:16:3e:00:00:01", "", ""}, {"c2", "00:16:3e:00:00:02", "10.0.0.5", "fd42::5"}});
    EXPECT_EQ(h, "00:16:3e:00:00:01,c1\n00:16:3e:00:00:02,10.0.0.5,[fd42::5],c2\n");
}

TEST(NetworkConfig, NftScriptTouchesOnlyLodgesTable) {
    ::unsetenv("LODGE_STATE_DIR");
    Network a{"br1", {{"ipv4.address", "10.1.1.1/24"}, {"ipv4.nat", "true"}}};
    Network b{"br2", {{"ipv4.address", "10.2.2.1/24"}, {"ipv6.address", "none"}}};
    std::string s = nft_script({a, b}, true);
    EXPECT_TRUE(contains(s, "delete table inet lodge\n"));
    EXPECT_TRUE(contains(s, "ip saddr 10.1.1.0/24 ip daddr != 10.1.1.0/24 masquerade"));
    EXPECT_FALSE(contains(s, "10.2.2.0/24 ip daddr != 10.2.2.0/24 masquerade"));
    EXPECT_TRUE(contains(s, "chain fwd.br2"));
    // Every table the script names is lodge's.
    for (size_t at = s.find("table "); at != std::string::npos; at = s.find("table ", at + 1))
        EXPECT_EQ(s.substr(at, 16), "table inet lodge") << s;
    EXPECT_EQ(nft_script({}, true), "add table inet lodge\ndelete table inet lodge\n");
}

// Instances with their own state dir get tables of their own: one replacing its table never
// removes another's rules. The default state dir keeps the contract's "inet lodge".
TEST(NetworkConfig, TableNameFollowsTheStateDir) {
    ::unsetenv("LODGE_STATE_DIR");
    EXPECT_EQ(nft_table(), "lodge");
    ::setenv("LODGE_STATE_DIR", "/var/lib/lodge/", 1);
    EXPECT_EQ(nft_table(), "lodge");
    ::setenv("LODGE_STATE_DIR", "/tmp/a/state", 1);
    std::string a = nft_table();
    ::setenv("LODGE_STATE_DIR", "/tmp/b/state", 1);
    std::string b = nft_table();
    EXPECT_NE(a, b);
    EXPECT_EQ(a.rfind("lodge-", 0), 0u);
    EXPECT_EQ(a.size(), 14u);
    Network n{"br1", {{"ipv4.address", "10.1.1.1/24"}}};
    std::string s = nft_script({n}, true);
    EXPECT_TRUE(contains(s, "delete table inet " + b + "\n")) << s;
    EXPECT_FALSE(contains(s, a));
    ::unsetenv("LODGE_STATE_DIR");
}

TEST(NetworkConfig, ProxyNatChains) {
    EXPECT_EQ(nft_nat_chains({}), "");
    ProxyDevice any, one, v6;
    ASSERT_EQ(parse_proxy_device("web",
                                 {{"type", "proxy"},
                                  {"listen", "tcp:0.0.0.0:80"},
                                  {"connect", "tcp:10.1.1.5:8080"},
                                  {"nat", "true"}},
                                 any),
              "");
    ASSERT_EQ(parse_proxy_device("dns",
                                 {{"type", "proxy"},
                                  {"listen", "udp:192.0.2.1:53"},
                                  {"connect", "udp:10.1.1.5:53"},
                                  {"nat", "true"}},
                                 one),
              "");
    ASSERT_EQ(parse_proxy_device("w6",
                                 {{"type", "proxy"},
                                  {"listen", "tcp:[::]:80"},
                                  {"connect", "tcp:[fd42::5]:80"},
                                  {"nat", "true"}},
                                 v6),
              "");
    std::string s = nft_nat_chains({{"c1", "web", any.listen, any.connect},
                                    {"c1", "dns", one.listen, one.connect},
                                    {"c2", "w6", v6.listen, v6.connect}});
    EXPECT_TRUE(contains(s, "type nat hook prerouting priority dstnat")) << s;
    EXPECT_TRUE(contains(s, "type nat hook output priority -100")) << s;
    EXPECT_TRUE(contains(s, "meta nfproto ipv4 fib daddr type local tcp dport 80 dnat ip to "
                            "10.1.1.5:8080 comment \"c1/web\""))
        << s;
    // The host's loopback is never sent to a bridge.
    EXPECT_TRUE(contains(s, "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 80")) << s;
    EXPECT_TRUE(contains(s, "ip daddr 192.0.2.1 udp dport 53 dnat ip to 10.1.1.5:53")) << s;
    EXPECT_TRUE(contains(s, "dnat ip6 to [fd42::5]:80")) << s;
    // Inside lodge's table, in the same transaction as the networks' rules.
    Network n{"br1", {{"ipv4.address", "10.1.1.1/24"}}};
    ::unsetenv("LODGE_STATE_DIR");
    std::string script = nft_script({n}, true, s);
    EXPECT_TRUE(contains(script, "chain fwd.br1")) << script;
    EXPECT_TRUE(contains(script, "chain proxy.pre")) << script;
    EXPECT_EQ(script.back(), '\n');
    EXPECT_EQ(script.substr(script.size() - 2), "}\n");
}

// A device name that escaped validation (a config from an older lodged) cannot end the
// comment's quotes and add nft statements.
TEST(NetworkConfig, ProxyNatCommentCannotInjectStatements) {
    ProxyDevice p;
    ASSERT_EQ(parse_proxy_device("web",
                                 {{"type", "proxy"},
                                  {"listen", "tcp:0.0.0.0:80"},
                                  {"connect", "tcp:10.1.1.5:8080"},
                                  {"nat", "true"}},
                                 p),
              "");
    std::string s =
        nft_nat_chains({{"c1", "x\" accept\n    tcp dport 22 accept #", p.listen, p.connect}});
    EXPECT_TRUE(contains(s, "comment \"c1/x__accept_____tcp_dport_22_accept__\"\n")) << s;
    EXPECT_FALSE(contains(s, "dport 22")) << s;
}

TEST(NetworkConfig, LeasesFile) {
    auto l = parse_leases("1700000000 00:16:3e:aa:bb:cc 10.0.0.7 c1 01:00:16:3e:aa:bb:cc\n"
                          "1700000001 00:16:3e:aa:bb:dd 10.0.0.8 * *\n"
                          "duid 00:01:00:01\n"
                          "1700000002 1234 fd42::7 c1 00:01\n");
    ASSERT_EQ(l.size(), 3u);
    EXPECT_EQ(l[0].address, "10.0.0.7");
    EXPECT_EQ(l[0].hostname, "c1");
    EXPECT_EQ(l[0].hwaddr, "00:16:3e:aa:bb:cc");
    EXPECT_EQ(l[1].hostname, "");
    EXPECT_EQ(l[2].address, "fd42::7");
    EXPECT_EQ(l[2].hwaddr, "");
}

} // namespace
