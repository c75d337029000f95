// lodgectl -H for the verbs the bus cannot carry: the ssh bridge to a remote system bus
// (sd_bus_open_system_remote, as machinectl -H) passes no file descriptors, so exec, shell,
// console and create from a source run as lodgectl on HOST itself, over ssh.
#pragma once

#include <string>
#include <vector>

namespace lodge::ctl {

// Whether `verb` with these arguments (verb first) hands lodged file descriptors.
bool needs_fds(const std::vector<std::string>& args);

// Runs `lodgectl ARGS...` on `host` through ssh (a terminal when `tty`) and returns its exit
// status; `argv` is this lodgectl's own command line, from which -H/--host HOST is dropped.
int run_remote_lodgectl(const std::string& host, bool tty, int argc, char** argv);

} // namespace lodge::ctl
