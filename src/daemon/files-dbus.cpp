// io.lodge1.Manager's file methods (lodgectl file push|pull|delete|edit, issue 15). Each needs
// io.lodge1.exec for the container: reading and writing any file in it is as good as running
// commands in it. Pushes stream in a worker; pulls hand the caller a read-only fd.
#include "daemon/container-dbus.hpp"
#include "daemon/files.hpp"
#include "daemon/instance-dbus.hpp"

#include <cerrno>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>

namespace lodge::daemon {
namespace {

struct FilesApi {
    Manager* manager;
};

Manager& manager(void* ud) {
    return *static_cast<FilesApi*>(ud)->manager;
}

int file_error(sd_bus_error* error, int r, const std::string& msg) {
    const char* name = SD_BUS_ERROR_FAILED;
    if (r == -ENOENT)
        name = SD_BUS_ERROR_FILE_NOT_FOUND;
    else if (r == -EEXIST)
        name = SD_BUS_ERROR_FILE_EXISTS;
    else if (r == -EINVAL || r == -ERANGE || r == -EISDIR || r == -ENOTDIR)
        name = SD_BUS_ERROR_INVALID_ARGS;
    else if (r == -EACCES || r == -EPERM)
        name = SD_BUS_ERROR_ACCESS_DENIED;
    return sd_bus_error_set(error, name, msg.c_str());
}

// Reads "ss" (container, path), authorizes, finds the container. 1: go on; else return it.
int begin(sd_bus_message* m, void* ud, sd_bus_error* e, Container*& c, std::string& path) {
    const char *name = nullptr, *p = nullptr;
    if (int r = sd_bus_message_read(m, "ss", &name, &p); r < 0)
        return r;
    // Re-read by the re-dispatch after polkit: the message starts over then.
    if (int r = authorize(m, manager(ud), actions::exec, name, e); r <= 0)
        return r == 0 ? 0 : r;
    c = manager(ud).find(name);
    if (!c)
        return sd_bus_error_setf(e, errors::no_such_container, "No container \"%s\"", name);
    path = p;
    return 1;
}

#define BEGIN(m, ud, e)                                                                            \
    Container* c = nullptr;                                                                        \
    std::string path;                                                                              \
    if (int b = begin(m, ud, e, c, path); b <= 0)                                                  \
        return b == 0 ? 1 : b;                                                                     \
    files::IdMap ids = files::IdMap::of(c->config);                                                \
    (void)ids;

int append_stat(sd_bus_message* reply, const files::Stat& s) {
    return sd_bus_message_append(reply, "suuuts", s.type.c_str(), s.mode, s.uid, s.gid, s.size,
                                 s.target.c_str());
}

int method_stat(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        files::Stat s;
        std::string msg;
        if (int r = files::stat(c->name(), ids, path, s, msg); r < 0)
            return file_error(e, r, msg);
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(m, &raw);
        if (r < 0)
            return r;
        MessagePtr reply(raw);
        if ((r = append_stat(raw, s)) < 0)
            return r;
        return sd_bus_send(nullptr, raw, nullptr);
    });
}

int method_list(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        std::vector<std::pair<std::string, files::Stat>> entries;
        std::string msg;
        if (int r = files::list(c->name(), ids, path, entries, msg); r < 0)
            return file_error(e, r, msg);
        sd_bus_message* raw = nullptr;
        int r = sd_bus_message_new_method_return(m, &raw);
        if (r < 0)
            return r;
        MessagePtr reply(raw);
        r = sd_bus_message_open_container(raw, 'a', "(ssuuuts)");
        for (auto& [name, s] : entries) {
            if (r >= 0)
                r = sd_bus_message_open_container(raw, 'r', "ssuuuts");
            if (r >= 0)
                r = sd_bus_message_append(raw, "s", name.c_str());
            if (r >= 0)
                r = append_stat(raw, s);
            if (r >= 0)
                r = sd_bus_message_close_container(raw);
        }
        if (r >= 0)
            r = sd_bus_message_close_container(raw);
        return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
    });
}

