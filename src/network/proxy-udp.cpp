// lodge-proxy-udp: the UDP forwarder of a proxy device with nat=false (network/proxy.hpp).
// Hand-written because no Debian program forwards datagrams from an inherited socket into
// another network namespace: socat 1.7 (bookworm) takes no listening fd for UDP and
// systemd-socket-proxyd speaks only streams.
//
//   LISTEN_FDS=1 LISTEN_PID=<pid> lodge-proxy-udp ADDRESS PORT
//
// fd 3 is a bound UDP socket in the host's network namespace; this process runs in the
// container's. Each client (source address) gets a socket connected to ADDRESS:PORT, so replies
// find their way back; a client silent for a minute is forgotten.
#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr int listen_fd = 3;
constexpr size_t max_clients = 1024;
constexpr time_t idle_seconds = 60;

struct Key {
    sockaddr_storage addr{};
    socklen_t len = 0;
    bool operator<(const Key& o) const {
        if (len != o.len)
            return len < o.len;
        return std::memcmp(&addr, &o.addr, len) < 0;
    }
};
struct Session {
    int fd = -1;
    time_t last = 0;
};

time_t now() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

} // namespace

int main(int argc, char** argv) {
    const char* fds = std::getenv("LISTEN_FDS");
    const char* pid = std::getenv("LISTEN_PID");
    if (argc != 3 || !fds || std::strcmp(fds, "1") != 0 || !pid ||
        std::atol(pid) != static_cast<long>(::getpid())) {
        std::fprintf(stderr,
                     "usage: LISTEN_FDS=1 LISTEN_PID=$$ %s ADDRESS PORT (fd 3: a bound "
                     "UDP socket)\n",
                     argv[0]);
        return 2;
    }
    sockaddr_storage target{};
    socklen_t target_len = 0;
    int family = AF_INET;
    unsigned long port = std::strtoul(argv[2], nullptr, 10);
    if (port == 0 || port > 65535) {
        std::fprintf(stderr, "lodge-proxy-udp: bad port %s\n", argv[2]);
        return 2;
    }
    if (auto* a6 = reinterpret_cast<sockaddr_in6*>(&target);
        ::inet_pton(AF_INET6, argv[1], &a6->sin6_addr) == 1) {
        family = a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(static_cast<uint16_t>(port));
        target_len = sizeof *a6;
    } else if (auto* a4 = reinterpret_cast<sockaddr_in*>(&target);
               ::inet_pton(AF_INET, argv[1], &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(static_cast<uint16_t>(port));
        target_len = sizeof *a4;
    } else {
        std::fprintf(stderr, "lodge-proxy-udp: bad address %s\n", argv[1]);
        return 2;
    }

    std::map<Key, Session> sessions;
    static char buf[65536];
    for (;;) {
        std::vector<pollfd> pfds{{listen_fd, POLLIN, 0}};
        std::vector<const Key*> keys{nullptr};
        for (auto& [k, s] : sessions) {
            pfds.push_back({s.fd, POLLIN, 0});
            keys.push_back(&k);
        }
        int n = ::poll(pfds.data(), pfds.size(), 10000);
        if (n < 0 && errno != EINTR) {
            std::perror("lodge-proxy-udp: poll");
            return 1;
        }
        time_t t = now();
        std::vector<Key> done;
        for (size_t i = 0; n > 0 && i < pfds.size(); i++) {
            if (!(pfds[i].revents & (POLLIN | POLLERR)))
                continue;
            if (i == 0) {
                Key k;
                k.len = sizeof k.addr;
                ssize_t got = ::recvfrom(listen_fd, buf, sizeof buf, MSG_DONTWAIT,
                                         reinterpret_cast<sockaddr*>(&k.addr), &k.len);
                if (got < 0)
                    continue;
                auto it = sessions.find(k);
                if (it == sessions.end()) {
                    if (sessions.size() >= max_clients)
                        continue; // dropped, as a full queue would
                    int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                    if (fd < 0)
                        continue;
                    if (::connect(fd, reinterpret_cast<sockaddr*>(&target), target_len) < 0) {
                        ::close(fd);
                        continue;
                    }
                    it = sessions.emplace(k, Session{fd, t}).first;
                }
                it->second.last = t;
                (void)!::send(it->second.fd, buf, static_cast<size_t>(got), MSG_DONTWAIT);
            } else {
                auto& s = sessions.at(*keys[i]);
                ssize_t got = ::recv(s.fd, buf, sizeof buf, MSG_DONTWAIT);
                if (got < 0) {
                    if (errno != EAGAIN && errno != ECONNREFUSED)
                        done.push_back(*keys[i]);
                    continue;
                }
                s.last = t;
                (void)!::sendto(listen_fd, buf, static_cast<size_t>(got), MSG_DONTWAIT,
                                reinterpret_cast<const sockaddr*>(&keys[i]->addr), keys[i]->len);
            }
        }
        for (auto& [k, s] : sessions)
            if (t - s.last > idle_seconds)
                done.push_back(k);
        for (auto& k : done)
            if (auto it = sessions.find(k); it != sessions.end()) {
                ::close(it->second.fd);
                sessions.erase(it);
            }
    }
}
