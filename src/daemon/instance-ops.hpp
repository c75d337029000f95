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

using ContainerOpFunction = int(sd_bus_message* m, Container& c, sd_bus_error* error);
using ContainerOp = ContainerOpFunction*;

// The Manager's by-name form of `op`: reads "s" name, finds the container, runs `op`.
int run_by_name(sd_bus_message* m, Manager& manager, sd_bus_error* error, ContainerOp op);

// `op` as an io.lodge1.Manager method (userdata: the Manager).
template <ContainerOp op> int by_name(sd_bus_message* m, void* manager, sd_bus_error* error) {
    return guarded([&] { return run_by_name(m, *static_cast<Manager*>(manager), error, op); });
}
// `op` as an io.lodge1.Container method (userdata: the Container).
template <ContainerOp op> int on_object(sd_bus_message* m, void* container, sd_bus_error* error) {
    return guarded([&] { return op(m, *static_cast<Container*>(container), error); });
}

// Snapshots: CreateSnapshot (s -> s), ListSnapshots (-> a(stt)), GetSnapshot (s -> tt a{ss}
// a{sa{ss}}), DeleteSnapshot (s), RenameSnapshot (ss), RestoreSnapshot (sb).
ContainerOpFunction op_create_snapshot, op_list_snapshots, op_get_snapshot, op_delete_snapshot,
    op_rename_snapshot, op_restore_snapshot;
// Copy (ssa{ss}b -> o), Rename (s -> o), Update (a{ss}a{sa{ss}}).
ContainerOpFunction op_copy, op_rename, op_update;
// files-dbus.cpp; each reads "s" path first.
ContainerOpFunction op_stat_file, op_list_directory, op_pull_file, op_push_file, op_make_directory,
    op_make_symlink, op_delete_file;

// A reply to `m` to append to; nullptr when none could be made.
inline MessagePtr method_return(sd_bus_message* m) {
    sd_bus_message* raw = nullptr;
    return sd_bus_message_new_method_return(m, &raw) < 0 ? nullptr : MessagePtr(raw);
}

// io.lodge1.Container's twins of the by-name methods, entries of container-dbus.cpp's vtable
// (a second vtable of one interface would break sd-bus's PropertiesChanged on it).
#define LODGE_INSTANCE_OBJECT_METHODS                                                              \
    SD_BUS_METHOD_WITH_ARGS("CreateSnapshot", SD_BUS_ARGS("s", snapshot),                          \
                            SD_BUS_RESULT("s", snapshot), on_object<op_create_snapshot>,           \
                            SD_BUS_VTABLE_UNPRIVILEGED),                                           \
        SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_NO_ARGS,                                   \
                                SD_BUS_RESULT("a(stt)", snapshots), on_object<op_list_snapshots>,  \
                                SD_BUS_VTABLE_UNPRIVILEGED),                                       \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "GetSnapshot", SD_BUS_ARGS("s", snapshot),                                             \
            SD_BUS_RESULT("t", created, "t", expires, "a{ss}", config, "a{sa{ss}}", devices),      \
            on_object<op_get_snapshot>, SD_BUS_VTABLE_UNPRIVILEGED),                               \
        SD_BUS_METHOD_WITH_ARGS("DeleteSnapshot", SD_BUS_ARGS("s", snapshot), SD_BUS_NO_RESULT,    \
                                on_object<op_delete_snapshot>, SD_BUS_VTABLE_UNPRIVILEGED),        \
        SD_BUS_METHOD_WITH_ARGS("RenameSnapshot", SD_BUS_ARGS("s", snapshot, "s", new_name),       \
                                SD_BUS_NO_RESULT, on_object<op_rename_snapshot>,                   \
                                SD_BUS_VTABLE_UNPRIVILEGED),                                       \
        SD_BUS_METHOD_WITH_ARGS("RestoreSnapshot", SD_BUS_ARGS("s", snapshot, "b", force),         \
                                SD_BUS_NO_RESULT, on_object<op_restore_snapshot>,                  \
                                SD_BUS_VTABLE_UNPRIVILEGED),                                       \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "Copy", SD_BUS_ARGS("s", snapshot, "s", name, "a{ss}", config, "b", snapshots),        \
            SD_BUS_RESULT("o", path), on_object<op_copy>, SD_BUS_VTABLE_UNPRIVILEGED),             \
        SD_BUS_METHOD_WITH_ARGS("Rename", SD_BUS_ARGS("s", new_name), SD_BUS_RESULT("o", path),    \
                                on_object<op_rename>, SD_BUS_VTABLE_UNPRIVILEGED),                 \
        SD_BUS_METHOD_WITH_ARGS("Update", SD_BUS_ARGS("a{ss}", config, "a{sa{ss}}", devices),      \
                                SD_BUS_NO_RESULT, on_object<op_update>,                            \
                                SD_BUS_VTABLE_UNPRIVILEGED),                                       \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "StatFile", SD_BUS_ARGS("s", path),                                                    \
            SD_BUS_RESULT("s", type, "u", mode, "u", uid, "u", gid, "t", size, "s", target),       \
            on_object<op_stat_file>, SD_BUS_VTABLE_UNPRIVILEGED),                                  \
        SD_BUS_METHOD_WITH_ARGS("ListDirectory", SD_BUS_ARGS("s", path),                           \
                                SD_BUS_RESULT("a(ssuuuts)", entries),                              \
                                on_object<op_list_directory>, SD_BUS_VTABLE_UNPRIVILEGED),         \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "PullFile", SD_BUS_ARGS("s", path),                                                    \
            SD_BUS_RESULT("h", data, "u", mode, "u", uid, "u", gid, "t", size),                    \
            on_object<op_pull_file>, SD_BUS_VTABLE_UNPRIVILEGED),                                  \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "PushFile",                                                                            \
            SD_BUS_ARGS("s", path, "h", data, "u", uid, "u", gid, "u", mode, "b", parents),        \
            SD_BUS_NO_RESULT, on_object<op_push_file>, SD_BUS_VTABLE_UNPRIVILEGED),                \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "MakeDirectory", SD_BUS_ARGS("s", path, "u", uid, "u", gid, "u", mode, "b", parents),  \
            SD_BUS_NO_RESULT, on_object<op_make_directory>, SD_BUS_VTABLE_UNPRIVILEGED),           \
        SD_BUS_METHOD_WITH_ARGS(                                                                   \
            "MakeSymlink", SD_BUS_ARGS("s", path, "s", target, "u", uid, "u", gid, "b", parents),  \
            SD_BUS_NO_RESULT, on_object<op_make_symlink>, SD_BUS_VTABLE_UNPRIVILEGED),             \
        SD_BUS_METHOD_WITH_ARGS("DeleteFile", SD_BUS_ARGS("s", path), SD_BUS_NO_RESULT,            \
                                on_object<op_delete_file>, SD_BUS_VTABLE_UNPRIVILEGED)

} // namespace lodge::daemon
