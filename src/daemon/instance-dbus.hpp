// io.lodge1.Manager methods for snapshots, restore, copy and rename (issue 15).
#pragma once

#include "daemon/manager.hpp"

namespace lodge::daemon {

// Adds them to /io/lodge1. Returns 0 or -errno.
int register_instance_methods(sd_bus* bus, Manager& m);
// files-dbus.cpp: file push, pull, delete and friends.
int register_file_methods(sd_bus* bus, Manager& m);

} // namespace lodge::daemon
