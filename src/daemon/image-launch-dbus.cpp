// Images into containers and back: CreateContainerFromImage (launch: the image fetched when it
// is a remote's, then unpacked in a worker) and PublishContainer (a stopped container's rootfs
// packed into the store).
#include "daemon/container-dbus.hpp"
#include "daemon/image-methods.hpp"

#include "image/import.hpp"
#include "image/publish.hpp"

#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"

#include "runtime/in-root.hpp"

#include <cerrno>
#include <memory>

namespace lodge::daemon {
namespace image_bus {

int method_create_from_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        const char* requested = nullptr;
        if (int r = sd_bus_message_read(m, "s", &requested); r < 0)
            return r;
        return if_allowed(svc.manager().polkit().verify(m, actions::manage, requested, e), [&] {
            CreateRequest req;
            req.config.name = requested;
            const char* ref = nullptr;
            int r = read_string_map(m, req.config.config);
            if (r < 0 || (r = sd_bus_message_read(m, "s", &ref)) < 0)
                return r;
            Done done = reply_path_when_done(m, svc.manager(), requested);
            if (auto created = svc.create_from(ref, std::move(req), std::move(done)); !created)
                return set_bus_error(e, created.error());
            return 1;
        });
    });
}

namespace {

// What publish packs: the rootfs as it is on disk (shifted or not) and the image.* keys.
image::PublishRequest publish_request(const Container& c, const char* compression) {
    image::PublishRequest req;
    req.rootfs = paths::container_rootfs(c.name());
    for (auto& [k, v] : c.config.config)
        if (k.rfind("image.", 0) == 0)
            req.image_keys[k] = v;
    req.compression = compression;
    req.shift_base = runtime::shifted_base(paths::container_dir(c.name()));
    req.shift_size = c.config.idmap_size();
    return req;
}

int publish(sd_bus_message* m, ImageService& svc, Container& c, const char* compression,
            const std::vector<std::string>& aliases, sd_bus_error* e) {
    image::PublishRequest req = publish_request(c, compression);
    OperationSpec op;
    op.what = "publish of \"" + c.name() + "\"";
    auto pack = [req](Worker& w, const std::string& work_dir, image::ImageInfo& info,
                      std::string& why) {
        return image::publish_rootfs(
            req, work_dir, info,
            [&w](uint64_t done, uint64_t total) { w.progress(done, total, "packing"); }, why);
    };
    Manager* mgr = &svc.manager();
    uint64_t generation = c.generation;
    std::string container = c.name();
    auto vet = [mgr, generation, container](image::ImageInfo& info, std::string& why) {
        // Started meanwhile: the files changed under the worker.
        Container* now = mgr->find(container);
        if (!now || now->generation != generation || now->running()) {
            why = "Container \"" + container + "\" was started or removed during the publish";
            return -EBUSY;
        }
        info.source = "publish:" + container;
        return 0;
    };
    return start_image_worker(m, svc, e, std::move(op), aliases, pack, vet);
}

} // namespace

// publish: a stopped container's rootfs into the store as a unified image.
int method_publish_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        const char* name;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        return if_allowed(svc.manager().polkit().verify(m, actions::manage, name, e), [&] {
            std::vector<std::string> aliases;
            const char* compression;
            int r = read_strings(m, aliases);
            if (r < 0 || (r = sd_bus_message_read(m, "s", &compression)) < 0 ||
                (r = check_aliases(aliases, e)) < 0)
                return r;
            if (auto why = image::check_compression(compression); !why.empty())
                return sd_bus_error_set(e, errors::invalid_config, why.c_str());
            Container* c = svc.manager().find(name);
            if (!c)
                return sd_bus_error_setf(e, errors::no_such_container, "No container \"%s\"", name);
            if (c->running() || svc.manager().starting(name))
                return sd_bus_error_setf(e, errors::already_running,
                                         "Container \"%s\" is running; stop it to publish it",
                                         name);
            return publish(m, svc, *c, compression, aliases, e);
        });
    });
}

} // namespace image_bus

using namespace image_bus;

Result<> ImageService::create_from(const std::string& ref, CreateRequest req, Done done) {
    // What can be refused at once is, before anything is downloaded.
    if (auto e = check_container_name(req.config.name); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    if (manager_.find(req.config.name))
        return make_error(errors::container_exists, EEXIST,
                          "Container \"" + req.config.name + "\" already exists");
    auto shared = std::make_shared<CreateRequest>(std::move(req));
    ensure_local(
        ref, true, [this, shared, done](int r, const std::string& fp, const std::string& why) {
            // No such image here or on the remote; else the fetch failed.
            if (r < 0)
                return done(
                    make_error(r == -ENOENT ? no_such_image : errors::import_failed, r, why));
            create_local(fp, std::move(*shared), done);
        });
    return {};
}

void ImageService::create_local(const std::string& fp, CreateRequest req, Done done) {
    image::ImageInfo info;
    if (store_.get(fp, info) < 0)
        return done(
            make_error(no_such_image, ENOENT, "Image " + fp + " is no longer in the local store"));
    std::string why;
    if (int r = open_image_files(fp, info, req.sources, why); r < 0)
        return done(make_error(errors::import_failed, r, why));
    bool split = info.type == "split";
    req.fill = [split, fp](Worker& w, const std::string& rootfs, KeyMap& keys, std::string& why) {
        ImportResult res;
        auto progress = [&w](const ImportProgress& p) {
            w.progress(p.bytes_done, p.bytes_total, "unpacking");
        };
        int r = split ? import_split_image(w.fd(0), w.fd(1), rootfs, res, progress, why)
                      : import_tarball(w.fd(0), rootfs, res, progress, why);
        keys = res.image_keys;
        keys["volatile.base_image"] = fp;
        return r;
    };
    const image::Store* store = &store_;
    // Not expired while a container is made from it.
    in_use_[fp]++;
    auto release = [this, fp] {
        if (--in_use_[fp] <= 0)
            in_use_.erase(fp);
    };
    auto created = manager_.create(std::move(req), [done, store, fp, release](const Result<>& r) {
        release();
        image::ImageInfo used;
        if (r && store->get(fp, used) == 0) {
            used.last_used_usec = now_usec();
            store->update(used);
        }
        done(r);
    });
    if (!created) {
        release();
        done(created.error());
    }
}

} // namespace lodge::daemon
