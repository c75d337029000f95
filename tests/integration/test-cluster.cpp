// Containers on storage two nodes share (lodge-cluster(7)): two lodged, each with its own state,
// runtime and log dirs and its own bus, standing in for two nodes on this one machine; the
// container's directory is bind-mounted into both state dirs as a shared filesystem would be.
// Only one node may run it; the other shows it "remote" and refuses start and delete; the
// owner's death (its supervisor killed -9, as a fenced node's would be) frees it.
#include "common/fileio.hpp"
#include "common/ownership.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "runtime/cgroup.hpp"

#include <csignal>
#include <memory>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// The OCF agent, copied where `nobody` can read it (ocf-tester checks that), with a lodgectl
// on PATH: the build's.
struct Agent {
    std::string dir, path;
    Agent() {
        dir = TestRoot::get().dir + "/" + unique_name("ocf");
        sh("mkdir -p -m 0755 " + dir + "/bin && install -m 0755 " + env_path("LODGE_OCF_AGENT") +
           " " + dir + "/container && ln -sf " + env_path("LODGE_LODGECTL") + " " + dir +
           "/bin/lodgectl");
        path = dir + "/container";
    }
    ~Agent() { sh("rm -rf " + dir); }
    // Runs ACTION with the OCF environment; returns its exit status, output in *out.
    int run(const std::string& action, const std::string& env, std::string* out = nullptr,
            const std::string& prefix = "") const {
        int st = 0;
        std::string o = sh(prefix + "env PATH=" + dir + "/bin:/usr/sbin:/usr/bin:/sbin:/bin " +
                               "OCF_ROOT=/usr/lib/ocf OCF_RESKEY_CRM_meta_interval=10000 " + env +
                               " " + path + " " + action + " 2>&1",
                           &st);
        if (out)
            *out = o;
        return st;
    }
};

struct Node {
    std::string dir, bus_address;
    std::string state() const { return dir + "/state"; }
    std::string env() const {
        return "env DBUS_SYSTEM_BUS_ADDRESS=" + bus_address + " LODGE_STATE_DIR=" + dir +
               "/state LODGE_RUNTIME_DIR=" + dir + "/run LODGE_LOG_DIR=" + dir + "/log ";
    }
    std::string ctl(const std::string& args, int* status = nullptr) const {
        return sh(env() + env_path("LODGE_LODGECTL") + " " + args + " 2>&1", status);
    }
    std::string state_of(const std::string& name) const {
        auto j = nlohmann::json::parse(ctl("list --json"), nullptr, false);
        if (j.is_array())
            for (auto& c : j)
                if (c.value("name", "") == name)
                    return c.value("state", "");
        return "";
    }
};

class SharedStorageTest : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        auto& root = TestRoot::get();
        name = unique_name("shared");
        cgroup_a = root.cgroup + "/node-a";
        cgroup_b = root.cgroup + "/node-b";
        for (auto* n : {&a, &b}) {
            n->dir = root.dir + "/" + unique_name(n == &a ? "node-a" : "node-b");
            // As TestRoot makes its own: the path to the state dir open, containers/ root-only.
            ASSERT_EQ(mkdir_p(n->state(), 0755), 0);
            ASSERT_EQ(mkdir_p(n->state() + "/containers", 0700), 0);
        }
        bus_a = std::make_unique<PrivateBus>("bus-a");
        a.bus_address = bus_a->address;
        bus_b = std::make_unique<PrivateBus>("bus-b");
        b.bus_address = bus_b->address;

        daemon_a = start_lodged(a, cgroup_a);
        ASSERT_TRUE(daemon_a->wait_ready());
        int st = 0;
        std::string out = a.ctl("create " + name, &st);
        ASSERT_EQ(st, 0) << out;
        created = true;
        // The shared filesystem: node B sees node A's directory of the container.
        shared = b.state() + "/containers/" + name;
        ASSERT_EQ(mkdir_p(shared, 0700), 0);
        sh("mount --bind " + a.state() + "/containers/" + name + " " + shared, &st);
        ASSERT_EQ(st, 0) << "cannot bind-mount the container's directory";
        mounted = true;
        daemon_b = start_lodged(b, cgroup_b);
        ASSERT_TRUE(daemon_b->wait_ready());
    }
    void TearDown() override {
        if (daemon_b)
            b.ctl("stop --force " + name);
        if (daemon_a)
            a.ctl("stop --force " + name);
        daemon_b.reset();
        if (mounted)
            sh("umount " + shared);
        if (created && daemon_a)
            a.ctl("delete --force " + name);
        daemon_a.reset();
        bus_a.reset();
        bus_b.reset();
        // A supervisor killed -9 leaves its cgroups behind; so may a node's cgroup root.
        for (auto& cg : {cgroup_a, cgroup_b})
            for (auto& h : runtime::host_hierarchies())
                sh("[ -d " + h.mountpoint + "/" + cg + " ] && find " + h.mountpoint + "/" + cg +
                   " -depth -type d -exec rmdir {} + 2>/dev/null");
        for (auto* n : {&a, &b})
            if (!n->dir.empty())
                sh("rm -rf --one-file-system " + n->dir);
    }
    std::unique_ptr<Lodged> start_lodged(const Node& n, const std::string& cgroup) {
        return std::make_unique<Lodged>(std::vector<std::string>{
            "env", "DBUS_SYSTEM_BUS_ADDRESS=" + n.bus_address, "LODGE_STATE_DIR=" + n.state(),
            "LODGE_RUNTIME_DIR=" + n.dir + "/run", "LODGE_LOG_DIR=" + n.dir + "/log",
            "LODGE_CGROUP_ROOT=" + cgroup});
    }
    std::string hostname() {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        return host;
    }

    std::string name, shared, cgroup_a, cgroup_b;
    Node a, b;
    std::unique_ptr<PrivateBus> bus_a, bus_b;
    std::unique_ptr<Lodged> daemon_a, daemon_b;
    bool created = false, mounted = false;
};

