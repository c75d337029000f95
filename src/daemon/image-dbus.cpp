// The image store on the bus: listing, import, delete, aliases and export, the helpers the
// image faces share (image-methods.hpp), the one image vtable, and cache expiry.
#include "daemon/image-dbus.hpp"

#include "daemon/container-dbus.hpp"
#include "daemon/image-methods.hpp"

#include "image/import.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace image_bus {

uint64_t now_usec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

Error image_error(int r, const std::string& msg) {
    return error_for(
        r, msg,
        {{ENOENT, no_such_image}, {EEXIST, image_exists}, {EINVAL, errors::invalid_config}});
}

int set_image_error(sd_bus_error* e, int r, const std::string& msg) {
    return set_bus_error(e, image_error(r, msg));
}

void reply_image_error(const HeldCall& call, int r, const std::string& msg) {
    reply_bus_error(call.get(), image_error(r, msg));
}

int refuse_operation(sd_bus_error* e, int r, const std::string& msg) {
    return set_bus_error(e, error_for(r, msg, {{EBUSY, errors::busy}}));
}

int check_aliases(const std::vector<std::string>& aliases, sd_bus_error* e) {
    for (auto& a : aliases)
        if (auto why = image::check_alias_name(a); !why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
    return 0;
}

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

namespace {

// Ends an import or publish: with r >= 0, `info` is committed to the store from `work_dir` (the
// same image already there counts as done), announced with ImageNew and given `aliases`, and
// `call` gets its fingerprint; else `call` gets the error once `work_dir` is gone.
void finish_import(Manager& manager, const image::Store& store, const HeldCall& call,
                   const std::string& work_dir, const std::vector<std::string>& aliases,
                   image::ImageInfo info, int r, std::string why) {
    bool fresh = false;
    if (r >= 0) {
        info.uploaded_usec = now_usec();
        r = store.commit(work_dir, info, why);
        fresh = r >= 0;
        if (r == -EEXIST) // the same image again: it is there, the aliases still apply
            r = 0;
    }
    Manager* mgr = &manager;
    const image::Store* s = &store;
    auto finish = [call, mgr, s, aliases, r, why, info, fresh]() mutable {
        if (r < 0)
            return reply_image_error(call, r, why);
        if (fresh)
            sd_bus_emit_signal(mgr->bus(), "/io/lodge1", "io.lodge1.Manager", "ImageNew", "s",
                               info.fingerprint.c_str());
        for (auto& a : aliases)
            if ((r = s->set_alias(a, info.fingerprint, false, why)) < 0)
                return reply_image_error(call, r, why);
        sd_bus_reply_method_return(call.get(), "s", info.fingerprint.c_str());
    };
    if (fresh)
        finish();
    else
        discard(manager, work_dir, finish);
}

} // namespace

int start_image_worker(sd_bus_message* m, ImageService& svc, sd_bus_error* e, OperationSpec op,
                       const std::vector<std::string>& aliases, MakeImage make, VetImage vet) {
    std::string work_dir, error;
    if (int r = svc.store().prepare(work_dir, error); r < 0)
        return set_bus_error(e, make_error(errors::failed, r, error));
    op.kind = OperationKind::import;
    op.work = [make, work_dir](Worker& w, std::string& why) {
        image::ImageInfo info;
        int r = make(w, work_dir, info, why);
        if (r >= 0)
            w.data = info.to_json();
        return r;
    };
    HeldCall call = hold_call(m);
    Manager* mgr = &svc.manager();
    const image::Store* store = &svc.store();
    op.done = [call, mgr, store, work_dir, aliases, vet,
               what = op.what](const OperationResult& res) {
        image::ImageInfo info;
        std::string why = res.error;
        int r = res.code;
        if (r >= 0 && !image::ImageInfo::from_json(res.data, info)) {
            r = -EIO;
            why = "The worker of the " + what + " gave no image";
        }
        if (r >= 0 && vet)
            r = vet(info, why);
        finish_import(*mgr, *store, call, work_dir, aliases, std::move(info), r, why);
    };
    if (int r = svc.manager().operations().start(std::move(op), error); r < 0) {
        remove_tree(work_dir);
        return refuse_operation(e, r, error);
    }
    return 1;
}

int open_image_files(const std::string& fp, const image::ImageInfo& info, std::vector<Fd>& files,
                     std::string& why) {
    std::vector<std::string> paths{image::Store::image_path(fp)};
    if (info.type == "split")
        paths.push_back(image::Store::rootfs_path(fp));
    for (auto& path : paths) {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) {
            int err = errno;
            why = "Cannot open image " + fp + ": " + std::strerror(err);
            return -err;
        }
        files.push_back(std::move(fd));
    }
    return 0;
}

} // namespace image_bus

