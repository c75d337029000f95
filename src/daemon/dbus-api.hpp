// The io.lodge1 bus objects: /io/lodge1 (io.lodge1.Manager) and one object per container under
// /io/lodge1/container/ (io.lodge1.Container), as machined's Manager and Machine objects.
#pragma once

#include "daemon/manager.hpp"

namespace lodge::daemon {

// Registers both vtables, the node enumerator and an object manager. Returns 0 or -errno.
int register_bus_objects(sd_bus* bus, Manager& m);

} // namespace lodge::daemon
