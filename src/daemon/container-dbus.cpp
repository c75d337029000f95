// io.lodge1.Container: the per-container object, and the operations the Manager's by-name
// methods share with it.
#include "daemon/container-dbus.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "daemon/exec.hpp"
#include "daemon/instance-ops.hpp"
#include "daemon/remote.hpp"
#include "runtime/net.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <nlohmann/json.hpp>

namespace lodge::daemon {

int authorize(sd_bus_message* m, Manager& manager, const char* action, const std::string& container,
              sd_bus_error* error) {
    return manager.polkit().verify(m, action, container, error);
}

// A reply sent when a long operation ends: empty, or (Restart's signature) an empty reason.
Done reply_when_done(sd_bus_message* m, bool with_reason) {
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    return [call, with_reason](const Result<>& result) {
        if (!result)
            return reply_bus_error(call.get(), result.error());
        if (with_reason)
            sd_bus_reply_method_return(call.get(), "s", "");
        else
            sd_bus_reply_method_return(call.get(), nullptr);
    };
}

Done reply_path_when_done(sd_bus_message* m, Manager& manager, const std::string& name) {
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    return [call, mgr = &manager, name](const Result<>& result) {
        if (!result)
            return reply_bus_error(call.get(), result.error());
        Container* c = mgr->find(name);
        sd_bus_reply_method_return(call.get(), "o", c ? c->object_path().c_str() : "/");
    };
}

// Replies once PID 1 has been exec'd, so starts of different containers overlap.
static int start_now(sd_bus_message* m, Container& c, bool reply_reason, sd_bus_error* error) {
    if (auto r = c.manager->start(c, reply_when_done(m, reply_reason)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

// The start itself, for a caller already authorized (Restart replies with a reason). A stopped
// container whose supervisor is still on its way out starts once it has gone; meanwhile the
// call waits, parked, and the loop runs on.
static int start_authorized(sd_bus_message* m, Container& c, bool reply_reason,
                            sd_bus_error* error) {
    if (c.running())
        return start_now(m, c, reply_reason, error); // says "already running"
    Manager* manager = c.manager;
    std::string name = c.name();
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    manager->after_supervisor_exit(name, [call, manager, name, reply_reason] {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        Container* found = manager->find(name);
        int r = found ? start_now(call.get(), *found, reply_reason, &e)
                      : sd_bus_error_setf(&e, errors::no_such_container, "No container \"%s\"",
                                          name.c_str());
        if (r < 0)
            sd_bus_reply_method_error(call.get(), &e);
        sd_bus_error_free(&e);
    });
    return 1;
}

int op_start(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::control, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    return start_authorized(m, c, false, error);
}

// A bus timeout below 0 means the container's own (boot.host_shutdown_timeout).
static std::optional<unsigned> optional_timeout(int32_t timeout) {
    return timeout < 0 ? std::nullopt : std::optional<unsigned>(static_cast<unsigned>(timeout));
}

// stop and restart reply once the supervisor says the container stopped (or runs again); a
// stop only once the supervisor has exited too, so that a start right after it succeeds.
static int deferred_request(sd_bus_message* m, Container& c, const runtime::proto::Request& req,
                            sd_bus_error* error, bool until_exit = false) {
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    Manager* manager = c.manager;
    std::string name = c.name();
    auto r = c.manager->request(
        c, req, [call, manager, name, until_exit](const runtime::proto::Reply& reply) {
            auto answer = [call, reply] {
                if (reply.gone)
                    sd_bus_reply_method_errorf(call.get(), errors::not_running,
                                               "The supervisor went away");
                else if (!reply.error.empty())
                    sd_bus_reply_method_errorf(call.get(), errors::failed, "%s",
                                               reply.error.c_str());
                else
                    sd_bus_reply_method_return(call.get(), "s",
                                               reply.status ? reply.status->reason.c_str() : "");
            };
            // A refused request (an error reply) leaves the supervisor running: answer now.
            if (until_exit && reply.error.empty())
                manager->after_supervisor_exit(name, answer);
            else
                answer();
        });
    if (!r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_stop(sd_bus_message* m, Container& c, int32_t timeout, int force, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::control, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    if (!c.running())
        return sd_bus_error_setf(error, errors::not_running, "Container \"%s\" is not running",
                                 c.name().c_str());
    auto req = force ? runtime::proto::Request::of(runtime::proto::Verb::stop_force)
                     : runtime::proto::Request::stop(optional_timeout(timeout));
    return deferred_request(m, c, req, error, true);
}

int op_restart(sd_bus_message* m, Container& c, int32_t timeout, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::control, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    if (!c.running()) // authorized above: asking polkit again would park the call forever
        return start_authorized(m, c, true, error);
    return deferred_request(m, c, runtime::proto::Request::restart(optional_timeout(timeout)),
                            error);
}

static int simple_request(sd_bus_message* m, Container& c, const runtime::proto::Request& req,
                          sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::control, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    // The supervisor refusing (PID 1 cannot be signalled) is a plain failure.
    if (auto r = c.manager->request(c, req, errors::failed, reply_when_done(m)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_reboot(sd_bus_message* m, Container& c, sd_bus_error* error) {
    return simple_request(m, c, runtime::proto::Request::of(runtime::proto::Verb::reboot), error);
}

int op_kill(sd_bus_message* m, Container& c, int32_t sig, sd_bus_error* error) {
    if (sig <= 0 || sig >= 65)
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid signal %d", sig);
    return simple_request(m, c, runtime::proto::Request::kill(sig), error);
}

int op_delete(sd_bus_message* m, Container& c, int force, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::manage, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    if (auto r = c.manager->remove(c, force, reply_when_done(m)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_get_config(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::manage, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    if (r < 0)
        return r;
    MessagePtr reply(raw);
    if ((r = append_string_map(raw, c.visible_config())) < 0)
        return r;
    return sd_bus_send(nullptr, raw, nullptr);
}

int op_set_config(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::manage, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    KeyMap set;
    char** unset = nullptr;
    if (int r = read_string_map(m, set); r < 0)
        return r;
    if (int r = sd_bus_message_read_strv(m, &unset); r < 0)
        return r;
    std::vector<std::string> keys;
    for (char** k = unset; k && *k; k++) {
        keys.emplace_back(*k);
        std::free(*k);
    }
    std::free(unset);
    if (auto r = c.manager->set_config(c, set, keys, reply_when_done(m)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_add_device(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::manage, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    const char* device = nullptr;
    KeyMap keys;
    if (int r = sd_bus_message_read(m, "s", &device); r < 0)
        return r;
    if (int r = read_string_map(m, keys); r < 0)
        return r;
    if (auto r = c.manager->add_device(c, device, keys, reply_when_done(m)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_remove_device(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::manage, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    const char* device = nullptr;
    if (int r = sd_bus_message_read(m, "s", &device); r < 0)
        return r;
    if (auto r = c.manager->remove_device(c, device, reply_when_done(m)); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_open_console(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::exec, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    auto done = [call](Result<Fd> console) {
        if (!console)
            return reply_bus_error(call.get(), console.error());
        sd_bus_reply_method_return(call.get(), "h", console->get());
    };
    if (auto r = c.manager->open_console(c, done); !r)
        return set_bus_error(error, r.error());
    return 1;
}

int op_open_console_log(sd_bus_message* m, Container& c, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::exec, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    Fd log(::open(paths::console_log(c.name()).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!log)
        return sd_bus_error_setf(error, errors::no_console_log,
                                 "Container \"%s\" has no console log yet", c.name().c_str());
    return sd_bus_reply_method_return(m, "h", log.get());
}

// ---- the object ------------------------------------------------------------------------------

static int find_container(sd_bus* bus, const char* path, const char*, void* userdata, void** found,
                          sd_bus_error*) {
    return guarded([&] {
        auto* m = static_cast<Manager*>(userdata);
        Container* c = m->find_by_path(path);
        if (!c) {
            // A call parked for polkit whose container went away meanwhile: no handler will
            // consume its answer.
            if (sd_bus_message* call = sd_bus_get_current_message(bus))
                m->polkit().forget(call);
            return 0;
        }
        *found = c;
        return 1;
    });
}

static int enumerate_containers(sd_bus*, const char*, void* userdata, char*** nodes,
                                sd_bus_error*) {
    return guarded([&] {
        auto* m = static_cast<Manager*>(userdata);
        char** list = static_cast<char**>(std::calloc(m->containers().size() + 1, sizeof(char*)));
        if (!list)
            return -ENOMEM;
        size_t i = 0;
        for (auto& [name, c] : m->containers())
            list[i++] = strdup(c->object_path().c_str());
        *nodes = list;
        return 1;
    });
}

#define CONTAINER(ud) (*static_cast<Container*>(ud))

static int method_start(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_start(m, CONTAINER(ud), e); });
}
static int method_stop(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        int32_t timeout;
        int force;
        if (int r = sd_bus_message_read(m, "ib", &timeout, &force); r < 0)
            return r;
        return op_stop(m, CONTAINER(ud), timeout, force, e);
    });
}
static int method_restart(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        int32_t timeout;
        if (int r = sd_bus_message_read(m, "i", &timeout); r < 0)
            return r;
        return op_restart(m, CONTAINER(ud), timeout, e);
    });
}
static int method_reboot(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_reboot(m, CONTAINER(ud), e); });
}
static int method_kill(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        int32_t sig;
        if (int r = sd_bus_message_read(m, "i", &sig); r < 0)
            return r;
        return op_kill(m, CONTAINER(ud), sig, e);
    });
}
static int method_delete(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        int force;
        if (int r = sd_bus_message_read(m, "b", &force); r < 0)
            return r;
        return op_delete(m, CONTAINER(ud), force, e);
    });
}
static int method_get_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_get_config(m, CONTAINER(ud), e); });
}
static int method_set_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_set_config(m, CONTAINER(ud), e); });
}
static int method_add_device(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_add_device(m, CONTAINER(ud), e); });
}
static int method_remove_device(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_remove_device(m, CONTAINER(ud), e); });
}
static int method_exec(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_exec(m, CONTAINER(ud), CONTAINER(ud).manager->event(), e); });
}
static int method_open_console(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_open_console(m, CONTAINER(ud), e); });
}
static int method_open_console_log(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return op_open_console_log(m, CONTAINER(ud), e); });
}

