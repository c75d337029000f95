// Lifecycle with the project's signal-logging init (CONTRACT §4): which signal PID 1 gets for
// stop, reboot and halt, escalation to SIGKILL, guest reboot, exit and seccomp deaths.
#include "harness.hpp"

#include <csignal>
#include <cstdlib>
#include <unistd.h>

using namespace lodge::test;

namespace {

class Lifecycle : public ::testing::Test {
protected:
    void SetUp() override { LODGE_REQUIRE_ROOT(); }

    // A privileged container keeps the test init's log readable from the host as plain root.
    std::unique_ptr<Container> make(const char* base, const std::string& mode,
                                    bool privileged = true) {
        auto c = std::make_unique<Container>(unique_name(base), privileged);
        c->make_busybox(true);
        if (!mode.empty())
            c->set("environment.TESTINIT_MODE", mode);
        return c;
    }
    static std::string log(Container& c) { return read_text(c.rootfs + "/testinit.log"); }
    // Waits until boot number `boot` of PID 1 has its signal handlers in place (before that the
    // kernel drops signals to a pid namespace's init; the guest logs "ready" then) and waits for
    // signals in ppoll(): while it runs its own code it blocks every signal it handles, 37
    // included, and a stop would then pick SIGRTMIN+3 instead of SIGPWR.
    static void wait_ready(Container& c, int boot = 1) {
        c.exec("while [ \"$(grep -c ^ready /testinit.log 2>/dev/null)\" -lt " +
               std::to_string(boot) + " ]; do usleep 10000; done");
        EXPECT_TRUE(wait_until([&] { return !blocks_sigpwr(c.pid()); })) << "PID 1 never waits";
    }
    static bool blocks_sigpwr(pid_t pid) {
        std::string status = read_text("/proc/" + std::to_string(pid) + "/status");
        auto at = status.find("\nSigBlk:");
        if (at == std::string::npos)
            return false;
        unsigned long long mask = std::strtoull(status.c_str() + at + 8, nullptr, 16);
        return mask & (1ULL << (SIGPWR - 1));
    }
};

// The supervisor says "stopped" only once it has let go of its lock, socket and cgroup: a
// start right after a stop never meets "already running" (issue 12).
TEST_F(Lifecycle, StartRightAfterStopAlwaysSucceeds) {
    auto c = make("lcagain", "");
    for (int i = 0; i < 30; i++) {
        std::string error;
        ASSERT_TRUE(c->start(&error)) << "round " << i << ": " << error;
        auto r = c->request("stop-force");
        ASSERT_EQ(r["state"], "stopped") << "round " << i << ": " << r;
    }
}

TEST_F(Lifecycle, StopSendsSigpwrToAnInitThatHandlesIt) {
    auto c = make("lcpwr", "");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto r = c->stop(10);
    EXPECT_EQ(r["state"], "stopped") << r;
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "signal 30\npoweroff\n")) << l;
    EXPECT_FALSE(contains(l, "signal 37")) << l;
    EXPECT_EQ(r["reason"], "stopped") << r;
}

TEST_F(Lifecycle, StopSendsSigrtmin3WhenInitBlocksIt) {
    auto c = make("lcrt", "block-rtmin3");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto r = c->stop(10);
    EXPECT_EQ(r["state"], "stopped") << r;
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "signal 37\npoweroff\n")) << l;
    EXPECT_FALSE(contains(l, "signal 30")) << l;
}

TEST_F(Lifecycle, BootStopSignalOverridesAuto) {
    auto c = make("lcterm", "block-rtmin3");
    c->set("boot.stop.signal", "SIGTERM");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto r = c->stop(10);
    EXPECT_EQ(r["state"], "stopped") << r;
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "signal 15\nexit\n")) << l;
    EXPECT_FALSE(contains(l, "signal 37")) << l;
}

TEST_F(Lifecycle, IgnoredStopSignalIsFollowedBySigkillAfterTheTimeout) {
    auto c = make("lcign", "ignore");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto r = c->stop(1);
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_TRUE(contains(r["reason"].get<std::string>(), "killed with SIGKILL")) << r;
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "signal 30\nignored\n")) << l;
}

