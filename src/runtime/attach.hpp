// Running a command inside a running container (`lodgectl exec`, CONTRACT §8): the command joins
// the container's payload cgroup and every namespace of its PID 1, runs as the container's root
// with PID 1's capability bounding set and seccomp filters, and gets only the stdio it is given.
//
// Process tree. The caller forks a helper H, which joins the payload cgroup, marks itself
// non-dumpable, enters the namespaces through a pidfd of PID 1 and then creates the command C
// with clone3(CLONE_PARENT | CLONE_PIDFD): a pid namespace only applies to the children of the
// process that entered it, and CLONE_PARENT makes C the caller's child instead of H's. H hands
// C's pidfd up over a socketpair and exits, so no process lingers between the caller and the
// command: signals sent through the pidfd reach the command itself, and the caller reaps it with
// waitid(P_PIDFD), seeing the exact exit status. C reports setup failures over the same socket,
// which is close-on-exec: end-of-file tells the caller that the command was exec'd.
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"

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
    // owns these (pipes or ptys, never host files it cares about); only they enter the container.
    int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
    // A pty from the container's own devpts instance becomes the command's stdio and controlling
    // terminal; its master is handed back in ExecHandle::pty_master. The stdio fds are ignored.
    bool pty = false;
};

struct ExecHandle {
    PidFd process; // the command itself, a child of the calling process
    Fd pty_master; // only with ExecRequest::pty
};

// Starts the command and returns once it has been exec'd (a command that cannot be found or run
// still counts: it exits 127 or 126 with a message on its stderr). Returns 0, or -errno with
// `error` naming the reason. Blocks for the few milliseconds the setup takes.
//
// The command is the caller's child: the caller must not ignore SIGCHLD, and must reap it with
// exec_wait() (also after killing it). Until it is reaped the container's pid namespace cannot
// finish dying, so a stopping container would wait for it.
int exec_in_container(const ExecRequest& req, ExecHandle& out, std::string& error);

// Waits for the command and reaps it. Returns its exit status the shell way (the exit code, or
// 128 + the signal that killed it), or -errno.
int exec_wait(const ExecHandle& h);

} // namespace lodge::runtime
