// exec into a running container (runtime/attach.hpp, CONTRACT §8), for privileged and
// unprivileged busybox containers: exit status, stdio, namespaces, cgroup, ids, capabilities,
// seccomp, inherited descriptors, environment, working directory, pty and signals, all through
// lodge-exec started from its sealed memfd copy.
#include "common/fileio.hpp"
#include "harness.hpp"
#include "runtime/attach.hpp"
#include "runtime/cgroup.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <sstream>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

using namespace lodge::test;
using lodge::Fd;
using lodge::runtime::exec_wait;
using lodge::runtime::ExecHandle;
using lodge::runtime::ExecRequest;

namespace {

struct Result {
    int status = -1;
    std::string out, err;
};

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);)
        out.push_back(l);
    return out;
}

// The value of `field` in /proc/PID/status text, e.g. "CapBnd".
std::string status_field(const std::string& status, const std::string& field) {
    for (auto& l : lines(status))
        if (l.rfind(field + ":", 0) == 0) {
            std::string v = l.substr(field.size() + 1);
            v.erase(0, v.find_first_not_of(" \t"));
            return v;
        }
    return "?";
}

std::string readlink_str(const std::string& path) {
    char buf[256];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

// Reads both pipes to end-of-file.
void drain(int out_fd, int err_fd, Result& res) {
    struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    std::string* dest[2] = {&res.out, &res.err};
    int open = 2;
    while (open > 0) {
        if (::poll(fds, 2, 60 * 1000) <= 0) {
            ADD_FAILURE() << "no output for 60 s";
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            char buf[4096];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                fds[i].fd = -1;
                open--;
            } else {
                dest[i]->append(buf, static_cast<size_t>(n));
            }
        }
    }
}

// A started command that is killed, and its helper reaped, however the test ends.
struct Command {
    ExecHandle h;
    ~Command() {
        if (!h.helper.valid())
            return;
        lodge::runtime::exec_abort(h);
        siginfo_t si{};
        ::waitid(P_PIDFD, static_cast<id_t>(h.helper.get()), &si, WEXITED);
    }
};

class Exec : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        std::signal(SIGPIPE, SIG_IGN);
        privileged = GetParam();
        c = std::make_unique<Container>(unique_name(privileged ? "xp" : "xu"), privileged);
        c->make_busybox();
        if (HasFatalFailure())
            return;
        c->set("environment.FROM_CONFIG", "yes");
        LODGE_START_OR_SKIP(*c);
        auto s = c->status();
        ASSERT_TRUE(s.contains("pid") && s.contains("cgroup")) << s.dump();
        init = s["pid"].get<pid_t>();
        payload = s["cgroup"].get<std::string>() + "/payload";
        ASSERT_GT(init, 0);
    }

    ExecRequest request(std::vector<std::string> argv) {
        ExecRequest req;
        req.init_pid = init;
        req.config = &c->config;
        req.payload_cgroup = payload;
        req.argv = std::move(argv);
        return req;
    }

    // Runs the command with pipes as its stdio, feeds it `input` and collects its output.
    Result run(ExecRequest req, const std::string& input = {}) {
        Result res;
        int in[2], out[2], err[2];
        if (::pipe2(in, O_CLOEXEC) < 0 || ::pipe2(out, O_CLOEXEC) < 0 ||
            ::pipe2(err, O_CLOEXEC) < 0) {
            ADD_FAILURE() << "pipe2: " << std::strerror(errno);
            return res;
        }
        Fd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
        req.stdin_fd = in_r.get();
        req.stdout_fd = out_w.get();
        req.stderr_fd = err_w.get();
        Command cmd;
        std::string error;
        int r = exec_in_container(req, cmd.h, error);
        in_r.reset();
        out_w.reset();
        err_w.reset();
        if (r < 0) {
            ADD_FAILURE() << "exec_in_container: " << error;
            return res;
        }
        if (!input.empty() && ::write(in_w.get(), input.data(), input.size()) < 0)
            ADD_FAILURE() << "writing stdin: " << std::strerror(errno);
        in_w.reset();
        drain(out_r.get(), err_r.get(), res);
        res.status = exec_wait(cmd.h);
        cmd.h.helper.reset();
        return res;
    }

    Result run(std::vector<std::string> argv, const std::string& input = {}) {
        return run(request(std::move(argv)), input);
    }

    std::string init_status() { return read_text("/proc/" + std::to_string(init) + "/status"); }

    bool privileged = false;
    std::unique_ptr<Container> c;
    pid_t init = 0;
    std::string payload;
};

