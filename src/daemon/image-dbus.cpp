#include "daemon/image-dbus.hpp"

#include "daemon/container-dbus.hpp"

#include "image/import.hpp"
#include "image/publish.hpp"
#include "image/remotes.hpp"
#include "image/simplestreams.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"

#include "runtime/in-root.hpp"
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
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

// "remote:alias" -> remote, alias; no known remote prefix: remote "".
void split_ref(const std::string& ref, std::string& remote, std::string& name) {
    auto colon = ref.find(':');
    remote.clear();
    name = ref;
    if (colon == std::string::npos)
        return;
    remote = ref.substr(0, colon);
    name = ref.substr(colon + 1);
}

unsigned stall_seconds() {
    const char* v = std::getenv("LODGE_DOWNLOAD_STALL_TIMEOUT");
    auto n = v ? parse_uint(v, 86400) : std::nullopt;
    return n && *n > 0 ? static_cast<unsigned>(*n) : 60;
}

image::HttpOptions http_options(const image::Remote& remote) {
    image::HttpOptions o;
    o.ca_pem = remote.ca_pem;
    o.stall_seconds = stall_seconds();
    return o;
}

// As lodged's container imports (LODGE_IMPORT_IDLE_TIMEOUT, default 600 s).
uint64_t import_idle_timeout_usec() {
    const char* v = std::getenv("LODGE_IMPORT_IDLE_TIMEOUT");
    auto secs = v ? parse_uint(v, 86400) : std::nullopt;
    return (secs && *secs > 0 ? *secs : 600) * 1000000ULL;
}

// Refuses a call with the bus error chosen here, where the failure is understood.
int refuse(sd_bus_error* e, const char* bus_name, int r, const std::string& msg) {
    return set_bus_error(e, make_error(bus_name, r, msg));
}

// An operation that could not be queued: Busy when lodged's work queue is full.
int refuse_operation(sd_bus_error* e, int r, const std::string& msg) {
    return refuse(e, r == -EBUSY ? errors::busy : errors::failed, r, msg);
}

// The store's failures: a missing image or alias, an existing one, a bad name.
int image_error(sd_bus_error* e, int r, const std::string& msg) {
    const char* name = r == -ENOENT   ? no_such_image
                       : r == -EEXIST ? image_exists
                       : r == -EINVAL ? errors::invalid_config
                                      : errors::failed;
    return refuse(e, name, r, msg);
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
        return refuse(e, errors::failed, r, error);
    OperationSpec op;
    op.what = "image import";
    op.kind = OperationKind::import;
    // A pipe or socket may be fed slowly, or never: bounded by the time it may go without data.
    for (auto& fd : fds) {
        struct stat st {};
        if (::fstat(fd.get(), &st) == 0 && !S_ISREG(st.st_mode))
            op.idle_timeout_usec = import_idle_timeout_usec();
    }
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
        return refuse_operation(e, r, error);
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
            return refuse(e, errors::failed, -errno,
                          "Cannot open image " + fp + ": " + std::strerror(errno));
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
        Done done = [call, mgr, name](const Result<>& result) {
            if (!result)
                return reply_bus_error(call.get(), result.error());
            Container* c = mgr->find(name);
            sd_bus_reply_method_return(call.get(), "o", c ? c->object_path().c_str() : "/");
        };
        if (auto r = svc.create_from(ref, std::move(req), std::move(done)); !r)
            return set_bus_error(e, r.error());
        return 1;
    });
}