TEST_F(SharedStorageTest, OneNodeRunsItTheOtherShowsRemoteAndRefuses) {
    EXPECT_EQ(b.state_of(name), "stopped") << "node B sees the shared container";
    int st = 0;
    std::string out = a.ctl("start " + name, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(a.state_of(name), "running");

    // Node B: not stopped-and-startable, but remote, naming the owner.
    EXPECT_EQ(b.state_of(name), "remote") << b.ctl("list");
    std::string status = b.ctl("status " + name);
    EXPECT_TRUE(contains(status, "State: remote")) << status;
    EXPECT_TRUE(contains(status, "running on " + hostname())) << status;

    out = b.ctl("start " + name, &st);
    EXPECT_NE(st, 0) << "node B started a container node A runs: " << out;
    EXPECT_TRUE(contains(out, "is running on " + hostname())) << out;
    EXPECT_TRUE(contains(out, "machine-id")) << out;
    out = b.ctl("delete --force " + name, &st);
    EXPECT_NE(st, 0) << "node B deleted a container node A runs: " << out;
    EXPECT_TRUE(contains(out, "is running on")) << out;
    EXPECT_TRUE(exists(a.state() + "/containers/" + name + "/rootfs/sbin/init"));
    EXPECT_EQ(a.state_of(name), "running") << "node B's attempts disturbed node A";

    // The lock is the supervisor's, not lodged's: a supervisor started on node B by hand (past
    // lodged's check) is refused too, and names the owner.
    out = sh(b.env() + "LODGE_CGROUP_ROOT=" + cgroup_b + " timeout 60 " +
                 env_path("LODGE_SUPERVISOR") + " --log-stderr --cgroup=" + cgroup_b + "/lodge-" +
                 name + ".scope " + name + " 2>&1",
             &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "is running on " + hostname())) << out;
    EXPECT_EQ(a.state_of(name), "running");
}

