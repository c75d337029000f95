// lodge-exec: runs one command inside a running container for lodged (`lodgectl exec`).
//
// lodged starts it from a sealed memfd (runtime/attach.cpp), so neither this process nor the
// command before its execve is an image of a host file a guest could reopen for writing
// (the CVE-2019-5736 pattern). Protocol: runtime/exec-protocol.hpp.
//
// Process tree. This helper H stays in the host's user and pid namespaces as host root, enters
// PID 1's other namespaces and creates the command C as its own child, so C is born in the
// container's pid namespace. C joins the payload cgroup (through descriptors H opened on the
// host), enters the user namespace, becomes the container's root, and does everything that
// touches guest paths (working directory, pty, /dev/null, the PATH search) itself: lodged only
// watches the socket, with a deadline, and can never be stalled by a guest path. H then only
// waits for C and exits with its status; being C's parent, it reaps C at once when the
// container dies, so a stopping container never waits for lodged.
#include "common/config.hpp"
#include "common/fdpass.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "runtime/exec-protocol.hpp"
#include "runtime/setup/security.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <nlohmann/json.hpp>
#include <sched.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace lodge;

namespace {

const int sock = runtime::exec_helper_socket_fd;

struct Request {
    std::vector<std::string> argv, env;
    std::string cwd;
    bool pty = false;
    int ns_flags = 0;
    ContainerConfig config;
    int init_pidfd = -1;
    int stdio[3] = {-1, -1, -1};
    // The payload (or its leaf) per hierarchy. Each cgroup.procs write waits for an RCU grace
    // period (the global threadgroup lock, 6-16 ms), so none is made: the command is born in
    // the cgroup2 one (clone3 CLONE_INTO_CGROUP) and moves its only thread into the v1 ones
    // through `tasks` with "0", which the kernel does without that lock.
    std::vector<int> cgroup_tasks; // v1: `tasks`
    int cgroup2_dir = -1;          // cgroup2: the directory, for CLONE_INTO_CGROUP
    int cgroup2_procs = -1;        // cgroup2: cgroup.procs, should clone3 refuse the cgroup
    std::vector<char*> argvp, envp;
};

// Reports the failure (already logged where it happened) to lodged and ends this process.
[[noreturn]] void fail(const Error& e) {
    std::string msg = e.message;
    if (msg.empty())
        msg = "Failed to start the command in the container";
    send_with_fd(sock, "E" + std::to_string(e.code) + ":" + msg);
    _exit(1);
}

// The request datagram and its descriptors.
Result<> receive(std::string& text, std::vector<int>& fds) {
    text.resize(runtime::exec_request_max);
    struct iovec iov {
        text.data(), text.size()
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * runtime::exec_request_max_fds)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do
        n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return log_error_value(n < 0 ? errno : EPIPE, "Failed to read the exec request");
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fds.push_back(fd);
            }
        }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return log_error_value(EMSGSIZE, "The exec request was truncated");
    text.resize(static_cast<size_t>(n));
    return {};
}

