// Tier 1: lodged restarting under running containers: a kill -9 with a container running or
// mid-operation loses nothing, a failed container reads the same after a restart, lodged exits
// when idle, and socket activation hands the devlxd socket over.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "nic-shapes.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

using LodgedTest = LodgedFixture; // test-lodged.cpp's suite

TEST_F(LodgedTest, KillingLodgedNeverTouchesARunningContainer) {
    std::string n = name_container("crash");
    ctl("create " + n);
    ctl("start " + n);
    auto before = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    ASSERT_EQ(before["state"], "running");
    daemon->kill9();
    // The container's PID 1 is alive while lodged is gone.
    EXPECT_EQ(kill(before["leader"].get<pid_t>(), 0), 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    auto after = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    EXPECT_EQ(after["state"], "running");
    EXPECT_EQ(after["leader"], before["leader"]);
    EXPECT_EQ(after["boot_id"], before["boot_id"]);
    int st = 0;
    ctl("stop " + n, &st);
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
}

// A container that failed shows the same state and reason whether the lodged that shows it
// saw it fail or started afterwards (it was "error" before a lodged restart and "stopped"
// after: the state file was read in two places that disagreed). Two ways to fail: PID 1
// cannot be started at all, and a restart finds it cannot start PID 1 again.
TEST_F(LodgedTest, FailedContainerShowsTheSameAfterLodgedRestart) {
    std::string never = name_container("nostart"), again = name_container("norestart");
    int st = 0;
    ASSERT_EQ(ctl("create " + never, &st), "Created container " + never + "\n");
    ASSERT_EQ(ctl("create " + again, &st), "Created container " + again + "\n");
    auto init_of = [](const std::string& n) {
        return TestRoot::get().dir + "/state/containers/" + n + "/rootfs/sbin/init";
    };
    ASSERT_EQ(::unlink(init_of(never).c_str()), 0);
    std::string out = ctl("start " + never, &st);
    EXPECT_NE(st, 0) << out;
    ASSERT_EQ(ctl("start " + again, &st), "");
    ASSERT_EQ(::unlink(init_of(again).c_str()), 0);
    ctl("restart " + again);
    auto show = [](const std::string& n) {
        return nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    };
    // The failed restart reaches lodged when the supervisor's watch stream ends.
    ASSERT_TRUE(wait_until([&] { return show(again).value("state", "") == "error"; }))
        << show(again).dump();
    auto before_never = show(never), before_again = show(again);
    ASSERT_EQ(before_never.value("state", ""), "error") << before_never.dump();
    EXPECT_FALSE(before_never.value("reason", "").empty());
    EXPECT_TRUE(contains(before_again.value("reason", ""), "restart failed"))
        << before_again.dump();

    daemon.reset();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    for (auto& [n, before] : {std::pair{never, before_never}, std::pair{again, before_again}}) {
        auto after = show(n);
        EXPECT_EQ(after.value("state", ""), before.value("state", "")) << n << ": " << after.dump();
        EXPECT_EQ(after.value("reason", ""), before.value("reason", "")) << n;
    }
}

// kill -9 of lodged while it creates, starts or stops: whatever moment the kill lands on, the
// restarted lodged shows each container whole or not at all, and its real state.
TEST_F(LodgedTest, KillNineDuringOperationsLosesNothing) {
    std::string base = name_container("k9");
    const std::string lodgectl = env_path("LODGE_LODGECTL");
    const std::string containers = TestRoot::get().dir + "/state/containers/";
    for (int round = 0; round < 8; round++) {
        std::string n = base + "x" + std::to_string(round);
        created.push_back(n);
        // The kill lands after a different number of microseconds each round.
        std::string op =
            round % 2 ? "create " + n + " && " + lodgectl + " start " + n : "create " + n;
        // (Deliberately a delay, not a wait: any moment must do. The host has no usleep.)
        char delay[32];
        std::snprintf(delay, sizeof delay, "%.4f", round * 0.0025);
        sh("(" + lodgectl + " " + op + " >/dev/null 2>&1 &) ; sleep " + delay);
        daemon->kill9();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
        std::string list = ctl("list --no-legend");
        bool listed = contains(list, n + " ");
        // Listed means complete on disk; not listed means nothing of it remains.
        EXPECT_EQ(listed, exists(containers + n + "/config.json")) << list;
        if (listed) {
            EXPECT_TRUE(exists(containers + n + "/rootfs/sbin/init")) << n;
        } else {
            EXPECT_FALSE(exists(containers + n)) << n;
        }
        // Leftovers go in workers right after the start: wait for them (bounded).
        EXPECT_TRUE(wait_until_sh("[ \"$(ls -A " + containers + " | grep -c '^\\.')\" = 0 ]"))
            << "an unfinished create was left behind";
        // A container that runs is reported running, with its real PID 1.
        auto j = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
        if (j.is_object() && j.value("state", "") == "running") {
            EXPECT_EQ(kill(j["leader"].get<pid_t>(), 0), 0);
            int st = 0;
            ctl("stop " + n + " --force", &st);
            EXPECT_EQ(st, 0);
        }
    }
}

TEST_F(LodgedTest, ExitsWhenIdleAndNoContainerRuns) {
    daemon.reset();
    auto idle = std::make_unique<Lodged>(std::vector<std::string>{}, "1");
    ASSERT_TRUE(idle->wait_ready());
    int status = 0;
    // It exits on its own after one idle second; waitpid is the event.
    ASSERT_EQ(waitpid(idle->pid, &status, 0), idle->pid);
    idle->pid = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
}

TEST_F(LodgedTest, SocketActivationHandsOverTheDevlxdSocket) {
    daemon.reset();
    std::string sockpath = TestRoot::get().dir + "/" + unique_name("devlxd.sock");
    // systemd-socket-activate passes on only the variables named with -E.
    std::vector<std::string> prefix{"systemd-socket-activate", "-l", sockpath, "--fdname=devlxd"};
    for (const char* var : {"NOTIFY_SOCKET", "DBUS_SYSTEM_BUS_ADDRESS", "LODGE_STATE_DIR",
                            "LODGE_RUNTIME_DIR", "LODGE_LOG_DIR", "LODGE_LXCFS_DIR",
                            "LODGE_SUPERVISOR", "LODGE_CGROUP_ROOT", "LODGE_IDLE_TIMEOUT"}) {
        prefix.push_back("-E");
        prefix.push_back(var);
    }
    auto activated = std::make_unique<Lodged>(prefix);
    // systemd-socket-activate starts lodged on the first connection.
    wait_until_sh("[ -S " + sockpath + " ]");
    Fd c(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sockpath.c_str());
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_TRUE(activated->wait_ready());
    // systemd-socket-activate exec'd lodged in its own process, the listener at fd 3.
    char link[64] = {};
    readlink(("/proc/" + std::to_string(activated->pid) + "/fd/3").c_str(), link, sizeof link - 1);
    EXPECT_TRUE(contains(link, "socket:")) << link;
    EXPECT_TRUE(contains(ctl("list"), "containers listed"));
    activated.reset();
    unlink(sockpath.c_str());
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
}

} // namespace
