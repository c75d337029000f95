#include "image-dbus.hpp"

#include "container-dbus.hpp"
#include "import.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace lodge::daemon {
namespace {

constexpr const char* no_such_image = "io.lodge1.NoSuchImage";
constexpr const char* image_exists = "io.lodge1.ImageExists";

ImageService& service(void* ud) {
    return *static_cast<ImageService*>(ud);
}

uint64_t now_usec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

int image_error(sd_bus_error* e, int r, const std::string& msg) {
    if (r == -ENOENT)
        return sd_bus_error_set(e, no_such_image, msg.c_str());
    if (r == -EEXIST)
        return sd_bus_error_set(e, image_exists, msg.c_str());
    return reply_error(e, r, msg);
}

void reply_image_error(const std::shared_ptr<sd_bus_message>& call, int r, const std::string& m) {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    image_error(&err, r, m);
    sd_bus_reply_method_error(call.get(), &err);
    sd_bus_error_free(&err);
}

int append_entry(sd_bus_message* reply, const image::ImageInfo& info,
                 const std::vector<std::string>& aliases) {
    int r = sd_bus_message_open_container(reply, 'r', "sssttta{ss}asbs");
    if (r >= 0)
        r = sd_bus_message_append(reply, "sssttt", info.fingerprint.c_str(), info.type.c_str(),
                                  info.architecture.c_str(), info.size, info.uploaded_usec,
                                  info.last_used_usec);
    if (r >= 0)
        r = append_string_map(reply, info.properties);
    if (r >= 0)
        r = sd_bus_message_open_container(reply, 'a', "s");
    for (auto& a : aliases)
        if (r >= 0)
            r = sd_bus_message_append(reply, "s", a.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    if (r >= 0)
        r = sd_bus_message_append(reply, "bs", info.cached ? 1 : 0, info.source.c_str());
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

int read_strings(sd_bus_message* m, std::vector<std::string>& out) {
    int r = sd_bus_message_enter_container(m, 'a', "s");
    if (r < 0)
        return r;
    const char* s;
    while ((r = sd_bus_message_read(m, "s", &s)) > 0)
        out.push_back(s);
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

// Removes `path` in a worker (a big image takes a while to unlink).
void discard(Manager& manager, const std::string& path, std::function<void()> then) {
    OperationSpec op;
    op.what = "removal of " + path;
    op.kind = OperationKind::cleanup;
    op.work = [path](Worker&, std::string& why) {
        int r = remove_tree(path);
        if (r < 0)
            why = "Cannot remove " + path + ": " + std::strerror(-r);
        return r;
    };
    op.done = [then](const OperationResult&) {
        if (then)
            then();
    };
    std::string error;
    if (manager.operations().start(std::move(op), error) < 0) {
        log_error("%s", error.c_str());
        if (then)
            then();
    }
}

int method_list_images(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        auto& store = service(ud).store();
        auto aliases = store.aliases();
        r = sd_bus_message_open_container(reply, 'a', image_entry_signature);
        for (auto& info : store.list()) {
            std::vector<std::string> mine;
            for (auto& [a, fp] : aliases)
                if (fp == info.fingerprint)
                    mine.push_back(a);
            if (r >= 0)
                r = append_entry(reply, info, mine);
        }
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_get_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* ref = nullptr;
        if (int r = sd_bus_message_read(m, "s", &ref); r < 0)
            return r;
        auto& store = service(ud).store();
        std::string fp, error;
        image::ImageInfo info;
        if (int r = store.resolve(ref, fp, error); r < 0)
            return image_error(e, r, error);
        if (store.get(fp, info) < 0)
            return image_error(e, -ENOENT, "No image \"" + std::string(ref) + "\"");
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        if ((r = append_entry(reply, info, store.aliases_of(fp))) < 0)
            return r;
        return sd_bus_send(nullptr, reply, nullptr);
    });
}

// ImportImage / ImportImageSplit: the file(s) are copied into a work directory and hashed in
// a worker; the image appears under its fingerprint once whole, then gets its aliases.
int import_image(sd_bus_message* m, void* ud, sd_bus_error* e, bool split) {
    ImageService& svc = service(ud);
    if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
        return r == 0 ? 1 : r;
    std::vector<Fd> fds;
    for (int i = 0; i < (split ? 2 : 1); i++) {
        int fd = -1;
        if (int r = sd_bus_message_read(m, "h", &fd); r < 0)
            return r;
        Fd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!dup)
            return sd_bus_error_set_errno(e, errno);
        fds.push_back(std::move(dup));
    }
    std::vector<std::string> aliases;
    if (int r = read_strings(m, aliases); r < 0)
        return r;
    for (auto& a : aliases)
        if (auto why = image::check_alias_name(a); !why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
    std::string work_dir, error;
    if (int r = svc.store().prepare(work_dir, error); r < 0)
        return reply_error(e, r, error);
    OperationSpec op;
    op.what = "image import";
    op.kind = OperationKind::import;
    op.fds = std::move(fds);
    op.work = [work_dir, split](Worker& w, std::string& why) {
        image::ImageInfo info;
        int r = image::ingest(
            w.fd(0), split ? w.fd(1) : -1, work_dir, info,
            [&w](uint64_t done, uint64_t total) { w.progress(done, total); }, why);
        if (r >= 0)
            w.data = info.to_json();
        return r;
    };
    std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
    Manager* mgr = &svc.manager();
    const image::Store* store = &svc.store();
    op.done = [call, mgr, store, work_dir, aliases](const OperationResult& res) {
        image::ImageInfo info;
        std::string why = res.error;
        int r = res.code;
        if (r >= 0 && !image::ImageInfo::from_json(res.data, info)) {
            r = -EIO;
            why = "The import worker gave no image";
        }
        bool fresh = false;
        if (r >= 0) {
            info.uploaded_usec = now_usec();
            r = store->commit(work_dir, info, why);
            fresh = r >= 0;
            if (r == -EEXIST) // the same image again: it is there, the aliases still apply
                r = 0;
        }
        if (r < 0 || !fresh)
            discard(*mgr, work_dir, nullptr);
        if (r < 0)
            return reply_image_error(call, r, why);
        if (fresh)
            sd_bus_emit_signal(mgr->bus(), "/io/lodge1", "io.lodge1.Manager", "ImageNew", "s",
                               info.fingerprint.c_str());
        for (auto& a : aliases)
            if ((r = store->set_alias(a, info.fingerprint, false, why)) < 0)
                return reply_image_error(call, r, why);
        sd_bus_reply_method_return(call.get(), "s", info.fingerprint.c_str());
    };
    if (int r = svc.manager().operations().start(std::move(op), error); r < 0) {
        remove_tree(work_dir);
        return reply_error(e, r, error);
    }
    return 1;
}

int method_import_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return import_image(m, ud, e, false); });
}

