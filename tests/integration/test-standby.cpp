// Tier 1: the standby supervisor (runtime/control.hpp, SupervisorStandby): lodged keeps one
// lodge-supervisor exec'd ahead of need, a start takes it, a dead one costs nothing but the
// saving, and it never outlives the lodged that made it.
#include "common/fd.hpp"
#include "common/paths.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "runtime/control.hpp"

#include <csignal>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

std::string proc_file(pid_t pid, const char* what) {
    return read_text("/proc/" + std::to_string(pid) + "/" + what);
}

int parent_of(pid_t pid) {
    std::string status = proc_file(pid, "status");
    auto at = status.find("\nPPid:\t");
    return at == std::string::npos ? -1 : std::atoi(status.c_str() + at + 7);
}

// This lodged's standby: the `--standby` supervisor whose environment names our runtime
// directory (other suites' lodged may have theirs on the machine), not lodged's child (the
// first process, which only forks the standby and exits). 0 when there is none.
pid_t find_standby(pid_t lodged) {
    std::string marker = "LODGE_RUNTIME_DIR=" + paths::runtime_dir() + '\0';
    std::string binary = env_path("LODGE_SUPERVISOR");
    pid_t found = 0;
    DIR* d = ::opendir("/proc");
    while (dirent* e = d ? ::readdir(d) : nullptr) {
        pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
        if (pid <= 0)
            continue;
        std::string cmdline = proc_file(pid, "cmdline");
        if (cmdline.rfind(binary + '\0' + "--standby" + '\0', 0) != 0)
            continue;
        std::string environ = '\0' + proc_file(pid, "environ");
        if (environ.find('\0' + marker) != std::string::npos && parent_of(pid) != lodged)
            found = pid;
    }
    if (d)
        ::closedir(d);
    return found;
}

pid_t wait_for_standby(pid_t lodged) {
    pid_t pid = 0;
    wait_until([&] { return (pid = find_standby(lodged)) > 0; }, 60);
    return pid;
}

// True once `pid` has exited (its pidfd is readable), within `seconds`.
bool exits_within(pid_t pid, int seconds) {
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd)
        return errno == ESRCH;
    struct pollfd p {
        pidfd.get(), POLLIN, 0
    };
    return ::poll(&p, 1, seconds * 1000) == 1;
}

nlohmann::json state_of(const std::string& name) {
    return nlohmann::json::parse(read_text(paths::runtime_state(name)), nullptr, false);
}

// The standby on, whatever the environment the suite runs in says.
class StandbyTest : public LodgedFixture {
protected:
    void start_lodged() override {
        ::setenv("LODGE_SUPERVISOR_STANDBY", "1", 1);
        LodgedFixture::start_lodged();
        ::unsetenv("LODGE_SUPERVISOR_STANDBY");
    }
};

// The start goes to the standby that was waiting: it is used up (it forked the supervisor into
// the container's cgroup and exited), and the supervisor's command line is the one an exec for
// that start shows, not `--standby`.
TEST_F(StandbyTest, StartTakesTheStandby) {
    pid_t standby = wait_for_standby(daemon->pid);
    ASSERT_GT(standby, 0) << "lodged made no standby supervisor";
    // Its own session (made when lodged started it): a supervisor exec'd for the start instead
    // would have a new one.
    pid_t session = ::getsid(standby);
    ASSERT_GT(session, 0);
    std::string n = create_container("sb");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(exits_within(standby, 30)) << "the standby was not used";
    pid_t supervisor = state_of(n).value("supervisor_pid", 0);
    ASSERT_GT(supervisor, 0);
    EXPECT_EQ(::getsid(supervisor), session) << "the start did not go to the standby";
    std::string cmdline = proc_file(supervisor, "cmdline");
    EXPECT_EQ(cmdline.find("--standby"), std::string::npos) << cmdline;
    EXPECT_NE(cmdline.find(std::string("--detach") + '\0'), std::string::npos) << cmdline;
    EXPECT_NE(cmdline.find(std::string(1, '\0') + n + '\0'), std::string::npos) << cmdline;
    EXPECT_EQ(ctl("exec " + n + " -- true", &st), "");
    EXPECT_EQ(st, 0);
    // A stop makes room for the next one.
    EXPECT_EQ(ctl("stop --force " + n), "");
    pid_t next = wait_for_standby(daemon->pid);
    EXPECT_GT(next, 0);
    EXPECT_NE(next, standby);
}