// As machined's GetAddresses: a(iay), read inside the container's network namespace.
static int method_get_addresses(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        Container& c = CONTAINER(ud);
        if (!c.running() || c.leader <= 0)
            return sd_bus_error_setf(e, errors::not_running, "Container \"%s\" is not running",
                                     c.name().c_str());
        std::vector<runtime::net::Address> addrs;
        Fd netns = runtime::net::open_netns(c.leader);
        if (!netns || runtime::net::addresses(netns.get(), addrs) < 0)
            return sd_bus_error_setf(e, SD_BUS_ERROR_FAILED,
                                     "Cannot read the addresses of container \"%s\"",
                                     c.name().c_str());
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(m, &raw);
        if (r < 0)
            return r;
        MessagePtr reply(raw);
        r = sd_bus_message_open_container(raw, 'a', "(iay)");
        for (auto& a : addrs) {
            if (r >= 0)
                r = sd_bus_message_open_container(raw, 'r', "iay");
            if (r >= 0)
                r = sd_bus_message_append(raw, "i", static_cast<int32_t>(a.family));
            if (r >= 0)
                r = sd_bus_message_append_array(raw, 'y', a.bytes.data(), a.bytes.size());
            if (r >= 0)
                r = sd_bus_message_close_container(raw);
        }
        if (r >= 0)
            r = sd_bus_message_close_container(raw);
        return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
    });
}

