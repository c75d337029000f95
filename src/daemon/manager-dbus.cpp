// io.lodge1.Manager on /io/lodge1: listing, lookup, create/import, and the by-name twins of
// every io.lodge1.Container method.
#include "daemon/bus-method.hpp"
#include "daemon/container-dbus.hpp"
#include "daemon/dbus-api.hpp"
#include "daemon/exec.hpp"
#include "daemon/instance-dbus.hpp"
#include "daemon/remote.hpp"
#include "image/import.hpp"

#include "common/validate.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

Manager& manager(void* ud) {
    return *static_cast<Manager*>(ud);
}

// Reads the container name at the head of `m` and finds it, or sets NoSuchContainer.
Container* lookup(sd_bus_message* m, void* ud, sd_bus_error* error) {
    const char* name = nullptr;
    if (sd_bus_message_read(m, "s", &name) < 0 || !name) {
        sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Expected a container name");
        return nullptr;
    }
    Container* c = manager(ud).find(name);
    if (!c) {
        // A call parked for polkit whose container went away meanwhile.
        manager(ud).polkit().forget(m);
        sd_bus_error_setf(error, errors::no_such_container, "No container \"%s\"", name);
    }
    return c;
}

int method_list_containers(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, "(ssuo)", manager(ud).containers(), [&](auto& entry) {
                auto& [name, c] = entry;
                return sd_bus_message_append(reply, "(ssuo)", name.c_str(), shown_state(*c).c_str(),
                                             static_cast<uint32_t>(c->leader),
                                             c->object_path().c_str());
            });
        });
    });
}

int method_get_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        Container* c = lookup(m, ud, e);
        if (!c)
            return -ENOENT;
        return sd_bus_reply_method_return(m, "o", c->object_path().c_str());
    });
}

int method_get_container_by_pid(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        uint32_t pid = 0;
        if (int r = sd_bus_message_read(m, "u", &pid); r < 0)
            return r;
        if (pid == 0) {
            sd_bus_creds* creds = nullptr;
            if (int r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_PID, &creds); r < 0)
                return r;
            pid_t p = 0;
            sd_bus_creds_get_pid(creds, &p);
            sd_bus_creds_unref(creds);
            pid = static_cast<uint32_t>(p);
        }
        Container* c = manager(ud).find_by_pid(static_cast<pid_t>(pid));
        if (!c)
            return sd_bus_error_setf(e, errors::no_container_for_pid,
                                     "PID %u does not belong to any container", pid);
        return sd_bus_reply_method_return(m, "o", c->object_path().c_str());
    });
}

// Every create shares this: name + config + `fds` descriptors from the message, then `fill`
// makes the rootfs in a worker, and the reply (the new object's path) waits for it.
int create_with(sd_bus_message* m, void* ud, sd_bus_error* e, size_t fds, const char* fd_error,
                FillRootfs fill) {
    const char* requested = nullptr;
    if (int r = sd_bus_message_read(m, "s", &requested); r < 0)
        return r;
    if (int r = authorize(m, manager(ud), actions::manage, requested, e); r <= 0)
        return r == 0 ? 1 : r;
    sd_bus_message_rewind(m, 1);
    const char* name = nullptr;
    if (int r = sd_bus_message_read(m, "s", &name); r < 0)
        return r;
    CreateRequest req;
    req.config.name = name;
    if (int r = read_string_map(m, req.config.config); r < 0)
        return r;
    for (size_t i = 0; i < fds; i++) {
        Fd fd;
        if (read_fd(m, fd) < 0)
            return sd_bus_error_set(e, SD_BUS_ERROR_INVALID_ARGS, fd_error);
        // A pipe or socket may be fed slowly, or never: bounded by the time it may go without data.
        req.idle_timeout_usec = std::max(req.idle_timeout_usec, import_idle_timeout_usec(fd));
        req.sources.push_back(std::move(fd));
    }
    req.fill = std::move(fill);
    Done done = reply_path_when_done(m, manager(ud), name);
    if (auto r = manager(ud).create(std::move(req), std::move(done)); !r)
        return set_bus_error(e, r.error());
    return 1;
}

// Import progress from the worker: lodged re-arms the import's idle limit with it.
ProgressFn report_to(Worker& w) {
    return [&w](const ImportProgress& p) { w.progress(p.bytes_done, p.bytes_total); };
}

int method_create_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return create_with(m, ud, e, 0, nullptr,
                           [](Worker&, const std::string& rootfs, KeyMap&, std::string& error) {
                               return import_builtin(rootfs, error);
                           });
    });
}

int method_create_from_directory(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return create_with(m, ud, e, 1, "Expected a directory file descriptor",
                           [](Worker& w, const std::string& rootfs, KeyMap&, std::string& error) {
                               return import_directory(w.fd(0), rootfs, report_to(w), error);
                           });
    });
}

int method_import_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return create_with(
            m, ud, e, 1, "Expected a tarball file descriptor",
            [](Worker& w, const std::string& rootfs, KeyMap& keys, std::string& error) {
                ImportResult res;
                int r = import_tarball(w.fd(0), rootfs, res, report_to(w), error);
                keys = res.image_keys;
                return r;
            });
    });
}

int method_import_container_split(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return create_with(
            m, ud, e, 2, "Expected two tarball file descriptors",
            [](Worker& w, const std::string& rootfs, KeyMap& keys, std::string& error) {
                ImportResult res;
                int r = import_split_image(w.fd(0), w.fd(1), rootfs, res, report_to(w), error);
                keys = res.image_keys;
                return r;
            });
    });
}

