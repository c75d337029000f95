// lodgectl verbs for snapshots, restore, copy, rename (snapshot.cpp) and files (file.cpp),
// issue 15.
#pragma once

#include <map>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace lodge::ctl {

// What these verbs take of lodgectl's parsed command line.
struct InstanceOptions {
    std::vector<std::string> args;             // the verb and its arguments
    std::map<std::string, std::string> values; // --long=value options and flags ("1")
    std::vector<std::string> config;           // -c KEY=VALUE
    bool json = false, legend = true, quiet = false, force = false;
};

int verb_snapshot(const InstanceOptions& o, sd_bus* bus);
int verb_restore(const InstanceOptions& o, sd_bus* bus);
int verb_copy(const InstanceOptions& o, sd_bus* bus);
int verb_rename(const InstanceOptions& o, sd_bus* bus);
// file.cpp
int verb_file(const InstanceOptions& o, sd_bus* bus);
// config-yaml.cpp: config edit NAME, config show NAME --expanded.
int verb_config_yaml(const InstanceOptions& o, sd_bus* bus);

} // namespace lodge::ctl
