// Files in and out of a container (lodgectl file push|pull|delete|edit, issue 15), through
// its rootfs on the host, stopped or running alike. Every path is resolved inside the
// container's root (openat2 RESOLVE_IN_ROOT): absolute symlinks and ".." in the guest's tree
// stay inside it. Ownership is the container's view: a file pushed as uid 1000 is uid 1000
// inside, whether the rootfs is idmapped or shifted on disk. Data moves between the caller's
// fd and the file in lodged's worker (push) or straight from an fd lodged hands out (pull);
// the caller's fds never reach the container's processes.
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lodge::daemon::files {

struct Stat {
    std::string type;          // "file", "directory", "symlink", "other"
    uint32_t mode = 0;         // permission bits (07777)
    uint32_t uid = 0, gid = 0; // as the container sees them
    uint64_t size = 0;
    std::string target; // of a symlink
};

// How ids on disk relate to ids in the container `c`.
struct IdMap {
    uint32_t shift = 0; // on-disk id = container id + shift
    uint32_t size = 0;  // container ids 0..size-1 exist (0: all, a privileged container)
    static IdMap of(const ContainerConfig& c);
    // -ERANGE for an id the container does not have.
    int to_disk(uint32_t id, uint32_t& out) const;
    uint32_t from_disk(uint32_t id) const;
};

// Each returns 0 or -errno with `error` set, naming the path as the container sees it.
int stat(const std::string& container, const IdMap& ids, const std::string& path, Stat& out,
         std::string& error);
// A directory's entries (not "." and ".."), sorted by name.
int list(const std::string& container, const IdMap& ids, const std::string& path,
         std::vector<std::pair<std::string, Stat>>& out, std::string& error);
// A regular file opened for reading, with its Stat.
int open_for_reading(const std::string& container, const IdMap& ids, const std::string& path,
                     Fd& out, Stat& st, std::string& error);
// Unlinks a file or symlink, or removes an empty directory.
int remove(const std::string& container, const std::string& path, std::string& error);
int make_directory(const std::string& container, const IdMap& ids, const std::string& path,
                   uint32_t uid, uint32_t gid, uint32_t mode, bool parents, std::string& error);
int make_symlink(const std::string& container, const IdMap& ids, const std::string& path,
                 const std::string& target, uint32_t uid, uint32_t gid, bool parents,
                 std::string& error);
// In a worker: the data read from `source` (to its end) becomes the file at `path`, owned by
// uid:gid with `mode`; it replaces what was there in one rename. `progress` gets the bytes
// written so far.
int write_file(const std::string& container, const IdMap& ids, const std::string& path, int source,
               uint32_t uid, uint32_t gid, uint32_t mode, bool parents,
               const std::function<void(uint64_t)>& progress, std::string& error);

} // namespace lodge::daemon::files
