// The cgroupfs writer (runtime/cgroup-fs.cpp) against a directory tree standing in for the
// cgroup hierarchies: what it writes for each Limits, on cgroup2 and on v1.
#include "common/fileio.hpp"
#include "common/limits.hpp"
#include "runtime/cgroup.hpp"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::runtime;

namespace {

class FakeTree : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lodge-cgroup-fs-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root = tmpl;
    }
    void TearDown() override { remove_tree(root); }

    void put(const std::string& rel, const std::string& content) {
        std::string path = root + "/" + rel;
        ASSERT_EQ(mkdir_p(path.substr(0, path.rfind('/')), 0755), 0);
        std::ofstream(path) << content;
        ASSERT_TRUE(exists(path)) << path;
    }
    std::string get(const std::string& rel) {
        std::string text;
        EXPECT_EQ(read_file(root + "/" + rel, text), 0) << rel;
        return text;
    }
    // A cgroup2 payload whose controllers are enabled: the kernel shows their knobs.
    void v2_payload(const std::string& base) {
        for (const char* knob :
             {"cpuset.cpus", "cpu.max", "cpu.weight", "memory.max", "memory.high", "pids.max"})
            put(base + "/payload/" + knob, "");
    }
    Limits limits(std::initializer_list<std::pair<const char*, const char*>> keys) {
        Limits l;
        for (auto [k, v] : keys)
            EXPECT_EQ(parse_limit(k, v, l), "");
        return l;
    }

    static bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

    std::string root;
};

} // namespace

// limits.cpu=0-1 pins the payload on cgroup2 too (it used to be written only on a v1 cpuset
// hierarchy, or where the host itself was detected as pure cgroup2).
TEST_F(FakeTree, CpusetOnCgroup2) {
    v2_payload("lodge/c1.scope");
    CgroupFs cg("lodge/c1.scope", {Hierarchy{root, "", true}});
    ASSERT_TRUE(cg.apply_limits(limits({{"limits.cpu", "0-1"}})).ok());
    EXPECT_EQ(get("lodge/c1.scope/payload/cpuset.cpus"), "0-1");
    EXPECT_EQ(get("lodge/c1.scope/payload/cpu.max"), "max 100000");
    // Unset again: every CPU the parent has, which an empty value means on cgroup2.
    ASSERT_TRUE(cg.apply_limits(Limits{}).ok());
    EXPECT_EQ(get("lodge/c1.scope/payload/cpuset.cpus"), "\n");
}

TEST_F(FakeTree, Cgroup2Knobs) {
    v2_payload("b");
    CgroupFs cg("b", {Hierarchy{root, "", true}});
    ASSERT_TRUE(cg.apply_limits(limits({{"limits.cpu", "2"},
                                        {"limits.memory", "64MiB"},
                                        {"limits.processes", "100"},
                                        {"limits.cpu.allowance", "50%"}}))
                    .ok());
    EXPECT_EQ(get("b/payload/cpu.max"), "200000 100000");
    EXPECT_EQ(get("b/payload/cpu.weight"), "50");
    EXPECT_EQ(get("b/payload/memory.max"), std::to_string(64ULL << 20));
    EXPECT_EQ(get("b/payload/memory.high"), "max");
    EXPECT_EQ(get("b/payload/pids.max"), "100");
    ASSERT_TRUE(cg.apply_limits(limits({{"limits.cpu.allowance", "25ms/50ms"},
                                        {"limits.memory", "32MiB"},
                                        {"limits.memory.enforce", "soft"}}))
                    .ok());
    EXPECT_EQ(get("b/payload/cpu.max"), "25000 50000");
    EXPECT_EQ(get("b/payload/cpu.weight"), "100");
    EXPECT_EQ(get("b/payload/memory.max"), "max");
    EXPECT_EQ(get("b/payload/memory.high"), std::to_string(32ULL << 20));
    EXPECT_EQ(get("b/payload/pids.max"), "max");
}

// Without the knobs (controller not enabled there) nothing is written and nothing fails.
TEST_F(FakeTree, Cgroup2WithoutControllers) {
    ASSERT_EQ(mkdir_p(root + "/b/payload", 0755), 0);
    CgroupFs cg("b", {Hierarchy{root, "", true}});
    EXPECT_TRUE(cg.apply_limits(limits({{"limits.cpu", "0-1"}, {"limits.memory", "64MiB"}})).ok());
    std::string text;
    EXPECT_LT(read_file(root + "/b/payload/cpuset.cpus", text), 0);
}

