// Snapshots on disk: <state>/containers/<name>/snapshots/<snap>/ holds config.json (the
// container's config at that moment), snapshot.json (when it was taken), rootfs/ and, when the
// rootfs was shifted on disk, rootfs.idmap-shift. All of it is inside the root-only container
// directory. As with containers (registry.hpp), a snapshot is made in a hidden directory and
// appears in one rename, and goes away in one rename; lodged removes what a crash left.
//
// A restore copies the snapshot into <name>/.restore-XXXXXX/ with the config to apply and the
// inode of the new rootfs (restore.json), then swaps it with <name>/rootfs in one
// renameat2(RENAME_EXCHANGE): that swap is the restore. The config follows it; a crash between
// the two is finished at lodged's next start, which sees the recorded inode in place.
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lodge::daemon::snapshots {

// Empty when `snap` may name a snapshot, else the rule it breaks.
std::string check_name(const std::string& snap);

std::string dir(const std::string& container);                           // <c>/snapshots
std::string path(const std::string& container, const std::string& snap); // <c>/snapshots/<snap>

struct Info {
    std::string name;
    uint64_t created_usec = 0; // CLOCK_REALTIME
    uint64_t expires_usec = 0; // 0: never (snapshots.expiry when it was taken)
};
// Sorted by creation time.
std::vector<Info> list(const std::string& container);
bool exists(const std::string& container, const std::string& snap);
// What fails on lodged's loop fails here with its bus name (InvalidName, NoSuchSnapshot,
// SnapshotExists, Failed). The copies that run in workers return 0 or -errno with `error`:
// whatever goes wrong in one is a failed copy.
Result<> load(const std::string& container, const std::string& snap, ContainerConfig& config,
              Info& info);

// A hidden work directory for the new snapshot `snap` of `container`.
Result<std::string> prepare(const std::string& container, const std::string& snap);
// In a worker: fills a snapshot-shaped directory `work` (rootfs/, config.json, snapshot.json,
// the shift marker) from the container directory `container_dir` and `config`, and syncs it.
// `progress` as copy_tree's.
int fill(const std::string& container_dir, const ContainerConfig& config, const std::string& work,
         uint64_t created_usec, uint64_t expires_usec,
         const std::function<void(uint64_t)>& progress, std::string& error);
// Copies the finished snapshot directory `from` (as fill() made it) to `to` (not existing).
int copy_snapshot_dir(const std::string& from, const std::string& to,
                      const std::function<void(uint64_t)>& progress, std::string& error);
// Copies `from_dir`/rootfs.idmap-shift to `to_dir` (or removes it there when absent).
int copy_marker(const std::string& from_dir, const std::string& to_dir);
// The work directory becomes the snapshot (SnapshotExists when the name was taken meanwhile).
Result<> commit(const std::string& container, const std::string& snap, const std::string& work);
// Renames the snapshot away; gives what is left to remove (Registry::remove_retired).
Result<std::string> retire(const std::string& container, const std::string& snap);
Result<> rename(const std::string& container, const std::string& from, const std::string& to);

// Restores. prepare_restore: a hidden work directory in the container's directory.
Result<std::string> prepare_restore(const std::string& container);
// In a worker: the snapshot's rootfs and marker copied into `work`, `config` recorded as what
// to apply, with the new rootfs's inode; all synced.
int fill_restore(const std::string& container, const std::string& snap,
                 const ContainerConfig& config, const std::string& work,
                 const std::function<void(uint64_t)>& progress, std::string& error);
// On the loop: swaps the rootfs in (the restore), then applies config and marker. `applied`
// gets the config now on disk. After success `work` holds the old rootfs, for the caller to
// remove. `swapped` says whether the swap happened (a failure after it is finished at the
// next start).
Result<> commit_restore(const std::string& container, const std::string& work,
                        ContainerConfig& applied, bool& swapped);

// At lodged's start, before containers are loaded: finishes restores whose swap happened and
// returns every leftover (unfinished snapshots, deletes, restores) for lodged to remove.
std::vector<std::string> recover(const std::vector<std::string>& containers);

} // namespace lodge::daemon::snapshots
