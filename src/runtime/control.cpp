#include "runtime/control.hpp"
#include "common/fdpass.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {

int control_connect(const std::string& name, Fd& out, bool nonblocking) {
    std::string path = paths::control_socket(name);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    // Non-blocking even for blocking users: a unix connect() to a supervisor that stopped
    // accepting would otherwise wait for room in its backlog, with lodged's loop stuck in it.
    Fd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!sock)
        return -errno;
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return -errno;
    if (!nonblocking) {
        int flags = ::fcntl(sock.get(), F_GETFL);
        if (flags < 0 || ::fcntl(sock.get(), F_SETFL, flags & ~O_NONBLOCK) < 0)
            return -errno;
    }
    out = std::move(sock);
    return 0;
}

int control_request(const std::string& name, const std::string& request, std::string& reply,
                    int timeout_ms) {
    Fd sock;
    if (int r = control_connect(name, sock); r < 0)
        return r;
    if (timeout_ms > 0) {
        struct timeval tv {
            timeout_ms / 1000, (timeout_ms % 1000) * 1000
        };
        ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    if (::send(sock.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0)
        return -errno;
    char buf[65536];
    ssize_t n;
    do
        n = ::recv(sock.get(), buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ECONNRESET;
    reply.assign(buf, static_cast<size_t>(n));
    return 0;
}

namespace {

// The notify pipe carries lines: "PID N" (the supervisor proper, with a LaunchHold), "BUS
// NAME" (the supervisor's bus name, with --bus-controller), then "STATUS JSON" and "READY N",
// or "ERROR TEXT".
std::string notify_line(const std::string& text, const std::string& prefix) {
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos)
            break; // only whole lines count
        if (text.compare(pos, prefix.size(), prefix) == 0)
            return text.substr(pos + prefix.size(), nl - pos - prefix.size());
        pos = nl + 1;
    }
    return {};
}

bool has_line(const std::string& text, const std::string& prefix) {
    return text.rfind(prefix, 0) == 0 || text.find("\n" + prefix) != std::string::npos;
}

// Waits until `fd` is readable or `timeout_ms` (negative: none) has passed (-ETIMEDOUT).
int wait_readable(int fd, int timeout_ms) {
    struct pollfd p {
        fd, POLLIN, 0
    };
    int r;
    while ((r = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return -errno;
    return r == 0 ? -ETIMEDOUT : 0;
}

int64_t now_ms() {
    struct timespec now {};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

// What the vfork child of spawn() needs, all prepared before: it runs in our memory.
struct SpawnChild {
    const char* path = nullptr;
    char** argv = nullptr;
    int notify = -1, go = -1; // become 3 and 4
    int null = -1;            // becomes 0 and 1
    sigset_t mask;            // the caller's, for the new program
    int err = 0;              // set when exec failed (the memory is shared)
};

// Moves `fd` to `target` in a child about to exec, without the close-on-exec flag.
int place_fd(int fd, int target) {
    if (fd == target)
        return ::fcntl(fd, F_SETFD, 0);
    return ::dup2(fd, target) < 0 ? -1 : 0;
}

// Runs on its own stack in the caller's memory until execv: system calls only. A new session,
// so that the supervisor outlives the caller's; it detaches itself (--detach).
[[gnu::no_sanitize("address", "undefined")]] int spawn_child(void* data) {
    auto* c = static_cast<SpawnChild*>(data);
    ::setsid();
    // The descriptors go above 4 first, so that placing one never closes another.
    int notify = ::fcntl(c->notify, F_DUPFD_CLOEXEC, 10);
    int go = c->go >= 0 ? ::fcntl(c->go, F_DUPFD_CLOEXEC, 10) : -1;
    if (notify < 0 || (c->go >= 0 && go < 0) || place_fd(notify, 3) < 0 ||
        (go >= 0 && place_fd(go, 4) < 0) || ::dup2(c->null, 0) < 0 || ::dup2(c->null, 1) < 0) {
        c->err = errno;
        _exit(127);
    }
    restore_fd_limit(); // lodged's raised limit is not the supervisor's, nor its guest's
    ::sigprocmask(SIG_SETMASK, &c->mask, nullptr);
    ::execv(c->path, c->argv);
    c->err = errno;
    _exit(127);
}

// Starts `argv` detached from us (spawn_child) with `fd3`/`fd4` as its fds 3 and 4; 0 with
// `pid`, or -errno.
int spawn_detached(std::vector<std::string>& args, int fd3, int fd4, pid_t& pid) {
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null)
        return -errno;
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    constexpr size_t stack_size = 64 * 1024;
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    SpawnChild child;
    child.path = args[0].c_str();
    child.argv = argv.data();
    child.notify = fd3;
    child.go = fd4;
    child.null = null.get();
    // Not a copy of our page tables (a fork of lodged's whole image): the child shares our
    // memory until it has exec'd (CLONE_VM | CLONE_VFORK, as posix_spawn does). No signal
    // handler of ours may run in it meanwhile.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &child.mask);
    pid_t p = ::clone(spawn_child, static_cast<char*>(stack) + stack_size,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &child);
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &child.mask, nullptr);
    ::munmap(stack, stack_size);
    if (p < 0)
        return -clone_errno;
    if (child.err != 0) {
        while (::waitpid(p, nullptr, 0) < 0 && errno == EINTR)
            ;
        return -child.err;
    }
    pid = p;
    return 0;
}

} // namespace

int SupervisorStandby::spawn(const std::string& supervisor) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        return -errno;
    Fd ours(pair[0]), theirs(pair[1]);
    // The blank argument is room for the command line of the start it takes (`ps`).
    std::vector<std::string> args{supervisor, "--standby", std::string(400, ' ')};
    if (::stat(supervisor.c_str(), &binary_stat_) < 0)
        return -errno;
    if (int r = spawn_detached(args, theirs.get(), -1, intermediate_); r < 0)
        return r;
    binary_ = supervisor;
    job_ = std::move(ours);
    return 0;
}

int SupervisorStandby::hand_over(const std::vector<std::string>& args, int notify_fd, int go_fd) {
    Fd job = std::move(job_);
    if (!job)
        return -EPIPE;
    struct stat now {};
    if (::stat(binary_.c_str(), &now) < 0 || now.st_dev != binary_stat_.st_dev ||
        now.st_ino != binary_stat_.st_ino || now.st_size != binary_stat_.st_size ||
        now.st_mtim.tv_sec != binary_stat_.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != binary_stat_.st_mtim.tv_nsec ||
        now.st_ctim.tv_sec != binary_stat_.st_ctim.tv_sec ||
        now.st_ctim.tv_nsec != binary_stat_.st_ctim.tv_nsec)
        return -ESTALE;
    std::string text;
    for (auto& a : args)
        text += a + '\0';
    if (text.size() > max_message_size)
        return -EMSGSIZE;
    std::vector<int> fds{notify_fd};
    if (go_fd >= 0)
        fds.push_back(go_fd);
    return send_with_fds(job.get(), text, fds);
}

int SupervisorLaunch::spawn(const std::string& supervisor, const std::string& name,
                            const std::vector<std::string>& extra_args, bool hold,
                            bool bus_controller, bool reap, SupervisorStandby* standby) {
    name_ = name;
    hold_ = hold;
    bus_controller_ = hold && bus_controller;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    Fd rd(p[0]), wr(p[1]);
    Fd go_rd, go_wr;
    if (hold) {
        if (::pipe2(p, O_CLOEXEC) < 0)
            return -errno;
        go_rd.reset(p[0]);
        go_wr.reset(p[1]);
    }
    // --detach: the supervisor forks itself away from us (into its cgroup when it places itself).
    std::vector<std::string> args{supervisor, "--notify-fd=3", "--detach"};
    if (hold)
        args.push_back("--wait-go-fd=4");
    if (bus_controller_)
        args.push_back("--bus-controller");
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.push_back(name);

    intermediate_ = 0;
    bool handed = false;
    if (standby && standby->binary() == supervisor) {
        int r = standby->hand_over(std::vector<std::string>(args.begin() + 1, args.end()), wr.get(),
                                   go_rd.get());
        handed = r == 0;
        // A standby that died or went stale costs the start its saving only.
        if (r < 0 && r != -EPIPE && r != -ESTALE)
            log_warning_errno(r, "Cannot hand the start of %s to the standby supervisor",
                              name.c_str());
    }
    if (!handed) {
        if (int r = spawn_detached(args, wr.get(), go_rd.get(), intermediate_); r < 0)
            return r;
    }
    wr.reset();
    go_rd.reset();
    // The supervisor's first process only sets itself up and forks: this wait is short.
    while (reap && intermediate_ > 0 && ::waitpid(intermediate_, nullptr, 0) < 0 && errno == EINTR)
        ;
    if (::fcntl(rd.get(), F_SETFL, O_NONBLOCK) < 0)
        return -errno;
    notify_ = std::move(rd);
    go_ = std::move(go_wr);
    return 0;
}

bool SupervisorLaunch::held() const {
    return !notify_line(text_, "PID ").empty() &&
           (!bus_controller_ || !notify_line(text_, "BUS ").empty());
}

SupervisorLaunch::Step SupervisorLaunch::read() {
    char buf[4096];
    while (!eof_) {
        ssize_t n = ::read(notify_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break; // EAGAIN: all there is for now
        if (n == 0)
            eof_ = true;
        text_.append(buf, static_cast<size_t>(n));
    }
    if (hold_ && !released_) {
        // The supervisor could not get ready to be placed: call the start off.
        if (has_line(text_, "ERROR ") || eof_)
            release(false);
        else if (held())
            return Step::held;
    }
    // READY or ERROR is the supervisor's last word; it closes the pipe right after.
    return eof_ ? Step::finished : Step::more;
}

int SupervisorLaunch::release(bool go) {
    int r = 0;
    if (go && ::write(go_.get(), "g", 1) != 1)
        r = -errno;
    go_.reset(); // unwritten: the supervisor reads EOF and exits untouched
    released_ = true;
    return r;
}

pid_t SupervisorLaunch::supervisor_pid() const {
    return static_cast<pid_t>(std::atoi(notify_line(text_, "PID ").c_str()));
}

std::string SupervisorLaunch::bus_name() const {
    return notify_line(text_, "BUS ");
}

int SupervisorLaunch::result(LaunchResult& out) const {
    out.supervisor_pid = hold_ ? supervisor_pid() : 0;
    if (std::string ready = notify_line(text_, "READY "); !ready.empty()) {
        out.init_pid = static_cast<pid_t>(std::atoi(ready.c_str()));
        out.status = notify_line(text_, "STATUS ");
        return 0;
    }
    std::string e = notify_line(text_, "ERROR ");
    if (!e.empty())
        out.error = e;
    else if (hold_ && !held())
        out.error = "lodge-supervisor did not get ready to start " + name_;
    else
        out.error = "lodge-supervisor exited without starting " + name_;
    return -EIO;
}

int launch_supervisor(const std::string& supervisor, const std::string& name,
                      const std::vector<std::string>& extra_args, LaunchResult& out,
                      const LaunchHold* hold) {
    SupervisorLaunch launch;
    if (int r = launch.spawn(supervisor, name, extra_args, hold != nullptr,
                             hold && hold->bus_controller);
        r < 0)
        return r;
    // The supervisor reaches its hold point within 30 s, or the start is called off; once
    // called off, it gets 10 s to go away, so that a retry does not race with it.
    int64_t deadline = hold ? now_ms() + 30000 : -1;
    bool released = hold == nullptr;
    for (;;) {
        auto step = launch.read();
        if (step == SupervisorLaunch::Step::finished)
            break;
        if (step == SupervisorLaunch::Step::held) {
            out.supervisor_pid = launch.supervisor_pid();
            std::string error;
            int r = hold->before_go(out.supervisor_pid, launch.bus_name(), error);
            if (r < 0 || (r = launch.release(true)) < 0) {
                launch.release(false);
                for (int64_t end = now_ms() + 10000;
                     launch.read() != SupervisorLaunch::Step::finished && now_ms() < end;)
                    wait_readable(launch.notify_fd(), static_cast<int>(end - now_ms()));
                out.error = !error.empty() ? error : "Cannot let lodge-supervisor start " + name;
                return r;
            }
            released = true;
            continue;
        }
        int wait = released ? -1 : static_cast<int>(std::max<int64_t>(0, deadline - now_ms()));
        if (wait_readable(launch.notify_fd(), wait) == -ETIMEDOUT && !released) {
            launch.release(false);
            for (int64_t end = now_ms() + 10000;
                 launch.read() != SupervisorLaunch::Step::finished && now_ms() < end;)
                wait_readable(launch.notify_fd(), static_cast<int>(end - now_ms()));
            launch.result(out);
            return -EIO;
        }
    }
    return launch.result(out);
}

} // namespace lodge::runtime