static int property_get_string(sd_bus*, const char*, const char*, const char* property,
                               sd_bus_message* reply, void* ud, sd_bus_error*) {
    return guarded([&] {
        Container& c = CONTAINER(ud);
        std::string v;
        std::string p = property;
        if (p == "Name")
            v = c.name();
        else if (p == "State")
            v = shown_state(c);
        else if (p == "Reason")
            v = shown_reason(c);
        else if (p == "Unit")
            v = "lodge-" + c.name() + ".scope";
        else if (p == "RootDirectory")
            v = paths::container_rootfs(c.name());
        else if (p == "BootId")
            v = c.boot_id;
        return sd_bus_message_append(reply, "s", v.c_str());
    });
}

static int property_get_leader(sd_bus*, const char*, const char*, const char*,
                               sd_bus_message* reply, void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "u", static_cast<uint32_t>(CONTAINER(ud).leader));
}

static int property_get_privileged(sd_bus*, const char*, const char*, const char*,
                                   sd_bus_message* reply, void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "b", CONTAINER(ud).config.privileged() ? 1 : 0);
}

static int property_get_lxcfs(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                              void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "b", CONTAINER(ud).lxcfs ? 1 : 0);
}

static int property_get_ready(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                              void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "b", CONTAINER(ud).ready() ? 1 : 0);
}

