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

// Runs one verb on an open bus; returns the process's exit status.
using VerbHandler = int (*)(const Options&, sd_bus*);

// show.cpp
int verb_list(const Options& o, sd_bus* bus);
int verb_status(const Options& o, sd_bus* bus);
int verb_show(const Options& o, sd_bus* bus);

// create.cpp: creation and the by-name lifecycle verbs
int verb_create(const Options& o, sd_bus* bus);
int verb_delete(const Options& o, sd_bus* bus);
int verb_start(const Options& o, sd_bus* bus);
int verb_stop(const Options& o, sd_bus* bus);
int verb_restart(const Options& o, sd_bus* bus);
int verb_reboot(const Options& o, sd_bus* bus);
int verb_kill(const Options& o, sd_bus* bus);

// config.cpp
int verb_config(const Options& o, sd_bus* bus);
int verb_device(const Options& o, sd_bus* bus);

// exec.cpp
int verb_exec(const Options& o, sd_bus* bus);
int verb_shell(const Options& o, sd_bus* bus);
int verb_console(const Options& o, sd_bus* bus);

// units.cpp
int verb_enable(const Options& o, sd_bus* bus);
int verb_disable(const Options& o, sd_bus* bus);

} // namespace lodge::ctl
