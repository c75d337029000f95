// Operations shared by io.lodge1.Container methods and the Manager's by-name twins.
#pragma once

#include "daemon/manager.hpp"

#include <systemd/sd-bus.h>

namespace lodge::daemon {

// 1: the caller may do `action` on `container`; 0: polkit was asked and the call will be
// dispatched again (the handler returns 1 without replying); <0: refused, `error` set.
int authorize(sd_bus_message* m, Manager& manager, const char* action, const std::string& container,
              sd_bus_error* error);
// The reply of a call that `Done` answers later: empty (Restart: an empty reason), or the
// operation's Error.
Done reply_when_done(sd_bus_message* m, bool with_reason = false);
// The reply of a create, copy or rename that `Done` answers later: container `name`'s object
// path, or the operation's Error.
Done reply_path_when_done(sd_bus_message* m, Manager& manager, const std::string& name);
int append_string_map(sd_bus_message* reply, const KeyMap& map);
// a{sa{ss}}: devices and their keys.
int append_devices(sd_bus_message* reply, const std::map<std::string, KeyMap>& devices);

int op_start(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_stop(sd_bus_message* m, Container& c, int32_t timeout, int force, sd_bus_error* error);
int op_restart(sd_bus_message* m, Container& c, int32_t timeout, sd_bus_error* error);
int op_reboot(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_kill(sd_bus_message* m, Container& c, int32_t sig, sd_bus_error* error);
int op_delete(sd_bus_message* m, Container& c, int force, sd_bus_error* error);
// The whole config, secrets included (io.lodge1.manage).
int op_get_config(sd_bus_message* m, Container& c, sd_bus_error* error);
// Reads a{ss} set, as unset from `m`.
int op_set_config(sd_bus_message* m, Container& c, sd_bus_error* error);

// Reads s device, a{ss} keys.
int op_add_device(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_remove_device(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_open_console(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_open_console_log(sd_bus_message* m, Container& c, sd_bus_error* error);

int register_container_objects(sd_bus* bus, Manager& m);

} // namespace lodge::daemon
