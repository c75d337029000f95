// Path resolution inside a container's root (openat2 RESOLVE_IN_ROOT) and the on-disk shift
// marker: what the supervisor's setup and lodged's file transfers share. No mounts, no
// privileged setup: lodged links this (lodge-client), never src/runtime/setup/.
#pragma once

#include "common/fd.hpp"

#include <cstdint>
#include <string>

namespace lodge::runtime {

// openat2() with RESOLVE_IN_ROOT: absolute symlinks and ".." stay inside `root`.
// `follow_symlinks` false adds RESOLVE_NO_SYMLINKS so no component may be a symlink at all.
Fd open_in_root(int root, const std::string& path, int flags, bool follow_symlinks = true);

// Creates missing directories of `path` under `root`, resolving inside it; returns an O_PATH fd
// to the last one or -errno.
int mkdir_in_root(int root, const std::string& path, Fd& out);

// The marker beside a rootfs shifted on disk (setup/idmap-shift.cpp), holding its base.
constexpr const char* shift_marker = "rootfs.idmap-shift";

// The base the rootfs at `container_dir`/rootfs is shifted to on disk (0: not shifted).
uint32_t shifted_base(const std::string& container_dir);

} // namespace lodge::runtime
