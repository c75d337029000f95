// io.lodge1.Manager's methods for snapshots, restore, copy and rename (issue 15). A second
// vtable of the same interface on /io/lodge1 (sd-bus merges them), so they live apart from
// manager-dbus.cpp. Each needs io.lodge1.manage for the container named first.
#include "daemon/instance-dbus.hpp"
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

int method_create_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *snap = nullptr;
        if (int r = sd_bus_message_read(m, "ss", &name, &snap); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string chosen = snap, msg;
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        // `chosen` is final once create_snapshot() returns; the reply is sent later.
        auto result = std::make_shared<std::string>();
        Done done = [call, result](const Result<>& outcome) {
            if (outcome) {
                sd_bus_reply_method_return(call.get(), "s", result->c_str());
                return;
            }
            reply_bus_error(call.get(), outcome.error());
        };
        if (int r = manager(ud).create_snapshot(*c, chosen, done, msg); r < 0)
            return snapshot_error(e, r, msg);
        *result = chosen;
        return 1;
    });
}

int method_list_snapshots(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = nullptr;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        if (!find_or_fail(manager(ud), name, e))
            return -ENOENT;
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(m, &raw);
        if (r < 0)
            return r;
        MessagePtr reply(raw);
        r = sd_bus_message_open_container(raw, 'a', "(stt)");
        for (auto& s : snapshots::list(name))
            if (r >= 0)
                r = sd_bus_message_append(raw, "(stt)", s.name.c_str(), s.created_usec,
                                          s.expires_usec);
        if (r >= 0)
            r = sd_bus_message_close_container(raw);
        return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
    });
}

int method_get_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *snap = nullptr;
        if (int r = sd_bus_message_read(m, "ss", &name, &snap); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        if (!find_or_fail(manager(ud), name, e))
            return -ENOENT;
        ContainerConfig config;
        snapshots::Info info;
        std::string msg;
        if (int r = snapshots::load(name, snap, config, info, msg); r < 0)
            return snapshot_error(e, r, msg);
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(m, &raw);
        if (r < 0)
            return r;
        MessagePtr reply(raw);
        r = sd_bus_message_append(raw, "tt", info.created_usec, info.expires_usec);
        if (r >= 0)
            r = append_string_map(raw, config.config);
        if (r >= 0)
            r = sd_bus_message_open_container(raw, 'a', "{sa{ss}}");
        for (auto& [dev, keys] : config.devices) {
            if (r >= 0)
                r = sd_bus_message_open_container(raw, 'e', "sa{ss}");
            if (r >= 0)
                r = sd_bus_message_append(raw, "s", dev.c_str());
            if (r >= 0)
                r = append_string_map(raw, keys);
            if (r >= 0)
                r = sd_bus_message_close_container(raw);
        }
        if (r >= 0)
            r = sd_bus_message_close_container(raw);
        return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
    });
}

int method_delete_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *snap = nullptr;
        if (int r = sd_bus_message_read(m, "ss", &name, &snap); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string msg;
        if (int r = manager(ud).delete_snapshot(*c, snap, msg); r < 0)
            return snapshot_error(e, r, msg);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_rename_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *snap = nullptr, *to = nullptr;
        if (int r = sd_bus_message_read(m, "sss", &name, &snap, &to); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string msg;
        if (int r = manager(ud).rename_snapshot(*c, snap, to, msg); r < 0)
            return snapshot_error(e, r, msg);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_restore_snapshot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *snap = nullptr;
        int force = 0;
        if (int r = sd_bus_message_read(m, "ssb", &name, &snap, &force); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string msg;
        if (int r = manager(ud).restore_snapshot(*c, snap, force, reply_when_done(m), msg); r < 0)
            return snapshot_error(e, r, msg);
        return 1;
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
        if (int r = authorize(m, manager(ud), actions::manage, source, e); r <= 0)
            return r == 0 ? 1 : r;
        if (!find_or_fail(manager(ud), source, e))
            return -ENOENT;
        Manager* mgr = &manager(ud);
        std::string created = name, msg;
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        Done done = [call, mgr, created](const Result<>& outcome) {
            if (!outcome) {
                // The source went away meanwhile: no snapshot was missing.
                Error e = outcome.error();
                if (e.code == ENOENT)
                    e = make_error(errors::failed, EIO, e.message);
                reply_bus_error(call.get(), e);
                return;
            }
            Container* c = mgr->find(created);
            sd_bus_reply_method_return(call.get(), "o", c ? c->object_path().c_str() : "/");
        };
        if (int r = mgr->copy_container(source, snap, name, overrides, with_snapshots, done, msg);
            r < 0) {
            if (r == -EINVAL && msg.find("name") != std::string::npos &&
                msg.find("snapshot") == std::string::npos)
                return sd_bus_error_set(e, errors::invalid_name, msg.c_str());
            return snapshot_error(e, r, msg);
        }
        return 1;
    });
}

int method_rename_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char *name = nullptr, *to = nullptr;
        if (int r = sd_bus_message_read(m, "ss", &name, &to); r < 0)
            return r;
        if (int r = authorize(m, manager(ud), actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string msg;
        if (int r = manager(ud).rename_container(*c, to, msg); r < 0) {
            if (r == -EINVAL)
                return sd_bus_error_set(e, errors::invalid_name, msg.c_str());
            return container_error(e, r, msg);
        }
        Container* renamed = manager(ud).find(to);
        return sd_bus_reply_method_return(m, "o", renamed ? renamed->object_path().c_str() : "/");
    });
}

int method_update_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = nullptr;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        KeyMap config;
        std::map<std::string, KeyMap> devices;
        if (int r = read_string_map(m, config); r < 0)
            return r;
        if (int r = sd_bus_message_enter_container(m, 'a', "{sa{ss}}"); r < 0)
            return r;
        int r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sa{ss}")) > 0) {
            const char* dev = nullptr;
            if ((r = sd_bus_message_read(m, "s", &dev)) < 0 ||
                (r = read_string_map(m, devices[dev])) < 0 ||
                (r = sd_bus_message_exit_container(m)) < 0)
                return r;
        }
        if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
            return r;
        if ((r = authorize(m, manager(ud), actions::manage, name, e)) <= 0)
            return r == 0 ? 1 : r;
        Container* c = find_or_fail(manager(ud), name, e);
        if (!c)
            return -ENOENT;
        std::string msg;
        if ((r = manager(ud).update_container(*c, config, devices, reply_when_done(m), msg)) < 0)
            return container_error(e, r, msg);
        return 1;
    });
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