int method_import_image_split(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] { return import_image(m, ud, e, true); });
}

int method_delete_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char* ref = nullptr;
        if (int r = sd_bus_message_read(m, "s", &ref); r < 0)
            return r;
        std::string fp, trash, error;
        if (int r = svc.store().resolve(ref, fp, error); r < 0)
            return image_error(e, r, error);
        if (int r = svc.store().retire(fp, trash, error); r < 0)
            return image_error(e, r, error);
        discard(svc.manager(), trash, nullptr);
        sd_bus_emit_signal(svc.manager().bus(), "/io/lodge1", "io.lodge1.Manager", "ImageRemoved",
                           "s", fp.c_str());
        return sd_bus_reply_method_return(m, "");
    });
}

int method_create_image_alias(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char *alias = nullptr, *ref = nullptr;
        if (int r = sd_bus_message_read(m, "ss", &alias, &ref); r < 0)
            return r;
        std::string fp, error;
        if (int r = svc.store().resolve(ref, fp, error); r < 0)
            return image_error(e, r, error);
        if (int r = svc.store().set_alias(alias, fp, false, error); r < 0)
            return image_error(e, r, error);
        return sd_bus_reply_method_return(m, "");
    });
}

int method_delete_image_alias(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char* alias = nullptr;
        if (int r = sd_bus_message_read(m, "s", &alias); r < 0)
            return r;
        std::string error;
        if (int r = svc.store().remove_alias(alias, error); r < 0)
            return image_error(e, r, error);
        return sd_bus_reply_method_return(m, "");
    });
}

