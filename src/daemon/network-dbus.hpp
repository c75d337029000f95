// The network methods of io.lodge1.Manager (lodge-network(7)), in a vtable of their own on
// /io/lodge1.
#pragma once

#include "daemon/network-manager.hpp"

namespace lodge::daemon {

int register_network_methods(sd_bus* bus, NetworkManager& networks);

} // namespace lodge::daemon
