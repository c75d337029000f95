#include "common/validate.hpp"

#include <csignal>
#include <gtest/gtest.h>

using namespace lodge;

TEST(ContainerName, AcceptsHostnameRules) {
    EXPECT_EQ(check_container_name("c1"), "");
    EXPECT_EQ(check_container_name("web-01"), "");
    EXPECT_EQ(check_container_name(std::string(63, 'a')), "");
}

TEST(ContainerName, RefusesWithTheRuleNamed) {
    EXPECT_NE(check_container_name("").find("empty"), std::string::npos);
    EXPECT_NE(check_container_name(std::string(64, 'a')).find("63"), std::string::npos);
    EXPECT_NE(check_container_name("1abc").find("digit"), std::string::npos);
    EXPECT_NE(check_container_name("-abc").find("start with '-'"), std::string::npos);
    EXPECT_NE(check_container_name("abc-").find("end with '-'"), std::string::npos);
    EXPECT_NE(check_container_name("a_b").find("letters, digits"), std::string::npos);
    EXPECT_NE(check_container_name("a.b").find("letters, digits"), std::string::npos);
    EXPECT_NE(check_container_name("a/b").find("letters, digits"), std::string::npos);
    EXPECT_NE(check_container_name("caf\xc3\xa9").find("letters, digits"), std::string::npos);
}

TEST(ConfigKey, KnownKeysAndValues) {
    EXPECT_EQ(check_config_key("security.privileged", "true"), "");
    EXPECT_EQ(check_config_key("security.privileged", "0"), "");
    EXPECT_EQ(check_config_key("user.anything.goes", "x y z"), "");
    EXPECT_EQ(check_config_key("environment.FOO", "bar"), "");
    EXPECT_EQ(check_config_key("limits.memory", "256MiB"), "");
    EXPECT_EQ(check_config_key("limits.memory", "50%"), "");
    EXPECT_EQ(check_config_key("limits.cpu", "2"), "");
    EXPECT_EQ(check_config_key("limits.cpu", "0-1,3"), "");
    EXPECT_EQ(check_config_key("limits.processes", "500"), "");
    EXPECT_EQ(check_config_key("boot.stop.signal", "auto"), "");
    EXPECT_EQ(check_config_key("boot.stop.signal", "SIGRTMIN+3"), "");
    EXPECT_EQ(check_config_key("boot.reboot.signal", "SIGINT"), "");
    EXPECT_EQ(check_config_key("boot.host_shutdown_timeout", "5"), "");
    EXPECT_EQ(check_config_key("security.syscalls.deny", "syslog\nptrace"), "");
    EXPECT_EQ(check_config_key("cloud-init.user-data", "#cloud-config\n"), "");
}

TEST(ConfigKey, RefusesWithKeyNamed) {
    EXPECT_NE(check_config_key("security.privileged", "maybe").find("security.privileged"),
              std::string::npos);
    EXPECT_NE(check_config_key("limits.memory", "lots").find("limits.memory"), std::string::npos);
    EXPECT_NE(check_config_key("limits.cpu", "3-1").find("limits.cpu"), std::string::npos);
    EXPECT_NE(check_config_key("boot.stop.signal", "SIGNOPE").find("boot.stop.signal"),
              std::string::npos);
    EXPECT_NE(check_config_key("no.such.key", "x").find("Unknown config key"), std::string::npos);
    EXPECT_NE(check_config_key("volatile.eth0.hwaddr", "x").find("read-only"), std::string::npos);
    EXPECT_EQ(check_config_key("volatile.eth0.hwaddr", "x", KeySource::lodge), "");
    EXPECT_NE(check_config_key("user.", "x"), "");
}

TEST(Parse, Signals) {
    EXPECT_EQ(parse_signal("SIGPWR"), SIGPWR);
    EXPECT_EQ(parse_signal("PWR"), SIGPWR);
    EXPECT_EQ(parse_signal("30"), 30);
    EXPECT_EQ(parse_signal("SIGRTMIN+3"), 37);
    EXPECT_EQ(parse_signal("RTMIN+3"), 37);
    EXPECT_FALSE(parse_signal("0"));
    EXPECT_FALSE(parse_signal("65"));
    EXPECT_FALSE(parse_signal("SIGRTMIN+99"));
    EXPECT_EQ(signal_name(37), "SIGRTMIN+3");
    EXPECT_EQ(signal_name(SIGKILL), "SIGKILL");
}

TEST(Parse, Sizes) {
    EXPECT_EQ(parse_size("256MiB"), 256ULL << 20);
    EXPECT_EQ(parse_size("1GB"), 1000000000ULL);
    EXPECT_EQ(parse_size("4096"), 4096ULL);
    EXPECT_FALSE(parse_size("12XB"));
    EXPECT_FALSE(parse_size("99999999999999999999999"));
    bool percent = false;
    EXPECT_EQ(parse_size("50%", &percent), 50ULL);
    EXPECT_TRUE(percent);
    EXPECT_FALSE(parse_size("50%"));
}

TEST(ConfigKey, IdmapBaseMustNotMakeRootAHostSystemId) {
    for (auto* bad : {"0", "1000", "65535"}) {
        std::string e = check_config_key("security.idmap.base", bad);
        EXPECT_NE(e.find("security.idmap.base"), std::string::npos) << bad;
        EXPECT_NE(e.find("host system id"), std::string::npos) << e;
    }
    EXPECT_EQ(check_config_key("security.idmap.base", "65536"), "");
    EXPECT_EQ(check_config_key("security.idmap.base", "2000000"), "");
    // A container that has one from before is still loaded (and refused at start).
    EXPECT_EQ(check_config_key("security.idmap.base", "1000", KeySource::lodge), "");
    EXPECT_NE(check_config_key("security.idmap.size", "100"), "");
    EXPECT_NE(check_config_key("security.idmap.size", "99999999999"), "");
    EXPECT_EQ(check_config_key("security.idmap.size", "131072"), "");
}

TEST(ConfigKey, SecretKeys) {
    for (auto* k : {"cloud-init.user-data", "cloud-init.network-config", "environment.DB_PASSWORD",
                    "user.token", "user.user-data", "user.meta-data"})
        EXPECT_TRUE(is_secret_config_key(k)) << k;
    for (auto* k : {"limits.memory", "security.privileged", "volatile.eth0.hwaddr", "image.os",
                    "volatile.last_state.ready"})
        EXPECT_FALSE(is_secret_config_key(k)) << k;
}
