// What a start and an exec cost in the kernel's cgroup locks, counted rather than timed: each
// write of a pid to a cgroup.procs file takes the global cgroup_threadgroup_rwsem and waits for
// an RCU grace period (6-16 ms, bench/results/perf-20261203.md). Without systemd, the
// supervisor, PID 1 and an exec'd command are all born in their cgroup2 cgroup (clone3
// CLONE_INTO_CGROUP) and join v1 ones by writing "0" to `tasks`: no cgroup.procs write at all.
// strace follows lodged and everything it starts for the duration of one start and one exec.
#include "common/fd.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// strace attached to `pid` and its future children, writing to `log`, stopped by stop().
class Tracer {
public:
    Tracer(pid_t pid, const std::string& log) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0)
            return;
        Fd rd(p[0]), wr(p[1]);
        child_ = ::fork();
        if (child_ == 0) {
            ::dup2(wr.get(), STDERR_FILENO);
            std::string target = std::to_string(pid);
            // -y: each descriptor with its path, so a write to cgroup.procs shows as one.
            ::execlp("strace", "strace", "-f", "-y", "-e", "trace=write", "-e", "signal=none", "-s",
                     "64", "-o", log.c_str(), "-p", target.c_str(), nullptr);
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
    void stop() {
        if (child_ > 0) {
            ::kill(child_, SIGINT);
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

class StartPathTest : public LodgedFixture {};

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