TEST_F(Lifecycle, ForceStopKillsAtOnce) {
    auto c = make("lcforce", "ignore");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto r = c->request("stop-force");
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_TRUE(contains(r["reason"].get<std::string>(), "forced")) << r;
    EXPECT_FALSE(contains(log(*c), "signal 30")) << log(*c);
}

TEST_F(Lifecycle, RebootSendsSigintAndTheContainerComesBackAfresh) {
    auto c = make("lcreboot", "");
    ASSERT_TRUE(c->start());
    wait_ready(*c);
    auto before = c->status();
    // A config change made while running takes effect at the guest's reboot.
    c->set("environment.AFTER_REBOOT", "yes");
    c->write_config();
    auto r = c->request("reboot");
    EXPECT_EQ(r["signal"], "SIGINT") << r;
    // test-init answers SIGINT with reboot(RB_AUTOBOOT): the supervisor starts boot 2.
    auto after = c->request("wait-boot 2");
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "signal 2\nreboot\n")) << l;
    EXPECT_EQ(after["state"], "running") << after;
    EXPECT_NE(after["pid"], before["pid"]);
    EXPECT_NE(after["boot_id"], before["boot_id"]);
    pid_t p = after["pid"].get<pid_t>();
    std::string env = read_text("/proc/" + std::to_string(p) + "/environ");
    EXPECT_TRUE(contains(env, "AFTER_REBOOT=yes")) << "the reboot rebuilt from the new config";
    EXPECT_EQ(c->stop(10)["state"], "stopped");
}

TEST_F(Lifecycle, GuestRebootRestartsTheContainer) {
    auto c = make("lcgreboot", "reboot-now");
    ASSERT_TRUE(c->start());
    // The first boot reboots at once; the second boot behaves normally and stays up.
    auto s = c->request("wait-boot 2");
    EXPECT_EQ(s["boots"], 2) << s;
    wait_ready(*c, 1); // the first boot rebooted before it was ready
    std::string l = log(*c);
    EXPECT_TRUE(contains(l, "start pid=1\nreboot\nstart pid=1\nready\n")) << l;
    EXPECT_EQ(c->status()["state"], "running");
    EXPECT_EQ(c->stop(10)["state"], "stopped");
}

TEST_F(Lifecycle, GuestPoweroffStopsTheContainer) {
    auto c = make("lchalt", "poweroff-now");
    ASSERT_TRUE(c->start());
    auto r = c->wait();
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_EQ(r["reason"], "halted") << r;
}

TEST_F(Lifecycle, Pid1ExitStopsTheContainer) {
    auto c = make("lcexit", "exit-now");
    ASSERT_TRUE(c->start());
    auto r = c->wait();
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_EQ(r["reason"], "init exited with status 3") << r;
}

TEST_F(Lifecycle, SeccompViolationIsReported) {
    auto c = make("lcsys", "sigsys-now");
    c->set("security.syscalls.deny", "syslog");
    ASSERT_TRUE(c->start());
    auto r = c->wait();
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_EQ(r["reason"], "violated its seccomp policy") << r;
}

TEST_F(Lifecycle, UnprivilegedStopAndReboot) {
    auto c = make("lcunpriv", "", false);
    LODGE_START_OR_SKIP(*c);
    wait_ready(*c);
    pid_t first = c->pid();
    c->request("reboot");
    auto s = c->request("wait-boot 2");
    EXPECT_EQ(s["state"], "running") << s;
    EXPECT_NE(s["pid"].get<pid_t>(), first);
    wait_ready(*c, 2);
    auto r = c->stop(10);
    EXPECT_EQ(r["state"], "stopped") << r;
    // The idmapped rootfs means the guest's log file is owned by 0 on disk.
    EXPECT_TRUE(contains(log(*c), "signal 30\npoweroff\n")) << log(*c);
}

TEST_F(Lifecycle, StopRequestsOnAStoppedContainerAreRefused) {
    auto c = make("lcrefuse", "exit-now");
    ASSERT_TRUE(c->start());
    c->wait();
    // The supervisor is gone; the state file tells the outcome.
    auto s = c->final_state();
    EXPECT_EQ(s["state"], "stopped");
}

} // namespace
