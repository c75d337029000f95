// Thin helpers over the fd-based mount API. Every target is an fd that was resolved inside the
// container's root, so no path in an image can make a mount land outside it.
#pragma once

#include "common/fd.hpp"
#include "runtime/in-root.hpp"

#include <string>

namespace lodge::runtime {

// A fresh filesystem instance, detached. `options` are key=value pairs separated by ','.
Fd make_fs(const char* fstype, const std::string& options, unsigned attr_flags);

// A detached copy of the mount at `path` (relative to dirfd, or the fd itself when path is "").
Fd clone_tree(int dirfd, const std::string& path, bool recursive);

// Sets mount attributes (MOUNT_ATTR_*) on a detached or attached tree.
int set_mount_attr(int tree, unsigned attr_set, unsigned attr_clr = 0, int userns_fd = -1,
                   bool recursive = false);

// Attaches a detached tree on the object `target` refers to.
int attach_tree(int tree, int target);

// Resolves `path` inside `root` and mounts `tree` on it, creating the target first as a
// directory or an empty file (LXC's create=dir / create=file). Every created component is
// made with mode 0755 (directories) or 0000 (the placeholder file).
enum class Create { none, dir, file };
int mount_in_root(int root, const std::string& path, int tree, Create create);

} // namespace lodge::runtime