// A cgroup2 payload whose own init enabled controllers for its children (systemd does) cannot
// take processes; like lxc-attach, use a leaf ".lxc" owned as the payload is.
Result<> open_cgroup(const std::string& dir, bool unified, Request& req) {
    std::string target = dir;
    char controllers[64] = {};
    int sc = ::open((dir + "/cgroup.subtree_control").c_str(), O_RDONLY | O_CLOEXEC);
    ssize_t n = sc < 0 ? 0 : ::read(sc, controllers, sizeof controllers - 1);
    if (sc >= 0)
        ::close(sc);
    if (unified && n > 0 && controllers[0] != '\n') {
        target = dir + "/.lxc";
        struct stat st {};
        if (::stat(dir.c_str(), &st) < 0 || (::mkdir(target.c_str(), 0755) < 0 && errno != EEXIST))
            return log_error_value(errno, "Failed to create the cgroup %s", target.c_str());
        for (const char* f : {"", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control"})
            if (::chown((target + f).c_str(), st.st_uid, st.st_gid) < 0 && errno != ENOENT)
                return log_error_value(errno, "Failed to delegate the cgroup %s", target.c_str());
    }
    int fd =
        ::open((target + (unified ? "/cgroup.procs" : "/tasks")).c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return log_error_value(errno, "Failed to open the container's cgroup %s", target.c_str());
    if (!unified) {
        req.cgroup_tasks.push_back(fd);
        return {};
    }
    req.cgroup2_procs = fd;
    req.cgroup2_dir = ::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (req.cgroup2_dir < 0)
        return log_error_value(errno, "Failed to open the container's cgroup %s", target.c_str());
    return {};
}

Result<> parse(const std::string& text, const std::vector<int>& fds, Request& req) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    try {
        if (!j.is_object() || fds.empty())
            throw std::invalid_argument("not an object");
        req.argv = j.at("argv").get<std::vector<std::string>>();
        req.env = j.at("env").get<std::vector<std::string>>();
        req.cwd = j.at("cwd").get<std::string>();
        req.pty = j.at("pty").get<bool>();
        req.ns_flags = j.at("ns").get<int>();
        req.config.config = j.at("config").get<KeyMap>();
        auto stdio = j.at("stdio").get<std::vector<int>>();
        for (size_t i = 0; i < 3 && i < stdio.size(); i++)
            if (stdio[i] > 0 && static_cast<size_t>(stdio[i]) < fds.size())
                req.stdio[i] = fds[static_cast<size_t>(stdio[i])];
        for (auto& h : j.at("cgroups")) {
            auto r = open_cgroup(h.at("path").get<std::string>(), h.at("unified").get<bool>(), req);
            if (!r)
                return r.error();
        }
    } catch (const std::exception& e) {
        return log_error_value(EINVAL, "Invalid exec request (%s)", e.what());
    }
    if (req.argv.empty())
        return log_error_value(EINVAL, "Invalid exec request: no command");
    req.init_pidfd = fds[0];
    for (auto& a : req.argv)
        req.argvp.push_back(a.data());
    req.argvp.push_back(nullptr);
    for (auto& e : req.env)
        req.envp.push_back(e.data());
    req.envp.push_back(nullptr);
    return {};
}

// The command: joins the cgroup and the user namespace, becomes the container's root, sets up
// its directory, terminal and stdio, takes on PID 1's restrictions and execs.
[[noreturn]] void command_main(const Request& req, bool in_cgroup2) {
    // Killed with us should we be killed before the exec (lodged's setup deadline).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // "0" is the writing thread (`tasks`) or process (cgroup.procs); we have one thread.
    for (int fd : req.cgroup_tasks)
        if (::write(fd, "0", 1) < 0)
            fail(log_error_value(errno, "Failed to join the container's cgroup"));
    if (!in_cgroup2 && req.cgroup2_procs >= 0 && ::write(req.cgroup2_procs, "0", 1) < 0)
        fail(log_error_value(errno, "Failed to join the container's cgroup"));
    if ((req.ns_flags & CLONE_NEWUSER) && ::setns(req.init_pidfd, CLONE_NEWUSER) < 0)
        fail(log_error_value(errno, "Failed to enter the container's user namespace"));
    if (::setgroups(0, nullptr) < 0 || ::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0)
        fail(log_error_value(errno, "Failed to become root in the container"));
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); // the id change cleared it
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);

    if (!req.cwd.empty()) {
        if (::chdir(req.cwd.c_str()) < 0)
            fail(log_error_value(errno, "Cannot change to the directory \"%s\"", req.cwd.c_str()));
    } else if (::chdir("/root") < 0 && ::chdir("/") < 0) {
        fail(log_error_value(errno, "Cannot change to the directory \"/\""));
    }

    int stdio[3] = {req.stdio[0], req.stdio[1], req.stdio[2]};
    int slave = -1;
    if (req.pty) {
        // The container's devpts instance, so the pty is /dev/pts/N inside, owned by its root.
        int master = ::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        int unlock = 0;
        if (master < 0 || ::ioctl(master, TIOCSPTLCK, &unlock) < 0)
            fail(log_error_value(errno, "Failed to allocate a pty in the container"));
        slave = ::ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0)
            fail(log_error_value(errno, "Failed to open the pty's terminal side"));
        if (int r = send_with_fd(sock, "P", master); r < 0)
            fail(log_error_value(r, "Failed to hand over the pty"));
        ::close(master);
        stdio[0] = stdio[1] = stdio[2] = slave;
    }
    for (int& fd : stdio)
        if (fd < 0) {
            fd = ::open("/dev/null", O_RDWR | O_NOCTTY | O_CLOEXEC);
            if (fd < 0)
                fail(log_error_value(errno, "Failed to open /dev/null in the container"));
        }

    // Never lodged's terminal: a new session, with the pty as its terminal.
    if (::setsid() < 0)
        fail(log_error_value(errno, "Failed to create a session"));
    if (slave >= 0 && ::ioctl(slave, TIOCSCTTY, 0) < 0)
        fail(log_error_value(errno, "Failed to make the pty the controlling terminal"));

    // Copies above 2 first, so that no source is clobbered by an earlier dup2(). stderr stays
    // lodged's until the last moment, so that setup failures end up in its log and not in the
    // command's output.
    int moved[3];
    for (int i = 0; i < 3; i++) {
        moved[i] = ::fcntl(stdio[i], F_DUPFD_CLOEXEC, 3);
        if (moved[i] < 0)
            fail(log_error_value(errno, "Failed to set up the command's stdio"));
    }
    if (::dup2(moved[0], 0) < 0 || ::dup2(moved[1], 1) < 0)
        fail(log_error_value(errno, "Failed to set up the command's stdio"));
    // Only 0, 1 and 2 survive exec.
    if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        fail(log_error_value(errno, "Failed to mark descriptors close-on-exec"));

    if (auto r = runtime::drop_capabilities(req.config); !r)
        fail(r.error());
    if (auto r = runtime::load_seccomp(req.config); !r)
        fail(r.error());
    if (::dup2(moved[2], 2) < 0)
        fail(log_error_value(errno, "Failed to set up the command's stdio"));

    ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0); // the command's own business from here on
    reset_signal_state();
    // execvp() searches the PATH of the calling process's environment.
    environ = const_cast<char**>(req.envp.data());
    ::execvp(req.argvp[0], req.argvp.data());
    int err = errno;
    char line[512];
    int n = std::snprintf(line, sizeof line, "lodge: cannot run \"%s\": %s\n", req.argvp[0],
                          std::strerror(err));
    if (n > 0) {
        ssize_t ignored = ::write(2, line, std::min(static_cast<size_t>(n), sizeof line - 1));
        (void)ignored;
    }
    _exit(err == ENOENT ? 127 : 126);
}

} // namespace

