// io.lodge1.Manager's methods for snapshots, restore, copy and rename (issue 15). A second
// vtable of the same interface on /io/lodge1 (sd-bus merges them), so they live apart from
// manager-dbus.cpp. Each needs io.lodge1.manage for the container named first.
#include "daemon/instance-dbus.hpp"
#include "daemon/bus-method.hpp"
#include "daemon/container-dbus.hpp"
#include "daemon/snapshot-store.hpp"

#include <cerrno>
#include <ctime>
#include <memory>

namespace lodge::daemon {
namespace {

struct InstanceApi {
    Manager* manager;
};

Manager& manager(void* ud) {
    return *static_cast<InstanceApi*>(ud)->manager;
}

Container* find_or_fail(Manager& m, const char* name, sd_bus_error* error) {
    Container* c = m.find(name);
    if (!c)
        sd_bus_error_setf(error, errors::no_such_container, "No container \"%s\"", name);
    return c;
}

// A failure of the snapshot store: a missing or existing snapshot has its own name.
int snapshot_error(sd_bus_error* error, int r, const std::string& msg) {
    return set_bus_error(error, instance_error(r, msg));
}

// A failure about the container itself (rename, update).
int container_error(sd_bus_error* error, int r, const std::string& msg) {
    if (r == -ENOENT)
        return set_bus_error(error, make_error(errors::no_such_container, ENOENT, msg));
    if (r == -EEXIST)
        return set_bus_error(error, make_error(errors::container_exists, EEXIST, msg));
    return set_bus_error(error, instance_error(r, msg));
}

// Runs `body(container)` once the caller may manage container `name` and it exists.
template <typename Body>
int on_container(sd_bus_message* m, void* ud, const char* name, sd_bus_error* e, Body&& body) {
    return if_allowed(authorize(m, manager(ud), actions::manage, name, e), [&] {
        Container* c = find_or_fail(manager(ud), name, e);
        return c ? body(*c) : -ENOENT;
    });
}

// The empty reply of a change the manager made at once, or its failure as a snapshot error.
int reply_done(sd_bus_message* m, sd_bus_error* e, int r, const std::string& msg) {
    return r < 0 ? snapshot_error(e, r, msg) : sd_bus_reply_method_return(m, nullptr);
}

int method_create_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*>(
            m, "ss", [&](const char* name, const char* snap) {
                return on_container(m, ud, name, e, [&](Container& c) {
                    std::string chosen = snap, msg;
                    HeldCall call = hold_call(m);
                    // `chosen` is final once create_snapshot() returns; the reply is sent later.
                    auto result = std::make_shared<std::string>();
                    Done done = [call, result](const Result<>& outcome) {
                        if (!outcome)
                            return reply_bus_error(call.get(), outcome.error());
                        sd_bus_reply_method_return(call.get(), "s", result->c_str());
                    };
                    if (int r = manager(ud).create_snapshot(c, chosen, done, msg); r < 0)
                        return snapshot_error(e, r, msg);
                    *result = chosen;
                    return 1;
                });
            });
    });
}

int method_list_snapshots(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*>(m, "s", [&](const char* name) {
            if (!find_or_fail(manager(ud), name, e))
                return -ENOENT;
            return reply_with(m, [&](sd_bus_message* reply) {
                return append_array(reply, "(stt)", snapshots::list(name), [&](auto& s) {
                    return sd_bus_message_append(reply, "(stt)", s.name.c_str(), s.created_usec,
                                                 s.expires_usec);
                });
            });
        });
    });
}

int append_snapshot(sd_bus_message* reply, const snapshots::Info& info,
                    const ContainerConfig& config) {
    int r = sd_bus_message_append(reply, "tt", info.created_usec, info.expires_usec);
    if (r >= 0)
        r = append_string_map(reply, config.config);
    if (r < 0)
        return r;
    return append_array(reply, "{sa{ss}}", config.devices, [reply](auto& device) {
        int r = sd_bus_message_open_container(reply, 'e', "sa{ss}");
        if (r >= 0)
            r = sd_bus_message_append(reply, "s", device.first.c_str());
        if (r >= 0)
            r = append_string_map(reply, device.second);
        return r < 0 ? r : sd_bus_message_close_container(reply);
    });
}

int method_get_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*>(
            m, "ss", [&](const char* name, const char* snap) {
                return on_container(m, ud, name, e, [&](Container&) {
                    ContainerConfig config;
                    snapshots::Info info;
                    std::string msg;
                    if (int r = snapshots::load(name, snap, config, info, msg); r < 0)
                        return snapshot_error(e, r, msg);
                    return reply_with(m, [&](sd_bus_message* reply) {
                        return append_snapshot(reply, info, config);
                    });
                });
            });
    });
}

int method_delete_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*>(
            m, "ss", [&](const char* name, const char* snap) {
                return on_container(m, ud, name, e, [&](Container& c) {
                    std::string msg;
                    return reply_done(m, e, manager(ud).delete_snapshot(c, snap, msg), msg);
                });
            });
    });
}

int method_rename_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*, const char*>(
            m, "sss", [&](const char* name, const char* snap, const char* to) {
                return on_container(m, ud, name, e, [&](Container& c) {
                    std::string msg;
                    return reply_done(m, e, manager(ud).rename_snapshot(c, snap, to, msg), msg);
                });
            });
    });
}

int method_restore_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*, int>(
            m, "ssb", [&](const char* name, const char* snap, int force) {
                return on_container(m, ud, name, e, [&](Container& c) {
                    std::string msg;
                    int r = manager(ud).restore_snapshot(c, snap, force, reply_when_done(m), msg);
                    return r < 0 ? snapshot_error(e, r, msg) : 1;
                });
            });
    });
}

