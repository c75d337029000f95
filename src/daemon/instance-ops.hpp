// Snapshots, restore, copy, rename, config edit and files (issue 15) on the bus: each
// operation once, for both of its forms, as machined has them: io.lodge1.Manager's by-name
// method (instance-dbus.cpp, files-dbus.cpp), which reads the container's name first, and
// io.lodge1.Container's method on the container's object. An op reads the rest of the call
// from `m`, authorizes the caller, and replies now or when the work is done; a failure is
// the Error its site chose (NoSuchSnapshot, SnapshotExists, Busy, ...).
#pragma once

#include "daemon/manager.hpp"

#include <systemd/sd-bus.h>

namespace lodge::daemon {

using ContainerOp = int (*)(sd_bus_message* m, Container& c, sd_bus_error* error);

// The Manager's by-name form of `op`: reads "s" name, finds the container, runs `op`.
int run_by_name(sd_bus_message* m, Manager& manager, sd_bus_error* error, ContainerOp op);

int op_create_snapshot(sd_bus_message* m, Container& c, sd_bus_error* error);  // s -> s
int op_list_snapshots(sd_bus_message* m, Container& c, sd_bus_error* error);   // -> a(stt)
int op_get_snapshot(sd_bus_message* m, Container& c, sd_bus_error* error);     // s -> tta{ss}..
int op_delete_snapshot(sd_bus_message* m, Container& c, sd_bus_error* error);  // s
int op_rename_snapshot(sd_bus_message* m, Container& c, sd_bus_error* error);  // ss
int op_restore_snapshot(sd_bus_message* m, Container& c, sd_bus_error* error); // sb
int op_copy(sd_bus_message* m, Container& c, sd_bus_error* error);             // ssa{ss}b -> o
int op_rename(sd_bus_message* m, Container& c, sd_bus_error* error);           // s -> o
int op_update(sd_bus_message* m, Container& c, sd_bus_error* error);           // a{ss}a{sa{ss}}

// files-dbus.cpp; each reads "s" path first.
int op_stat_file(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_list_directory(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_pull_file(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_push_file(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_make_directory(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_make_symlink(sd_bus_message* m, Container& c, sd_bus_error* error);
int op_delete_file(sd_bus_message* m, Container& c, sd_bus_error* error);

// The io.lodge1.Container twins (a second vtable of that interface on each container object).
int register_instance_object_methods(sd_bus* bus, Manager& m);

} // namespace lodge::daemon
