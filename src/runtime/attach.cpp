#include "attach.hpp"
#include "cgroup.hpp"
#include "common/fdpass.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "security.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <map>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {

constexpr const char* default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Messages on the sync socket, one per datagram:
//   C<pid>          from the helper, with the command's pidfd attached
//   P               from the command, with the pty master attached
//   E<errno>:<text> from either, just before it exits on a failure

// Everything the forked processes need, prepared beforehand: the caller may be multithreaded,
// so after fork() only system calls and allocation-level libc run.
struct Plan {
    const ExecRequest* req = nullptr;
    int sock = -1;       // the forked side's end of the sync socket
    int init_pidfd = -1; // PID 1 of the container
    int ns_flags = 0;
    std::vector<std::string> cgroups; // <mountpoint>/<payload> per hierarchy
    std::vector<bool> unified;
    std::vector<std::string> env;
    std::vector<char*> envp;
    std::vector<char*> argv;
};

[[noreturn]] void fail(int sock, int err) {
    std::string msg = log_last_error();
    if (msg.empty())
        msg = "Failed to start the command in the container";
    send_with_fd(sock, "E" + std::to_string(err < 0 ? -err : err) + ":" + msg);
    _exit(1);
}

// Closes every descriptor but 0-2 and `keep` (-1 entries ignored).
void close_all_but(std::initializer_list<int> keep) {
    int fds[16];
    size_t n = 0;
    for (int fd : keep)
        if (fd > 2 && n < std::size(fds))
            fds[n++] = fd;
    std::sort(fds, fds + n);
    unsigned next = 3;
    for (size_t i = 0; i < n; i++) {
        unsigned fd = static_cast<unsigned>(fds[i]);
        if (fd > next)
            ::syscall(SYS_close_range, next, fd - 1, 0);
        next = std::max(next, fd + 1);
    }
    ::syscall(SYS_close_range, next, ~0U, 0);
}

int write_self_to(const std::string& procs) {
    int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    // "0" is the writing process in both cgroup versions.
    int r = ::write(fd, "0", 1) < 0 ? -errno : 0;
    ::close(fd);
    return r;
}