int method_copy_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *source = nullptr, *snap = nullptr, *name = nullptr;
        if (int r = sd_bus_message_read(m, "sss", &source, &snap, &name); r < 0)
            return r;
        KeyMap overrides;
        if (int r = read_string_map(m, overrides); r < 0)
            return r;
        int with_snapshots = 0;
        if (int r = sd_bus_message_read(m, "b", &with_snapshots); r < 0)
            return r;
        return on_container(m, ud, source, e, [&](Container&) {
            Done reply = reply_path_when_done(m, manager(ud), name);
            Done done = [reply](const Result<>& outcome) {
                // The source went away meanwhile: no snapshot was missing.
                if (!outcome && outcome.error().code == ENOENT)
                    return reply(make_error(errors::failed, EIO, outcome.error().message));
                reply(outcome);
            };
            std::string msg;
            int r = manager(ud).copy_container(source, snap, name, overrides, with_snapshots, done,
                                               msg);
            if (r == -EINVAL && msg.find("name") != std::string::npos &&
                msg.find("snapshot") == std::string::npos)
                return sd_bus_error_set(e, errors::invalid_name, msg.c_str());
            return r < 0 ? snapshot_error(e, r, msg) : 1;
        });
    });
}

int method_rename_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*, const char*>(m, "ss", [&](const char* name, const char* to) {
            return on_container(m, ud, name, e, [&](Container& c) {
                std::string msg;
                int r = manager(ud).rename_container(c, to, msg);
                if (r == -EINVAL)
                    return sd_bus_error_set(e, errors::invalid_name, msg.c_str());
                if (r < 0)
                    return container_error(e, r, msg);
                Container* renamed = manager(ud).find(to);
                return sd_bus_reply_method_return(m, "o",
                                                  renamed ? renamed->object_path().c_str() : "/");
            });
        });
    });
}

// Reads a{sa{ss}} into `devices`.
int read_devices(sd_bus_message* m, std::map<std::string, KeyMap>& devices) {
    int r = sd_bus_message_enter_container(m, 'a', "{sa{ss}}");
    if (r < 0)
        return r;
    while ((r = sd_bus_message_enter_container(m, 'e', "sa{ss}")) > 0) {
        const char* dev = nullptr;
        if ((r = sd_bus_message_read(m, "s", &dev)) < 0 ||
            (r = read_string_map(m, devices[dev])) < 0 ||
            (r = sd_bus_message_exit_container(m)) < 0)
            return r;
    }
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

int method_update_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = nullptr;
        KeyMap config;
        std::map<std::string, KeyMap> devices;
        int r = sd_bus_message_read(m, "s", &name);
        if (r < 0 || (r = read_string_map(m, config)) < 0 || (r = read_devices(m, devices)) < 0)
            return r;
        return on_container(m, ud, name, e, [&](Container& c) {
            std::string msg;
            int r = manager(ud).update_container(c, config, devices, reply_when_done(m), msg);
            return r < 0 ? container_error(e, r, msg) : 1;
        });
    });
}

// The scheduler's tick at a time the caller chooses (tests, and admins catching up).
int method_run_snapshot_schedule(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<uint64_t>(m, "t", [&](uint64_t now) {
            return if_allowed(authorize(m, manager(ud), actions::manage, "", e), [&] {
                if (now == 0) {
                    struct timespec ts {};
                    ::clock_gettime(CLOCK_REALTIME, &ts);
                    now = static_cast<uint64_t>(ts.tv_sec) * 1000000 +
                          static_cast<uint64_t>(ts.tv_nsec) / 1000;
                }
                return sd_bus_reply_method_return(m, "u", manager(ud).snapshot_tick(now));
            });
        });
    });
}

const sd_bus_vtable instance_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("CreateSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
                            SD_BUS_RESULT("s", snapshot), method_create_snapshot,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("a(stt)", snapshots), method_list_snapshots,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "GetSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
        SD_BUS_RESULT("t", created, "t", expires, "a{ss}", config, "a{sa{ss}}", devices),
        method_get_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteSnapshot", SD_BUS_ARGS("s", name, "s", snapshot),
                            SD_BUS_NO_RESULT, method_delete_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RenameSnapshot", SD_BUS_ARGS("s", name, "s", snapshot, "s", new_name),
                            SD_BUS_NO_RESULT, method_rename_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RestoreSnapshot", SD_BUS_ARGS("s", name, "s", snapshot, "b", force),
                            SD_BUS_NO_RESULT, method_restore_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "CopyContainer",
        SD_BUS_ARGS("s", source, "s", snapshot, "s", name, "a{ss}", config, "b", snapshots),
        SD_BUS_RESULT("o", path), method_copy_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("UpdateContainer",
                            SD_BUS_ARGS("s", name, "a{ss}", config, "a{sa{ss}}", devices),
                            SD_BUS_NO_RESULT, method_update_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RunSnapshotSchedule", SD_BUS_ARGS("t", now),
                            SD_BUS_RESULT("u", started), method_run_snapshot_schedule,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RenameContainer", SD_BUS_ARGS("s", name, "s", new_name),
                            SD_BUS_RESULT("o", path), method_rename_container,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_instance_methods(sd_bus* bus, Manager& m) {
    static InstanceApi api;
    api.manager = &m;
    m.start_snapshot_scheduler();
    int r = sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager",
                                     instance_vtable, &api);
    return r < 0 ? r : register_file_methods(bus, m);
}

} // namespace lodge::daemon