using namespace image_bus;

namespace {

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
        r = append_strings(reply, aliases);
    if (r >= 0)
        r = sd_bus_message_append(reply, "bs", info.cached ? 1 : 0, info.source.c_str());
    return r < 0 ? r : sd_bus_message_close_container(reply);
}

int method_list_images(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        auto& store = service(ud).store();
        auto aliases = store.aliases();
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, image_entry_signature, store.list(), [&](auto& info) {
                std::vector<std::string> mine;
                for (auto& [a, fp] : aliases)
                    if (fp == info.fingerprint)
                        mine.push_back(a);
                return append_entry(reply, info, mine);
            });
        });
    });
}

// Resolves `ref` (alias, fingerprint or prefix) to an image of the store, or sets NoSuchImage.
int find_image(const image::Store& store, const char* ref, std::string& fp, image::ImageInfo& info,
               sd_bus_error* e) {
    std::string error;
    if (int r = store.resolve(ref, fp, error); r < 0)
        return set_image_error(e, r, error);
    if (store.get(fp, info) < 0)
        return set_image_error(e, -ENOENT, "No image \"" + std::string(ref) + "\"");
    return 0;
}

int method_get_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*>(m, "s", [&](const char* ref) {
            auto& store = service(ud).store();
            std::string fp;
            image::ImageInfo info;
            if (int r = find_image(store, ref, fp, info, e); r < 0)
                return r;
            return reply_with(m, [&](sd_bus_message* reply) {
                return append_entry(reply, info, store.aliases_of(fp));
            });
        });
    });
}

// ImportImage / ImportImageSplit: the file(s) are copied into a work directory and hashed in
// a worker; the image appears under its fingerprint once whole, then gets its aliases.
int import_image(sd_bus_message* m, ImageService& svc, sd_bus_error* e, bool split) {
    OperationSpec op;
    op.what = "image import";
    for (int i = 0; i < (split ? 2 : 1); i++) {
        Fd fd;
        if (int r = read_fd(m, fd); r < 0)
            return sd_bus_error_set_errno(e, -r);
        // A pipe or socket may be fed slowly, or never: bounded by the time it may go without data.
        op.idle_timeout_usec = std::max(op.idle_timeout_usec, import_idle_timeout_usec(fd));
        op.fds.push_back(std::move(fd));
    }
    std::vector<std::string> aliases;
    if (int r = read_strings(m, aliases); r < 0 || (r = check_aliases(aliases, e)) < 0)
        return r;
    auto ingest = [split](Worker& w, const std::string& work_dir, image::ImageInfo& info,
                          std::string& why) {
        return image::ingest(
            w.fd(0), split ? w.fd(1) : -1, work_dir, info,
            [&w](uint64_t done, uint64_t total) { w.progress(done, total); }, why);
    };
    return start_image_worker(m, svc, e, std::move(op), aliases, ingest, nullptr);
}

int method_import_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] { return import_image(m, service(ud), e, false); });
}

int method_import_image_split(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] { return import_image(m, service(ud), e, true); });
}

int method_delete_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*>(m, "s", [&](const char* ref) {
            ImageService& svc = service(ud);
            std::string fp, trash, error;
            int r = svc.store().resolve(ref, fp, error);
            if (r < 0 || (r = svc.store().retire(fp, trash, error)) < 0)
                return set_image_error(e, r, error);
            discard(svc.manager(), trash, nullptr);
            sd_bus_emit_signal(svc.manager().bus(), "/io/lodge1", "io.lodge1.Manager",
                               "ImageRemoved", "s", fp.c_str());
            return sd_bus_reply_method_return(m, "");
        });
    });
}

int method_create_image_alias(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*, const char*>(
            m, "ss", [&](const char* alias, const char* ref) {
                std::string fp, error;
                int r = service(ud).store().resolve(ref, fp, error);
                if (r < 0 || (r = service(ud).store().set_alias(alias, fp, false, error)) < 0)
                    return set_image_error(e, r, error);
                return sd_bus_reply_method_return(m, "");
            });
    });
}

