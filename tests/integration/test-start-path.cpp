// What a start and an exec cost in the kernel's cgroup locks, counted rather than timed: each
// write of a pid to a cgroup.procs file takes the global cgroup_threadgroup_rwsem and waits for
// an RCU grace period (6-16 ms, bench/results/perf-20261203.md). Without systemd, the
// supervisor, PID 1 and an exec'd command are all born in their cgroup2 cgroup (clone3
// CLONE_INTO_CGROUP) and join v1 ones by writing "0" to `tasks`: no cgroup.procs write at all.
// strace follows lodged and everything it starts for the duration of one start and one exec.
#include "common/fd.hpp"
#include "common/paths.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "runtime/cgroup.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <sstream>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// strace attached to `pid` and its future children, writing to `log`, stopped by stop().
class Tracer {
public:
    Tracer(pid_t pid, const std::string& log, const char* trace = "trace=write") {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0)
            return;
        Fd rd(p[0]), wr(p[1]);
        child_ = ::fork();
        if (child_ == 0) {
            ::dup2(wr.get(), STDERR_FILENO);
            std::string target = std::to_string(pid);
            // -y: each descriptor with its path, so a write to cgroup.procs shows as one.
            ::execlp("strace", "strace", "-f", "-y", "-e", trace, "-e", "signal=none", "-s", "64",
                     "-o", log.c_str(), "-p", target.c_str(), nullptr);
            _exit(127);
        }
        wr.reset();
        // strace says "Process N attached" once it traces the process: then the test goes on.
        std::string said;
        char buf[256];
        ssize_t n;
        while (!contains(said, "attached") && (n = ::read(rd.get(), buf, sizeof buf)) > 0)
            said.append(buf, static_cast<size_t>(n));
        attached_ = contains(said, "attached");
        output_ = std::move(rd);
    }
    bool attached() const { return attached_; }
    // SIGINT: strace detaches from every process it follows, which all go on untouched.
    // A strace that does not finish detaching within 30 s (seen once at load 15, the traced
    // container's init in D state) is killed: the test then fails instead of hanging.
    void stop() {
        if (child_ > 0) {
            Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child_, 0)));
            ::kill(child_, SIGINT);
            pollfd p{pidfd.get(), POLLIN, 0};
            if (pidfd && ::poll(&p, 1, 30000) == 0) {
                ADD_FAILURE() << "strace did not detach within 30 s; killed";
                ::kill(child_, SIGKILL);
            }
            ::waitpid(child_, nullptr, 0);
            child_ = -1;
        }
    }
    ~Tracer() { stop(); }

private:
    pid_t child_ = -1;
    bool attached_ = false;
    Fd output_;
};

bool have_strace() {
    int st = -1;
    sh("command -v strace >/dev/null", &st);
    return st == 0;
}

// The lines of strace's log that write to a cgroup.procs file.
std::vector<std::string> cgroup_procs_writes(const std::string& log) {
    std::vector<std::string> out;
    std::istringstream in(read_text(log));
    for (std::string line; std::getline(in, line);)
        if (contains(line, "write(") && contains(line, "/cgroup.procs>"))
            out.push_back(line);
    return out;
}

// The lines of strace's log that show `call` (e.g. "chown(") and contain every one of `also`.
int count_calls(const std::string& text, const std::string& call,
                std::initializer_list<const char*> also = {}) {
    int n = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!contains(line, call))
            continue;
        bool all = true;
        for (const char* a : also)
            all = all && contains(line, a);
        n += all;
    }
    return n;
}

// Lines of the log not from lodged itself (pid `lodged`): the supervisor's processes.
std::string not_from(const std::string& text, pid_t lodged) {
    std::string out, prefix = std::to_string(lodged) + " ";
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(prefix, 0) != 0)
            out += line + "\n";
    return out;
}

// The traces follow lodged and what it starts: each start by a new exec, not by a standby
// supervisor lodged made before the trace began (test-standby.cpp covers those).
class StartPathTest : public LodgedFixture {
protected:
    void start_lodged() override {
        ::setenv("LODGE_SUPERVISOR_STANDBY", "0", 1);
        LodgedFixture::start_lodged();
        ::unsetenv("LODGE_SUPERVISOR_STANDBY");
    }
};

