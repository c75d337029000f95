// Snapshots, restore, copy, rename and config edit on the bus (instance-ops.hpp); the work
// is the Manager's (manager-snapshot.cpp, manager-restore.cpp, manager-copy.cpp).
#include "daemon/instance-ops.hpp"
#include "daemon/container-dbus.hpp"
#include "daemon/snapshot-store.hpp"

#include <cerrno>
#include <memory>

namespace lodge::daemon {

int run_by_name(sd_bus_message* m, Manager& manager, sd_bus_error* error, ContainerOp op) {
    const char* name = nullptr;
    if (int r = sd_bus_message_read(m, "s", &name); r < 0)
        return r;
    if (Container* c = manager.find(name))
        return op(m, *c, error);
    // A call parked for polkit whose container went away meanwhile.
    manager.polkit().forget(m);
    return set_bus_error(error, make_error(errors::no_such_container, ENOENT,
                                           "No container \"" + std::string(name) + "\""));
}

// io.lodge1.manage on `c`: 1 go on, else what the handler returns.
static int may_manage(sd_bus_message* m, Container& c, sd_bus_error* error) {
    int r = authorize(m, *c.manager, actions::manage, c.name(), error);
    return r == 0 ? 0 : r;
}
#define MANAGE_OR_RETURN(m, c, e)                                                                  \
    if (int allowed = may_manage(m, c, e); allowed <= 0)                                           \
        return allowed == 0 ? 1 : allowed;

int op_create_snapshot(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char* snap = nullptr;
    if (int r = sd_bus_message_read(m, "s", &snap); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    // The name is known once create_snapshot() returns; the reply waits for the copy.
    auto chosen = std::make_shared<std::string>();
    Done done = [call, chosen](const Result<>& outcome) {
        if (!outcome)
            return reply_bus_error(call.get(), outcome.error());
        sd_bus_reply_method_return(call.get(), "s", chosen->c_str());
    };
    auto taken = c.manager->create_snapshot(c, snap, done);
    if (!taken)
        return set_bus_error(e, taken.error());
    *chosen = *taken;
    return 1;
}

int op_list_snapshots(sd_bus_message* m, Container& c, sd_bus_error*) {
    MessagePtr reply = method_return(m);
    sd_bus_message* raw = reply.get();
    int r = raw ? 0 : -ENOMEM;
    if (r >= 0)
        r = sd_bus_message_open_container(raw, 'a', "(stt)");
    for (auto& s : snapshots::list(c.name()))
        if (r >= 0)
            r = sd_bus_message_append(raw, "(stt)", s.name.c_str(), s.created_usec, s.expires_usec);
    if (r >= 0)
        r = sd_bus_message_close_container(raw);
    return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
}

int op_get_snapshot(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char* snap = nullptr;
    if (int r = sd_bus_message_read(m, "s", &snap); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    ContainerConfig config;
    snapshots::Info info;
    if (auto found = snapshots::load(c.name(), snap, config, info); !found)
        return set_bus_error(e, found.error());
    MessagePtr reply = method_return(m);
    sd_bus_message* raw = reply.get();
    int r = raw ? 0 : -ENOMEM;
    if (r >= 0)
        r = sd_bus_message_append(raw, "tt", info.created_usec, info.expires_usec);
    if (r >= 0)
        r = append_string_map(raw, config.config);
    if (r >= 0)
        r = append_devices(raw, config.devices);
    return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
}

// Replies now: empty, or `result`'s Error.
static int reply_now(sd_bus_message* m, const Result<>& result, sd_bus_error* e) {
    return result ? sd_bus_reply_method_return(m, nullptr) : set_bus_error(e, result.error());
}

int op_delete_snapshot(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char* snap = nullptr;
    if (int r = sd_bus_message_read(m, "s", &snap); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    return reply_now(m, c.manager->delete_snapshot(c, snap), e);
}

int op_rename_snapshot(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char *snap = nullptr, *to = nullptr;
    if (int r = sd_bus_message_read(m, "ss", &snap, &to); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    return reply_now(m, c.manager->rename_snapshot(c, snap, to), e);
}

int op_restore_snapshot(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char* snap = nullptr;
    int force = 0;
    if (int r = sd_bus_message_read(m, "sb", &snap, &force); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    if (auto started = c.manager->restore_snapshot(c, snap, force, reply_when_done(m)); !started)
        return set_bus_error(e, started.error());
    return 1;
}

int op_copy(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char *snap = nullptr, *name = nullptr;
    if (int r = sd_bus_message_read(m, "ss", &snap, &name); r < 0)
        return r;
    KeyMap overrides;
    if (int r = read_string_map(m, overrides); r < 0)
        return r;
    int with_snapshots = 0;
    if (int r = sd_bus_message_read(m, "b", &with_snapshots); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    Manager* manager = c.manager;
    std::string created = name;
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    Done done = [call, manager, created](const Result<>& outcome) {
        Container* copy = outcome ? manager->find(created) : nullptr;
        if (copy)
            sd_bus_reply_method_return(call.get(), "o", copy->object_path().c_str());
        else
            reply_bus_error(call.get(), outcome ? make_error(errors::no_such_container, ENOENT,
                                                             "The copy \"" + created + "\" is gone")
                                                : outcome.error());
    };
    if (auto started =
            manager->copy_container(c.name(), snap, name, overrides, with_snapshots, done);
        !started)
        return set_bus_error(e, started.error());
    return 1;
}

int op_rename(sd_bus_message* m, Container& c, sd_bus_error* e) {
    const char* to = nullptr;
    if (int r = sd_bus_message_read(m, "s", &to); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    Manager* manager = c.manager; // `c` is gone once renamed
    if (auto renamed = manager->rename_container(c, to); !renamed)
        return set_bus_error(e, renamed.error());
    Container* now = manager->find(to);
    return sd_bus_reply_method_return(m, "o", now ? now->object_path().c_str() : "/");
}

static int read_devices(sd_bus_message* m, std::map<std::string, KeyMap>& devices) {
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

int op_update(sd_bus_message* m, Container& c, sd_bus_error* e) {
    KeyMap config;
    std::map<std::string, KeyMap> devices;
    if (int r = read_string_map(m, config); r < 0)
        return r;
    if (int r = read_devices(m, devices); r < 0)
        return r;
    MANAGE_OR_RETURN(m, c, e)
    if (auto started = c.manager->update_container(c, config, devices, reply_when_done(m));
        !started)
        return set_bus_error(e, started.error());
    return 1;
}

} // namespace lodge::daemon
