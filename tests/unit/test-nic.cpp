// nic naming and key rules (common/nic): LXD's first free ethN, 00:16:3e MACs, vethXXXXXXXX
// host names, and refusals that name the device and the key.
#include "common/config.hpp"
#include "common/nic.hpp"
#include "../nic-shapes.hpp"

#include <gtest/gtest.h>

using namespace lodge;

namespace {

ContainerConfig with_nics(std::initializer_list<std::pair<std::string, KeyMap>> devs) {
    ContainerConfig c;
    c.name = "c1";
    for (auto& [dev, keys] : devs) {
        KeyMap k = keys;
        k["type"] = "nic";
        if (!k.count("nictype"))
            k["nictype"] = "p2p";
        c.devices[dev] = k;
    }
    return c;
}

TEST(Nic, NamesAreTheFirstFreeEthNInDeviceOrderAndStay) {
    auto c = with_nics({{"a", {}}, {"b", {{"name", "eth1"}}}, {"c", {}}, {"d", {}}});
    c.config["volatile.d.name"] = "eth0";
    EXPECT_TRUE(fill_nic_volatile(c));
    EXPECT_EQ(c.get("volatile.a.name"), "eth2"); // eth0 (d's volatile) and eth1 (b's key) are used
    EXPECT_EQ(c.get("volatile.b.name"), "");     // a set name needs no volatile one
    EXPECT_EQ(c.get("volatile.c.name"), "eth3");
    EXPECT_EQ(c.get("volatile.d.name"), "eth0");
    auto filled = c;
    EXPECT_FALSE(fill_nic_volatile(filled)) << "a second fill changes nothing";
    EXPECT_EQ(filled.config, c.config);
    EXPECT_EQ(nic_spec(c, "b").name, "eth1");
    EXPECT_EQ(check_container_config(c), "");
}

TEST(Nic, NamesInTheRunningContainerCountAsUsed) {
    auto c = with_nics({{"a", {}}});
    fill_nic_volatile(c, {"lo", "eth0"});
    EXPECT_EQ(c.get("volatile.a.name"), "eth1");
}

TEST(Nic, MacsAndHostNamesHaveLxdsShape) {
    auto c = with_nics({{"a", {}}, {"b", {{"hwaddr", "02:00:00:00:00:01"}}}});
    fill_nic_volatile(c);
    EXPECT_TRUE(test::is_lxd_mac(c.get("volatile.a.hwaddr"))) << c.get("volatile.a.hwaddr");
    EXPECT_EQ(c.get("volatile.b.hwaddr"), "");
    EXPECT_EQ(nic_spec(c, "b").hwaddr, "02:00:00:00:00:01");
    EXPECT_NE(random_hwaddr(), random_hwaddr());
    EXPECT_TRUE(test::is_veth_name(random_host_name()));
    EXPECT_TRUE(test::is_lxd_mac(random_hwaddr()));
    EXPECT_FALSE(test::is_lxd_mac("00:16:3e:AA:00:00"));
    EXPECT_FALSE(test::is_veth_name("veth1234567g"));
    EXPECT_TRUE(is_unicast_hwaddr("00:16:3E:AA:bb:01"));
    EXPECT_FALSE(is_unicast_hwaddr("01:16:3e:aa:bb:01")); // multicast
    EXPECT_FALSE(is_unicast_hwaddr("00:00:00:00:00:00"));
    EXPECT_FALSE(is_unicast_hwaddr("00:16:3e:aa:bb"));
    EXPECT_FALSE(is_unicast_hwaddr("00-16-3e-aa-bb-01"));
}

TEST(Nic, BadKeysAreRefusedNamingDeviceAndKey) {
    struct Case {
        KeyMap keys;
        const char* expect;
    };
    for (auto& [keys, expect] : std::initializer_list<Case>{
             {{{"type", "nic"}}, "Device \"x\": nic needs \"nictype\""},
             {{{"type", "nic"}, {"nictype", "sriov"}}, "Device \"x\": unknown \"nictype\" \"sriov\""},
             {{{"type", "nic"}, {"nictype", "bridged"}}, "Device \"x\": nictype=bridged needs \"parent\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"parent", "br0"}}, "Device \"x\": \"parent\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"name", "a/b"}}, "Device \"x\": invalid \"name\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"name", "sixteen-chars-xx"}},
              "Device \"x\": invalid \"name\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"hwaddr", "nope"}}, "Device \"x\": invalid \"hwaddr\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"mtu", "1279"}}, "Device \"x\": invalid \"mtu\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"mtu", "65536"}}, "Device \"x\": invalid \"mtu\""},
             {{{"type", "nic"}, {"nictype", "macvlan"}, {"parent", "e"}, {"host_name", "v"}},
              "Device \"x\": \"host_name\""},
             {{{"type", "nic"}, {"nictype", "p2p"}, {"ipv4.address", "1.2.3.4"}},
              "Device \"x\": \"ipv4.address\" needs \"network\""},
         }) {
        ContainerConfig c;
        c.name = "c1";
        c.devices["x"] = keys;
        std::string e = check_container_config(c);
        EXPECT_EQ(e.rfind(expect, 0), 0u) << "got: " << e << "\nexpected: " << expect;
    }
    auto dup = with_nics({{"a", {{"host_name", "vh0"}}}, {"b", {{"host_name", "vh0"}}}});
    EXPECT_EQ(check_container_config(dup),
              "Device \"b\": \"host_name\" \"vh0\" is already used by device \"a\"");
    auto same = with_nics({{"a", {}}, {"b", {{"name", "eth0"}}}});
    same.config["volatile.a.name"] = "eth0";
    EXPECT_EQ(check_container_config(same),
              "Device \"b\": \"name\" \"eth0\" is already used by device \"a\"");
}

TEST(Nic, RemovedDeviceTakesItsVolatileKeys) {
    auto c = with_nics({{"a", {}}, {"ab", {}}});
    fill_nic_volatile(c);
    c.config["volatile.a.host_name"] = "veth00000000";
    drop_device_volatile(c, "a");
    EXPECT_EQ(c.get("volatile.a.name"), "");
    EXPECT_EQ(c.get("volatile.a.hwaddr"), "");
    EXPECT_EQ(c.get("volatile.a.host_name"), "");
    EXPECT_EQ(c.get("volatile.ab.name"), "eth1");
}

} // namespace

