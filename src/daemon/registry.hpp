// Containers on disk: <state>/containers/<name>/{config.json,rootfs/}. A container appears
// under its name only once complete (made in a hidden directory, then renamed), and goes away
// in one rename too, so a crash at any moment never leaves a half-made container visible.
//
// Root-only (CONTRACT §2): `containers/`, each container's directory and the hidden work
// directories are root-owned 0700. The rootfs below keeps the image's own modes, and through
// the idmapped mount its files belong to real uid 0 on disk (a setuid file that container root
// makes is a real setuid-root file), so the parent directories are what keeps host users out.
//
// Filling a new rootfs and removing a deleted one are long: lodged does them in workers
// (operation.hpp) between prepare() and commit(), and after retire().
#pragma once

#include "common/config.hpp"

#include <string>
#include <vector>

namespace lodge::daemon {

class Registry {
public:
    std::vector<std::string> list() const;
    int load(const std::string& name, ContainerConfig& out, std::string& error) const;
    int save(const ContainerConfig& c) const;
    // A hidden work directory for a new container `name`, holding an empty rootfs/ to fill.
    // EEXIST when the name is taken.
    int prepare(const std::string& name, std::string& work_dir, std::string& error) const;
    // The image.* keys of `image_keys` join `c`, config.json goes into `work_dir`, and the work
    // directory becomes the container in one rename (EEXIST when the name was taken meanwhile).
    // On failure `work_dir` is left for the caller to remove.
    int commit(ContainerConfig& c, const std::string& work_dir, const KeyMap& image_keys,
               std::string& error) const;
    // The rename into a hidden trash directory is the delete: once it succeeded the container
    // is gone, and `trash` names what is left to remove (remove_retired, in a worker; a crash
    // leaves it to leftovers()). A container directory that is already gone counts as
    // deleted too (`trash` empty).
    int retire(const std::string& name, std::string& trash) const;
    // Removes a retired or unfinished tree, immutable and append-only files included.
    static int remove_retired(const std::string& trash);
    // At lodged start: makes `containers/` and every directory in it root-only (trees made by
    // older versions were 0711).
    void secure() const;
    // What a crash left behind: unfinished creates and deletes (hidden, never listed), for
    // lodged to remove off its loop.
    std::vector<std::string> leftovers() const;
};

} // namespace lodge::daemon
