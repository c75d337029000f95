#include "network/proxy.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/process.hpp"

#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef LODGE_PROXY_UDP_PATH
#define LODGE_PROXY_UDP_PATH "/usr/libexec/lodge/lodge-proxy-udp"
#endif

namespace lodge::network {

namespace {

constexpr uid_t nobody = 65534;
// How long lodged waits for the forwarder's pid from the process that starts it.
constexpr int spawn_timeout_ms = 10000;
// How long a stopped forwarder may take to let go of its socket.
constexpr int stop_timeout_ms = 3000;

std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

// The intermediate process: joins the container's namespaces, forks the forwarder into its
// pid namespace, reports its pid and reaps it when the container's end kills it (a dying
// container's PID 1 is not reaped before every process of its namespace is). System calls
// only: this runs in a fork of lodged.
[[noreturn]] void keeper(const ForwarderSpawn& s, int report, char* const* argv, char* const* envp,
                         char* listen_pid, size_t listen_pid_size) {
    reset_signal_state();
    int32_t msg = 0;
    if (::setns(s.netns_fd, CLONE_NEWNET) < 0 || ::setns(s.pidns_fd, CLONE_NEWPID) < 0) {
        msg = -errno;
        (void)!::write(report, &msg, sizeof msg);
        ::_exit(1);
    }
    pid_t f = ::fork();
    if (f == 0) {
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            ::dup2(null, 0);
            ::dup2(null, 1);
        }
        if (s.listen_fd == 3)
            ::fcntl(3, F_SETFD, 0);
        else
            ::dup2(s.listen_fd, 3);
        ::syscall(SYS_close_range, 4U, ~0U, 0U);
        // Connecting needs no privilege: the forwarder runs as nobody, no_new_privs.
        if (::setgroups(0, nullptr) < 0 || ::setresgid(nobody, nobody, nobody) < 0 ||
            ::setresuid(nobody, nobody, nobody) < 0 || ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            ::_exit(126);
        // sd_listen_fds() wants its own pid, as this namespace counts it.
        std::snprintf(listen_pid, listen_pid_size, "LISTEN_PID=%d", static_cast<int>(::getpid()));
        ::execve(argv[0], argv, envp);
        ::_exit(127);
    }
    msg = f > 0 ? static_cast<int32_t>(f) : -errno;
    (void)!::write(report, &msg, sizeof msg);
    ::syscall(SYS_close_range, 0U, ~0U, 0U);
    if (f > 0)
        while (::waitpid(f, nullptr, 0) < 0 && errno == EINTR) {
        }
    ::_exit(0);
}

} // namespace

Fd open_listener(const ProxyDevice& p, std::string& error) {
    const ProxyEndpoint& l = p.listen;
    bool tcp = l.protocol == "tcp";
    Fd fd(
        ::socket(l.ipv6 ? AF_INET6 : AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0));
    auto fail = [&](const char* what) {
        error = "Device \"" + p.device + "\": cannot " + what + " " + l.text() + ": " +
                std::strerror(errno);
        log_error("%s", error.c_str());
        return Fd();
    };
    if (!fd)
        return fail("make a socket for");
    int one = 1;
    // TCP only: for UDP SO_REUSEADDR would let two devices bind the same port.
    if (tcp)
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len;
    if (l.ipv6) {
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(l.port);
        ::inet_pton(AF_INET6, l.address.c_str(), &a->sin6_addr);
        len = sizeof *a;
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(l.port);
        ::inet_pton(AF_INET, l.address.c_str(), &a->sin_addr);
        len = sizeof *a;
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return fail("listen on");
    if (tcp && ::listen(fd.get(), SOMAXCONN) < 0)
        return fail("listen on");
    return fd;
}

std::string forwarder_program(const std::string& protocol) {
    if (protocol == "udp")
        return env_or("LODGE_PROXY_UDP", LODGE_PROXY_UDP_PATH);
    return env_or("LODGE_SOCKET_PROXYD", "/lib/systemd/systemd-socket-proxyd");
}

pid_t spawn_forwarder(const ForwarderSpawn& s, std::string& error) {
    const ProxyDevice& p = *s.proxy;
    std::string program = forwarder_program(p.listen.protocol);
    if (::access(program.c_str(), X_OK) != 0) {
        error = "Device \"" + p.device + "\": the forwarder " + program + " is missing" +
                (p.listen.protocol == "tcp" ? " (Debian package systemd)" : "") +
                "; nat=true needs none";
        log_error("%s", error.c_str());
        return -ENOENT;
    }
    // Everything the children need is made before fork: they only make system calls.
    std::vector<std::string> args = {program};
    if (p.listen.protocol == "udp") {
        args.push_back(p.connect.address);
        args.push_back(std::to_string(p.connect.port));
    } else {
        args.push_back(p.connect.host_port());
    }
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    char listen_fds[] = "LISTEN_FDS=1";
    char listen_pid[32] = "LISTEN_PID=0";
    char path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    char* envp[] = {listen_fds, listen_pid, path, nullptr};

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) {
        error = std::string("Cannot make a pipe: ") + std::strerror(errno);
        return -errno;
    }
    Fd report_read(pipefd[0]), report_write(pipefd[1]);
    pid_t first = ::fork();
    if (first < 0) {
        error = std::string("Cannot fork: ") + std::strerror(errno);
        return -errno;
    }
    if (first == 0) {
        // Detached from lodged: the keeper's parent exits at once.
        ::setsid();
        pid_t k = ::fork();
        if (k != 0)
            ::_exit(k < 0 ? 1 : 0);
        keeper(s, report_write.get(), argv.data(), envp, listen_pid, sizeof listen_pid);
    }
    report_write.reset();
    while (::waitpid(first, nullptr, 0) < 0 && errno == EINTR) {
    }
    int32_t msg = 0;
    pollfd pfd{report_read.get(), POLLIN, 0};
    if (::poll(&pfd, 1, spawn_timeout_ms) <= 0 ||
        ::read(report_read.get(), &msg, sizeof msg) != sizeof msg)
        msg = -EIO;
    if (msg <= 0) {
        error = "Device \"" + p.device +
                "\": cannot start the forwarder in the container: " + std::strerror(-msg);
        log_error("%s", error.c_str());
        return msg < 0 ? msg : -EIO;
    }
    pid_t pid = msg;
    for (auto& procs : s.cgroup_procs)
        if (int r = write_file(procs, std::to_string(pid)); r < 0)
            log_warning("Device \"%s\": cannot move its forwarder (pid %d) into %s: %s",
                        p.device.c_str(), pid, procs.c_str(), std::strerror(-r));
    return pid;
}

bool is_forwarder(pid_t pid, int netns_fd) {
    std::string comm;
    if (pid <= 0 || read_file("/proc/" + std::to_string(pid) + "/comm", comm) < 0)
        return false;
    // comm is cut at 15 characters.
    if (comm.rfind("systemd-socket-", 0) != 0 && comm.rfind("lodge-proxy-udp", 0) != 0)
        return false;
    struct stat mine {
    }, want{};
    if (::stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &mine) < 0 ||
        ::fstat(netns_fd, &want) < 0)
        return false;
    return mine.st_ino == want.st_ino && mine.st_dev == want.st_dev;
}