int method_list_remotes(sd_bus_message* m, void*, sd_bus_error*) {
    return guarded([&] {
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        r = sd_bus_message_open_container(reply, 'a', "(sssbb)");
        for (auto& [name, remote] : image::load_remotes())
            if (r >= 0)
                r = sd_bus_message_append(reply, "(sssbb)", name.c_str(), remote.url.c_str(),
                                          remote.protocol.c_str(), remote.is_public ? 1 : 0,
                                          remote.ca_pem.empty() ? 0 : 1);
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_add_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        if (int r = service(ud).manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char *name, *url, *protocol, *ca;
        int is_public = 0;
        if (int r = sd_bus_message_read(m, "sssbs", &name, &url, &protocol, &is_public, &ca); r < 0)
            return r;
        std::string why = image::check_remote_name(name);
        if (why.empty())
            why = image::check_remote_url(url);
        if (why.empty() && std::string(protocol) != "simplestreams" &&
            std::string(protocol) != "lxd")
            why = "Unknown protocol \"" + std::string(protocol) + "\": simplestreams or lxd";
        if (why.empty() && *ca && std::strstr(ca, "-----BEGIN CERTIFICATE-----") == nullptr)
            why = "The CA file holds no PEM certificate";
        if (!why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        auto remotes = image::load_remotes();
        if (remotes.count(name))
            return sd_bus_error_setf(e, "io.lodge1.RemoteExists", "Remote \"%s\" already exists",
                                     name);
        remotes[name] = image::Remote{name, url, protocol, is_public != 0, ca};
        std::string error;
        if (int r = image::save_remotes(remotes, error); r < 0)
            return refuse(e, errors::failed, r, error);
        return sd_bus_reply_method_return(m, "");
    });
}

int method_remove_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        if (int r = service(ud).manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char* name;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        auto remotes = image::load_remotes();
        if (remotes.erase(name) == 0)
            return sd_bus_error_setf(e, "io.lodge1.NoSuchRemote", "No remote \"%s\"", name);
        std::string error;
        if (int r = image::save_remotes(remotes, error); r < 0)
            return refuse(e, errors::failed, r, error);
        return sd_bus_reply_method_return(m, "");
    });
}

int method_rename_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        if (int r = service(ud).manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char *from, *to;
        if (int r = sd_bus_message_read(m, "ss", &from, &to); r < 0)
            return r;
        if (auto why = image::check_remote_name(to); !why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        auto remotes = image::load_remotes();
        auto it = remotes.find(from);
        if (it == remotes.end())
            return sd_bus_error_setf(e, "io.lodge1.NoSuchRemote", "No remote \"%s\"", from);
        if (remotes.count(to))
            return sd_bus_error_setf(e, "io.lodge1.RemoteExists", "Remote \"%s\" already exists",
                                     to);
        image::Remote moved = it->second;
        moved.name = to;
        remotes.erase(it);
        remotes[to] = moved;
        std::string error;
        if (int r = image::save_remotes(remotes, error); r < 0)
            return refuse(e, errors::failed, r, error);
        return sd_bus_reply_method_return(m, "");
    });
}

// Remote catalogs being read now (ListRemoteImages), and the most at once.
unsigned catalog_reads = 0;
constexpr unsigned max_catalog_reads = 4;

// The images a remote offers: its catalog is read in a worker.
int method_list_remote_images(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        const char* name;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        auto remotes = image::load_remotes();
        auto it = remotes.find(name);
        if (it == remotes.end())
            return sd_bus_error_setf(e, "io.lodge1.NoSuchRemote", "No remote \"%s\"", name);
        // Anyone may ask, so a few at once: more would let one caller fill lodged's work queue.
        if (catalog_reads >= max_catalog_reads)
            return sd_bus_error_set(e, errors::busy,
                                    "Too many remote catalogs are being read; try again later");
        if (it->second.protocol != "simplestreams")
            return sd_bus_error_setf(e, SD_BUS_ERROR_NOT_SUPPORTED,
                                     "Remote \"%s\" speaks %s; lodge reads simplestreams only",
                                     name, it->second.protocol.c_str());
        OperationSpec op;
        op.what = std::string("catalog of ") + name;
        op.kind = OperationKind::cleanup;
        image::Remote remote = it->second;
        op.idle_timeout_usec = (stall_seconds() + 60) * 1000000ULL;
        op.work = [remote](Worker& w, std::string& why) {
            std::vector<image::RemoteImage> images;
            int r = image::list_remote(remote.url, http_options(remote), images, why);
            if (r < 0)
                return r;
            nlohmann::json list = nlohmann::json::array();
            for (auto& img : images)
                list.push_back({{"fingerprint", img.fingerprint},
                                {"architecture", img.architecture},
                                {"description", img.description},
                                {"type", img.rootfs.ftype.empty() ? "unified" : "split"},
                                {"size", img.metadata.size + img.rootfs.size},
                                {"aliases", img.aliases}});
            w.data = {{"images", list}};
            return 0;
        };
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        op.done = [call](const OperationResult& res) {
            catalog_reads--;
            if (res.code < 0)
                return reply_image_error(call, res.code, res.error);
            sd_bus_message* reply = nullptr;
            if (sd_bus_message_new_method_return(call.get(), &reply) < 0)
                return;
            MessagePtr owned(reply);
            int r = sd_bus_message_open_container(reply, 'a', "(ssssbtas)");
            for (auto& img : res.data.value("images", nlohmann::json::array())) {
                if (r < 0)
                    break;
                r = sd_bus_message_open_container(reply, 'r', "ssssbtas");
                if (r >= 0)
                    r = sd_bus_message_append(
                        reply, "ssssbt", img.value("fingerprint", "").c_str(),
                        img.value("architecture", "").c_str(), img.value("description", "").c_str(),
                        img.value("type", "").c_str(), 0, img.value("size", uint64_t{0}));
                if (r >= 0)
                    r = sd_bus_message_open_container(reply, 'a', "s");
                for (auto& a : img.value("aliases", nlohmann::json::array()))
                    if (r >= 0 && a.is_string())
                        r = sd_bus_message_append(reply, "s", a.get<std::string>().c_str());
                if (r >= 0)
                    r = sd_bus_message_close_container(reply);
                if (r >= 0)
                    r = sd_bus_message_close_container(reply);
            }
            if (r >= 0)
                r = sd_bus_message_close_container(reply);
            if (r >= 0)
                sd_bus_send(nullptr, reply, nullptr);
        };
        std::string error;
        catalog_reads++;
        if (int r = svc.manager().operations().start(std::move(op), error); r < 0) {
            catalog_reads--;
            return refuse_operation(e, r, error);
        }
        return 1;
    });
}

