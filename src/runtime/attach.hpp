// Running a command inside a running container (`lodgectl exec`, CONTRACT §8): the command joins
// the container's payload cgroup and every namespace of its PID 1, runs as the container's root
// with PID 1's capability bounding set and seccomp filters, and gets only the stdio it is given.
//
// The work is done by lodge-exec (runtime/exec-helper.cpp, protocol in exec-protocol.hpp),
// started from a sealed in-memory copy of its binary: the caller never forks its own image and
// never resolves a guest path. exec_spawn() starts the helper and returns at once; the caller
// watches ExecHandle::handshake (poll or sd-event) and feeds exec_setup_read() until it says the
// command was exec'd, with a deadline of its own after which it calls exec_abort(). The helper
// is the caller's child and the command's parent: it reaps the command the moment it ends and
// exits with its status, so the caller reaps the helper (exec_wait, or an sd-event child source
// and exec_status) and a dying container never waits for the caller.
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"

#include <csignal>
#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime {

struct ExecRequest {
    pid_t init_pid = 0;                      // the container's PID 1, host pid
    const ContainerConfig* config = nullptr; // privileged?, seccomp keys, environment.*
    // The payload cgroup relative to each hierarchy's root, e.g. "lodge-test-1/c1/payload"
    // (the supervisor's status "cgroup" plus "/payload").
    std::string payload_cgroup;
    std::vector<std::string> argv; // non-empty; argv[0] is looked up in the container's PATH
    // KEY=VALUE on top of the default environment (which they override): environment.* keys,
    // then PATH, HOME=/root, USER=root, LANG=C.UTF-8, container=lxc, and TERM=xterm with a pty.
    std::vector<std::string> env;
    std::string cwd; // empty: /root, or / when /root is missing
    // The command's stdio when there is no pty; -1 means the container's /dev/null. The caller
    // owns these (pipes, sockets or ttys: see check_exec_stdio); only they enter the container.
    int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
    // A pty from the container's own devpts instance becomes the command's stdio and controlling
    // terminal; its master is handed back in ExecHandle::pty_master. The stdio fds are ignored.
    bool pty = false;
};

struct ExecHandle {
    PidFd helper;  // lodge-exec, the caller's child; its exit status is the command's
    PidFd process; // the command itself (for signals), once the helper created it
    Fd pty_master; // only with ExecRequest::pty
    bool pty = false;
    // Non-blocking; readable while the setup runs, end-of-file once the command was exec'd.
    Fd handshake;
    int setup_error = 0; // first failure reported by the helper or the command (-errno)
    std::string setup_message;
};

// A sealed (no write, grow, shrink or further seals), executable in-memory copy of the helper
// binary at `path`, close-on-exec. Made once, before any container can see the helper.
int copy_exec_helper(const std::string& path, Fd& out, std::string& error);

// Descriptors a command may get as stdio: pipes, sockets, ttys and the null device. Anything
// else (a directory, a host file, a block device) would hand the guest a way out of its root.
// Returns 0 or -EINVAL with `error` naming the descriptor by `what`.
int check_exec_stdio(int fd, const char* what, std::string& error);

// Starts the helper from `helper_exe` (copy_exec_helper) and hands it the request. Never waits
// for the container. Returns 0, or -errno with `error` set (the request is refused or nothing
// was started).
int exec_spawn(const ExecRequest& req, int helper_exe, ExecHandle& out, std::string& error);

// Reads what the helper sent so far. Returns 0 while the setup runs, 1 once the command was
// exec'd (out.process valid, and out.pty_master with a pty), or -errno with `error` set when
// the setup failed (the helper and command are then killed; the helper is still to be reaped).
int exec_setup_read(ExecHandle& h, std::string& error);

// Kills the helper and, when it was created, the command. The helper must still be reaped.
void exec_abort(ExecHandle& h);

// exec_spawn plus the handshake, blocking for at most `timeout_ms` (-1: no limit): for callers
// that can afford to wait (tests). On a timeout returns -ETIMEDOUT, the helper killed and reaped.
int exec_in_container(const ExecRequest& req, int helper_exe, ExecHandle& out, std::string& error,
                      int timeout_ms = -1);

// The command's exit status the shell way (the exit code, or 128 + the signal that killed it),
// from the helper's waitid() result.
int exec_status(const siginfo_t& helper);

// Waits for the helper and reaps it. Returns the command's status as exec_status, or -errno.
int exec_wait(const ExecHandle& h);

} // namespace lodge::runtime