int method_list_image_aliases(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        r = sd_bus_message_open_container(reply, 'a', "(ss)");
        for (auto& [alias, fp] : service(ud).store().aliases())
            if (r >= 0)
                r = sd_bus_message_append(reply, "(ss)", alias.c_str(), fp.c_str());
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    });
}

// The image's files, read-only, for `image export` (the CLI writes them where it is told).
int method_open_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char* ref = nullptr;
        if (int r = sd_bus_message_read(m, "s", &ref); r < 0)
            return r;
        std::string fp, error;
        image::ImageInfo info;
        if (int r = svc.store().resolve(ref, fp, error); r < 0)
            return image_error(e, r, error);
        if (svc.store().get(fp, info) < 0)
            return image_error(e, -ENOENT, "No image \"" + std::string(ref) + "\"");
        Fd image(::open(image::Store::image_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        Fd rootfs;
        if (info.type == "split")
            rootfs.reset(
                ::open(image::Store::rootfs_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!image || (info.type == "split" && !rootfs))
            return reply_error(e, -errno, "Cannot open image " + fp + ": " + std::strerror(errno));
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        r = sd_bus_message_append(reply, "ss", fp.c_str(), info.type.c_str());
        if (r >= 0)
            r = sd_bus_message_open_container(reply, 'a', "h");
        if (r >= 0)
            r = sd_bus_message_append(reply, "h", image.get());
        if (r >= 0 && rootfs)
            r = sd_bus_message_append(reply, "h", rootfs.get());
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_create_from_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        const char* requested = nullptr;
        if (int r = sd_bus_message_read(m, "s", &requested); r < 0)
            return r;
        if (int r = svc.manager().polkit().verify(m, actions::manage, requested, e); r <= 0)
            return r == 0 ? 1 : r;
        CreateRequest req;
        req.config.name = requested;
        if (int r = read_string_map(m, req.config.config); r < 0)
            return r;
        const char* ref = nullptr;
        if (int r = sd_bus_message_read(m, "s", &ref); r < 0)
            return r;
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        Manager* mgr = &svc.manager();
        std::string name = requested;
        Done done = [call, mgr, name](int r, const std::string& msg) {
            if (r < 0) {
                sd_bus_error err = SD_BUS_ERROR_NULL;
                if (r == -EEXIST)
                    sd_bus_error_set(&err, errors::container_exists, msg.c_str());
                else if (r == -ENOENT)
                    sd_bus_error_set(&err, no_such_image, msg.c_str());
                else
                    sd_bus_error_set(&err, errors::import_failed, msg.c_str());
                sd_bus_reply_method_error(call.get(), &err);
                sd_bus_error_free(&err);
                return;
            }
            Container* c = mgr->find(name);
            sd_bus_reply_method_return(call.get(), "o", c ? c->object_path().c_str() : "/");
        };
        std::string error;
        if (int r = svc.create_from(ref, std::move(req), std::move(done), error); r < 0) {
            if (r == -EINVAL && error.find("name") != std::string::npos)
                return sd_bus_error_set(e, errors::invalid_name, error.c_str());
            return image_error(e, r, error);
        }
        return 1;
    });
}