// Joins `dir`. A cgroup2 payload whose own init enabled controllers for its children (systemd
// does) cannot take processes; like lxc-attach, use a leaf ".lxc" owned as the payload is.
int join_cgroup(const std::string& dir, bool unified) {
    int r = write_self_to(dir + "/cgroup.procs");
    if (r == -EBUSY && unified) {
        std::string leaf = dir + "/.lxc";
        struct stat st {};
        if (::stat(dir.c_str(), &st) < 0 || (::mkdir(leaf.c_str(), 0755) < 0 && errno != EEXIST))
            return log_error_errno(errno, "Failed to create the cgroup %s", leaf.c_str());
        for (const char* f : {"", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control"})
            if (::chown((leaf + f).c_str(), st.st_uid, st.st_gid) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to delegate the cgroup %s", leaf.c_str());
        r = write_self_to(leaf + "/cgroup.procs");
    }
    if (r < 0)
        return log_error_errno(r, "Failed to join the container's cgroup %s", dir.c_str());
    return 0;
}

// The command, after the helper entered the namespaces: becomes the container's root, sets up
// its directory, terminal and stdio, takes on PID 1's restrictions and execs.
[[noreturn]] void command_main(const Plan& p) {
    const ExecRequest& req = *p.req;
    if (::setgroups(0, nullptr) < 0 || ::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to become root in the container"));
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);

    if (!req.cwd.empty()) {
        if (::chdir(req.cwd.c_str()) < 0)
            fail(p.sock,
                 log_error_errno(errno, "Cannot change to the directory \"%s\"", req.cwd.c_str()));
    } else if (::chdir("/root") < 0 && ::chdir("/") < 0) {
        fail(p.sock, log_error_errno(errno, "Cannot change to the directory \"/\""));
    }

    int stdio[3] = {req.stdin_fd, req.stdout_fd, req.stderr_fd};
    int slave = -1;
    if (req.pty) {
        // The container's devpts instance, so the pty is /dev/pts/N inside, owned by its root.
        int master = ::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        int unlock = 0;
        if (master < 0 || ::ioctl(master, TIOCSPTLCK, &unlock) < 0)
            fail(p.sock, log_error_errno(errno, "Failed to allocate a pty in the container"));
        slave = ::ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0)
            fail(p.sock, log_error_errno(errno, "Failed to open the pty's terminal side"));
        if (int r = send_with_fd(p.sock, "P", master); r < 0)
            fail(p.sock, log_error_errno(r, "Failed to hand over the pty"));
        ::close(master);
        stdio[0] = stdio[1] = stdio[2] = slave;
    }
    for (int& fd : stdio)
        if (fd < 0) {
            fd = ::open("/dev/null", O_RDWR | O_NOCTTY | O_CLOEXEC);
            if (fd < 0)
                fail(p.sock, log_error_errno(errno, "Failed to open /dev/null in the container"));
        }

    // Never the caller's controlling terminal: a new session, with the pty as its terminal.
    if (::setsid() < 0)
        fail(p.sock, log_error_errno(errno, "Failed to create a session"));
    if (slave >= 0 && ::ioctl(slave, TIOCSCTTY, 0) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to make the pty the controlling terminal"));
    reset_signal_state();
    restore_fd_limit();

    // Copies above 2 first, so that no source is clobbered by an earlier dup2(). stderr stays the
    // caller's until the last moment, so that setup failures end up in its log and not in the
    // command's output.
    int moved[3];
    for (int i = 0; i < 3; i++) {
        moved[i] = ::fcntl(stdio[i], F_DUPFD_CLOEXEC, 3);
        if (moved[i] < 0)
            fail(p.sock, log_error_errno(errno, "Failed to set up the command's stdio"));
    }
    if (::dup2(moved[0], 0) < 0 || ::dup2(moved[1], 1) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to set up the command's stdio"));
    // Only 0, 1 and 2 survive exec.
    if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to mark descriptors close-on-exec"));

    if (int r = drop_capabilities(*req.config); r < 0)
        fail(p.sock, r);
    if (int r = load_seccomp(*req.config); r < 0)
        fail(p.sock, r);
    if (::dup2(moved[2], 2) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to set up the command's stdio"));

    // execvp() searches the PATH of the calling process's environment.
    environ = const_cast<char**>(p.envp.data());
    ::execvp(p.argv[0], p.argv.data());
    int err = errno;
    char line[512];
    int n = std::snprintf(line, sizeof line, "lodge: cannot run \"%s\": %s\n", p.argv[0],
                          std::strerror(err));
    if (n > 0) {
        ssize_t ignored = ::write(2, line, std::min(static_cast<size_t>(n), sizeof line - 1));
        (void)ignored;
    }
    _exit(err == ENOENT ? 127 : 126);
}

// The helper: joins the payload cgroup and the namespaces, then creates the command as a sibling,
// i.e. as the caller's child.
[[noreturn]] void helper_main(Plan& p) {
    const ExecRequest& req = *p.req;
    // A caller with closed stdio may have got the socket as 0-2, where the command's stdio goes.
    if (p.sock < 3)
        p.sock = ::fcntl(p.sock, F_DUPFD_CLOEXEC, 3);
    close_all_but({p.sock, p.init_pidfd, req.stdin_fd, req.stdout_fd, req.stderr_fd});
    // Until exec nothing in the container may look into these processes: they still hold the
    // caller's descriptors (and /proc/PID/fd of a non-dumpable process is host root's).
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    for (size_t i = 0; i < p.cgroups.size(); i++)
        if (int r = join_cgroup(p.cgroups[i], p.unified[i]); r < 0)
            fail(p.sock, r);
    if (::setns(p.init_pidfd, p.ns_flags) < 0)
        fail(p.sock, log_error_errno(errno, "Failed to enter the container's namespaces"));
    ::close(p.init_pidfd);

    int pidfd = -1;
    struct clone_args args {};
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args.exit_signal = 0; // CLONE_PARENT: the command signals the caller as this helper would
    long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0)
        fail(p.sock, log_error_errno(errno, "Failed to create the command's process"));
    if (pid == 0)
        command_main(p);
    if (int r = send_with_fd(p.sock, "C" + std::to_string(pid), pidfd); r < 0) {
        ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
        _exit(1);
    }
    _exit(0);
}

// True when PID's namespace of this type exists and is not ours.
bool other_namespace(pid_t pid, const char* ns) {
    struct stat a {};
    struct stat b {};
    std::string theirs = "/proc/" + std::to_string(pid) + "/ns/" + ns;
    std::string ours = std::string("/proc/self/ns/") + ns;
    return ::stat(theirs.c_str(), &a) == 0 && ::stat(ours.c_str(), &b) == 0 &&
           (a.st_dev != b.st_dev || a.st_ino != b.st_ino);
}

// True when /proc/PID/cgroup puts the process in `payload` (or below) in some hierarchy.
bool in_cgroup(pid_t pid, const std::string& payload) {
    std::string text;
    if (read_file("/proc/" + std::to_string(pid) + "/cgroup", text) < 0)
        return false;
    std::string want = "/" + payload;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        size_t c2 = line.find(':', line.find(':') + 1);
        if (c2 == std::string::npos)
            continue;
        std::string path = line.substr(c2 + 1);
        if (path == want || path.rfind(want + "/", 0) == 0)
            return true;
    }
    return false;
}

// environment.* keys, then LXD's defaults for root, then the request's own variables.
int build_environment(const ExecRequest& req, std::vector<std::string>& out, std::string& error) {
    std::map<std::string, std::string> vars = {{"PATH", default_path},
                                               {"HOME", "/root"},
                                               {"USER", "root"},
                                               {"LANG", "C.UTF-8"},
                                               {"container", "lxc"}};
    if (req.pty)
        vars["TERM"] = "xterm";
    for (auto& [k, v] : req.config->config)
        if (k.rfind("environment.", 0) == 0 && k.size() > 12)
            vars[k.substr(12)] = v;
    for (auto& e : req.env) {
        size_t eq = e.find('=');
        if (eq == 0 || eq == std::string::npos) {
            error = "Invalid environment variable \"" + e + "\" (want KEY=VALUE)";
            return -EINVAL;
        }
        vars[e.substr(0, eq)] = e.substr(eq + 1);
    }
    out.clear();
    for (auto& [k, v] : vars)
        out.push_back(k + "=" + v);
    return 0;
}

} // namespace

int exec_in_container(const ExecRequest& req, ExecHandle& out, std::string& error) {
    auto refuse = [&](int err, std::string why) {
        error = std::move(why);
        log_error("%s", error.c_str());
        return err;
    };
    if (req.init_pid <= 0 || !req.config || req.argv.empty() || req.payload_cgroup.empty())
        return refuse(-EINVAL, "Invalid exec request: PID 1, config, cgroup and command needed");
    std::string payload = req.payload_cgroup;
    while (!payload.empty() && payload.front() == '/')
        payload.erase(0, 1);
    if (payload.empty() || ("/" + payload + "/").find("/../") != std::string::npos)
        return refuse(-EINVAL, "Invalid payload cgroup \"" + req.payload_cgroup + "\"");

    Plan p;
    p.req = &req;
    if (int r = build_environment(req, p.env, error); r < 0)
        return refuse(r, error);
    for (auto& e : p.env)
        p.envp.push_back(const_cast<char*>(e.c_str()));
    p.envp.push_back(nullptr);
    for (auto& a : req.argv)
        p.argv.push_back(const_cast<char*>(a.c_str()));
    p.argv.push_back(nullptr);
    for (auto& h : host_hierarchies()) {
        p.cgroups.push_back(h.mountpoint + "/" + payload);
        p.unified.push_back(h.unified);
    }

    // A pidfd pins PID 1; the checks through /proc/PID are about that process if it is still
    // alive afterwards. A recycled pid must never lead into the host's namespaces.
    PidFd init = PidFd::open(req.init_pid);
    if (!init.valid()) {
        int r = log_error_errno(errno, "The container's PID 1 (pid %d) is gone", req.init_pid);
        error = log_last_error();
        return r;
    }
    // Privileged containers share our user namespace, and setns() refuses to re-enter it.
    bool own_userns = other_namespace(req.init_pid, "user");
    bool own_timens = other_namespace(req.init_pid, "time");
    bool is_container = other_namespace(req.init_pid, "pid") && in_cgroup(req.init_pid, payload);
    if (init.send_signal(0) < 0)
        return refuse(-ESRCH,
                      "The container's PID 1 (pid " + std::to_string(req.init_pid) + ") is gone");
    if (!is_container)
        return refuse(-ESRCH, "Process " + std::to_string(req.init_pid) +
                                  " is not the init of a container in cgroup " + payload);
    p.ns_flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                 CLONE_NEWCGROUP | (own_userns ? CLONE_NEWUSER : 0) |
                 (own_timens ? CLONE_NEWTIME : 0);
    p.init_pidfd = init.get();

    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        int r = log_error_errno(errno, "Failed to create a socket pair");
        error = log_last_error();
        return r;
    }
    Fd ours(pair[0]), theirs(pair[1]);
    p.sock = theirs.get();

    pid_t helper = ::fork();
    if (helper < 0) {
        int r = log_error_errno(errno, "Failed to fork");
        error = log_last_error();
        return r;
    }
    if (helper == 0)
        helper_main(p);
    theirs.reset();
    init.reset();

    PidFd process;
    Fd master;
    int err = 0;
    for (;;) {
        std::string msg;
        Fd fd;
        ssize_t n = recv_with_fd(ours.get(), msg, fd);
        if (n < 0) {
            err = log_error_errno(n, "Lost the exec helper");
            error = log_last_error();
            break;
        }
        if (n == 0)
            break; // every copy closed: the helper exited and the command exec'd (or died)
        if (msg[0] == 'C' && fd) {
            process = PidFd(fd.release(), static_cast<pid_t>(std::atoi(msg.c_str() + 1)));
        } else if (msg[0] == 'P' && fd) {
            master = std::move(fd);
        } else if (msg[0] == 'E' && !err) {
            size_t colon = msg.find(':');
            err = -std::max(1, std::atoi(msg.c_str() + 1));
            error = colon == std::string::npos ? msg.substr(1) : msg.substr(colon + 1);
        }
    }
    int status;
    while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {
    }
    if (!err && !process.valid()) {
        err = -ECHILD;
        error = "The exec helper died before starting the command";
        log_error("%s", error.c_str());
    }
    if (!err && req.pty && !master) {
        err = -ECHILD;
        error = "The command died before handing over its pty";
        log_error("%s", error.c_str());
    }
    if (err < 0) {
        if (process.valid()) {
            process.send_signal(SIGKILL);
            siginfo_t si{};
            ::waitid(P_PIDFD, static_cast<id_t>(process.get()), &si, WEXITED);
        }
        return err;
    }
    out.process = std::move(process);
    out.pty_master = std::move(master);
    return 0;
}

int exec_wait(const ExecHandle& h) {
    siginfo_t si{};
    int r;
    do
        r = ::waitid(P_PIDFD, static_cast<id_t>(h.process.get()), &si, WEXITED);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return log_error_errno(errno, "Failed to wait for process %d", h.process.pid());
    return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

} // namespace lodge::runtime