// image copy REMOTE:ALIAS local: — kept (not cached), with the given aliases.
int method_copy_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        if (int r = svc.manager().polkit().verify(m, actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const char* ref;
        if (int r = sd_bus_message_read(m, "s", &ref); r < 0)
            return r;
        std::vector<std::string> aliases;
        if (int r = read_strings(m, aliases); r < 0)
            return r;
        for (auto& a : aliases)
            if (auto why = image::check_alias_name(a); !why.empty())
                return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        const image::Store* store = &svc.store();
        svc.ensure_local(
            ref, false,
            [call, store, aliases](int r, const std::string& fp, const std::string& why) {
                if (r < 0)
                    return reply_image_error(call, r, why);
                std::string error;
                for (auto& a : aliases)
                    if ((r = store->set_alias(a, fp, false, error)) < 0)
                        return reply_image_error(call, r, error);
                sd_bus_reply_method_return(call.get(), "s", fp.c_str());
            });
        return 1;
    });
}

// publish: a stopped container's rootfs into the store as a unified image.
int method_publish_container(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageService& svc = service(ud);
        const char* name;
        if (int r = sd_bus_message_read(m, "s", &name); r < 0)
            return r;
        if (int r = svc.manager().polkit().verify(m, actions::manage, name, e); r <= 0)
            return r == 0 ? 1 : r;
        std::vector<std::string> aliases;
        const char* compression;
        if (int r = read_strings(m, aliases); r < 0)
            return r;
        if (int r = sd_bus_message_read(m, "s", &compression); r < 0)
            return r;
        for (auto& a : aliases)
            if (auto why = image::check_alias_name(a); !why.empty())
                return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        if (auto why = image::check_compression(compression); !why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        Container* c = svc.manager().find(name);
        if (!c)
            return sd_bus_error_setf(e, errors::no_such_container, "No container \"%s\"", name);
        if (c->running() || svc.manager().starting(name))
            return sd_bus_error_setf(e, errors::already_running,
                                     "Container \"%s\" is running; stop it to publish it", name);
        image::PublishRequest req;
        req.rootfs = paths::container_rootfs(name);
        for (auto& [k, v] : c->config.config)
            if (k.rfind("image.", 0) == 0)
                req.image_keys[k] = v;
        req.compression = compression;
        req.shift_base = runtime::shifted_base(paths::container_dir(name));
        req.shift_size = c->config.idmap_size();
        std::string work_dir, error;
        if (int r = svc.store().prepare(work_dir, error); r < 0)
            return refuse(e, errors::failed, r, error);
        OperationSpec op;
        op.what = std::string("publish of \"") + name + "\"";
        op.kind = OperationKind::import;
        op.work = [req, work_dir](Worker& w, std::string& why) {
            image::ImageInfo info;
            int r = image::publish_rootfs(
                req, work_dir, info,
                [&w](uint64_t done, uint64_t total) { w.progress(done, total, "packing"); }, why);
            if (r >= 0)
                w.data = info.to_json();
            return r;
        };
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        Manager* mgr = &svc.manager();
        const image::Store* store = &svc.store();
        uint64_t generation = c->generation;
        std::string container = name;
        op.done = [call, mgr, store, work_dir, aliases, generation,
                   container](const OperationResult& res) {
            image::ImageInfo info;
            std::string why = res.error;
            int r = res.code;
            if (r >= 0 && !image::ImageInfo::from_json(res.data, info)) {
                r = -EIO;
                why = "The publish worker gave no image";
            }
            // Started meanwhile: the files changed under the worker.
            Container* now = mgr->find(container);
            if (r >= 0 && (!now || now->generation != generation || now->running())) {
                r = -EBUSY;
                why = "Container \"" + container + "\" was started or removed during the publish";
            }
            bool fresh = false;
            if (r >= 0) {
                info.uploaded_usec = now_usec();
                info.source = "publish:" + container;
                r = store->commit(work_dir, info, why);
                fresh = r >= 0;
                if (r == -EEXIST)
                    r = 0;
            }
            auto finish = [call, mgr, store, aliases, r, why, info, fresh]() mutable {
                if (r < 0)
                    return reply_image_error(call, r, why);
                if (fresh)
                    sd_bus_emit_signal(mgr->bus(), "/io/lodge1", "io.lodge1.Manager", "ImageNew",
                                       "s", info.fingerprint.c_str());
                for (auto& a : aliases)
                    if ((r = store->set_alias(a, info.fingerprint, false, why)) < 0)
                        return reply_image_error(call, r, why);
                sd_bus_reply_method_return(call.get(), "s", info.fingerprint.c_str());
            };
            if (fresh)
                finish();
            else
                discard(*mgr, work_dir, finish);
        };
        if (int r = svc.manager().operations().start(std::move(op), error); r < 0) {
            remove_tree(work_dir);
            return refuse_operation(e, r, error);
        }
        return 1;
    });
}

