// `exec` for bus callers: the command runs in the container as lodged's child; its pidfd (and,
// with a pty, the pty master) go back to the caller over the control socket the caller passed,
// and the method call is answered with the exit status once the command has ended.
#pragma once

#include "manager.hpp"

#include <systemd/sd-bus.h>

namespace lodge::daemon {

// Reads as argv, as env, s cwd, b pty, h stdin, h stdout, h stderr, h control from `m` and
// starts the command. Replies later; returns 1 then, or <0 with `error` set.
int op_exec(sd_bus_message* m, Container& c, sd_event* event, sd_bus_error* error);

size_t execs_in_flight();

} // namespace lodge::daemon
