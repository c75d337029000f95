// Which node runs a container whose directory may sit on storage several nodes share (NFS,
// CephFS, a DRBD-backed filesystem: lodge-cluster(7)). The supervisor holds an OFD write lock on
// <container dir>/owner.lock for the container's whole life, so the lock lives and dies with the
// process (and, on a network filesystem, with the node's lease), and names itself in
// <container dir>/owner.json for the error a second node's start gets. The record is only
// believed while the lock is held: a node that died leaves a stale one behind.
#pragma once

#include "fd.hpp"

#include <string>
#include <sys/types.h>

namespace lodge::ownership {

struct Owner {
    std::string hostname, machine_id, boot_id;
    pid_t supervisor_pid = 0;
    // "HOST (machine-id M, boot B, lodge-supervisor PID P)", or "an unknown node" without a record.
    std::string describe() const;
};

// This node, as this process sees it (hostname, /etc/machine-id, the kernel's boot id).
Owner this_node();

// Takes the lock of container `name` and records this node as its owner. The lock is held as
// long as `lock` stays open. -EBUSY with `error` naming the owner when another process holds it.
int acquire(const std::string& name, Fd& lock, std::string& error);

// Whether some process holds the lock of container `name`: 1 (with `owner` from its record, if
// one can be read), 0 when free or when the container has no lock file yet, -errno on failure.
int probe(const std::string& name, Owner& owner);

// The error a start or delete of a container held by `owner` gets.
std::string held_message(const std::string& name, const Owner& owner);

} // namespace lodge::ownership