int main() {
    log_set_prefix("lodge-exec");
    // Until exec nothing in the container may look into these processes: they hold the caller's
    // descriptors (and /proc/PID/fd of a non-dumpable process is host root's).
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    ::syscall(SYS_close_range, sock + 1, ~0U, 0);
    struct stat st {};
    if (::fstat(sock, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        std::fprintf(stderr, "lodge-exec is started by lodged, not by hand\n");
        return 2;
    }
    ::fcntl(sock, F_SETFD, FD_CLOEXEC);

    std::string text;
    std::vector<int> fds;
    Request req;
    if (auto r = receive(text, fds); !r)
        fail(r.error());
    if (auto r = parse(text, fds, req); !r)
        fail(r.error());
    // Everything but the user namespace, whose entry makes us the container's root: we stay
    // host root, able to reap the command and to leave no trace in the container.
    if (::setns(req.init_pidfd, req.ns_flags & ~CLONE_NEWUSER) < 0)
        fail(log_error_value(errno, "Failed to enter the container's namespaces"));

    // Born in the cgroup2 payload where the kernel allows it (5.7 and later), else fork().
    int pidfd = -1;
    bool in_cgroup2 = false;
    pid_t pid = -1;
    if (req.cgroup2_dir >= 0) {
        struct clone_args args {};
        args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD;
        args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
        args.cgroup = static_cast<uint64_t>(req.cgroup2_dir);
        args.exit_signal = SIGCHLD;
        pid = static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
        in_cgroup2 = pid >= 0;
    }
    if (pid < 0)
        pid = ::fork();
    if (pid < 0)
        fail(log_error_value(errno, "Failed to create the command's process"));
    if (pid == 0)
        command_main(req, in_cgroup2);
    // Our unreaped child: its pid cannot be reused before we wait for it.
    if (pidfd < 0)
        pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        ::kill(pid, SIGKILL);
        fail(log_error_value(errno, "Failed to open the command's pidfd"));
    }
    if (send_with_fd(sock, "C" + std::to_string(pid), pidfd) < 0) {
        ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
        _exit(1);
    }
    // Nothing of the request stays open here: the command's pipes end with the command.
    ::syscall(SYS_close_range, sock, pidfd - 1, 0);
    ::syscall(SYS_close_range, pidfd + 1, ~0U, 0);
    reset_signal_state();
    siginfo_t si{};
    int r;
    do
        r = ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &si, WEXITED);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        _exit(1);
    _exit(si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status);
}
