// io.lodge1.Manager's ExportContainer and ImportBackup (`lodgectl export|import`, backup.hpp):
// a vtable of their own on /io/lodge1. Both need io.lodge1.manage. The CLI opens the files and
// passes fds; the packing and unpacking run in Operation workers, never on lodged's loop.
//
// An import reads the backup twice: a first worker reads index.yaml and backup.yaml (the name
// and config the container needs before it is made), then Manager::create's worker extracts
// it into the hidden work directory that becomes the container in one rename, so a failed or
// interrupted import leaves nothing.
#include "daemon/backup-dbus.hpp"

#include "daemon/container-dbus.hpp"
#include "daemon/snapshot-store.hpp"
#include "image/backup.hpp"

#include "common/paths.hpp"
#include "common/validate.hpp"
#include "runtime/in-root.hpp"

#include <cerrno>
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

Fd dup_fd(int fd) {
    return Fd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
}

// ExportContainer(name, fd, snapshots, compression): the backup is written to fd.
int method_export(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        Manager& mgr = manager(ud);
        const char *name = nullptr, *compression = nullptr;
        int fd = -1, with_snapshots = 0;
        if (int r = sd_bus_message_read(m, "shbs", &name, &fd, &with_snapshots, &compression);
            r < 0)
            return r;
        if (int r = authorize(m, mgr, actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        Container* c = mgr.find(name);
        if (!c)
            return sd_bus_error_setf(e, errors::no_such_container, "No container \"%s\"", name);
        // A running guest could swap directories under the packer; LXD exports running
        // containers, lodge asks for a stop (or a snapshot, then export of a copy of it).
        if (c->running() || mgr.starting(name) || c->supervisor_alive())
            return sd_bus_error_setf(e, errors::already_running,
                                     "Container \"%s\" is running; stop it to export it", name);
        if (mgr.instance_busy(name))
            return sd_bus_error_setf(
                e, errors::busy, "Container \"%s\" is being snapshotted, copied or restored", name);
        std::string c_compression = compression;
        if (!c_compression.empty() && c_compression != "gzip" && c_compression != "xz" &&
            c_compression != "zstd" && c_compression != "none")
            return sd_bus_error_setf(e, errors::invalid_config,
                                     "Unknown compression \"%s\": gzip, xz, zstd or none",
                                     compression);
        Fd out = dup_fd(fd);
        if (!out)
            return sd_bus_error_set_errno(e, errno);
        image::BackupSource src;
        src.config = c->config;
        src.rootfs = paths::container_rootfs(name);
        src.shift_base = runtime::shifted_base(paths::container_dir(name));
        src.shift_size = c->config.idmap_size();
        src.compression = c_compression;
        if (with_snapshots)
            for (auto& info : snapshots::list(name)) {
                image::BackupSnapshot s;
                snapshots::Info loaded;
                if (auto loaded_ok = snapshots::load(name, info.name, s.config, loaded); !loaded_ok)
                    return set_bus_error(e, loaded_ok.error());
                s.name = info.name;
                s.dir = snapshots::path(name, info.name);
                s.created_usec = info.created_usec;
                s.expires_usec = info.expires_usec;
                s.shift_base = runtime::shifted_base(s.dir);
                s.shift_size = s.config.idmap_size();
                src.snapshots.push_back(std::move(s));
            }
        OperationSpec op;
        op.what = std::string("export of \"") + name + "\"";
        op.kind = OperationKind::import;
        op.fds.push_back(std::move(out));
        op.work = [src](Worker& w, std::string& why) {
            return image::write_backup(
                w.fd(0), src, [&w](uint64_t done, uint64_t total) { w.progress(done, total); },
                why);
        };
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        uint64_t generation = c->generation;
        std::string container = name;
        Manager* mp = &mgr;
        op.done = [call, mp, generation, container](const OperationResult& res) {
            mp->end_reading(container);
            Container* now = mp->find(container);
            if (res.code < 0)
                return reply_bus_error(call.get(),
                                       make_error(errors::failed, -res.code, res.error));
            // Started meanwhile: the files changed under the worker.
            if (!now || now->generation != generation || now->running())
                return reply_bus_error(
                    call.get(), make_error(errors::busy, EBUSY,
                                           "Container \"" + container +
                                               "\" was started or removed during the export"));
            sd_bus_reply_method_return(call.get(), "");
        };
        std::string error;
        // A restore or snapshot delete would swap files under the worker.
        mgr.begin_reading(name);
        if (int r = mgr.operations().start(std::move(op), error); r < 0) {
            mgr.end_reading(name);
            return set_bus_error(
                e, make_error(r == -EBUSY ? errors::busy : errors::failed, -r, error));
        }
        return 1;
    });
}

