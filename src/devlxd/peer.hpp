// Who is on the other end of a unix socket, in terms nobody in a container can forge: the
// credentials the kernel recorded at connect() and the chain of pid namespaces the peer lives
// in (its own first, then each parent up to, not including, lodged's).
#pragma once

#include "common/fd.hpp"

#include <sys/types.h>
#include <utility>
#include <vector>

namespace lodge::daemon {

struct NamespaceId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const NamespaceId&) const = default;
    auto operator<=>(const NamespaceId&) const = default;
};

struct PeerIdentity {
    pid_t pid = 0;
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    std::vector<NamespaceId> pidns_chain;
};

// Reads the peer of a connected unix socket. The pid namespace is taken from the pidfd the
// kernel hands out for the peer (SO_PEERPIDFD), so a recycled pid cannot point elsewhere;
// on kernels without it, from /proc/<pid>/ns/pid, checked against the peer still existing.
int identify_peer(int fd, PeerIdentity& out);

// The pid namespace of a process, for matching against a peer's chain.
int pidns_of(pid_t pid, NamespaceId& out);

// The pid namespace of the process behind `pidfd`, opened (so that it stays alive, and its
// inode number with it, for as long as `out` is held) and identified.
int open_pidns(const PidFd& pidfd, Fd& out, NamespaceId& id);

} // namespace lodge::daemon
