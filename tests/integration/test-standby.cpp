// Tier 1: the standby supervisor (runtime/control.hpp, SupervisorStandby): lodged keeps one
// lodge-supervisor exec'd ahead of need, a start takes it, a dead one costs nothing but the
// saving, and it never outlives the lodged that made it.
#include "common/fd.hpp"
#include "common/paths.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

std::string proc_file(pid_t pid, const char* what) {
    return read_text("/proc/" + std::to_string(pid) + "/" + what);
}

// This lodged's standby: the `--standby` supervisor whose environment names our runtime
// directory (other suites' lodged may have theirs on the machine). 0 when there is none.
pid_t find_standby() {
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
        if (environ.find('\0' + marker) != std::string::npos)
            found = pid;
    }
    if (d)
        ::closedir(d);
    return found;
}

pid_t wait_for_standby() {
    pid_t pid = 0;
    wait_until([&] { return (pid = find_standby()) > 0; }, 60);
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

using StandbyTest = LodgedFixture;

// The start goes to the standby that was waiting: it is used up (it forked the supervisor into
// the container's cgroup and exited), and the supervisor's command line is the one an exec for
// that start shows, not `--standby`.
TEST_F(StandbyTest, StartTakesTheStandby) {
    pid_t standby = wait_for_standby();
    ASSERT_GT(standby, 0) << "lodged made no standby supervisor";
    std::string n = create_container("sb");
    int st = -1;
    std::string out = ctl("start " + n, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(exits_within(standby, 30)) << "the standby was not used";
    pid_t supervisor = state_of(n).value("supervisor_pid", 0);
    ASSERT_GT(supervisor, 0);
    std::string cmdline = proc_file(supervisor, "cmdline");
    EXPECT_EQ(cmdline.find("--standby"), std::string::npos) << cmdline;
    EXPECT_NE(cmdline.find(std::string("--detach") + '\0'), std::string::npos) << cmdline;
    EXPECT_NE(cmdline.find(std::string(1, '\0') + n + '\0'), std::string::npos) << cmdline;
    EXPECT_EQ(ctl("exec " + n + " -- true", &st), "");
    EXPECT_EQ(st, 0);
    // A stop makes room for the next one.
    EXPECT_EQ(ctl("stop --force " + n), "");
    pid_t next = wait_for_standby();
    EXPECT_GT(next, 0);
    EXPECT_NE(next, standby);
}

// A standby killed while it waits: the start notices at once and execs a supervisor instead.
TEST_F(StandbyTest, DeadStandbyFallsBackToExec) {
    pid_t standby = wait_for_standby();
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
        pid_t standby = wait_for_standby();
        ASSERT_GT(standby, 0);
        ASSERT_EQ(::kill(daemon->pid, sig), 0);
        EXPECT_TRUE(exits_within(standby, 30)) << "the standby outlived lodged";
        start_lodged();
    }
}

} // namespace
