// lodgectl's command line as the verb handlers see it, and the handlers themselves: one file
// per group of verbs (show.cpp, create.cpp, ...), one line each in lodgectl.cpp's verb table.
#pragma once

#include <map>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace lodge::ctl {

struct Options {
    bool json = false;
    bool legend = true;
    bool quiet = false;
    std::string host;
    std::vector<std::string> args;             // verb and its arguments, options removed
    std::map<std::string, std::string> values; // --timeout, --signal, ...
    std::vector<std::string> config;           // -c KEY=VALUE
    bool force = false;
    bool show_log = false;
    bool help = false;
    int pty = -1;                     // -t: 1, -T: 0, else decided by whether stdin is a terminal
    std::vector<std::string> env;     // --env K=V
    std::vector<std::string> command; // after --
};

// Runs one verb on an open bus; returns the process's exit status. Handlers are declared
// with it, a group of verbs to a line, and defined as int verb_x(const Options&, sd_bus*).
using VerbFn = int(const Options& o, sd_bus* bus);
using VerbHandler = VerbFn*;

// show.cpp (status and show are told apart by the verb, o.args[0])
VerbFn verb_list, verb_status_or_show;
// create.cpp: create, and the lifecycle verbs that call one method per NAME
VerbFn verb_create, verb_delete, verb_start, verb_stop, verb_restart, verb_reboot, verb_kill;
// create.cpp: --network NET for a container just made (create, launch); 0 or the exit status
// after undoing the create.
int join_network(const Options& o, sd_bus* bus, const std::string& name);
// config.cpp
VerbFn verb_config, verb_device;
// exec.cpp
VerbFn verb_exec, verb_shell, verb_console;
// units.cpp (enable and disable are told apart by the verb)
VerbFn verb_enable_or_disable;
// snapshot.cpp, file.cpp, config-yaml.cpp (config edit NAME, config show NAME --expanded)
VerbFn verb_snapshot, verb_restore, verb_copy, verb_rename, verb_file, verb_config_yaml;
// image.cpp (lodge-images(7))
VerbFn verb_image, verb_publish, verb_remote, verb_launch;
// backup.cpp (container backups in LXD's layout)
VerbFn verb_export, verb_import;
// server.cpp (lodged's server keys; image copy --auto-update)
VerbFn verb_server, verb_image_or_auto_update;

} // namespace lodge::ctl