#define BY_NAME(fn, body)                                                                          \
    int fn(sd_bus_message* m, void* ud, sd_bus_error* e) {                                         \
        return guarded([&] {                                                                       \
            Container* c = lookup(m, ud, e);                                                       \
            if (!c)                                                                                \
                return -ENOENT;                                                                    \
            body                                                                                   \
        });                                                                                        \
    }

BY_NAME(method_start_container, { return op_start(m, *c, e); })
BY_NAME(method_reboot_container, { return op_reboot(m, *c, e); })
BY_NAME(method_get_container_config, { return op_get_config(m, *c, e); })
BY_NAME(method_set_container_config, { return op_set_config(m, *c, e); })
BY_NAME(method_stop_container, {
    int32_t timeout;
    int force;
    if (int r = sd_bus_message_read(m, "ib", &timeout, &force); r < 0)
        return r;
    return op_stop(m, *c, timeout, force, e);
})
BY_NAME(method_restart_container, {
    int32_t timeout;
    if (int r = sd_bus_message_read(m, "i", &timeout); r < 0)
        return r;
    return op_restart(m, *c, timeout, e);
})
BY_NAME(method_kill_container, {
    int32_t sig;
    if (int r = sd_bus_message_read(m, "i", &sig); r < 0)
        return r;
    return op_kill(m, *c, sig, e);
})
BY_NAME(method_delete_container, {
    int force;
    if (int r = sd_bus_message_read(m, "b", &force); r < 0)
        return r;
    return op_delete(m, *c, force, e);
})

BY_NAME(method_exec_container, { return op_exec(m, *c, manager(ud).event(), e); })
BY_NAME(method_add_container_device, { return op_add_device(m, *c, e); })
BY_NAME(method_remove_container_device, { return op_remove_device(m, *c, e); })
BY_NAME(method_open_container_console, { return op_open_console(m, *c, e); })
BY_NAME(method_open_container_console_log, { return op_open_console_log(m, *c, e); })

int property_get_lxcfs(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                       void* ud, sd_bus_error*) {
    return sd_bus_message_append(reply, "b", manager(ud).lxcfs_live() ? 1 : 0);
}

const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("LXCFS", "b", property_get_lxcfs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD_WITH_ARGS("ListContainers", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssuo)", containers),
                            method_list_containers, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetContainer", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", path),
                            method_get_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetContainerByPID", SD_BUS_ARGS("u", pid), SD_BUS_RESULT("o", path),
                            method_get_container_by_pid, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("CreateContainer", SD_BUS_ARGS("s", name, "a{ss}", config),
                            SD_BUS_RESULT("o", path), method_create_container,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "CreateContainerFromDirectory", SD_BUS_ARGS("s", name, "a{ss}", config, "h", directory),
        SD_BUS_RESULT("o", path), method_create_from_directory, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "ImportContainer", SD_BUS_ARGS("s", name, "a{ss}", config, "h", tarball),
        SD_BUS_RESULT("o", path), method_import_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "ImportContainerSplit", SD_BUS_ARGS("s", name, "a{ss}", config, "h", metadata, "h", rootfs),
        SD_BUS_RESULT("o", path), method_import_container_split, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteContainer", SD_BUS_ARGS("s", name, "b", force), SD_BUS_NO_RESULT,
                            method_delete_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("StartContainer", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                            method_start_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("StopContainer", SD_BUS_ARGS("s", name, "i", timeout, "b", force),
                            SD_BUS_RESULT("s", reason), method_stop_container,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RestartContainer", SD_BUS_ARGS("s", name, "i", timeout),
                            SD_BUS_RESULT("s", reason), method_restart_container,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RebootContainer", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                            method_reboot_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("KillContainer", SD_BUS_ARGS("s", name, "i", signal), SD_BUS_NO_RESULT,
                            method_kill_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetContainerConfig", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("a{ss}", config), method_get_container_config,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("SetContainerConfig", SD_BUS_ARGS("s", name, "a{ss}", set, "as", unset),
                            SD_BUS_NO_RESULT, method_set_container_config,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ExecContainer",
                            SD_BUS_ARGS("s", name, "as", argv, "as", environment, "s", cwd, "b",
                                        pty, "h", stdin, "h", stdout, "h", stderr, "h", control),
                            SD_BUS_RESULT("i", status), method_exec_container,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("AddContainerDevice",
                            SD_BUS_ARGS("s", name, "s", device, "a{ss}", keys), SD_BUS_NO_RESULT,
                            method_add_container_device, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RemoveContainerDevice", SD_BUS_ARGS("s", name, "s", device),
                            SD_BUS_NO_RESULT, method_remove_container_device,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("OpenContainerConsole", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("h", console), method_open_container_console,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("OpenContainerConsoleLog", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("h", log), method_open_container_console_log,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_ARGS("ContainerNew", SD_BUS_ARGS("s", name, "o", path), 0),
    SD_BUS_SIGNAL_WITH_ARGS("ContainerRemoved", SD_BUS_ARGS("s", name, "o", path), 0),
    SD_BUS_SIGNAL_WITH_ARGS("ContainerReady", SD_BUS_ARGS("s", name, "o", path), 0),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_bus_objects(sd_bus* bus, Manager& m) {
    int r = sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager",
                                     manager_vtable, &m);
    if (r < 0)
        return r;
    if ((r = register_container_objects(bus, m)) < 0)
        return r;
    if ((r = register_instance_methods(bus, m)) < 0)
        return r;
    return sd_bus_add_object_manager(bus, nullptr, "/io/lodge1");
}

} // namespace lodge::daemon