TEST_P(Exec, ExitStatusPropagates) {
    EXPECT_EQ(run({"sh", "-c", "exit 7"}).status, 7);
    EXPECT_EQ(run({"true"}).status, 0);
    EXPECT_EQ(run({"sh", "-c", "kill -KILL $$"}).status, 128 + SIGKILL);
    Result missing = run({"no-such-command", "arg"});
    EXPECT_EQ(missing.status, 127);
    EXPECT_TRUE(contains(missing.err, "no-such-command")) << missing.err;
    EXPECT_TRUE(missing.out.empty()) << missing.out;
    Result not_executable = run({"/etc/passwd"});
    EXPECT_EQ(not_executable.status, 126);
    EXPECT_TRUE(contains(not_executable.err, "/etc/passwd")) << not_executable.err;
}

TEST_P(Exec, StdoutStderrAndStdinArePipes) {
    Result r = run({"sh", "-c", "echo to-out; echo to-err >&2; exit 3"});
    EXPECT_EQ(r.status, 3);
    EXPECT_EQ(r.out, "to-out\n");
    EXPECT_EQ(r.err, "to-err\n");

    std::string input = "hello\nsecond line\n";
    Result cat = run({"cat"}, input);
    EXPECT_EQ(cat.status, 0);
    EXPECT_EQ(cat.out, input);
    EXPECT_EQ(cat.err, "");
}

TEST_P(Exec, RunsInsideTheContainer) {
    EXPECT_EQ(run({"hostname"}).out, c->name + "\n");
    EXPECT_EQ(run({"id", "-u"}).out, "0\n");
    EXPECT_EQ(run({"id", "-g"}).out, "0\n");

    // Inside its cgroup namespace the payload is the root of every hierarchy.
    std::string cg = run({"cat", "/proc/self/cgroup"}).out;
    EXPECT_TRUE(contains("\n" + cg, "\n0::/\n")) << cg;
    for (auto& l : lines(cg))
        EXPECT_EQ(l.substr(l.rfind(':')), ":/") << cg;

    std::string pidns = readlink_str("/proc/" + std::to_string(init) + "/ns/pid");
    ASSERT_FALSE(pidns.empty());
    EXPECT_EQ(run({"readlink", "/proc/self/ns/pid"}).out, pidns + "\n");
    // PID 1 of the container's pid namespace is its init, not the host's.
    EXPECT_EQ(run({"sh", "-c", "readlink /proc/1/exe"}).out, "/bin/busybox\n");
}