// The agent on node B: not running here, nothing to stop, and a start that waits for the
// owner's lock to go (a dead node's lease on a network filesystem) and then takes over.
TEST_F(SharedStorageTest, TheAgentOnTheOtherNodeWaitsForTheLock) {
    int st = 0;
    std::string out = a.ctl("start " + name, &st);
    ASSERT_EQ(st, 0) << out;
    Agent agent;
    std::string res = "OCF_RESKEY_name=" + name;
    EXPECT_EQ(agent.run("monitor", res, &out, b.env()), 7) << out;
    EXPECT_EQ(agent.run("monitor", res + " OCF_RESKEY_CRM_meta_interval=0", &out, b.env()), 7)
        << out;
    EXPECT_EQ(agent.run("stop", res, &out, b.env()), 0) << out;
    EXPECT_EQ(a.state_of(name), "running") << "node B's stop stopped node A's container";

    std::string rc_file = agent.dir + "/start-rc";
    sh("(" + b.env() + "PATH=" + agent.dir + "/bin:/usr/sbin:/usr/bin:/sbin:/bin " +
       "OCF_ROOT=/usr/lib/ocf " + res + " " + agent.path + " start >" + agent.dir +
       "/start.log 2>&1; echo $? >" + rc_file + ".tmp; mv " + rc_file + ".tmp " + rc_file +
       ") </dev/null >/dev/null 2>&1 &");
    EXPECT_EQ(a.state_of(name), "running");
    std::string text;
    ASSERT_EQ(read_file(a.state() + "/containers/" + name + "/owner.json", text), 0);
    pid_t sup = nlohmann::json::parse(text, nullptr, false).value("supervisor_pid", 0);
    ASSERT_GT(sup, 0) << text;
    ASSERT_EQ(::kill(sup, SIGKILL), 0);
    EXPECT_TRUE(wait_until([&] { return exists(rc_file); })) << "the agent's start never ended";
    EXPECT_EQ(read_text(rc_file), "0\n") << read_text(agent.dir + "/start.log");
    EXPECT_EQ(b.state_of(name), "running");
    EXPECT_EQ(agent.run("monitor", res, &out, b.env()), 0) << out;
    EXPECT_EQ(agent.run("monitor", res, &out, a.env()), 7) << out;
}

TEST_F(SharedStorageTest, TheOwnersDeathReleasesIt) {
    int st = 0;
    std::string out = a.ctl("start " + name, &st);
    ASSERT_EQ(st, 0) << out;
    std::string text;
    ASSERT_EQ(read_file(a.state() + "/containers/" + name + "/owner.json", text), 0);
    auto record = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(record.is_object()) << text;
    pid_t sup = record.value("supervisor_pid", 0);
    ASSERT_GT(sup, 0) << text;
    EXPECT_EQ(b.state_of(name), "remote");

    // Node A's supervisor dies as a fenced node's would: no stop, no cleanup.
    ASSERT_EQ(::kill(sup, SIGKILL), 0);
    // Nothing on node B hears of it; its view follows the lock (bounded poll).
    EXPECT_TRUE(wait_until([&] { return b.state_of(name) != "remote"; }))
        << "the lock outlived its owner";
    out = b.ctl("start " + name, &st);
    ASSERT_EQ(st, 0) << "node B cannot take over: " << out;
    EXPECT_EQ(b.state_of(name), "running");
    EXPECT_TRUE(wait_until([&] { return a.state_of(name) == "remote"; }))
        << "node A shows " << a.state_of(name) << " for a container node B runs";
    out = a.ctl("start " + name, &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "is running on")) << out;

    // A clean stop on B frees it for A again.
    out = b.ctl("stop " + name + " --timeout 30", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(b.state_of(name), "stopped");
    EXPECT_NE(a.state_of(name), "remote");
    out = a.ctl("start " + name, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(a.state_of(name), "running");
}

class OneNodeTest : public LodgedFixture {
protected:
    void SetUp() override {
        LodgedFixture::SetUp();
        if (!set_up())
            return;
        name = name_container("ocf");
        int st = 0;
        std::string out = ctl("create " + name, &st);
        ASSERT_EQ(st, 0) << out;
        res = "OCF_RESKEY_name=" + name;
    }
    int run(const std::string& action, const std::string& env = "") {
        last.clear();
        return agent.run(action, res + " " + env, &last);
    }
    std::string state() {
        auto j = nlohmann::json::parse(ctl("show " + name + " --json"), nullptr, false);
        return j.is_object() ? j.value("state", "") : "";
    }
    Agent agent;
    std::string name, res, last;
};

TEST_F(OneNodeTest, PassesOcfTester) {
    if (!exists("/usr/sbin/ocf-tester"))
        GTEST_SKIP() << "no /usr/sbin/ocf-tester (Debian's resource-agents)";
    int st = 0;
    std::string out = sh("PATH=" + agent.dir + "/bin:$PATH ocf-tester -n lodge-" + name +
                             " -o name=" + name + " " + agent.path + " 2>&1",
                         &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "passed all tests")) << out;
    EXPECT_EQ(state(), "stopped") << "ocf-tester ends with a stop";
}