// What one start of a container that ran before costs in system calls, counted (each was a
// lever in bench/results/perf-20261203-3.md): one device program loaded (libbpf loaded two
// probes before it), the delegated payload chowned file by file only where the file exists,
// config.json read once, each cgroup made by one mkdir.
TEST_F(StartPathTest, StartSystemCallCounts) {
    if (!have_strace())
        GTEST_SKIP() << "strace is not installed (scripts/install-deps.sh installs it)";
    size_t v1 = 0, v2 = 0, cpuset = 0;
    for (auto& h : runtime::host_hierarchies()) {
        (h.unified ? v2 : v1)++;
        cpuset += !h.unified && ("," + h.controllers + ",").find(",cpuset,") != std::string::npos;
    }
    for (bool privileged : {false, true}) {
        SCOPED_TRACE(privileged ? "privileged" : "unprivileged");
        std::string n = create_container(privileged ? "sc-priv" : "sc",
                                         privileged ? "security.privileged=true" : "");
        // PID 1 the project's test init, which starts nothing: strace, following everything the
        // supervisor starts, once failed to detach from busybox init in the middle of a vfork.
        std::string init = paths::container_rootfs(n) + "/sbin/init";
        int st = -1;
        sh("rm -f " + init + " && cp " + env_path("LODGE_TEST_INIT") + " " + init, &st);
        ASSERT_EQ(st, 0);
        // A first start and stop leave the base cgroup and state.json behind, as every later
        // start finds them.
        ASSERT_EQ(ctl("start " + n), "");
        ASSERT_EQ(ctl("stop --force " + n), "");
        std::string log = TestRoot::get().dir + "/" + unique_name("strace") + ".log";
        {
            Tracer tracer(daemon->pid, log, "trace=chown,bpf,openat,mkdir");
            ASSERT_TRUE(tracer.attached()) << "strace could not attach to lodged";
            std::string out = ctl("start " + n, &st);
            ASSERT_EQ(st, 0) << out;
            tracer.stop();
        }
        std::string text = not_from(read_text(log), daemon->pid);
        ::unlink(log.c_str());
        EXPECT_EQ(ctl("stop --force " + n), "");

        // A call another process interrupts shows as "call(args <unfinished ...>" and later
        // "<... call resumed>) = result": calls are counted by their first line, results by
        // either.
        EXPECT_EQ(count_calls(text, "bpf(BPF_PROG_LOAD"), 1) << text;
        EXPECT_EQ(count_calls(text, "openat(", {"/config.json\""}), 1) << text;
        EXPECT_EQ(count_calls(text, "chown", {"ENOENT"}), 0) << text;
        // cgroup2: the directory and its 3 delegated files; each v1 hierarchy: the directory
        // and 4 files. Nothing for a privileged container.
        int chowns = privileged ? 0 : static_cast<int>(v2 * 4 + v1 * 5);
        EXPECT_EQ(count_calls(text, "chown("), chowns) << text;
        // Each cgroup is made by one mkdir of its own path (B/supervisor's parent B after one
        // ENOENT): the base above B is not walked again (v1 cpuset excepted, whose levels each
        // need its cpus and mems).
        int made = static_cast<int>(v2 + v1 - cpuset) * 4 + static_cast<int>(cpuset) * 6;
        EXPECT_EQ(count_calls(text, "mkdir(\"/sys/fs/cgroup/"), made) << text;
    }
}

TEST_F(StartPathTest, StartAndExecWriteNoCgroupProcs) {
    if (!have_strace())
        GTEST_SKIP() << "strace is not installed (scripts/install-deps.sh installs it)";
    for (bool privileged : {false, true}) {
        std::string n = create_container(privileged ? "sp-priv" : "sp",
                                         privileged ? "security.privileged=true" : "");
        std::string log = TestRoot::get().dir + "/" + unique_name("strace") + ".log";
        {
            Tracer tracer(daemon->pid, log);
            ASSERT_TRUE(tracer.attached()) << "strace could not attach to lodged";
            int st = -1;
            std::string out = ctl("start " + n, &st);
            ASSERT_EQ(st, 0) << out;
            out = ctl("exec " + n + " -- true", &st);
            EXPECT_EQ(st, 0) << out;
            tracer.stop();
        }
        std::string text = read_text(log);
        // The trace did follow the supervisor: its last words to lodged (STATUS, READY) are in it.
        EXPECT_TRUE(contains(text, "\"STATUS ") || contains(text, "\"READY ")) << text;
        auto writes = cgroup_procs_writes(log);
        std::string all;
        for (auto& w : writes)
            all += w + "\n";
        EXPECT_TRUE(writes.empty()) << (privileged ? "privileged: " : "unprivileged: ") << all;
        ::unlink(log.c_str());
        EXPECT_EQ(ctl("stop --force " + n), "");
    }
}

} // namespace