// The command seen from the host: the child of lodge-exec (the caller's child, running from a
// memfd, never a host file), in every namespace of PID 1, in the payload cgroup of every
// hierarchy, uid 0 of the container; SIGTERM through its pidfd kills it.
TEST_P(Exec, HostViewAndSignalThroughThePidfd) {
    ExecRequest req = request({"sleep", "1000"}); // stdio: the container's /dev/null
    Command cmd;
    ExecHandle& h = cmd.h;
    std::string error;
    ASSERT_EQ(exec_in_container(req, h, error), 0) << error;
    ASSERT_TRUE(h.process.valid());
    ASSERT_FALSE(h.pty_master.valid());
    std::string proc = "/proc/" + std::to_string(h.process.pid());
    std::string status = read_text(proc + "/status");
    ASSERT_TRUE(h.helper.valid());
    std::string helper = "/proc/" + std::to_string(h.helper.pid());
    EXPECT_EQ(status_field(status, "PPid"), std::to_string(h.helper.pid()));
    EXPECT_EQ(status_field(read_text(helper + "/status"), "PPid"), std::to_string(::getpid()));
    EXPECT_EQ(readlink_str(helper + "/exe").rfind("/memfd:lodge-exec", 0), 0u)
        << readlink_str(helper + "/exe");
    EXPECT_EQ(readlink_str(proc + "/exe"), "/bin/busybox");

    for (const char* ns : {"mnt", "pid", "net", "uts", "ipc", "cgroup", "user"}) {
        std::string want = readlink_str("/proc/" + std::to_string(init) + "/ns/" + ns);
        EXPECT_EQ(readlink_str(proc + "/ns/" + ns), want) << ns;
        if (std::string(ns) != "user" || !privileged) {
            EXPECT_NE(readlink_str(std::string("/proc/self/ns/") + ns), want) << ns;
        }
    }
    std::string cg = read_text(proc + "/cgroup");
    ASSERT_FALSE(cg.empty());
    for (auto& l : lines(cg))
        EXPECT_EQ(l.substr(l.find(':', l.find(':') + 1) + 1), "/" + payload) << cg;

    std::string uid = std::to_string(privileged ? 0u : c->config.idmap_base());
    EXPECT_EQ(status_field(status, "Uid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
    EXPECT_EQ(status_field(status, "Gid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
    if (!privileged) {
        EXPECT_EQ(uid, "1000000");
    }

    ASSERT_EQ(h.process.send_signal(SIGTERM), 0);
    EXPECT_EQ(exec_wait(h), 128 + SIGTERM);
    h.helper.reset();
}

TEST_P(Exec, SameRestrictionsAsPid1) {
    std::string st = run({"cat", "/proc/self/status"}).out;
    std::string init_st = init_status();
    EXPECT_EQ(status_field(st, "CapBnd"), status_field(init_st, "CapBnd"));
    EXPECT_EQ(status_field(st, "NoNewPrivs"), status_field(init_st, "NoNewPrivs"));
    EXPECT_EQ(status_field(st, "Seccomp"), "2");
    EXPECT_EQ(status_field(st, "Seccomp_filters"), status_field(init_st, "Seccomp_filters"));
    unsigned long long bnd = std::stoull(status_field(st, "CapBnd"), nullptr, 16);
    if (privileged) {
        for (int cap : {16 /* sys_module */, 17 /* sys_rawio */, 25 /* sys_time */})
            EXPECT_FALSE(bnd & (1ULL << cap)) << "cap " << cap << " in " << std::hex << bnd;
        EXPECT_TRUE(bnd & (1ULL << 21 /* sys_admin */));
    }
    // Root of the container: full effective set within the bounding set.
    EXPECT_EQ(status_field(st, "CapEff"), status_field(st, "CapBnd"));

    Result probe = run({"/bin/syscall-probe"});
    EXPECT_TRUE(contains(probe.out, "umount2_force 13\n")) << probe.out;
    EXPECT_TRUE(contains(probe.out, "kexec_load 38\n")) << probe.out;
}

TEST_P(Exec, OnlyStdioIsInherited) {
    // A descriptor the caller forgot to mark close-on-exec must not reach the container.
    Fd leak(::open("/etc/hostname", O_RDONLY));
    ASSERT_TRUE(leak);
    Fd leak_high(::fcntl(leak.get(), F_DUPFD, 100));
    ASSERT_TRUE(leak_high);
    // ls opens one directory itself: 3.
    EXPECT_EQ(run({"ls", "/proc/self/fd"}).out, "0\n1\n2\n3\n");
    // The shell itself (busybox sh execs a lone last command, so there is a second one).
    EXPECT_EQ(run({"sh", "-c", "ls /proc/$$/fd; true"}).out, "0\n1\n2\n");
    std::string links = run({"sh", "-c", "for fd in 0 1 2; do readlink /proc/$$/fd/$fd; done"}).out;
    auto l = lines(links);
    ASSERT_EQ(l.size(), 3u) << links;
    for (auto& s : l)
        EXPECT_EQ(s.rfind("pipe:[", 0), 0u) << links;
}

TEST_P(Exec, EnvironmentAndWorkingDirectory) {
    auto env = lines(run({"env"}).out);
    std::sort(env.begin(), env.end());
    std::vector<std::string> want = {
        "FROM_CONFIG=yes", "HOME=/root",
        "LANG=C.UTF-8",    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "USER=root",       "container=lxc"};
    EXPECT_EQ(env, want);

    ExecRequest req = request({"env"});
    req.env = {"FOO=bar baz", "LANG=de_DE.UTF-8", "FROM_CONFIG=overridden", "EMPTY="};
    env = lines(run(req).out);
    for (const char* v :
         {"FOO=bar baz", "LANG=de_DE.UTF-8", "FROM_CONFIG=overridden", "EMPTY=", "HOME=/root"})
        EXPECT_NE(std::find(env.begin(), env.end(), v), env.end()) << v;
    EXPECT_EQ(std::find(env.begin(), env.end(), "LANG=C.UTF-8"), env.end());

    // The command is looked up in the PATH it gets.
    req = request({"sh", "-c", "true"});
    req.env = {"PATH=/nowhere"};
    EXPECT_EQ(run(req).status, 127);

    Command cmd;
    ExecHandle& h = cmd.h;
    std::string error;
    req = request({"true"});
    req.env = {"NO_EQUALS_SIGN"};
    EXPECT_EQ(exec_in_container(req, h, error), -EINVAL);
    EXPECT_TRUE(contains(error, "NO_EQUALS_SIGN")) << error;

    EXPECT_EQ(run({"pwd"}).out, "/root\n");
    req = request({"pwd"});
    req.cwd = "/tmp";
    EXPECT_EQ(run(req).out, "/tmp\n");
    req.cwd = "/no/such/dir";
    EXPECT_LT(exec_in_container(req, h, error), 0);
    EXPECT_TRUE(contains(error, "/no/such/dir")) << error;
    // Without /root the default is /.
    EXPECT_EQ(run({"rmdir", "/root"}).status, 0);
    EXPECT_EQ(run({"pwd"}).out, "/\n");
}

TEST_P(Exec, PtyFromTheContainersDevpts) {
    ExecRequest req =
        request({"sh", "-c",
                 "tty; echo TERM=$TERM; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo isatty; "
                 ": </dev/tty && echo ctty; ls -1 /dev/pts; read line; echo \"got $line\""});
    req.pty = true;
    Command cmd;
    ExecHandle& h = cmd.h;
    std::string error;
    ASSERT_EQ(exec_in_container(req, h, error), 0) << error;
    ASSERT_TRUE(h.pty_master.valid());
    int n = -1;
    ASSERT_EQ(::ioctl(h.pty_master.get(), TIOCGPTN, &n), 0);
    // No echo, so that the output is the command's alone.
    struct termios tio {};
    ASSERT_EQ(::tcgetattr(h.pty_master.get(), &tio), 0);
    tio.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ASSERT_EQ(::tcsetattr(h.pty_master.get(), TCSANOW, &tio), 0);
    ASSERT_EQ(::write(h.pty_master.get(), "hello\n", 6), 6);
    std::string out;
    char buf[4096];
    ssize_t got;
    // EIO once the command, the only holder of the terminal side, has exited.
    while ((got = ::read(h.pty_master.get(), buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(got));
    EXPECT_EQ(exec_wait(h), 0);
    h.helper.reset();
    std::string tty = "/dev/pts/" + std::to_string(n);
    EXPECT_EQ(out.substr(0, out.find('\r')), tty) << out;
    EXPECT_TRUE(contains(out, "TERM=xterm\r\n")) << out;
    EXPECT_TRUE(contains(out, "isatty\r\n")) << out;
    EXPECT_TRUE(contains(out, "ctty\r\n")) << out;
    EXPECT_TRUE(contains(out, "got hello\r\n")) << out;
    // The container's own instance: its console is 0, this pty is listed next to it.
    EXPECT_TRUE(contains(out, "\r\n" + std::to_string(n) + "\r\n")) << out;
}

// A cgroup2 payload whose init moved into a child cgroup and enabled controllers for its children
// (a systemd guest does) takes no processes; the command goes into a leaf ".lxc", as with LXC.
TEST_P(Exec, Cgroup2PayloadWithControllersUsesALeaf) {
    std::string root;
    for (auto& h : lodge::runtime::host_hierarchies())
        if (h.unified)
            root = h.mountpoint;
    if (root.empty())
        GTEST_SKIP() << "no cgroup2 hierarchy";
    // Only controllers the host already hands down from its root; the host's root stays as it is.
    std::string ctrl = read_text(root + "/cgroup.subtree_control");
    ctrl = ctrl.substr(0, ctrl.find_first_of(" \n"));
    if (ctrl.empty())
        GTEST_SKIP() << "the host enables no cgroup2 controllers below its root";
    std::string dir = root;
    std::string rel = payload + "/";
    for (size_t pos = 0, slash; (slash = rel.find('/', pos)) != std::string::npos;
         pos = slash + 1) {
        if (dir != root) {
            ASSERT_EQ(lodge::write_file(dir + "/cgroup.subtree_control", "+" + ctrl), 0) << dir;
        }
        dir += "/" + rel.substr(pos, slash - pos);
    }
    // Like systemd: every process (PID 1 and what it started, rcS may still run) into a child, so
    // that nothing new starts in the payload, then the controller for the payload's children.
    ASSERT_EQ(::mkdir((dir + "/init.scope").c_str(), 0755), 0);
    for (std::string procs; !(procs = read_text(dir + "/cgroup.procs")).empty();)
        for (auto& pid : lines(procs))
            lodge::write_file(dir + "/init.scope/cgroup.procs", pid); // ESRCH once it exited
    ASSERT_EQ(lodge::write_file(dir + "/cgroup.subtree_control", "+" + ctrl), 0)
        << "processes left in the payload: " << read_text(dir + "/cgroup.procs");

    std::string cg = run({"cat", "/proc/self/cgroup"}).out;
    EXPECT_TRUE(contains("\n" + cg, "\n0::/.lxc\n")) << cg;
    struct stat payload_st {};
    struct stat leaf_st {};
    ASSERT_EQ(::stat(dir.c_str(), &payload_st), 0);
    ASSERT_EQ(::stat((dir + "/.lxc").c_str(), &leaf_st), 0);
    EXPECT_EQ(leaf_st.st_uid, payload_st.st_uid);
    // And again, with the leaf already there.
    EXPECT_EQ(run({"true"}).status, 0);
}

TEST_P(Exec, RefusesProcessesThatAreNotTheContainersInit) {
    Command cmd;
    ExecHandle& h = cmd.h;
    std::string error;
    ExecRequest req = request({"true"});
    req.init_pid = ::getpid(); // a host process: entering its namespaces would stay on the host
    EXPECT_LT(exec_in_container(req, h, error), 0);
    EXPECT_TRUE(contains(error, "not the init")) << error;
    req = request({"true"});
    req.payload_cgroup = "lodge-no-such-group/payload";
    EXPECT_LT(exec_in_container(req, h, error), 0);
    EXPECT_TRUE(contains(error, "not the init")) << error;
    req = request({});
    EXPECT_EQ(exec_in_container(req, h, error), -EINVAL);
}

// Not a check: the median time of `exec true`, from the request to its exit status.
TEST_P(Exec, Latency) {
    std::vector<double> ms;
    for (int i = 0; i < 50; i++) {
        auto t0 = std::chrono::steady_clock::now();
        Result r = run({"true"});
        auto t1 = std::chrono::steady_clock::now();
        ASSERT_EQ(r.status, 0);
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("exec true (%s): median %.2f ms, min %.2f ms, max %.2f ms\n",
                privileged ? "privileged" : "unprivileged", ms[ms.size() / 2], ms.front(),
                ms.back());
    RecordProperty("median_ms", std::to_string(ms[ms.size() / 2]));
}

INSTANTIATE_TEST_SUITE_P(Containers, Exec, ::testing::Values(false, true), [](const auto& info) {
    return std::string(info.param ? "privileged" : "unprivileged");
});

} // namespace
