// Fuzz target for the guest API's front end: the bytes a guest can send. The first byte picks
// the way in:
//   even: the whole server (libmicrohttpd's parser, the routing, the handlers, event feeds)
//         through a real unix socket, served by DevlxdServer on sd-event for a fixed guest;
//   odd:  the websocket frame decoder, fed in pieces.
// Built with clang and -Dfuzzing=true it is a libFuzzer binary; otherwise a driver that
// replays every file in the directories it is given (the corpus runs as a regression test).
#include "devlxd/devlxd-server.hpp"
#include "devlxd/peer.hpp"
#include "devlxd/websocket.hpp"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

using namespace lodge;
using namespace lodge::daemon;

namespace {

class FixedGuest : public GuestDirectory {
public:
    FixedGuest() {
        config.name = "fuzz";
        config.config = {{"user.a", "1"},
                         {"cloud-init.user-data", "#cloud-config\n"},
                         {"volatile.eth0.hwaddr", "00:16:3e:00:00:01"}};
        config.devices["eth0"] = {{"type", "nic"}, {"nictype", "p2p"}};
    }
    std::optional<Guest> find(const PeerIdentity& peer) override {
        return Guest{"fuzz", peer.uid, &config, ready};
    }
    std::optional<Guest> current(const std::string&, uint64_t) override {
        return Guest{"fuzz", ::getuid(), &config, ready}; // the fuzzer is the guest's root
    }
    int set_ready(const std::string&, bool r, std::string&) override {
        ready = r;
        return 0;
    }
    ContainerConfig config;
    bool ready = false;
};

struct Server {
    Server() {
        // An abstract socket: nothing on disk to clean up, whoever ends the process.
        std::string name = "lodge-fuzz-" + std::to_string(::getpid());
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path + 1, name.data(), name.size());
        addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
        listener = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) < 0 ||
            ::listen(listener.get(), 64) < 0)
            std::abort();
        sd_event* e = nullptr;
        sd_event_new(&e);
        event.reset(e);
        DevlxdLimits limits;
        limits.header_timeout_sec = 1;
        limits.idle_timeout_sec = 1;
        server = std::make_unique<DevlxdServer>(event.get(), guest, limits);
        if (server->start(listener.get()) < 0)
            std::abort();
    }
    // Sends `input`, half-closes, and runs the loop until the server has answered and hung up.
    void exchange(const uint8_t* data, size_t size) {
        Fd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (::connect(c.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len) < 0)
            return;
        size_t sent = 0;
        bool closed = false;
        char buf[65536];
        for (int round = 0; round < 300 && !closed; round++) {
            if (sent < size) {
                ssize_t n = ::send(c.get(), data + sent, size - sent, MSG_NOSIGNAL);
                if (n > 0)
                    sent += static_cast<size_t>(n);
                if (sent == size)
                    ::shutdown(c.get(), SHUT_WR);
            }
            sd_event_run(event.get(), 1000); // 1 ms: the server's own timers end stuck talks
            for (;;) {
                ssize_t n = ::recv(c.get(), buf, sizeof buf, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    closed = true;
                    break;
                }
                if (n < 0)
                    break;
            }
            if (size == 0 && round == 0)
                ::shutdown(c.get(), SHUT_WR);
        }
        c.reset();
        // Let the server see the close and free the connection before the next input.
        for (int i = 0; i < 20 && server->connection_count(); i++)
            sd_event_run(event.get(), 1000);
    }

    struct sockaddr_un addr {};
    socklen_t addr_len = 0;
    Fd listener;
    EventPtr event;
    FixedGuest guest;
    std::unique_ptr<DevlxdServer> server;
};

void decode_frames(const uint8_t* data, size_t size) {
    ws::Decoder d(4096);
    std::vector<ws::Frame> frames;
    size_t pos = 0, step = 1;
    while (pos < size) {
        size_t n = std::min(step, size - pos);
        if (!d.feed(std::string_view(reinterpret_cast<const char*>(data) + pos, n), frames))
            break;
        pos += n;
        step = step * 3 + 1;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Server* server = new Server; // lives for the process: its socket is reused
    if (size == 0)
        return 0;
    if (data[0] & 1)
        decode_frames(data + 1, size - 1);
    else
        server->exchange(data + 1, size - 1);
    return 0;
}

#ifndef LODGE_LIBFUZZER
// Replays the files of every directory (or file) named on the command line.
int main(int argc, char** argv) {
    size_t runs = 0;
    for (int i = 1; i < argc; i++) {
        std::vector<std::string> files;
        if (DIR* d = ::opendir(argv[i])) {
            while (dirent* e = ::readdir(d))
                if (e->d_name[0] != '.')
                    files.push_back(std::string(argv[i]) + "/" + e->d_name);
            ::closedir(d);
        } else {
            files.push_back(argv[i]);
        }
        for (auto& f : files) {
            std::ifstream in(f, std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            std::string bytes = ss.str();
            LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
            runs++;
        }
    }
    std::printf("%zu inputs replayed\n", runs);
    return runs ? 0 : 1;
}
#endif