TEST_F(FakeTree, V1Hierarchies) {
    std::string cpuset = "cpuset", cpu = "cpu", memory = "memory", pids = "pids";
    put(cpuset + "/b/cpuset.cpus", "0-3\n");
    put(cpuset + "/b/payload/cpuset.cpus", "");
    put(cpu + "/b/payload/cpu.shares", "");
    put(cpu + "/b/payload/cpu.cfs_period_us", "");
    put(cpu + "/b/payload/cpu.cfs_quota_us", "");
    put(memory + "/b/payload/memory.soft_limit_in_bytes", "");
    put(memory + "/b/payload/memory.limit_in_bytes", "");
    put(pids + "/b/payload/pids.max", "");
    CgroupFs cg("b", {Hierarchy{root + "/cpuset", "cpuset", false},
                      Hierarchy{root + "/cpu", "cpu,cpuacct", false},
                      Hierarchy{root + "/memory", "memory", false},
                      Hierarchy{root + "/pids", "pids", false}});
    ASSERT_TRUE(cg.apply_limits(limits({{"limits.cpu", "0-1"},
                                        {"limits.memory", "64MiB"},
                                        {"limits.processes", "7"}}))
                    .ok());
    EXPECT_EQ(get("cpuset/b/payload/cpuset.cpus"), "0-1");
    EXPECT_EQ(get("cpu/b/payload/cpu.cfs_quota_us"), "-1");
    EXPECT_EQ(get("cpu/b/payload/cpu.shares"), "1024");
    EXPECT_EQ(get("memory/b/payload/memory.limit_in_bytes"), std::to_string(64ULL << 20));
    EXPECT_EQ(get("memory/b/payload/memory.soft_limit_in_bytes"), "-1");
    EXPECT_EQ(get("pids/b/payload/pids.max"), "7");
    ASSERT_TRUE(cg.apply_limits(limits({{"limits.cpu", "2"}})).ok());
    EXPECT_EQ(get("cpuset/b/payload/cpuset.cpus"), "0-3"); // the parent's
    EXPECT_EQ(get("cpu/b/payload/cpu.cfs_quota_us"), "200000");
    EXPECT_EQ(get("cpu/b/payload/cpu.cfs_period_us"), "100000");
    EXPECT_EQ(get("memory/b/payload/memory.limit_in_bytes"), "-1");
}

// Without systemd the cgroups above the scope are lodge's too: on cgroup2 a controller reaches
// the payload only when each of them passes it on (it used to be enabled in the scope alone,
// so on a pure-cgroup2 host without systemd no limit had a knob to go to).
TEST_F(FakeTree, ControllersPassedDownOwnPath) {
    for (const char* dir : {"machine.slice", "machine.slice/lodge-c1.scope"}) {
        put(std::string(dir) + "/cgroup.controllers", "cpuset cpu io memory pids\n");
        put(std::string(dir) + "/cgroup.subtree_control", "");
    }
    CgroupFs cg("machine.slice/lodge-c1.scope", {Hierarchy{root, "", true}});
    cg.set_own_path(true);
    ASSERT_TRUE(cg.create_payload().ok());
    for (const char* dir : {"machine.slice", "machine.slice/lodge-c1.scope"}) {
        std::string enabled = get(std::string(dir) + "/cgroup.subtree_control");
        for (const char* c : {"+cpuset", "+cpu", "+memory", "+pids"})
            EXPECT_NE(enabled.find(c), std::string::npos) << dir << ": " << enabled;
        EXPECT_EQ(enabled.find("+io"), std::string::npos) << enabled;
    }
}

// In a systemd scope the slice above is systemd's: only the scope (delegated) is written.
TEST_F(FakeTree, ControllersInScopeOnly) {
    for (const char* dir : {"machine.slice", "machine.slice/lodge-c1.scope"}) {
        put(std::string(dir) + "/cgroup.controllers", "cpuset cpu memory pids\n");
        put(std::string(dir) + "/cgroup.subtree_control", "");
    }
    CgroupFs cg("machine.slice/lodge-c1.scope", {Hierarchy{root, "", true}});
    ASSERT_TRUE(cg.create_payload().ok());
    EXPECT_EQ(get("machine.slice/cgroup.subtree_control"), "");
    EXPECT_NE(get("machine.slice/lodge-c1.scope/cgroup.subtree_control").find("+cpuset"),
              std::string::npos);
}
