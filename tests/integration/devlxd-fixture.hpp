// What the guest API tests share (test-devlxd.cpp, test-devlxd-isolation.cpp): devlxd-client
// run in a container and its replies parsed, a subscriber read line by line, and the DevlxdTest
// fixture.
#pragma once

#include "harness.hpp"
#include "lodged-harness.hpp"
#include <fstream>
#include <grp.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

namespace lodge::devlxd_test {

using namespace lodge::test;

struct Reply {
    int status = 0;
    std::string type;
    std::string body;
    bool operator==(const Reply&) const = default;
};

// So that a failed EXPECT_EQ on two replies shows both.
inline void PrintTo(const Reply& r, std::ostream* os) {
    *os << r.status << " " << r.type << " " << ::testing::PrintToString(r.body);
}

// devlxd-client prints "STATUS n", "CONTENT-TYPE t", an empty line, then the body.
inline Reply parse_reply(const std::string& out) {
    Reply r;
    auto blank = out.find("\n\n");
    if (out.rfind("STATUS ", 0) != 0 || blank == std::string::npos)
        return r;
    r.status = std::atoi(out.c_str() + 7);
    auto ct = out.find("CONTENT-TYPE ");
    if (ct != std::string::npos && ct < blank)
        r.type = out.substr(ct + 13, out.find('\n', ct) - ct - 13);
    r.body = out.substr(blank + 2);
    return r;
}

// A command whose output is read line by line while it runs (an event subscriber).
class LineStream {
public:
    explicit LineStream(const std::string& cmd) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return;
        pid = fork();
        if (pid == 0) {
            dup2(fds[1], 1);
            dup2(fds[1], 2);
            execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
        close(fds[1]);
        out.reset(fds[0]);
    }
    // The next line, or "" once `timeout_ms` passes or the command ends without one.
    std::string line(int timeout_ms = 180000) {
        for (;;) {
            auto nl = buffer.find('\n');
            if (nl != std::string::npos) {
                std::string l = buffer.substr(0, nl);
                buffer.erase(0, nl + 1);
                return l;
            }
            struct pollfd p {
                out.get(), POLLIN, 0
            };
            if (poll(&p, 1, timeout_ms) <= 0)
                return "";
            char buf[4096];
            ssize_t n = read(out.get(), buf, sizeof buf);
            if (n <= 0)
                return "";
            buffer.append(buf, static_cast<size_t>(n));
        }
    }
    int wait() {
        int status = -1;
        if (pid > 0 && waitpid(pid, &status, 0) == pid)
            pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    ~LineStream() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    pid_t pid = -1;
    Fd out;
    std::string buffer;
};

// Runs argv (no shell) and returns its stdout.
inline std::string run(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return "pipe failed";
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
        _exit(127);
    }
    close(fds[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(n));
    close(fds[0]);
    waitpid(pid, nullptr, 0);
    return out;
}

inline long rss_kib(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0)
            return std::atol(line.c_str() + 6);
    return -1;
}

class DevlxdTest : public LodgedFixture {
protected:
    void SetUp() override {
        LodgedFixture::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        socket_path = TestRoot::get().dir + "/run/devlxd/sock";
    }
    // A busybox container with devlxd-client at /devlxd-client, started.
    std::string make(const std::string& base, const std::string& config = "") {
        std::string n = create_container(base, config);
        int st = -1;
        sh("cp " + env_path("LODGE_DEVLXD_CLIENT") + " " + rootfs(n) + "/devlxd-client");
        std::string out = ctl("start " + n, &st);
        if (st != 0 && contains(out, "idmapped"))
            skip_reason = out; // the caller skips: the host cannot give it its rootfs
        else
            EXPECT_EQ(st, 0) << out;
        return n;
    }
    std::string rootfs(const std::string& n) {
        return TestRoot::get().dir + "/state/containers/" + n + "/rootfs";
    }
    Reply get(const std::string& n, const std::string& path, const std::string& opts = "") {
        return parse_reply(ctl("exec " + n + " -- /devlxd-client " + opts + " GET '" + path + "'"));
    }
    std::string client(const std::string& n, const std::string& args, int* st = nullptr) {
        return ctl("exec " + n + " -- /devlxd-client " + args, st);
    }
    // Raw bytes from a host file sent from inside the container.
    std::string raw(const std::string& n, const std::string& bytes) {
        std::string f = TestRoot::get().dir + "/" + unique_name("raw");
        write_file_atomic(f, bytes);
        std::string out = sh(env_path("LODGE_LODGECTL") + " exec " + n +
                             " -- /devlxd-client -r < " + f + " 2>&1");
        unlink(f.c_str());
        return out;
    }

    // volatile.cloud-init.instance-id as lodgectl shows it.
    std::string instance_id(const std::string& n) {
        std::string id = ctl("config get " + n + " volatile.cloud-init.instance-id");
        if (!id.empty() && id.back() == '\n')
            id.pop_back();
        return id;
    }

    std::string socket_path, skip_reason;
};

#define SKIP_IF_NO_CONTAINER()                                                                     \
    do {                                                                                           \
        if (!skip_reason.empty())                                                                  \
            GTEST_SKIP() << skip_reason;                                                           \
    } while (0)

inline const std::string api_body_started = R"({"state":"Started","api_version":"1.0",)"
                                            R"("instance_type":"container","location":")";
} // namespace lodge::devlxd_test
