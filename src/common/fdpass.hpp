// One message, optionally carrying one file descriptor (SCM_RIGHTS), over a unix socket.
#pragma once

#include "common/fd.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge {

// Returns 0 or -errno. `fd` < 0 sends the text alone.
int send_with_fd(int sock, const std::string& text, int fd = -1);

// Returns the message length (0 at end-of-file) or -errno; a passed fd lands in `fd`
// (close-on-exec).
ssize_t recv_with_fd(int sock, std::string& text, Fd& fd);

// The same with up to max_fds_per_message descriptors in one message, so that they arrive
// together or not at all. A message is received whole, up to max_message_size bytes; a longer
// one is an error (-EMSGSIZE), never a truncated text.
constexpr size_t max_fds_per_message = 4;
constexpr size_t max_message_size = 4096;
int send_with_fds(int sock, const std::string& text, const std::vector<int>& fds);
ssize_t recv_with_fds(int sock, std::string& text, std::vector<Fd>& fds);

} // namespace lodge