int property_get_downloads(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                           void* ud, sd_bus_error*) {
    int r = sd_bus_message_open_container(reply, 'a', "(ssttt)");
    for (auto& [key, d] : service(ud).downloads())
        if (r >= 0)
            r = sd_bus_message_append(reply, "(ssttt)", key.c_str(), d.stage.c_str(), d.done,
                                      d.total, d.rate);
    return r < 0 ? r : sd_bus_message_close_container(reply);
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
    Fd image(::open(image::Store::image_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!image)
        return done(make_error(errors::import_failed, errno,
                               "Cannot open image " + fp + ": " + std::strerror(errno)));
    req.sources.push_back(std::move(image));
    bool split = info.type == "split";
    if (split) {
        Fd rootfs(::open(image::Store::rootfs_path(fp).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!rootfs)
            return done(make_error(errors::import_failed, errno,
                                   "Cannot open image " + fp + ": " + std::strerror(errno)));
        req.sources.push_back(std::move(rootfs));
    }
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

void ImageService::ensure_local(const std::string& ref, bool cached, Fetched then, bool refresh) {
    std::string remote_name, name, fp, error;
    split_ref(ref, remote_name, name);
    if (remote_name.empty() || remote_name == "local") {
        int r = store_.resolve(name, fp, error);
        return then(r, fp, error);
    }
    auto remotes = image::load_remotes();
    auto it = remotes.find(remote_name);
    if (it == remotes.end())
        return then(-ENOENT, "", "No remote \"" + remote_name + "\" (see lodgectl remote list)");
    image::Remote remote = it->second;
    std::string key = remote_name + ":" + name;
    // Fetched before under this name: served from the store, the remote is not asked.
    image::ImageInfo newest;
    for (auto& info : store_.list())
        if (info.source == key && info.uploaded_usec >= newest.uploaded_usec)
            newest = info;
    if (!newest.fingerprint.empty() && !refresh) {
        if (!cached && newest.cached) {
            newest.cached = false;
            store_.update(newest);
        }
        return then(0, newest.fingerprint, "");
    }
    if (remote.protocol != "simplestreams")
        return then(-EOPNOTSUPP, "",
                    "Remote \"" + remote_name + "\" speaks the " + remote.protocol +
                        " protocol, which lodge cannot download from yet (simplestreams only)");
    if (auto d = downloads_.find(key); d != downloads_.end()) {
        d->second.waiters.push_back(std::move(then));
        return;
    }
    std::string work_dir;
    if (int r = store_.prepare(work_dir, error); r < 0)
        return then(r, "", error);
    OperationSpec op;
    op.what = "download of " + key;
    op.kind = OperationKind::import;
    // A stalled transfer fails in curl first; this is the backstop for a stuck worker.
    op.idle_timeout_usec = (stall_seconds() + 60) * 1000000ULL;
    op.work = [remote, name, work_dir](Worker& w, std::string& why) {
        auto options = http_options(remote);
        w.progress(0, 0, "index");
        std::vector<image::RemoteImage> images;
        int r = image::list_remote(remote.url, options, images, why);
        if (r < 0)
            return r;
        const image::RemoteImage* img =
            image::find_remote_image(images, name, image::host_stream_arch(), why);
        if (!img)
            return -ENOENT;
        image::ImageInfo info;
        r = image::download_remote(
            remote.url, options, *img, work_dir, info,
            [&w](const std::string& stage, uint64_t done, uint64_t total) {
                w.progress(done, total, stage);
            },
            why);
        if (r >= 0)
            w.data = info.to_json();
        return r;
    };
    op.on_progress = [this, key](uint64_t done, uint64_t total, const std::string& stage) {
        progress(key, done, total, stage);
    };
    op.done = [this, key, cached, work_dir](const OperationResult& res) {
        downloaded(key, cached, res, work_dir);
    };
    Download& d = downloads_[key];
    d.waiters.push_back(std::move(then));
    sd_event_now(manager_.event(), CLOCK_MONOTONIC, &d.started_usec);
    d.stage_started_usec = d.started_usec;
    if (int r = manager_.operations().start(std::move(op), error); r < 0) {
        auto waiters = std::move(d.waiters);
        downloads_.erase(key);
        remove_tree(work_dir);
        for (auto& w : waiters)
            w(r, "", error);
    }
}

void ImageService::progress(const std::string& key, uint64_t done, uint64_t total,
                            const std::string& stage) {
    auto it = downloads_.find(key);
    if (it == downloads_.end())
        return;
    Download& d = it->second;
    uint64_t now = 0;
    sd_event_now(manager_.event(), CLOCK_MONOTONIC, &now);
    if (stage != d.stage) {
        d.stage = stage;
        d.stage_started_usec = now;
    }
    d.done = done;
    d.total = total;
    uint64_t elapsed = now > d.stage_started_usec ? now - d.stage_started_usec : 0;
    d.rate = elapsed > 0 ? done * 1000000 / elapsed : 0;
    // At most a few signals a second, and always the end of a stage.
    if (now - d.last_signal_usec < 200000 && !(total && done == total))
        return;
    d.last_signal_usec = now;
    sd_bus_emit_signal(manager_.bus(), "/io/lodge1", "io.lodge1.Manager", "ImageDownloadProgress",
                       "ssttt", key.c_str(), d.stage.c_str(), d.done, d.total, d.rate);
}

void ImageService::downloaded(const std::string& key, bool cached, const OperationResult& res,
                              const std::string& work_dir) {
    std::vector<Fetched> waiters;
    if (auto it = downloads_.find(key); it != downloads_.end()) {
        waiters = std::move(it->second.waiters);
        downloads_.erase(it);
    }
    image::ImageInfo info;
    std::string why = res.error;
    int r = res.code;
    if (r >= 0 && !image::ImageInfo::from_json(res.data, info)) {
        r = -EIO;
        why = "The download worker gave no image";
    }
    bool fresh = false;
    if (r >= 0) {
        info.uploaded_usec = now_usec();
        info.cached = cached;
        info.source = key;
        r = store_.commit(work_dir, info, why);
        fresh = r >= 0;
        if (r == -EEXIST) {
            // Imported meanwhile under another name: remember where it comes from too.
            image::ImageInfo there;
            if (store_.get(info.fingerprint, there) == 0 && there.source.empty()) {
                there.source = key;
                store_.update(there);
            }
            r = 0;
        }
    }
    if (r < 0)
        why = "Cannot fetch " + key + ": " + why;
    else if (fresh)
        sd_bus_emit_signal(manager_.bus(), "/io/lodge1", "io.lodge1.Manager", "ImageNew", "s",
                           info.fingerprint.c_str());
    auto tell = [waiters = std::move(waiters), r, fp = info.fingerprint, why] {
        for (auto& w : waiters)
            w(r, fp, why);
    };
    // The callers hear of a failure once nothing of it is left on disk.
    if (fresh)
        tell();
    else
        discard(manager_, work_dir, tell);
}

} // namespace lodge::daemon