// A standby killed while it waits: the start notices at once and execs a supervisor instead.
TEST_F(StandbyTest, DeadStandbyFallsBackToExec) {
    pid_t standby = wait_for_standby(daemon->pid);
    ASSERT_GT(standby, 0);
    ASSERT_EQ(::kill(standby, SIGKILL), 0);
    ASSERT_TRUE(exits_within(standby, 30));
    std::string n = create_container("sbdead");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(state_of(n).value("state", ""), "running");
    EXPECT_EQ(ctl("exec " + n + " -- true", &st), "");
    EXPECT_EQ(st, 0);
}

// lodged going away, however it goes, ends its standby: nothing is left waiting.
TEST_F(StandbyTest, StandbyEndsWithLodged) {
    for (int sig : {SIGTERM, SIGKILL}) {
        SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGKILL");
        pid_t standby = wait_for_standby(daemon->pid);
        ASSERT_GT(standby, 0);
        ASSERT_EQ(::kill(daemon->pid, sig), 0);
        EXPECT_TRUE(exits_within(standby, 30)) << "the standby outlived lodged";
        start_lodged();
    }
}

// The held start (lodged under systemd: --wait-go-fd, the scope made before go) through a
// standby: it reports its own pid (no second fork), holds exactly the start's pipes as fds 3 and
// 4, and a go pipe closed unwritten makes it exit without having touched anything.
TEST(StandbyHeld, HeldStartThroughTheStandby) {
    LODGE_REQUIRE_ROOT();
    runtime::SupervisorStandby standby;
    ASSERT_EQ(standby.spawn(env_path("LODGE_SUPERVISOR")), 0);
    int st = 0;
    ASSERT_EQ(::waitpid(standby.intermediate(), &st, 0), standby.intermediate());
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    std::string name = unique_name("sbheld");
    runtime::SupervisorLaunch launch;
    ASSERT_EQ(launch.spawn(env_path("LODGE_SUPERVISOR"), name, {"--log-stderr"}, true, false, true,
                           &standby),
              0);
    EXPECT_EQ(launch.intermediate(), 0) << "a new process was exec'd";
    auto step = runtime::SupervisorLaunch::Step::more;
    ASSERT_TRUE(wait_until(
        [&] {
            struct pollfd p {
                launch.notify_fd(), POLLIN, 0
            };
            ::poll(&p, 1, 1000);
            step = launch.read();
            return step != runtime::SupervisorLaunch::Step::more;
        },
        60));
    ASSERT_EQ(step, runtime::SupervisorLaunch::Step::held) << [&] {
        runtime::LaunchResult res;
        launch.result(res);
        return res.error;
    }();
    pid_t supervisor = launch.supervisor_pid();
    ASSERT_GT(supervisor, 0);
    EXPECT_EQ(::getsid(supervisor), standby.intermediate()); // the standby's session
    std::string cmdline = proc_file(supervisor, "cmdline");
    EXPECT_NE(cmdline.find(std::string("--wait-go-fd=4") + '\0'), std::string::npos) << cmdline;
    EXPECT_NE(cmdline.find(std::string(1, '\0') + name), std::string::npos) << cmdline;
    // fds: stdio, the notify and go pipes, and nothing else below 10 (the preloaded device
    // program sits above).
    std::string fd_dir = "/proc/" + std::to_string(supervisor) + "/fd";
    DIR* d = ::opendir(fd_dir.c_str());
    ASSERT_NE(d, nullptr);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        int fd = std::atoi(e->d_name);
        char target[256] = "";
        ssize_t len = ::readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        std::string what(target, len > 0 ? static_cast<size_t>(len) : 0);
        if (fd == 3 || fd == 4) {
            EXPECT_EQ(what.rfind("pipe:", 0), 0u) << "fd " << fd << " is " << what;
        } else if (fd > 4) {
            EXPECT_GE(fd, 10) << "fd " << fd << " is " << what;
        }
    }
    ::closedir(d);
    launch.release(false);
    EXPECT_TRUE(exits_within(supervisor, 30));
    ASSERT_TRUE(wait_until(
        [&] {
            struct pollfd p {
                launch.notify_fd(), POLLIN, 0
            };
            ::poll(&p, 1, 1000);
            return launch.read() == runtime::SupervisorLaunch::Step::finished;
        },
        60));
    runtime::LaunchResult res;
    EXPECT_LT(launch.result(res), 0);
    EXPECT_FALSE(exists(paths::container_runtime(name))) << "it touched the runtime dir";
}

} // namespace