TEST_F(OneNodeTest, ExactCodes) {
    // Configuration errors: 6 (OCF_ERR_CONFIGURED).
    EXPECT_EQ(agent.run("validate-all", "", &last), 6) << last;
    EXPECT_EQ(agent.run("validate-all", "OCF_RESKEY_name=9bad", &last), 6) << last;
    EXPECT_EQ(run("validate-all", "OCF_RESKEY_stop_timeout=soon"), 6) << last;
    EXPECT_EQ(run("validate-all", "OCF_RESKEY_config=novalue"), 6) << last;
    EXPECT_EQ(run("validate-all"), 0) << last;
    EXPECT_EQ(run("bogus"), 3) << last;
    EXPECT_EQ(run("meta-data"), 0) << last;

    // A container this node does not have: not running (7), cannot start here (5), stopped (0).
    std::string missing = "OCF_RESKEY_name=" + unique_name("nothere");
    EXPECT_EQ(agent.run("monitor", missing, &last), 7) << last;
    EXPECT_EQ(agent.run("start", missing, &last), 5) << last;
    EXPECT_TRUE(contains(last, "does not exist on this node")) << last;
    EXPECT_EQ(agent.run("stop", missing, &last), 0) << last;

    // Stopped, started (twice: idempotent), with the config parameter applied.
    EXPECT_EQ(run("monitor"), 7) << last;
    EXPECT_EQ(run("start", "OCF_RESKEY_config='user.ocf=yes user.other=1'"), 0) << last;
    EXPECT_EQ(state(), "running");
    EXPECT_EQ(ctl("config get " + name + " user.ocf"), "yes\n");
    EXPECT_EQ(ctl("config get " + name + " user.other"), "1\n");
    EXPECT_EQ(run("start"), 0) << last;
    EXPECT_EQ(run("monitor"), 0) << last;
    EXPECT_EQ(run("monitor", "OCF_RESKEY_CRM_meta_interval=0"), 0) << last;

    // Depth 10: busybox has no systemd and has not said Ready; then it says so.
    EXPECT_EQ(run("monitor", "OCF_CHECK_LEVEL=10"), 1) << last;
    sh("cp " + env_path("LODGE_DEVLXD_CLIENT") + " " + TestRoot::get().dir + "/state/containers/" +
       name + "/rootfs/devlxd-client");
    int st = 0;
    std::string out =
        ctl("exec " + name + " -- /devlxd-client -d '{\"state\":\"Ready\"}' PATCH /1.0", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(run("monitor", "OCF_CHECK_LEVEL=10"), 0) << last;

    // Its PID 1 killed: the monitor says not running (Pacemaker recovers it).
    auto j = nlohmann::json::parse(ctl("show " + name + " --json"), nullptr, false);
    pid_t leader = j.is_object() ? j.value("leader", 0) : 0;
    ASSERT_GT(leader, 0);
    ASSERT_EQ(::kill(leader, SIGKILL), 0);
    EXPECT_TRUE(wait_until([&] { return run("monitor") != 0; }));
    EXPECT_EQ(run("monitor"), 7) << last;
    EXPECT_EQ(run("start"), 0) << last;
    EXPECT_EQ(run("monitor"), 0) << last;

    // Stop, twice, with a stop timeout.
    EXPECT_EQ(run("stop", "OCF_RESKEY_stop_timeout=20"), 0) << last;
    EXPECT_EQ(state(), "stopped");
    EXPECT_EQ(run("stop"), 0) << last;
    EXPECT_EQ(run("monitor"), 7) << last;

    // lodged unreachable: a monitor fails (1), never "not running".
    EXPECT_EQ(run("monitor", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent"), 1) << last;
    // No lodgectl on this node: a probe says not running, anything else "not installed".
    std::string bare = "env PATH=/usr/bin:/bin OCF_ROOT=/usr/lib/ocf " + res + " ";
    EXPECT_EQ(sh(bare + "OCF_RESKEY_CRM_meta_interval=0 " + agent.path +
                 " monitor >/dev/null "
                 "2>&1; echo $?"),
              "7\n");
    EXPECT_EQ(sh(bare + "OCF_RESKEY_CRM_meta_interval=10000 " + agent.path +
                 " monitor "
                 ">/dev/null 2>&1; echo $?"),
              "5\n");
    EXPECT_EQ(sh(bare + agent.path + " stop >/dev/null 2>&1; echo $?"), "0\n");
}

// -H for verbs that pass descriptors: lodgectl on the host, through ssh. A stand-in ssh logs
// its arguments and runs the remote command line here, with the build's lodgectl as lodgectl.
TEST_F(OneNodeTest, HostOptionRunsExecAsLodgectlOverSsh) {
    std::string out = ctl("start " + name);
    ASSERT_EQ(state(), "running") << out;
    std::string fake = agent.dir + "/fakessh";
    sh("mkdir -p " + fake);
    write_file_atomic(fake + "/ssh",
                      "#!/bin/sh\nprintf '%s\\n' \"$@\" >" + fake +
                          "/args\nfor a; do last=$a; done\nexec sh -c \"$last\"\n",
                      0755);
    int st = 0;
    out = sh("env PATH=" + fake + ":" + agent.dir + "/bin:/usr/bin:/bin " +
                 env_path("LODGE_LODGECTL") + " exec -H root@n2 " + name +
                 " -- sh -c \"echo \\\"it's \\$0\\\"; exit 7\" there </dev/null 2>&1",
             &st);
    EXPECT_EQ(st, 7) << out;
    EXPECT_EQ(out, "it's there\n");
    EXPECT_EQ(read_text(fake + "/args"),
              "-x\n-T\nroot@n2\n--\nlodgectl 'exec' '" + name +
                  "' '--' 'sh' '-c' 'echo \"it'\\''s $0\"; exit 7' 'there'\n");
}

// lodgectl cluster status against recorded Pacemaker 2.1 output: crm_mon and cibadmin on PATH
// are scripts that print it (the tier-3 suite reads a real cluster).
class ClusterStatusTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir = TestRoot::get().dir + "/" + unique_name("pcmk");
        fixtures = env_path("LODGE_FIXTURES") + "/pacemaker";
        sh("mkdir -p " + dir);
    }
    void TearDown() override { sh("rm -rf " + dir); }
    void fake(const std::string& tool, const std::string& body) {
        write_file_atomic(dir + "/" + tool, "#!/bin/sh\n" + body + "\n", 0755);
    }
    std::string status(const std::string& args, int* st) {
        return sh("env PATH=" + dir + ":/usr/bin:/bin " + env_path("LODGE_LODGECTL") +
                      " cluster status " + args + " 2>&1",
                  st);
    }
    std::string dir, fixtures;
};

TEST_F(ClusterStatusTest, WithoutPacemakerSaysSo) {
    int st = 0;
    std::string out = status("", &st);
    EXPECT_EQ(st, 1);
    EXPECT_TRUE(contains(out, "Pacemaker is not installed on this node")) << out;
    // Installed, but no cluster runs here: crm_mon's own reason.
    fake("crm_mon", "cat " + fixtures + "/crm_mon-not-connected.xml; exit 102");
    out = status("", &st);
    EXPECT_EQ(st, 1);
    EXPECT_TRUE(contains(out, "Not connected: crm_mon: Error: cluster is not available")) << out;
    fake("crm_mon", "echo 'crm_mon: connection refused' >&2; exit 102");
    out = status("", &st);
    EXPECT_EQ(st, 1);
    EXPECT_TRUE(contains(out, "is Pacemaker running there?")) << out;
}

TEST_F(ClusterStatusTest, ShowsWhereEachContainerRuns) {
    fake("crm_mon", "[ \"$*\" = '--one-shot --inactive --output-as=xml' ] || exit 64\ncat " +
                        fixtures + "/crm_mon.xml");
    fake("cibadmin", "cat " + fixtures + "/cib-resources.xml");
    int st = 0;
    std::string out = status("", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(out, "Cluster: quorate, DC n2, stonith DISABLED\n\n"
                   "NODE  STATE\n"
                   "n1    online (standby)\n"
                   "n2    online\n"
                   "n3    offline\n\n"
                   "RESOURCE  CONTAINER  STATE    NODE\n"
                   "web-res   web        Started  n2\n"
                   "db        db1        Stopped  -\n\n"
                   "2 container resource(s).\n");
    out = status("--json", &st);
    EXPECT_EQ(st, 0) << out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << out;
    EXPECT_EQ(j["dc"], "n2");
    EXPECT_EQ(j["stonith_enabled"], false);
    ASSERT_EQ(j["resources"].size(), 2u) << out;
    EXPECT_EQ(j["resources"][0]["container"], "web");
    EXPECT_EQ(j["resources"][0]["nodes"], nlohmann::json::array({"n2"}));
    EXPECT_EQ(j["resources"][1]["container"], "db1");
    EXPECT_EQ(j["nodes"][2]["state"], "offline");
    // Without the CIB (cibadmin fails): the resource id stands in for the container's name.
    fake("cibadmin", "exit 1");
    out = status("--no-legend", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "web-res   web-res    Started  n2\n")) << out;
}

} // namespace