int stop_forwarder(pid_t pid) {
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd)
        return errno == ESRCH ? 0 : -errno;
    if (::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGTERM, nullptr, 0) < 0)
        return errno == ESRCH ? 0 : -errno;
    // Gone (and its socket closed) before a new one may listen on the same port.
    pollfd p{pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, stop_timeout_ms) <= 0) {
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
        ::poll(&p, 1, stop_timeout_ms);
    }
    return 0;
}

namespace {
// Text between an nft comment's quotes: anything but plain characters becomes '_', so no
// name can end the string or the statement.
std::string nft_comment_text(std::string text) {
    for (char& ch : text)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-' &&
            ch != '/' && ch != ':')
            ch = '_';
    return text;
}
} // namespace

std::string nft_nat_chains(const std::vector<NatForward>& forwards) {
    if (forwards.empty())
        return {};
    std::ostringstream pre, out;
    for (auto& f : forwards) {
        const ProxyEndpoint &l = f.listen, &c = f.connect;
        std::string family = l.ipv6 ? "ip6" : "ip";
        std::string match;
        if (l.wildcard())
            match = std::string("meta nfproto ") + (l.ipv6 ? "ipv6" : "ipv4") +
                    " fib daddr type local ";
        else
            match = family + " daddr " + l.address + " ";
        std::string target = l.protocol + " dport " + std::to_string(l.port) + " dnat " + family +
                             " to " + c.host_port() + " comment \"" +
                             nft_comment_text(f.container + "/" + f.device) + "\"\n";
        pre << "    " << match << target;
        // The host's own connections; loopback ones cannot be sent to a bridge.
        std::string not_loopback = l.ipv6 ? "ip6 daddr != ::1 " : "ip daddr != 127.0.0.0/8 ";
        out << "    " << match << (l.wildcard() ? not_loopback : "") << target;
    }
    return "  chain proxy.pre {\n"
           "    type nat hook prerouting priority dstnat; policy accept;\n" +
           pre.str() +
           "  }\n"
           "  chain proxy.out {\n"
           "    type nat hook output priority -100; policy accept;\n" +
           out.str() + "  }\n";
}

} // namespace lodge::network
