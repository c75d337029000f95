// The supervisor's control socket from the client side: connecting, one request and its reply,
// and launching a supervisor. What travels on the socket (verbs, replies, the status) is
// defined in control-proto.hpp.
#pragma once

#include "common/fd.hpp"

#include <functional>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime {

// Connects without ever blocking: a supervisor whose backlog is full gives -EAGAIN at once. The
// socket is left non-blocking with `nonblocking`, else it is made blocking once connected.
int control_connect(const std::string& name, Fd& out, bool nonblocking = false);
// Sends one request and waits for its reply, at most `timeout_ms` if positive. Returns 0 or
// -errno (ENOENT/ECONNREFUSED: no supervisor runs for that container; EAGAIN: timed out).
int control_request(const std::string& name, const std::string& request, std::string& reply,
                    int timeout_ms = -1);

struct LaunchResult {
    pid_t init_pid = 0;
    pid_t supervisor_pid = 0; // known only with a LaunchHold
    std::string status;       // the supervisor's status at READY (JSON), if it said it
    std::string error;
};

// Holds the new supervisor before it does anything (no cgroup, no runtime dir yet), so that the
// caller can place it, e.g. into a systemd scope. The supervisor gets --wait-go-fd=N and blocks
// reading one byte from N; `before_go` runs meanwhile. 0 lets it go; -errno (with `error` set)
// closes N unwritten, and the supervisor exits without having touched anything.
struct LaunchHold {
    // Also pass --bus-controller: the supervisor connects to the system bus before it blocks
    // and reports its unique name, which `before_go` gets (for a scope's Controller=).
    bool bus_controller = false;
    std::function<int(pid_t supervisor_pid, const std::string& bus_name, std::string& error)>
        before_go;
};

// Starts `supervisor` (the lodge-supervisor binary) for `name`, detached from the caller
// (own session; it forks itself away, --detach), and waits until PID 1 has been exec'd or the
// start failed.
int launch_supervisor(const std::string& supervisor, const std::string& name,
                      const std::vector<std::string>& extra_args, LaunchResult& out,
                      const LaunchHold* hold = nullptr);

// A lodge-supervisor exec'd ahead of need (`--standby`): loaded, detached (its own session, its
// first process gone) and idle until a launch hands it a start's arguments and pipes; from then
// on it is the supervisor an exec for that start would have made. The start saves the exec and
// the dynamic loading of ~20 libraries, about a fifth of it. Dropping the object ends the
// standby untouched (it reads EOF).
class SupervisorStandby {
public:
    // 0 or -errno. The caller reaps intermediate(), which exits once it has forked the standby.
    int spawn(const std::string& supervisor);
    const std::string& binary() const { return binary_; }
    pid_t intermediate() const { return intermediate_; }
    // The arguments after argv[0] and what the supervisor would have had as fds 3 and 4 (-1:
    // none). 0, or -errno: the standby is gone (EPIPE), the binary on disk is no longer the one
    // it runs (ESTALE: an upgrade; the exec takes the new one), the arguments do not fit in
    // one message (EMSGSIZE). It is used up either way.
    int hand_over(const std::vector<std::string>& args, int notify_fd, int go_fd);

private:
    std::string binary_;
    struct stat binary_stat_ {};
    Fd job_;
    pid_t intermediate_ = 0;
};

// The same launch driven from the caller's event loop instead of waiting in it: spawn(), then
// read() whenever notify_fd() is readable. With a hold, read() says `held` once the supervisor
// waits to be let go; release() lets it go or calls the start off. `finished` comes once the
// supervisor said READY or ERROR (or went away); result() then tells which.
class SupervisorLaunch {
public:
    enum class Step { more, held, finished };
    // With `reap` false the caller reaps the supervisor's short-lived first process, which only
    // forks the supervisor proper (intermediate()).
    // With a `standby` (of the same binary) the start goes to it instead of a new process;
    // intermediate() is then 0. A standby that is gone falls back to a new process.
    int spawn(const std::string& supervisor, const std::string& name,
              const std::vector<std::string>& extra_args, bool hold, bool bus_controller,
              bool reap = true, SupervisorStandby* standby = nullptr);
    pid_t intermediate() const { return intermediate_; }
    int notify_fd() const { return notify_.get(); }
    // Reads what is there without blocking.
    Step read();
    // 0, or -errno when the go byte could not be written (the start is then called off).
    int release(bool go);
    pid_t supervisor_pid() const;
    std::string bus_name() const;
    // 0 with out.init_pid, or -EIO with out.error.
    int result(LaunchResult& out) const;

private:
    bool held() const;
    std::string name_;
    Fd notify_, go_;
    std::string text_;
    pid_t intermediate_ = 0;
    bool hold_ = false, bus_controller_ = false, released_ = false, eof_ = false;
};

} // namespace lodge::runtime