const sd_bus_vtable image_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("ListImages", SD_BUS_NO_ARGS,
                            SD_BUS_RESULT("a(sssttta{ss}asbs)", images), method_list_images,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetImage", SD_BUS_ARGS("s", image),
                            SD_BUS_RESULT("(sssttta{ss}asbs)", info), method_get_image,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ImportImage", SD_BUS_ARGS("h", image, "as", aliases),
                            SD_BUS_RESULT("s", fingerprint), method_import_image,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "ImportImageSplit", SD_BUS_ARGS("h", metadata, "h", rootfs, "as", aliases),
        SD_BUS_RESULT("s", fingerprint), method_import_image_split, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteImage", SD_BUS_ARGS("s", image), SD_BUS_NO_RESULT,
                            method_delete_image, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("CreateImageAlias", SD_BUS_ARGS("s", alias, "s", image),
                            SD_BUS_NO_RESULT, method_create_image_alias,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteImageAlias", SD_BUS_ARGS("s", alias), SD_BUS_NO_RESULT,
                            method_delete_image_alias, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListImageAliases", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ss)", aliases),
                            method_list_image_aliases, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("OpenImage", SD_BUS_ARGS("s", image),
                            SD_BUS_RESULT("s", fingerprint, "s", type, "ah", files),
                            method_open_image, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "CreateContainerFromImage", SD_BUS_ARGS("s", name, "a{ss}", config, "s", image),
        SD_BUS_RESULT("o", path), method_create_from_image, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_ARGS("ImageNew", SD_BUS_ARGS("s", fingerprint), 0),
    SD_BUS_SIGNAL_WITH_ARGS("ImageRemoved", SD_BUS_ARGS("s", fingerprint), 0),
    SD_BUS_VTABLE_END,
};

} // namespace

int ImageService::start(sd_bus* bus) {
    std::string error;
    if (store_.ensure(error) < 0)
        log_warning("The image store is not usable: %s", error.c_str());
    for (auto& stale : store_.leftovers()) {
        log_info("Removing %s, left behind by an interrupted image operation", stale.c_str());
        discard(manager_, stale, nullptr);
    }
    sd_bus_slot* slot = nullptr;
    int r =
        sd_bus_add_object_vtable(bus, &slot, "/io/lodge1", "io.lodge1.Manager", image_vtable, this);
    if (r < 0)
        return log_error_errno(r, "Cannot register the image methods");
    slot_.reset(slot);
    return 0;
}

int ImageService::create_from(const std::string& ref, CreateRequest req, Done done,
                              std::string& error) {
    std::string fp;
    if (int r = store_.resolve(ref, fp, error); r < 0)
        return r;
    image::ImageInfo info;
    if (store_.get(fp, info) < 0) {
        error = "No image \"" + ref + "\" in the local store";
        return -ENOENT;
    }
    Fd image(::open(image::Store::image_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!image)
        return -errno;
    req.sources.push_back(std::move(image));
    bool split = info.type == "split";
    if (split) {
        Fd rootfs(::open(image::Store::rootfs_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!rootfs)
            return -errno;
        req.sources.push_back(std::move(rootfs));
    }
    req.fill = [split, fp](Worker& w, const std::string& rootfs, KeyMap& keys, std::string& why) {
        ImportResult res;
        auto progress = [&w](const ImportProgress& p) { w.progress(p.bytes_done, p.bytes_total); };
        int r = split ? import_split_image(w.fd(0), w.fd(1), rootfs, res, progress, why)
                      : import_tarball(w.fd(0), rootfs, res, progress, why);
        keys = res.image_keys;
        keys["volatile.base_image"] = fp;
        return r;
    };
    const image::Store* store = &store_;
    return manager_.create(
        std::move(req),
        [done, store, fp](int r, const std::string& why) {
            image::ImageInfo used;
            if (r >= 0 && store->get(fp, used) == 0) {
                used.last_used_usec = now_usec();
                store->update(used);
            }
            done(r, why);
        },
        error);
}

} // namespace lodge::daemon
