#include "runtime/attach.hpp"
#include "common/fdpass.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/exec-protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

namespace lodge::runtime {
namespace {

constexpr const char* default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

// What the vfork child needs; it writes `err` (shared memory) when it cannot exec.
struct SpawnArgs {
    int sock = -1;
    int exe = -1;
    int err = 0;
};

// Runs on its own stack in lodged's memory until execveat: system calls only.
[[gnu::no_sanitize("address", "undefined")]] int spawn_child(void* data) {
    auto* a = static_cast<SpawnArgs*>(data);
    const int target = exec_helper_socket_fd;
    int r = a->sock == target ? ::fcntl(target, F_SETFD, 0) : ::dup2(a->sock, target);
    if (r < 0) {
        a->err = errno;
        _exit(127);
    }
    restore_fd_limit();
    static char arg0[] = "lodge-exec";
    char* argv[] = {arg0, nullptr};
    ::syscall(SYS_execveat, a->exe, "", argv, environ, AT_EMPTY_PATH);
    a->err = errno;
    _exit(127);
}

// Starts the helper as our child with `sock` as its socket, without copying our page tables
// (CLONE_VM | CLONE_VFORK, as posix_spawn does): we resume once it has exec'd.
Result<PidFd> spawn_helper(int exe, int sock) {
    constexpr size_t stack_size = 64 * 1024;
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return log_error_value(errno, "Failed to allocate a stack for the exec helper");
    SpawnArgs args;
    args.sock = sock;
    args.exe = exe;
    // No signal handler of ours may run in the child, which shares our memory.
    sigset_t all, saved;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved);
    int pidfd = -1;
    pid_t pid = ::clone(spawn_child, static_cast<char*>(stack) + stack_size,
                        CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &args, &pidfd);
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    ::munmap(stack, stack_size);
    if (pid < 0)
        return log_error_value(clone_errno, "Failed to start the exec helper");
    PidFd helper(pidfd, pid);
    if (args.err) {
        siginfo_t si{};
        ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &si, WEXITED);
        return log_error_value(args.err, "Failed to execute the exec helper");
    }
    return helper;
}

// The request datagram with PID 1's pidfd and the stdio descriptors.
int send_request(int sock, const std::string& text, const std::vector<int>& fds) {
    struct iovec iov {
        const_cast<char*>(text.data()), text.size()
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * exec_request_max_fds)] = {};
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        return -errno;
    return 0;
}

int fail_with(int err, std::string why, std::string& error) {
    error = std::move(why);
    log_error("%s", error.c_str());
    return err;
}

} // namespace