// network=NAME (lodge-network(7)): a bridged nic on the network's bridge; static addresses
// only with a network; no parent or other nictype beside it.
TEST(Nic, NetworkKeyMakesABridgedNicOnTheNetworksBridge) {
    EXPECT_EQ(check_nic_device("eth0", {{"type", "nic"}, {"network", "lodgebr0"}}), "");
    EXPECT_EQ(check_nic_device("eth0", {{"type", "nic"},
                                        {"network", "lodgebr0"},
                                        {"ipv4.address", "10.0.0.5"},
                                        {"ipv6.address", "fd42::5"}}),
              "");
    EXPECT_NE(check_nic_device("eth0", {{"type", "nic"}, {"network", "n"}, {"parent", "br0"}}),
              "");
    EXPECT_NE(
        check_nic_device("eth0", {{"type", "nic"}, {"network", "n"}, {"nictype", "macvlan"}}), "");
    EXPECT_NE(check_nic_device("eth0", {{"type", "nic"},
                                        {"nictype", "bridged"},
                                        {"parent", "br0"},
                                        {"ipv4.address", "10.0.0.5"}}),
              "");
    EXPECT_NE(check_nic_device("eth0", {{"type", "nic"}, {"network", "n"}, {"ipv4.address", "x"}}),
              "");
    ContainerConfig c;
    c.name = "c1";
    c.devices["eth0"] = {{"type", "nic"}, {"network", "lodgebr0"}};
    fill_nic_volatile(c);
    NicSpec s = nic_spec(c, "eth0");
    EXPECT_EQ(s.nictype, "bridged");
    EXPECT_EQ(s.parent, "lodgebr0");
}
