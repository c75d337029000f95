// What lodged (runtime/attach.cpp) and lodge-exec (runtime/exec-helper.cpp) say to each other.
//
// lodged starts lodge-exec from a sealed memfd with one descriptor, a SOCK_SEQPACKET socket, at
// exec_helper_socket_fd, and sends one request: a JSON object plus SCM_RIGHTS descriptors
//   {"argv": [..], "env": ["K=V", ..], "cwd": "", "pty": false,
//    "ns": <CLONE_NEW* flags of PID 1 to enter>, "cgroups": [{"path": "..", "unified": true}, ..],
//    "config": {"security.*" keys}, "stdio": [i0, i1, i2]}
// with descriptor 0 the pidfd of the container's PID 1 and stdio[i] the index of the command's
// descriptor i among the passed ones (-1: the container's /dev/null).
//
// Replies, one per datagram:
//   C<pid>          the command's process was created; its pidfd attached
//   P               the pty master attached (pty requests only)
//   E<errno>:<text> a setup failure, just before the sender exits
// Every copy of the socket is close-on-exec, so end-of-file says the command was exec'd (or
// died). lodge-exec stays the command's parent and exits with its status the shell way: the
// exit code, or 128 + the signal that killed it.
#pragma once

#include <cstddef>

namespace lodge::runtime {

constexpr int exec_helper_socket_fd = 3;
// The largest request (argv, environment and config together).
constexpr size_t exec_request_max = 200 * 1024; // below the default socket buffer
// PID 1's pidfd and three stdio descriptors.
constexpr size_t exec_request_max_fds = 4;

} // namespace lodge::runtime