int method_delete_image_alias(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*>(m, "s", [&](const char* alias) {
            std::string error;
            if (int r = service(ud).store().remove_alias(alias, error); r < 0)
                return set_image_error(e, r, error);
            return sd_bus_reply_method_return(m, "");
        });
    });
}

int method_list_image_aliases(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, "(ss)", service(ud).store().aliases(), [&](auto& alias) {
                return sd_bus_message_append(reply, "(ss)", alias.first.c_str(),
                                             alias.second.c_str());
            });
        });
    });
}

// The image's files, read-only, for `image export` (the CLI writes them where it is told).
int method_open_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*>(m, "s", [&](const char* ref) {
            std::string fp, error;
            image::ImageInfo info;
            if (int r = find_image(service(ud).store(), ref, fp, info, e); r < 0)
                return r;
            std::vector<Fd> files;
            if (int r = open_image_files(fp, info, files, error); r < 0)
                return set_bus_error(e, make_error(errors::failed, r, error));
            return reply_with(m, [&](sd_bus_message* reply) {
                int r = sd_bus_message_append(reply, "ss", fp.c_str(), info.type.c_str());
                return r < 0 ? r : append_array(reply, "h", files, [reply](const Fd& fd) {
                    return sd_bus_message_append(reply, "h", fd.get());
                });
            });
        });
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
    SD_BUS_METHOD_WITH_ARGS("CopyImage", SD_BUS_ARGS("s", image, "as", aliases),
                            SD_BUS_RESULT("s", fingerprint), method_copy_image,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListRemotes", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssbb)", remotes),
                            method_list_remotes, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "AddRemote", SD_BUS_ARGS("s", name, "s", url, "s", protocol, "b", is_public, "s", ca_pem),
        SD_BUS_NO_RESULT, method_add_remote, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RemoveRemote", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                            method_remove_remote, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RenameRemote", SD_BUS_ARGS("s", name, "s", new_name), SD_BUS_NO_RESULT,
                            method_rename_remote, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("ListRemoteImages", SD_BUS_ARGS("s", remote),
                            SD_BUS_RESULT("a(ssssbtas)", images), method_list_remote_images,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS(
        "PublishContainer", SD_BUS_ARGS("s", name, "as", aliases, "s", compression),
        SD_BUS_RESULT("s", fingerprint), method_publish_container, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_PROPERTY("Downloads", "a(ssttt)", property_get_downloads, 0, 0),
    SD_BUS_SIGNAL_WITH_ARGS("ImageDownloadProgress",
                            SD_BUS_ARGS("s", image, "s", stage, "t", done, "t", total, "t", rate),
                            0),
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
    expire();
    sd_event_source* timer = nullptr;
    if (sd_event_add_time_relative(manager_.event(), &timer, CLOCK_MONOTONIC, expiry_check_usec, 0,
                                   on_expiry_timer, this) >= 0)
        expiry_timer_.reset(timer);
    return 0;
}

uint64_t ImageService::cache_expiry_usec() {
    const char* v = std::getenv("LODGE_IMAGE_CACHE_EXPIRY");
    auto secs = v ? parse_uint(v, UINT32_MAX) : std::nullopt;
    return (secs ? *secs : 10ULL * 24 * 3600) * 1000000ULL;
}

void ImageService::expire() {
    uint64_t expiry = cache_expiry_usec();
    if (expiry == 0)
        return;
    uint64_t now = now_usec();
    for (auto& info : store_.list()) {
        uint64_t last = std::max(info.last_used_usec, info.uploaded_usec);
        if (!info.cached || last + expiry > now || in_use_.count(info.fingerprint))
            continue;
        std::string trash, error;
        if (store_.retire(info.fingerprint, trash, error) < 0)
            continue;
        log_info("Image %s (%s) expired: unused for %llu s", info.fingerprint.c_str(),
                 info.source.c_str(), static_cast<unsigned long long>(expiry / 1000000));
        discard(manager_, trash, nullptr);
        sd_bus_emit_signal(manager_.bus(), "/io/lodge1", "io.lodge1.Manager", "ImageRemoved", "s",
                           info.fingerprint.c_str());
    }
}

int ImageService::on_expiry_timer(sd_event_source* s, uint64_t, void* userdata) {
    return guarded([&] {
        static_cast<ImageService*>(userdata)->expire();
        sd_event_source_set_time_relative(s, expiry_check_usec);
        sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
    });
}

} // namespace lodge::daemon
