// Whether lxcfs serves a directory: read by lodged (to follow lxcfs live) and the supervisor.
#pragma once

#include <string>

namespace lodge {

// True when the visible mount on `dir` is a fuse.lxcfs that still answers.
bool is_lxcfs_mount(const std::string& dir);

} // namespace lodge
