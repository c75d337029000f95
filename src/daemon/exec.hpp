// `exec` for bus callers: lodge-exec (runtime/attach.hpp) runs the command in the container;
// lodged only watches its handshake from the event loop, with a deadline, so a guest path that
// never answers (a FUSE trap on /root or in PATH) costs the caller an error, never lodged its
// loop. The command's pidfd (and, with a pty, the pty master) go back to the caller over the
// control socket it passed, and the method call is answered with the exit status once the
// command has ended.
#pragma once

#include "daemon/manager.hpp"

#include <systemd/sd-bus.h>

namespace lodge::daemon {

// Seconds the setup in the container (cgroup, namespaces, working directory, pty, PATH search)
// may take before the helper is killed and the call fails; LODGE_EXEC_SETUP_TIMEOUT overrides.
constexpr unsigned exec_setup_timeout_default = 30;

// Makes the sealed in-memory copy of lodge-exec ($LODGE_EXEC_HELPER, else libexec's) that every
// exec starts from. Called once at startup; without it exec fails with the reason.
int prepare_exec_helper();

// Reads as argv, as env, s cwd, b pty, h stdin, h stdout, h stderr, h control from `m` and
// starts the command. Replies later; returns 1 then, or <0 with `error` set.
int op_exec(sd_bus_message* m, Container& c, sd_event* event, sd_bus_error* error);

size_t execs_in_flight();

} // namespace lodge::daemon
