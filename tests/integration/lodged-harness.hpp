// lodged for tests: a private dbus-daemon with the project's bus policy, lodged started on it
// (READY=1 through our own NOTIFY_SOCKET), lodgectl, and LodgedFixture, the base of every suite
// that talks to lodged.
#pragma once

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::test {

// A private system bus: /usr/share/dbus-1/system.conf with our socket and policy dir, and our
// own (empty) activation directory instead of the standard ones, so that a lodge installed on
// the host (its io.lodge1.service) is never bus-activated in place of the lodged under test.
class PrivateBus {
public:
    // `base` tells apart buses that live side by side (one per node in test-cluster).
    explicit PrivateBus(const std::string& base = "bus") {
        dir = TestRoot::get().dir + "/" + unique_name(base);
        sh("mkdir -p " + dir + "/policy " + dir + "/services && cp " + env_path("LODGE_DBUS_DIR") +
           "/io.lodge1.conf " + dir + "/policy/");
        std::string conf = read_text("/usr/share/dbus-1/system.conf");
        auto replace = [&](const std::string& from_tag, const std::string& to) {
            auto a = conf.find("<" + from_tag + ">");
            auto b = conf.find("</" + from_tag + ">", a);
            if (a != std::string::npos && b != std::string::npos)
                conf.replace(a, b - a + from_tag.size() + 3, to);
        };
        replace("listen", "<listen>unix:path=" + dir + "/socket</listen>");
        replace("user", "");
        replace("pidfile", "");
        // The setuid helper would read the host's system.conf, standard directories included.
        replace("servicehelper", "");
        auto standard = conf.find("<standard_system_servicedirs/>");
        if (standard != std::string::npos)
            conf.replace(standard, std::string("<standard_system_servicedirs/>").size(),
                         "<servicedir>" + dir + "/services</servicedir>");
        while (conf.find("<includedir>") != std::string::npos)
            replace("includedir", "");
        conf.replace(conf.find("</busconfig>"), 0, "<includedir>" + dir + "/policy</includedir>\n");
        write_file_atomic(dir + "/bus.conf", conf);
        pid = fork();
        if (pid == 0) {
            execlp("dbus-daemon", "dbus-daemon", ("--config-file=" + dir + "/bus.conf").c_str(),
                   "--nofork", "--nopidfile", "--print-address=1", nullptr);
            _exit(127);
        }
        address = "unix:path=" + dir + "/socket";
        // dbus-daemon gives no readiness event here; wait (bounded) for the socket.
        if (!wait_until_sh("[ -S " + dir + "/socket ]"))
            ADD_FAILURE() << "the private dbus-daemon never listened at " << dir << "/socket";
        setenv("DBUS_SYSTEM_BUS_ADDRESS", address.c_str(), 1);
    }
    ~PrivateBus() {
        kill(pid, SIGTERM);
        waitpid(pid, nullptr, 0);
        sh("rm -rf " + dir);
    }
    std::string dir, address;
    pid_t pid = -1;
};

// lodged as a child, with NOTIFY_SOCKET pointing at us so READY=1 says it is up.
class Lodged {
public:
    explicit Lodged(const std::vector<std::string>& prefix = {}, const char* idle = "0") {
        std::string notify = TestRoot::get().dir + "/" + unique_name("notify");
        ::unlink(notify.c_str());
        sock.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        struct sockaddr_un addr {};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", notify.c_str());
        bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        setenv("LODGE_CGROUP_ROOT", TestRoot::get().cgroup.c_str(), 1);
        setenv("LODGE_SUPERVISOR", env_path("LODGE_SUPERVISOR").c_str(), 1);
        setenv("LODGE_EXEC_HELPER", env_path("LODGE_EXEC_HELPER").c_str(), 1);
        pid = fork();
        if (pid == 0) {
            setenv("NOTIFY_SOCKET", notify.c_str(), 1);
            setenv("LODGE_IDLE_TIMEOUT", idle, 1);
            std::vector<std::string> args = prefix;
            args.push_back(env_path("LODGE_LODGED"));
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            execvp(argv[0], argv.data());
            _exit(127);
        }
    }
    // Waits for READY=1, at most 180 s (a guard against a hang only).
    bool wait_ready() {
        for (;;) {
            struct pollfd p {
                sock.get(), POLLIN, 0
            };
            if (poll(&p, 1, 180000) <= 0)
                return false;
            char buf[4096];
            ssize_t n = recv(sock.get(), buf, sizeof buf - 1, 0);
            if (n > 0 && contains(std::string(buf, static_cast<size_t>(n)), "READY=1"))
                return true;
        }
    }
    void kill9() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
            pid = -1;
        }
    }
    ~Lodged() {
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, nullptr, 0);
        }
    }
    Fd sock;
    pid_t pid = -1;
};

inline std::string ctl(const std::string& args, int* status = nullptr) {
    return sh(env_path("LODGE_LODGECTL") + " " + args + " 2>&1", status);
}

// A lodgectl run in the background (so the test can act meanwhile: feed its source, catch it
// mid-copy), bounded by timeout(1) against a hang; wait() returns its exit status (124: it
// hung) and its output.
class Background {
public:
    explicit Background(const std::string& args, unsigned limit_s = 600) {
        out_ = TestRoot::get().dir + "/" + unique_name("bg") + "-" + std::to_string(++count_);
        std::string cmd = "exec timeout " + std::to_string(limit_s) + " " +
                          env_path("LODGE_LODGECTL") + " " + args + " >" + out_ + " 2>&1";
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
    }
    ~Background() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::unlink(out_.c_str());
    }
    int wait(std::string* output = nullptr) {
        int st = 0;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        if (output)
            *output = read_text(out_);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }

private:
    static inline int count_ = 0;
    pid_t pid_ = -1;
    std::string out_;
};

// The base of every suite that talks to lodged: root, a private bus, lodged on it, and every
// container the test named through `created` (name_container, create_container) deleted at
// the end. A suite with its own setup overrides start_lodged or extends SetUp/TearDown.
class LodgedFixture : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        bus = std::make_unique<PrivateBus>();
        start_lodged();
    }
    void TearDown() override {
        delete_created();
        daemon.reset();
        bus.reset();
    }
    // Whether SetUp got through (not skipped for want of root, no fatal failure): a suite's
    // own SetUp goes on after LodgedFixture::SetUp() only then.
    static bool set_up() { return !IsSkipped() && !HasFatalFailure(); }
    // A new lodged (the old one, if any, is stopped first), up when this returns.
    virtual void start_lodged() {
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
    }
    // Leaves no container behind, whatever the test did.
    void delete_created() {
        for (auto& n : created)
            ctl("delete --force " + n);
        created.clear();
    }
    // A unique container name, deleted at the end.
    std::string name_container(const std::string& base) {
        std::string n = unique_name(base);
        created.push_back(n);
        return n;
    }
    // A new busybox container, with `config` (KEY=VALUE words) set when given.
    std::string create_container(const std::string& base, const std::string& config = "") {
        std::string n = name_container(base);
        int st = -1;
        std::string out = ctl("create " + n, &st);
        EXPECT_EQ(st, 0) << out;
        if (!config.empty()) {
            EXPECT_EQ(ctl("config set " + n + " " + config, &st), "");
        }
        return n;
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> created;
};

} // namespace lodge::test
