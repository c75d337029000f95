#include "control.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
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

int launch_supervisor(const std::string& supervisor, const std::string& name,
                      const std::vector<std::string>& extra_args, LaunchResult& out) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    Fd rd(p[0]), wr(p[1]);
    std::vector<std::string> args{supervisor, "--notify-fd=3"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.push_back(name);

    pid_t pid = ::fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        // Intermediate: a new session, then the supervisor as its orphan, so it outlives us.
        ::setsid();
        pid_t sup = ::fork();
        if (sup != 0)
            _exit(sup < 0 ? 1 : 0);
        ::dup2(wr.get(), 3);
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
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::string line;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(rd.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0)
            line.append(buf, static_cast<size_t>(n));
    while (!line.empty() && line.back() == '\n')
        line.pop_back();
    if (line.rfind("READY ", 0) == 0) {
        out.init_pid = static_cast<pid_t>(std::atoi(line.c_str() + 6));
        return 0;
    }
    out.error = line.rfind("ERROR ", 0) == 0 ? line.substr(6)
                                             : "lodge-supervisor exited without starting " + name;
    return -EIO;
}

} // namespace lodge::runtime
