// One message, optionally carrying one file descriptor (SCM_RIGHTS), over a unix socket.
#pragma once

#include "common/fd.hpp"

#include <string>
#include <sys/types.h>

namespace lodge {

// Returns 0 or -errno. `fd` < 0 sends the text alone.
int send_with_fd(int sock, const std::string& text, int fd = -1);

// Returns the message length (0 at end-of-file) or -errno; a passed fd lands in `fd`
// (close-on-exec).
ssize_t recv_with_fd(int sock, std::string& text, Fd& fd);

} // namespace lodge
