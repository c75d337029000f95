// limits.* parsed once (common/limits.hpp): every key form lodge takes from LXD.
#include "common/limits.hpp"
#include "common/validate.hpp"

#include <gtest/gtest.h>

using namespace lodge;

namespace {

Limits parse(const std::string& key, const std::string& value) {
    Limits l;
    EXPECT_EQ(parse_limit(key, value, l), "") << key << "=" << value;
    return l;
}

std::string refused(const std::string& key, const std::string& value) {
    Limits l;
    return parse_limit(key, value, l);
}

} // namespace

TEST(Limits, CpuCount) {
    auto l = parse("limits.cpu", "2");
    EXPECT_EQ(l.cpu_count, 2u);
    EXPECT_EQ(l.cpu_set, "");
    ASSERT_TRUE(l.cpu_max());
    EXPECT_EQ(l.cpu_max()->quota_usec, 200000u);
    EXPECT_EQ(l.cpu_max()->period_usec, 100000u);
}

TEST(Limits, CpuSet) {
    for (const char* set : {"0-1", "0,2", "0-1,3", "1-1"}) {
        auto l = parse("limits.cpu", set);
        EXPECT_FALSE(l.cpu_count) << set;
        EXPECT_EQ(l.cpu_set, set);
        EXPECT_FALSE(l.cpu_max()) << set << ": a set pins, it sets no quota";
    }
}

TEST(Limits, CpuAllowancePercent) {
    auto l = parse("limits.cpu.allowance", "50%");
    EXPECT_EQ(l.cpu_allowance_percent, 50u);
    EXPECT_FALSE(l.cpu_quota);
    EXPECT_FALSE(l.cpu_max());
}

TEST(Limits, CpuAllowanceTime) {
    auto l = parse("limits.cpu.allowance", "25ms/100ms");
    ASSERT_TRUE(l.cpu_quota);
    EXPECT_EQ(l.cpu_quota->quota_usec, 25000u);
    EXPECT_EQ(l.cpu_quota->period_usec, 100000u);
    // A hard quota wins over a count.
    EXPECT_EQ(parse_limit("limits.cpu", "4", l), "");
    EXPECT_EQ(l.cpu_max()->quota_usec, 25000u);
    auto s = parse("limits.cpu.allowance", "1s/1s");
    EXPECT_EQ(s.cpu_quota->quota_usec, 1000000u);
    auto u = parse("limits.cpu.allowance", "500us/10ms");
    EXPECT_EQ(u.cpu_quota->quota_usec, 500u);
    EXPECT_EQ(u.cpu_quota->period_usec, 10000u);
}

TEST(Limits, MemoryBytes) {
    EXPECT_EQ(parse("limits.memory", "256MiB").memory_bytes, 256ULL << 20);
    EXPECT_EQ(parse("limits.memory", "1GB").memory_bytes, 1000000000ULL);
    EXPECT_EQ(parse("limits.memory", "1048576").memory_bytes, 1048576ULL);
    EXPECT_EQ(parse("limits.memory", "2GiB").memory(1ULL << 40), 2ULL << 30);
}

TEST(Limits, MemoryPercent) {
    auto l = parse("limits.memory", "50%");
    EXPECT_FALSE(l.memory_bytes);
    EXPECT_EQ(l.memory_percent, 50u);
    EXPECT_EQ(l.memory(8ULL << 30), 4ULL << 30);
    // A later value replaces the earlier one entirely.
    EXPECT_EQ(parse_limit("limits.memory", "1GiB", l), "");
    EXPECT_FALSE(l.memory_percent);
    EXPECT_EQ(l.memory(8ULL << 30), 1ULL << 30);
}

TEST(Limits, MemoryEnforce) {
    EXPECT_TRUE(parse("limits.memory.enforce", "soft").memory_soft);
    EXPECT_FALSE(parse("limits.memory.enforce", "hard").memory_soft);
}

TEST(Limits, Processes) {
    EXPECT_EQ(parse("limits.processes", "500").processes, 500u);
}

TEST(Limits, BadValuesNameTheKey) {
    for (auto [key, value] : std::initializer_list<std::pair<const char*, const char*>>{
             {"limits.cpu", "two"},
             {"limits.cpu", "1-"},
             {"limits.cpu.allowance", "0%"},
             {"limits.cpu.allowance", "150%"},
             {"limits.cpu.allowance", "25ms"},
             {"limits.cpu.allowance", "25ms/100"},
             {"limits.cpu.allowance", "25ms/2s"},
             {"limits.memory", "lots"},
             {"limits.memory", "0%"},
             {"limits.memory", "101%"},
             {"limits.memory", "100"},
             {"limits.memory.enforce", "maybe"},
             {"limits.processes", "0"},
             {"limits.processes", "-1"},
         }) {
        auto e = refused(key, value);
        EXPECT_NE(e.find(key), std::string::npos) << key << "=" << value << ": " << e;
        EXPECT_NE(e.find("Invalid value"), std::string::npos) << e;
    }
    EXPECT_NE(refused("limits.bogus", "1").find("Unknown config key"), std::string::npos);
}

// A bad value leaves what was parsed before it alone.
TEST(Limits, BadValueKeepsEarlier) {
    Limits l = parse("limits.cpu", "0-1");
    EXPECT_NE(parse_limit("limits.cpu", "x", l), "");
    EXPECT_EQ(l.cpu_set, "0-1");
}

// The validator and the writers read the same parser: what one takes, the other takes.
TEST(Limits, ValidatorUsesTheParser) {
    EXPECT_EQ(check_config_key("limits.cpu.allowance", "25ms/100ms"), "");
    EXPECT_EQ(check_config_key("limits.memory", "50%"), "");
    EXPECT_NE(check_config_key("limits.cpu.allowance", "25ms"), "");
}

TEST(Limits, FromConfig) {
    ContainerConfig c;
    c.config = {{"limits.cpu", "0-1"},
                {"limits.memory", "64MiB"},
                {"limits.processes", "100"},
                {"user.x", "y"}};
    std::string error;
    Limits l = limits_of(c, &error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(l.cpu_set, "0-1");
    EXPECT_EQ(l.memory_bytes, 64ULL << 20);
    EXPECT_EQ(l.processes, 100u);
    c.config["limits.memory"] = "nonsense";
    l = limits_of(c, &error);
    EXPECT_NE(error.find("limits.memory"), std::string::npos);
    EXPECT_FALSE(l.memory_bytes);
}
