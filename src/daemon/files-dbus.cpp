// File methods (lodgectl file push|pull|delete|edit, issue 15), ops of instance-ops.hpp in
// both forms: io.lodge1.Manager's by name, and on each container's object. Each needs
// io.lodge1.exec for the container: reading and writing any file in it is as good as running
// commands in it. Pushes stream in a worker; pulls hand the caller a read-only fd.
#include "daemon/container-dbus.hpp"
#include "daemon/files.hpp"
#include "daemon/instance-dbus.hpp"
#include "daemon/instance-ops.hpp"

#include <cerrno>
#include <cstdarg>
#include <fcntl.h>
#include <memory>
#include <sys/stat.h>

namespace lodge::daemon {
namespace {

// The file errors of the freedesktop vocabulary, as sftp and gio callers know them.
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

// Replies now: empty, or the files:: call's failure `r` with `msg`.
int reply_now(sd_bus_message* m, int r, const std::string& msg, sd_bus_error* e) {
    return r < 0 ? file_error(e, r, msg) : sd_bus_reply_method_return(m, nullptr);
}

} // namespace

// Reads "s" path, then the arguments of `types` (if any), and authorizes io.lodge1.exec on
// `c`. 1: go on; else what the handler returns (0: parked for polkit, replies later).
int begin(sd_bus_message* m, Container& c, sd_bus_error* e, const char*& path,
          const char* types = nullptr, ...) {
    if (int r = sd_bus_message_read(m, "s", &path); r < 0)
        return r;
    if (types) {
        va_list ap;
        va_start(ap, types);
        int r = sd_bus_message_readv(m, types, ap);
        va_end(ap);
        if (r < 0)
            return r;
    }
    int r = authorize(m, *c.manager, actions::exec, c.name(), e);
    return r == 0 ? 0 : r;
}

#define FILE_OP_BEGIN(...)                                                                         \
    const char* path = nullptr;                                                                    \
    if (int go_on = begin(m, c, e, path __VA_OPT__(, ) __VA_ARGS__); go_on <= 0)                   \
        return go_on == 0 ? 1 : go_on;                                                             \
    std::string msg;

int op_stat_file(sd_bus_message* m, Container& c, sd_bus_error* e) {
    FILE_OP_BEGIN()
    files::Stat s;
    if (int r = files::stat(c.name(), files::IdMap::of(c.config), path, s, msg); r < 0)
        return file_error(e, r, msg);
    return sd_bus_reply_method_return(m, "suuuts", s.type.c_str(), s.mode, s.uid, s.gid, s.size,
                                      s.target.c_str());
}

int op_list_directory(sd_bus_message* m, Container& c, sd_bus_error* e) {
    FILE_OP_BEGIN()
    std::vector<std::pair<std::string, files::Stat>> entries;
    if (int r = files::list(c.name(), files::IdMap::of(c.config), path, entries, msg); r < 0)
        return file_error(e, r, msg);
    MessagePtr reply = method_return(m);
    sd_bus_message* raw = reply.get();
    int r = raw ? 0 : -ENOMEM;
    if (r >= 0)
        r = sd_bus_message_open_container(raw, 'a', "(ssuuuts)");
    for (auto& [name, s] : entries)
        if (r >= 0)
            r = sd_bus_message_append(raw, "(ssuuuts)", name.c_str(), s.type.c_str(), s.mode, s.uid,
                                      s.gid, s.size, s.target.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(raw);
    return r < 0 ? r : sd_bus_send(nullptr, raw, nullptr);
}

int op_pull_file(sd_bus_message* m, Container& c, sd_bus_error* e) {
    FILE_OP_BEGIN()
    Fd fd;
    files::Stat s;
    if (int r = files::open_for_reading(c.name(), files::IdMap::of(c.config), path, fd, s, msg);
        r < 0)
        return file_error(e, r, msg);
    return sd_bus_reply_method_return(m, "huuut", fd.get(), s.mode, s.uid, s.gid, s.size);
}

int op_delete_file(sd_bus_message* m, Container& c, sd_bus_error* e) {
    FILE_OP_BEGIN()
    return reply_now(m, files::remove(c.name(), path, msg), msg, e);
}

// MakeContainerDirectory (uid, gid, mode, parents) or MakeContainerSymlink (target, uid, gid,
// parents).
static int make_entry(sd_bus_message* m, Container& c, sd_bus_error* e, bool symlink) {
    const char* target = nullptr;
    uint32_t uid = 0, gid = 0, mode = 0;
    int parents = 0;
    const char* path = nullptr;
    int go_on = symlink ? begin(m, c, e, path, "suub", &target, &uid, &gid, &parents)
                        : begin(m, c, e, path, "uuub", &uid, &gid, &mode, &parents);
    if (go_on <= 0)
        return go_on == 0 ? 1 : go_on;
    std::string msg;
    auto ids = files::IdMap::of(c.config);
    int r = symlink ? files::make_symlink(c.name(), ids, path, target, uid, gid, parents, msg)
                    : files::make_directory(c.name(), ids, path, uid, gid, mode, parents, msg);
    return reply_now(m, r, msg, e);
}

int op_make_directory(sd_bus_message* m, Container& c, sd_bus_error* e) {
    return make_entry(m, c, e, false);
}

int op_make_symlink(sd_bus_message* m, Container& c, sd_bus_error* e) {
    return make_entry(m, c, e, true);
}

int op_push_file(sd_bus_message* m, Container& c, sd_bus_error* e) {
    int fd = -1;
    uint32_t uid = 0, gid = 0, mode = 0;
    int parents = 0;
    FILE_OP_BEGIN("huuub", &fd, &uid, &gid, &mode, &parents)
    Fd source(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!source)
        return -errno;
    OperationSpec op;
    op.what = "push to " + std::string(path) + " in \"" + c.name() + "\"";
    op.kind = OperationKind::cleanup;
    struct stat st {};
    // A pipe may stall: the push fails once it brought nothing for ten minutes.
    if (::fstat(source.get(), &st) == 0 && !S_ISREG(st.st_mode))
        op.idle_timeout_usec = 600ULL * 1000000;
    op.fds.push_back(std::move(source));
    op.work = [name = c.name(), ids = files::IdMap::of(c.config), path = std::string(path), uid,
               gid, mode, parents](Worker& w, std::string& why) {
        return files::write_file(
            name, ids, path, w.fd(0), uid, gid, mode, parents,
            [&w](uint64_t done) { w.progress(done, 0); }, why);
    };
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    op.done = [call](const OperationResult& res) {
        sd_bus_error err = SD_BUS_ERROR_NULL;
        if (reply_now(call.get(), res.code, res.error, &err) < 0)
            sd_bus_reply_method_error(call.get(), &err);
        sd_bus_error_free(&err);
    };
    if (int r = c.manager->operations().start(std::move(op), msg); r < 0)
        return file_error(e, r, msg);
    return 1;
}

namespace {

const sd_bus_vtable files_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS(
        "StatContainerFile", SD_BUS_ARGS("s", name, "s", path),
        SD_BUS_RESULT("s", type, "u", mode, "u", uid, "u", gid, "t", size, "s", target),
        by_name<op_stat_file>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListContainerDirectory", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_RESULT("a(ssuuuts)", entries), by_name<op_list_directory>,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("PullContainerFile", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_RESULT("h", data, "u", mode, "u", uid, "u", gid, "t", size),
                            by_name<op_pull_file>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "PushContainerFile",
        SD_BUS_ARGS("s", name, "s", path, "h", data, "u", uid, "u", gid, "u", mode, "b", parents),
        SD_BUS_NO_RESULT, by_name<op_push_file>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "MakeContainerDirectory",
        SD_BUS_ARGS("s", name, "s", path, "u", uid, "u", gid, "u", mode, "b", parents),
        SD_BUS_NO_RESULT, by_name<op_make_directory>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "MakeContainerSymlink",
        SD_BUS_ARGS("s", name, "s", path, "s", target, "u", uid, "u", gid, "b", parents),
        SD_BUS_NO_RESULT, by_name<op_make_symlink>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteContainerFile", SD_BUS_ARGS("s", name, "s", path),
                            SD_BUS_NO_RESULT, by_name<op_delete_file>, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_file_methods(sd_bus* bus, Manager& m) {
    return sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager", files_vtable,
                                    &m);
}

} // namespace lodge::daemon