int copy_exec_helper(const std::string& path, Fd& out, std::string& error) {
    Fd src(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!src || ::fstat(src.get(), &st) < 0) {
        return pass_up(log_error_value(errno, "Cannot open the exec helper %s", path.c_str()),
                       error);
    }
    int fd =
        static_cast<int>(::memfd_create("lodge-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC));
    if (fd < 0 && errno == EINVAL) // kernels before 6.3 know no MFD_EXEC (and need none)
        fd = static_cast<int>(::memfd_create("lodge-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    Fd mem(fd);
    if (!mem) {
        return pass_up(log_error_value(errno, "Failed to create a memfd for the exec helper"),
                       error);
    }
    for (off_t done = 0; done < st.st_size;) {
        ssize_t n =
            ::sendfile(mem.get(), src.get(), nullptr, static_cast<size_t>(st.st_size - done));
        if (n <= 0) {
            return pass_up(log_error_value(n < 0 ? errno : EIO, "Failed to copy the exec helper %s",
                                           path.c_str()),
                           error);
        }
        done += n;
    }
    if (::fcntl(mem.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) <
        0) {
        return pass_up(log_error_value(errno, "Failed to seal the exec helper's copy"), error);
    }
    // Never at exec_helper_socket_fd, where the helper's socket goes before execveat.
    Fd high(::fcntl(mem.get(), F_DUPFD_CLOEXEC, 10));
    if (!high) {
        return pass_up(log_error_value(errno, "Failed to duplicate the exec helper's copy"), error);
    }
    out = std::move(high);
    return 0;
}

int check_exec_stdio(int fd, const char* what, std::string& error) {
    if (fd < 0)
        return 0;
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return fail_with(-EINVAL, std::string("Cannot use ") + what + ": " + std::strerror(errno),
                         error);
    struct termios tio {};
    bool null_device = S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || null_device ||
        (S_ISCHR(st.st_mode) && ::tcgetattr(fd, &tio) == 0))
        return 0;
    return fail_with(-EINVAL,
                     std::string("Refusing ") + what +
                         ": only pipes, sockets and terminals can be a command's stdio",
                     error);
}

int exec_spawn(const ExecRequest& req, int helper_exe, ExecHandle& out, std::string& error) {
    if (req.init_pid <= 0 || !req.config || req.argv.empty() || req.payload_cgroup.empty())
        return fail_with(-EINVAL, "Invalid exec request: PID 1, config, cgroup and command needed",
                         error);
    if (helper_exe < 0)
        return fail_with(-ENOENT, "The exec helper lodge-exec is not available", error);
    std::string payload = req.payload_cgroup;
    while (!payload.empty() && payload.front() == '/')
        payload.erase(0, 1);
    if (payload.empty() || ("/" + payload + "/").find("/../") != std::string::npos)
        return fail_with(-EINVAL, "Invalid payload cgroup \"" + req.payload_cgroup + "\"", error);
    if (!req.pty)
        for (auto [fd, what] :
             {std::pair{req.stdin_fd, "stdin"}, std::pair{req.stdout_fd, "stdout"},
              std::pair{req.stderr_fd, "stderr"}})
            if (int r = check_exec_stdio(fd, what, error); r < 0)
                return r;

    std::vector<std::string> env;
    if (int r = build_environment(req, env, error); r < 0)
        return fail_with(r, error, error);

    // A pidfd pins PID 1; the checks through /proc/PID are about that process if it is still
    // alive afterwards. A recycled pid must never lead into the host's namespaces.
    PidFd init = PidFd::open(req.init_pid);
    if (!init.valid()) {
        return pass_up(
            log_error_value(errno, "The container's PID 1 (pid %d) is gone", req.init_pid), error);
    }
    // Privileged containers share our user namespace, and setns() refuses to re-enter it.
    bool own_userns = other_namespace(req.init_pid, "user");
    bool own_timens = other_namespace(req.init_pid, "time");
    bool is_container = other_namespace(req.init_pid, "pid") && in_cgroup(req.init_pid, payload);
    if (init.send_signal(0) < 0)
        return fail_with(-ESRCH,
                         "The container's PID 1 (pid " + std::to_string(req.init_pid) + ") is gone",
                         error);
    if (!is_container)
        return fail_with(-ESRCH,
                         "Process " + std::to_string(req.init_pid) +
                             " is not the init of a container in cgroup " + payload,
                         error);

    nlohmann::json j;
    j["argv"] = req.argv;
    j["env"] = env;
    j["cwd"] = req.cwd;
    j["pty"] = req.pty;
    j["ns"] = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
              CLONE_NEWCGROUP | (own_userns ? CLONE_NEWUSER : 0) | (own_timens ? CLONE_NEWTIME : 0);
    KeyMap security;
    for (auto& [k, v] : req.config->config)
        if (k.rfind("security.", 0) == 0)
            security[k] = v;
    j["config"] = security;
    j["cgroups"] = nlohmann::json::array();
    for (auto& h : host_hierarchies())
        j["cgroups"].push_back({{"path", h.mountpoint + "/" + payload}, {"unified", h.unified}});
    std::vector<int> fds = {init.get()};
    std::vector<int> stdio = {-1, -1, -1};
    if (!req.pty) {
        int given[3] = {req.stdin_fd, req.stdout_fd, req.stderr_fd};
        for (size_t i = 0; i < 3; i++)
            if (given[i] >= 0) {
                stdio[i] = static_cast<int>(fds.size());
                fds.push_back(given[i]);
            }
    }
    j["stdio"] = stdio;
    std::string text = j.dump();
    if (text.size() > exec_request_max)
        return fail_with(-E2BIG,
                         "The command line and environment are too long (" +
                             std::to_string(text.size()) + " bytes, at most " +
                             std::to_string(exec_request_max) + ")",
                         error);

    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        return pass_up(log_error_value(errno, "Failed to create a socket pair"), error);
    }
    Fd ours(pair[0]), theirs(pair[1]);
    auto spawned = spawn_helper(helper_exe, theirs.get());
    if (!spawned)
        return pass_up(spawned.error(), error);
    PidFd helper = std::move(*spawned);
    theirs.reset();
    if (int r = send_request(ours.get(), text, fds); r < 0) {
        helper.send_signal(SIGKILL);
        siginfo_t si{};
        ::waitid(P_PIDFD, static_cast<id_t>(helper.get()), &si, WEXITED);
        return pass_up(log_error_value(r, "Failed to hand the request to the exec helper"), error);
    }
    if (::fcntl(ours.get(), F_SETFL, O_NONBLOCK) < 0) {
        helper.send_signal(SIGKILL);
        siginfo_t si{};
        ::waitid(P_PIDFD, static_cast<id_t>(helper.get()), &si, WEXITED);
        return pass_up(log_error_value(errno, "Failed to make the exec handshake non-blocking"),
                       error);
    }
    out = ExecHandle{};
    out.helper = std::move(helper);
    out.handshake = std::move(ours);
    out.pty = req.pty;
    return 0;
}

int exec_setup_read(ExecHandle& h, std::string& error) {
    for (;;) {
        std::string msg;
        Fd fd;
        ssize_t n = recv_with_fd(h.handshake.get(), msg, fd);
        if (n == -EAGAIN)
            return 0;
        if (n < 0) {
            h.setup_error = pass_up(log_error_value(static_cast<int>(n), "Lost the exec helper"),
                                    h.setup_message);
            break;
        }
        if (n == 0)
            break; // every copy closed: the command exec'd (or died)
        if (msg[0] == 'C' && fd) {
            h.process = PidFd(fd.release(), static_cast<pid_t>(std::atoi(msg.c_str() + 1)));
        } else if (msg[0] == 'P' && fd) {
            h.pty_master = std::move(fd);
        } else if (msg[0] == 'E' && !h.setup_error) {
            size_t colon = msg.find(':');
            h.setup_error = -std::max(1, std::atoi(msg.c_str() + 1));
            h.setup_message = colon == std::string::npos ? msg.substr(1) : msg.substr(colon + 1);
        }
    }
    // h.handshake stays open: an event loop watching it must drop its source first (closing a
    // watched fd leaves a stale epoll entry wherever a copy of it lives on).
    if (!h.setup_error && !h.process.valid()) {
        h.setup_error = -ECHILD;
        h.setup_message = "The exec helper died before starting the command";
        log_error("%s", h.setup_message.c_str());
    }
    if (!h.setup_error && !h.pty_master && h.pty) {
        h.setup_error = -ECHILD;
        h.setup_message = "The command died before handing over its pty";
        log_error("%s", h.setup_message.c_str());
    }
    if (h.setup_error < 0) {
        error = h.setup_message;
        exec_abort(h);
        return h.setup_error;
    }
    return 1;
}

void exec_abort(ExecHandle& h) {
    if (h.process.valid())
        h.process.send_signal(SIGKILL);
    if (h.helper.valid())
        h.helper.send_signal(SIGKILL);
}

int exec_in_container(const ExecRequest& req, int helper_exe, ExecHandle& out, std::string& error,
                      int timeout_ms) {
    ExecHandle h;
    if (int r = exec_spawn(req, helper_exe, h, error); r < 0)
        return r;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        int r = exec_setup_read(h, error);
        if (r == 1)
            break;
        if (r < 0) {
            exec_wait(h);
            return r;
        }
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            wait_ms = static_cast<int>(std::max<long long>(0, left.count()));
        }
        struct pollfd p {
            h.handshake.get(), POLLIN, 0
        };
        int ready = ::poll(&p, 1, wait_ms);
        if (ready == 0) {
            exec_abort(h);
            exec_wait(h);
            return fail_with(-ETIMEDOUT, "The command's setup did not finish in time", error);
        }
    }
    h.handshake.reset();
    out = std::move(h);
    return 0;
}

int exec_status(const siginfo_t& helper) {
    return helper.si_code == CLD_EXITED ? helper.si_status : 128 + helper.si_status;
}

int exec_wait(const ExecHandle& h) {
    siginfo_t si{};
    int r;
    do
        r = ::waitid(P_PIDFD, static_cast<id_t>(h.helper.get()), &si, WEXITED);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return log_error_errno(errno, "Failed to wait for process %d", h.helper.pid());
    return exec_status(si);
}

} // namespace lodge::runtime
