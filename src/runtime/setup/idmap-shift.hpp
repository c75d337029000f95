// The fallback for filesystems without idmapped mounts: the rootfs is shifted on disk once, so
// that its ids are the container's host ids. A marker beside the rootfs records the shift.
#pragma once

#include "common/error.hpp"
#include "runtime/in-root.hpp"

#include <cstdint>
#include <string>

namespace lodge::runtime {

// Moves every id in the tree from [from, from+size) to [to, to+size), keeping setuid/setgid
// bits and rewriting file capabilities for the new root; then records `to` in the marker.
// Ids outside the range are left alone; symlinks are never followed and other filesystems
// mounted inside are not entered. Overlapping ranges are refused (ERANGE): only with disjoint
// ones can a shift that was cut short be run again without shifting a file twice.
// A failure is logged and returned as an Error.
Result<> shift_rootfs(const std::string& container_dir, uint32_t from, uint32_t to, uint32_t size);

} // namespace lodge::runtime
