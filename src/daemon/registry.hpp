// Containers on disk: <state>/containers/<name>/{config.json,rootfs/}. A container appears
// under its name only once complete (made in a hidden directory, then renamed), and goes away
// in one rename too, so a crash at any moment never leaves a half-made container visible.
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
    int remove(const std::string& name) const;
    // Removes what a crash left behind: unfinished creates and deletes.
    void collect_garbage() const;
};

} // namespace lodge::daemon