void reply_import(const std::shared_ptr<sd_bus_message>& call, Manager& mgr,
                  const std::string& name, const std::vector<std::string>& notes) {
    sd_bus_message* reply = nullptr;
    if (sd_bus_message_new_method_return(call.get(), &reply) < 0)
        return;
    MessagePtr owned(reply);
    Container* c = mgr.find(name);
    int r = sd_bus_message_append(reply, "so", name.c_str(), c ? c->object_path().c_str() : "/");
    if (r >= 0)
        r = sd_bus_message_open_container(reply, 'a', "s");
    for (auto& n : notes)
        if (r >= 0)
            r = sd_bus_message_append(reply, "s", n.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    if (r >= 0)
        sd_bus_send(nullptr, reply, nullptr);
}

// The second half of an import: the container made from what the first worker read.
void create_from_backup(Manager& mgr, const std::shared_ptr<sd_bus_message>& call,
                        std::shared_ptr<Fd> source, std::string requested,
                        const OperationResult& res) {
    if (res.code < 0)
        return reply_bus_error(call.get(), make_error(errors::import_failed, -res.code, res.error));
    image::BackupInfo info;
    if (!image::BackupInfo::from_json(res.data, info))
        return reply_bus_error(
            call.get(), make_error(errors::import_failed, EIO, "The backup reader gave no answer"));
    std::string name = requested.empty() ? info.name : requested;
    if (auto why = check_container_name(name); !why.empty())
        return reply_bus_error(call.get(),
                               make_error(errors::invalid_name, EINVAL,
                                          requested.empty()
                                              ? "The backup's container name is not one lodge "
                                                "takes (" +
                                                    why + "); give a NAME"
                                              : why));
    info.config.name = name;
    for (auto& s : info.snapshots) {
        if (auto why = snapshots::check_name(s.name); !why.empty())
            return reply_bus_error(call.get(),
                                   make_error(errors::import_failed, EINVAL,
                                              "refusing snapshot '" + s.name + "': " + why));
        s.config.name = name;
    }
    CreateRequest req;
    req.config = info.config;
    req.trusted = true;
    req.sources.push_back(std::move(*source));
    auto shared_info = std::make_shared<image::BackupInfo>(std::move(info));
    req.fill = [shared_info](Worker& w, const std::string& rootfs, KeyMap&, std::string& why) {
        std::string dir = rootfs.substr(0, rootfs.find_last_of('/'));
        return image::extract_backup(
            w.fd(0), *shared_info, dir,
            [&w](uint64_t done, uint64_t total) { w.progress(done, total, "unpacking"); }, why);
    };
    Manager* mp = &mgr;
    auto created = mgr.create(std::move(req), [call, mp, name, shared_info](const Result<>& r) {
        if (!r)
            return reply_bus_error(call.get(), r.error());
        reply_import(call, *mp, name, shared_info->notes);
    });
    if (!created)
        reply_bus_error(call.get(), created.error());
}

// ImportBackup(fd, name): a container (and its snapshots) from a backup; name "" takes the
// backup's. Returns the name, the object path and what was left out of the config.
int method_import(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        Manager& mgr = manager(ud);
        int fd = -1;
        const char* name = nullptr;
        if (int r = sd_bus_message_read(m, "hs", &fd, &name); r < 0)
            return r;
        if (int r = authorize(m, mgr, actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        std::string requested = name;
        if (!requested.empty()) {
            if (auto why = check_container_name(requested); !why.empty())
                return sd_bus_error_set(e, errors::invalid_name, why.c_str());
            if (mgr.find(requested))
                return sd_bus_error_setf(e, errors::container_exists,
                                         "Container \"%s\" already exists", name);
        }
        struct stat st {};
        if (::fstat(fd, &st) < 0)
            return sd_bus_error_set_errno(e, errno);
        if (!S_ISREG(st.st_mode))
            return sd_bus_error_set(e, errors::import_failed,
                                    "A backup is read from a regular file (it is read twice)");
        Fd first = dup_fd(fd);
        auto second = std::make_shared<Fd>(dup_fd(fd));
        if (!first || !*second)
            return sd_bus_error_set_errno(e, errno);
        OperationSpec op;
        op.what = "reading a backup";
        op.kind = OperationKind::import;
        op.fds.push_back(std::move(first));
        op.work = [](Worker& w, std::string& why) {
            image::BackupInfo info;
            int r = image::read_backup_info(w.fd(0), info, why);
            if (r >= 0)
                w.data = info.to_json();
            return r;
        };
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        Manager* mp = &mgr;
        op.done = [call, mp, second, requested](const OperationResult& res) {
            create_from_backup(*mp, call, second, requested, res);
        };
        std::string error;
        if (int r = mgr.operations().start(std::move(op), error); r < 0)
            return set_bus_error(
                e, make_error(r == -EBUSY ? errors::busy : errors::failed, -r, error));
        return 1;
    });
}

const sd_bus_vtable backup_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("ExportContainer",
                            SD_BUS_ARGS("s", name, "h", file, "b", snapshots, "s", compression),
                            SD_BUS_NO_RESULT, method_export, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ImportBackup", SD_BUS_ARGS("h", file, "s", name),
                            SD_BUS_RESULT("s", name, "o", path, "as", notes), method_import,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_backup_methods(sd_bus* bus, Manager& m) {
    int r = sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager", backup_vtable,
                                     &m);
    if (r < 0)
        log_error_errno(r, "Cannot register the backup methods");
    return r;
}

} // namespace lodge::daemon
