// Containers on disk: <state>/containers/<name>/{config.json,rootfs/}. A container appears
// under its name only once complete (made in a hidden directory, then renamed), and goes away
// in one rename too, so a crash at any moment never leaves a half-made container visible.
//
// Root-only (CONTRACT §2): `containers/`, each container's directory and the hidden work
// directories are root-owned 0700. The rootfs below keeps the image's own modes, and through
// the idmapped mount its files belong to real uid 0 on disk (a setuid file that container root
// makes is a real setuid-root file), so the parent directories are what keeps host users out.
#pragma once

#include "common/config.hpp"

#include <functional>
#include <string>
#include <vector>

namespace lodge::daemon {

// Populates a new rootfs; may add image.* keys taken from the image's metadata.
using FillRootfs =
    std::function<int(const std::string& rootfs_dir, KeyMap& image_keys, std::string& error)>;

class Registry {
public:
    std::vector<std::string> list() const;
    int load(const std::string& name, ContainerConfig& out, std::string& error) const;
    int save(const ContainerConfig& c) const;
    // EEXIST when the name is taken; `fill` populates the new rootfs, and its image keys join
    // `c` before config.json is written.
    int create(ContainerConfig& c, const FillRootfs& fill, std::string& error) const;
    // The rename into a hidden trash directory is the delete: once it succeeded the container
    // is gone (0), even if removing its files then fails (logged; collect_garbage() retries).
    // A container directory that is already gone counts as deleted too.
    int remove(const std::string& name) const;
    // At lodged start: makes `containers/` and every directory in it root-only (trees made by
    // older versions were 0711), then removes what a crash left behind.
    void prepare() const;
    // Removes what a crash left behind: unfinished creates and deletes.
    void collect_garbage() const;
};

} // namespace lodge::daemon
