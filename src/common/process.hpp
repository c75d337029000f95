// Process state a new program should start from.
#pragma once

namespace lodge {

// Every signal back to its default action and none blocked: what a container's PID 1 and an
// exec'd command must see, whatever the supervisor or lodged had set.
void reset_signal_state();

// lodged holds a descriptor per running container, plus several per exec and per guest API
// connection, while systemd starts services with a soft RLIMIT_NOFILE of 1024: raise the soft
// limit to the hard one (as systemd advises daemons that need many descriptors to do).
// Returns the new soft limit, or a negative errno.
long raise_fd_limit();
// In a forked child, before exec: back to the soft limit the process started with, for
// programs that still use select(). Does nothing unless raise_fd_limit() raised it.
void restore_fd_limit();

} // namespace lodge