static int property_get_timestamp(sd_bus*, const char*, const char*, const char*,
                                  sd_bus_message* reply, void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "t", CONTAINER(ud).started_usec);
}

int append_string_map(sd_bus_message* reply, const KeyMap& map) {
    int r = sd_bus_message_open_container(reply, 'a', "{ss}");
    for (auto& [k, v] : map)
        if (r >= 0)
            r = sd_bus_message_append(reply, "{ss}", k.c_str(), v.c_str());
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int property_get_config(sd_bus*, const char*, const char*, const char*,
                               sd_bus_message* reply, void* ud, sd_bus_error*) {
    return guarded([&] { return append_string_map(reply, CONTAINER(ud).public_config()); });
}

int append_devices(sd_bus_message* reply, const std::map<std::string, KeyMap>& devices) {
    int r = sd_bus_message_open_container(reply, 'a', "{sa{ss}}");
    for (auto& [dev, keys] : devices) {
        if (r >= 0)
            r = sd_bus_message_open_container(reply, 'e', "sa{ss}");
        if (r >= 0)
            r = sd_bus_message_append(reply, "s", dev.c_str());
        if (r >= 0)
            r = append_string_map(reply, keys);
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
    }
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int property_get_devices(sd_bus*, const char*, const char*, const char*,
                                sd_bus_message* reply, void* ud, sd_bus_error*) {
    return guarded([&] { return append_devices(reply, CONTAINER(ud).config.devices); });
}

static const sd_bus_vtable container_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Name", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("State", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Reason", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Leader", "u", property_get_leader, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Unit", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("RootDirectory", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("BootId", "s", property_get_string, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
    SD_BUS_PROPERTY("Privileged", "b", property_get_privileged, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    // Public keys only, and invalidated rather than sent: see GetConfig.
    SD_BUS_PROPERTY("Config", "a{ss}", property_get_config, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
    SD_BUS_PROPERTY("Devices", "a{sa{ss}}", property_get_devices, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("LXCFS", "b", property_get_lxcfs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Ready", "b", property_get_ready, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Timestamp", "t", property_get_timestamp, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
    SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_start,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_ARGS("i", timeout, "b", force),
                            SD_BUS_RESULT("s", reason), method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Restart", SD_BUS_ARGS("i", timeout), SD_BUS_RESULT("s", reason),
                            method_restart, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Reboot", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reboot,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Kill", SD_BUS_ARGS("i", signal), SD_BUS_NO_RESULT, method_kill,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("b", force), SD_BUS_NO_RESULT, method_delete,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetConfig", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{ss}", config),
                            method_get_config, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("SetConfig", SD_BUS_ARGS("a{ss}", set, "as", unset), SD_BUS_NO_RESULT,
                            method_set_config, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("AddDevice", SD_BUS_ARGS("s", device, "a{ss}", keys), SD_BUS_NO_RESULT,
                            method_add_device, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RemoveDevice", SD_BUS_ARGS("s", device), SD_BUS_NO_RESULT,
                            method_remove_device, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("Exec",
                            SD_BUS_ARGS("as", argv, "as", environment, "s", cwd, "b", pty, "h",
                                        stdin, "h", stdout, "h", stderr, "h", control),
                            SD_BUS_RESULT("i", status), method_exec, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("OpenConsole", SD_BUS_NO_ARGS, SD_BUS_RESULT("h", console),
                            method_open_console, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetAddresses", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(iay)", addresses),
                            method_get_addresses, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("OpenConsoleLog", SD_BUS_NO_ARGS, SD_BUS_RESULT("h", log),
                            method_open_console_log, SD_BUS_VTABLE_UNPRIVILEGED),
    LODGE_INSTANCE_OBJECT_METHODS,
    SD_BUS_VTABLE_END,
};

int register_container_objects(sd_bus* bus, Manager& m) {
    int r = sd_bus_add_fallback_vtable(bus, nullptr, "/io/lodge1/container", "io.lodge1.Container",
                                       container_vtable, find_container, &m);
    if (r < 0)
        return r;
    return sd_bus_add_node_enumerator(bus, nullptr, "/io/lodge1/container", enumerate_containers,
                                      &m);
}

} // namespace lodge::daemon
