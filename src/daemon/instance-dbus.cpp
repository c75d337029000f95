// io.lodge1.Manager's methods for snapshots, restore, copy and rename (issue 15). A second
// vtable of the same interface on /io/lodge1 (sd-bus merges them), so they live apart from
// manager-dbus.cpp. Each is the by-name form of an op of instance-ops.hpp.
#include "daemon/instance-dbus.hpp"
#include "daemon/container-dbus.hpp"
#include "daemon/instance-ops.hpp"

#include <ctime>

namespace lodge::daemon {
namespace {

Manager& manager(void* ud) {
    return *static_cast<Manager*>(ud);
}

// The scheduler's tick at a time the caller chooses (tests, and admins catching up).
int method_run_snapshot_schedule(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        uint64_t now = 0;
        if (int r = sd_bus_message_read(m, "t", &now); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        if (now == 0) {
            struct timespec ts {};
            ::clock_gettime(CLOCK_REALTIME, &ts);
            now = static_cast<uint64_t>(ts.tv_sec) * 1000000 +
                  static_cast<uint64_t>(ts.tv_nsec) / 1000;
        }
        return sd_bus_reply_method_return(m, "u", manager(ud).snapshot_tick(now));
    });
}

const sd_bus_vtable instance_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("CreateSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
                            SD_BUS_RESULT("s", snapshot), by_name<op_create_snapshot>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("a(stt)", snapshots), by_name<op_list_snapshots>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "GetSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
        SD_BUS_RESULT("t", created, "t", expires, "a{ss}", config, "a{sa{ss}}", devices),
        by_name<op_get_snapshot>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
                            SD_BUS_NO_RESULT, by_name<op_delete_snapshot>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RenameSnapshot", SD_BUS_ARGS("s", name, "s", snapshot, "s", new_name),
                            SD_BUS_NO_RESULT, by_name<op_rename_snapshot>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RestoreSnapshot", SD_BUS_ARGS("s", name, "s", snapshot, "b", force),
                            SD_BUS_NO_RESULT, by_name<op_restore_snapshot>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "CopyContainer",
        SD_BUS_ARGS("s", source, "s", snapshot, "s", name, "a{ss}", config, "b", snapshots),
        SD_BUS_RESULT("o", path), by_name<op_copy>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("UpdateContainer",
                            SD_BUS_ARGS("s", name, "a{ss}", config, "a{sa{ss}}", devices),
                            SD_BUS_NO_RESULT, by_name<op_update>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RunSnapshotSchedule", SD_BUS_ARGS("t", now),
                            SD_BUS_RESULT("u", started), method_run_snapshot_schedule,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RenameContainer", SD_BUS_ARGS("s", name, "s", new_name),
                            SD_BUS_RESULT("o", path), by_name<op_rename>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_instance_methods(sd_bus* bus, Manager& m) {
    m.start_snapshot_scheduler();
    int r = sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager",
                                     instance_vtable, &m);
    return r < 0 ? r : register_file_methods(bus, m);
}

} // namespace lodge::daemon
