// Test harness for real containers: private state/runtime/log dirs, a private cgroup subtree,
// busybox root filesystems, and helpers that drive lodge-supervisor through its control socket.
#pragma once

#include "common/config.hpp"
#include "runtime/attach.hpp"
#include "runtime/control-proto.hpp"

#include <functional>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

namespace lodge::test {

// Starts `c`; skips the test when the host cannot give an unprivileged container its rootfs.
#define LODGE_START_OR_SKIP(c)                                                                     \
    do {                                                                                           \
        std::string start_error_;                                                                  \
        if (!(c).start(&start_error_)) {                                                           \
            if (::lodge::test::contains(start_error_, "idmapped"))                                 \
                GTEST_SKIP() << start_error_;                                                      \
            FAIL() << start_error_;                                                                \
        }                                                                                          \
    } while (0)

// Skips the calling test unless it runs as root with the kernel features containers need.
#define LODGE_REQUIRE_ROOT()                                                                       \
    do {                                                                                           \
        if (::geteuid() != 0)                                                                      \
            GTEST_SKIP() << "needs root";                                                          \
    } while (0)

std::string env_path(const char* var);
// "<base>-<pid>": container and directory names that parallel runs cannot share.
std::string unique_name(const std::string& base);
bool contains(const std::string& hay, const std::string& needle);
// Runs a shell command on the host; returns its stdout, sets *status to the exit status.
std::string sh(const std::string& cmd, int* status = nullptr);
std::string read_text(const std::string& path);
bool exists(const std::string& path);
// Polls `done` until it holds or `seconds` pass; for states that offer no event to wait on.
// The bound only guards against a hang: a loaded machine (CI, parallel builds) must never hit
// it, so it is counted in wall-clock time, never in tries.
bool wait_until(const std::function<bool()>& done, int seconds = 180);
// The same with a shell command that succeeds once the state is reached.
bool wait_until_sh(const std::string& cmd, int seconds = 180);

// Process-wide test root: /tmp/lodge-test-<pid>, LODGE_* variables pointing into it, and
// the cgroup base lodge-test-<pid> in every hierarchy. Removed when the process exits.
struct TestRoot {
    static TestRoot& get();
    std::string dir;
    std::string cgroup;
    ~TestRoot();
};

class Container {
public:
    explicit Container(std::string name, bool privileged = false);
    ~Container();
    Container(const Container&) = delete;
    Container& operator=(const Container&) = delete;

    // Builds the busybox rootfs; with `test_init` PID 1 is the project's signal-logging init.
    void make_busybox(bool test_init = false);
    void set(const std::string& key, const std::string& value) { config.config[key] = value; }
    void write_config();

    // Starts the supervisor; returns true once PID 1 runs, else false with `error` set.
    bool start(std::string* error = nullptr);
    // Starts the container with the test init running `cmd` once as PID 1's child (so it runs in
    // the container's cgroup, under its seccomp filter and capabilities) and returns its output.
    std::string start_and_run(const std::string& cmd);
    // The supervisor's JSON reply (or state.json once it is gone); `req` as sent on the wire,
    // so tests may also send what no typed request can say.
    nlohmann::json request(const std::string& req);
    nlohmann::json request(const runtime::proto::Request& req) {
        return request(runtime::proto::encode(req));
    }
    nlohmann::json status() {
        return request(runtime::proto::Request::of(runtime::proto::Verb::status));
    }
    nlohmann::json stop(unsigned timeout = 10) {
        return request(runtime::proto::Request::stop(timeout));
    }
    nlohmann::json wait() {
        return request(runtime::proto::Request::of(runtime::proto::Verb::wait));
    }
    pid_t pid();
    // Runs `cmd` with /bin/sh inside every namespace of the container (nsenter -a).
    std::string exec(const std::string& cmd, int* status = nullptr);
    std::string console_log();
    // The state file the supervisor leaves behind.
    nlohmann::json final_state();

    std::string name;
    std::string dir;    // state dir of this container
    std::string rootfs; // its rootfs on the host
    ContainerConfig config;
};

// exec_in_container through the sealed copy of lodge-exec ($LODGE_EXEC_HELPER) that every exec in
// the tests starts from, as lodged's; the handshake is bounded so a hang fails the test.
int exec_in_container(const runtime::ExecRequest& req, runtime::ExecHandle& out,
                      std::string& error);

} // namespace lodge::test
