#include "control.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "common/process.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::runtime {

int control_connect(const std::string& name, Fd& out) {
    std::string path = paths::control_socket(name);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    Fd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!sock)
        return -errno;
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        return -errno;
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

// The notify pipe carries lines: "PID N" (the intermediate process, with a LaunchHold), "BUS
// NAME" (the supervisor's bus name, with --bus-controller), then "READY N" or "ERROR TEXT".
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

// Appends what arrives on `fd` to `text` until `enough(text)`, EOF (returns 0 either way) or
// `timeout_ms` (negative: none) has passed (-ETIMEDOUT).
int read_notify(int fd, std::string& text, int timeout_ms,
                const std::function<bool(const std::string&)>& enough) {
    struct timespec start {};
    ::clock_gettime(CLOCK_MONOTONIC, &start);
    while (!enough || !enough(text)) {
        int wait = -1;
        if (timeout_ms >= 0) {
            struct timespec now {};
            ::clock_gettime(CLOCK_MONOTONIC, &now);
            long spent =
                (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (spent >= timeout_ms)
                return -ETIMEDOUT;
            wait = static_cast<int>(timeout_ms - spent);
        }
        struct pollfd p {
            fd, POLLIN, 0
        };
        int r = ::poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            continue; // the deadline check above ends the loop
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : 0;
        text.append(buf, static_cast<size_t>(n));
    }
    return 0;
}

// Moves `fd` to `target` in a child about to exec, without the close-on-exec flag.
void place_fd(int fd, int target) {
    int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
    ::dup2(high, target);
}

} // namespace

int launch_supervisor(const std::string& supervisor, const std::string& name,
                      const std::vector<std::string>& extra_args, LaunchResult& out,
                      const LaunchHold* hold) {
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
    std::vector<std::string> args{supervisor, "--notify-fd=3"};
    if (hold)
        args.push_back("--wait-go-fd=4");
    if (hold && hold->bus_controller)
        args.push_back("--bus-controller");
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.push_back(name);

    pid_t pid = ::fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        // Intermediate: a new session, then the supervisor as its orphan, so it outlives us.
        ::setsid();
        pid_t sup = ::fork();
        if (sup != 0) {
            if (sup > 0 && hold)
                dprintf(wr.get(), "PID %d\n", static_cast<int>(sup));
            _exit(sup < 0 ? 1 : 0);
        }
        place_fd(wr.get(), 3);
        if (hold)
            place_fd(go_rd.get(), 4);
        restore_fd_limit(); // lodged's raised limit is not the supervisor's, nor its guest's
        int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, 0);
        ::dup2(null, 1);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(supervisor.c_str(), argv.data());
        dprintf(3, "ERROR cannot execute %s: %s\n", supervisor.c_str(), std::strerror(errno));
        _exit(127);
    }
    wr.reset();
    go_rd.reset();
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    std::string text;
    if (hold) {
        // The supervisor waits for us now. Its pid is there already (the intermediate wrote it
        // before exiting); its bus name follows once it has connected, or an ERROR line.
        auto ready = [&](const std::string& t) {
            return has_line(t, "ERROR ") ||
                   (!notify_line(t, "PID ").empty() &&
                    (!hold->bus_controller || !notify_line(t, "BUS ").empty()));
        };
        int r = read_notify(rd.get(), text, 30000, ready);
        out.supervisor_pid = static_cast<pid_t>(std::atoi(notify_line(text, "PID ").c_str()));
        std::string bus = notify_line(text, "BUS ");
        std::string error;
        if (r < 0 || !ready(text) || has_line(text, "ERROR "))
            r = -EIO;
        else if (r = hold->before_go(out.supervisor_pid, bus, error); r < 0)
            out.error = error;
        else if (::write(go_wr.get(), "g", 1) != 1)
            r = -errno;
        go_wr.reset(); // unwritten: the supervisor reads EOF and exits untouched
        if (r < 0) {
            // Wait (bounded) for it to go away, so a retry does not race with it.
            read_notify(rd.get(), text, 10000, nullptr);
            if (out.error.empty()) {
                std::string e = notify_line(text, "ERROR ");
                out.error = !e.empty() ? e : "lodge-supervisor did not get ready to start " + name;
            }
            return r;
        }
    }
    read_notify(rd.get(), text, -1, nullptr);
    if (std::string ready = notify_line(text, "READY "); !ready.empty()) {
        out.init_pid = static_cast<pid_t>(std::atoi(ready.c_str()));
        return 0;
    }
    std::string e = notify_line(text, "ERROR ");
    out.error = !e.empty() ? e : "lodge-supervisor exited without starting " + name;
    return -EIO;
}

} // namespace lodge::runtime