int method_pull(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        Fd fd;
        files::Stat s;
        std::string msg;
        if (int r = files::open_for_reading(c->name(), ids, path, fd, s, msg); r < 0)
            return file_error(e, r, msg);
        return sd_bus_reply_method_return(m, "huuut", fd.get(), s.mode, s.uid, s.gid, s.size);
    });
}

int method_delete(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        std::string msg;
        if (int r = files::remove(c->name(), path, msg); r < 0)
            return file_error(e, r, msg);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_mkdir(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        uint32_t uid = 0, gid = 0, mode = 0;
        int parents = 0;
        if (int r = sd_bus_message_read(m, "uuub", &uid, &gid, &mode, &parents); r < 0)
            return r;
        std::string msg;
        if (int r = files::make_directory(c->name(), ids, path, uid, gid, mode, parents, msg);
            r < 0)
            return file_error(e, r, msg);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_symlink(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        const char* target = nullptr;
        uint32_t uid = 0, gid = 0;
        int parents = 0;
        if (int r = sd_bus_message_read(m, "suub", &target, &uid, &gid, &parents); r < 0)
            return r;
        std::string msg;
        if (int r = files::make_symlink(c->name(), ids, path, target, uid, gid, parents, msg);
            r < 0)
            return file_error(e, r, msg);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_push(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        BEGIN(m, ud, e)
        int fd = -1;
        uint32_t uid = 0, gid = 0, mode = 0;
        int parents = 0;
        if (int r = sd_bus_message_read(m, "huuub", &fd, &uid, &gid, &mode, &parents); r < 0)
            return r;
        Fd source(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!source)
            return -errno;
        OperationSpec op;
        op.what = "push to " + path + " in \"" + c->name() + "\"";
        op.kind = OperationKind::cleanup;
        struct stat st {};
        // A pipe may stall: the push fails once it brought nothing for ten minutes.
        if (::fstat(source.get(), &st) == 0 && !S_ISREG(st.st_mode))
            op.idle_timeout_usec = 600ULL * 1000000;
        op.fds.push_back(std::move(source));
        op.work = [name = c->name(), ids, path, uid, gid, mode, parents](Worker& w,
                                                                         std::string& why) {
            return files::write_file(
                name, ids, path, w.fd(0), uid, gid, mode, parents,
                [&w](uint64_t done) { w.progress(done, 0); }, why);
        };
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        op.done = [call](const OperationResult& res) {
            if (res.code >= 0) {
                sd_bus_reply_method_return(call.get(), nullptr);
                return;
            }
            sd_bus_error err = SD_BUS_ERROR_NULL;
            file_error(&err, res.code, res.error);
            sd_bus_reply_method_error(call.get(), &err);
            sd_bus_error_free(&err);
        };
        std::string msg;
        if (int r = manager(ud).operations().start(std::move(op), msg); r < 0)
            return file_error(e, r, msg);
        return 1;
    });
}

const sd_bus_vtable files_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS(
        "StatContainerFile", SD_BUS_ARGS("s", name, "s", path),
        SD_BUS_RESULT("s", type, "u", mode, "u", uid, "u", gid, "t", size, "s", target),
        method_stat, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListContainerDirectory", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_RESULT("a(ssuuuts)", entries), method_list,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("PullContainerFile", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_RESULT("h", data, "u", mode, "u", uid, "u", gid, "t", size),
                            method_pull, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "PushContainerFile",
        SD_BUS_ARGS("s", name, "s", path, "h", data, "u", uid, "u", gid, "u", mode, "b", parents),
        SD_BUS_NO_RESULT, method_push, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "MakeContainerDirectory",
        SD_BUS_ARGS("s", name, "s", path, "u", uid, "u", gid, "u", mode, "b", parents),
        SD_BUS_NO_RESULT, method_mkdir, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "MakeContainerSymlink",
        SD_BUS_ARGS("s", name, "s", path, "s", target, "u", uid, "u", gid, "b", parents),
        SD_BUS_NO_RESULT, method_symlink, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteContainerFile", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_NO_RESULT, method_delete, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_file_methods(sd_bus* bus, Manager& m) {
    static FilesApi api;
    api.manager = &m;
    return sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager", files_vtable,
                                    &api);
}

} // namespace lodge::daemon
