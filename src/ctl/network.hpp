// `lodgectl network ...` (lodge-network(7)): create, list, show, info, get, set, unset, delete,
// list-leases, over the network methods of io.lodge1.Manager.
#pragma once

#include <map>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace lodge::ctl {

struct NetworkArgs {
    std::vector<std::string> args; // "network", the subcommand, its arguments
    bool json = false;
    bool legend = true;
    bool quiet = false;
};

int verb_network(const NetworkArgs& a, sd_bus* bus);

constexpr const char* network_usage =
    "network create NAME [KEY=VALUE]... | list | show NAME | info NAME | get NAME KEY | "
    "set NAME KEY=VALUE... | unset NAME KEY... | delete NAME... | list-leases NAME [--json]";

} // namespace lodge::ctl
