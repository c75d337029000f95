// Image servers on the bus: the remotes (remotes.json), their catalogs, `image copy`, and the
// downloads every launch from a remote shares (ImageService::ensure_local).
#include "daemon/image-methods.hpp"

#include "image/remotes.hpp"
#include "image/simplestreams.hpp"

#include "common/fileio.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

namespace lodge::daemon {
namespace image_bus {

constexpr const char* no_such_remote = "io.lodge1.NoSuchRemote";
constexpr const char* remote_exists = "io.lodge1.RemoteExists";

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

namespace {

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

// What a remote named in a call may not be: unknown (`must_exist`) or taken (!`must_exist`).
int check_remote(const std::map<std::string, image::Remote>& remotes, const char* name,
                 bool must_exist, sd_bus_error* e) {
    bool exists = remotes.count(name) != 0;
    if (must_exist && !exists)
        return sd_bus_error_setf(e, no_such_remote, "No remote \"%s\"", name);
    if (!must_exist && exists)
        return sd_bus_error_setf(e, remote_exists, "Remote \"%s\" already exists", name);
    return 0;
}

// Saves `remotes` and replies, or sets the error.
int save_and_reply(sd_bus_message* m, const std::map<std::string, image::Remote>& remotes,
                   sd_bus_error* e) {
    std::string error;
    if (int r = image::save_remotes(remotes, error); r < 0)
        return set_bus_error(e, make_error(errors::failed, r, error));
    return sd_bus_reply_method_return(m, "");
}

std::string check_new_remote(const char* name, const char* url, const std::string& protocol,
                             const char* ca) {
    std::string why = image::check_remote_name(name);
    if (why.empty())
        why = image::check_remote_url(url);
    if (why.empty() && protocol != "simplestreams" && protocol != "lxd")
        why = "Unknown protocol \"" + protocol + "\": simplestreams or lxd";
    if (why.empty() && *ca && std::strstr(ca, "-----BEGIN CERTIFICATE-----") == nullptr)
        why = "The CA file holds no PEM certificate";
    return why;
}

// Remote catalogs being read now (ListRemoteImages), and the most at once.
unsigned catalog_reads = 0;
constexpr unsigned max_catalog_reads = 4;

// A catalog as the worker hands it back (OperationResult::data).
nlohmann::json catalog_json(const std::vector<image::RemoteImage>& images) {
    nlohmann::json list = nlohmann::json::array();
    for (auto& img : images)
        list.push_back({{"fingerprint", img.fingerprint},
                        {"architecture", img.architecture},
                        {"description", img.description},
                        {"type", img.rootfs.ftype.empty() ? "unified" : "split"},
                        {"size", img.metadata.size + img.rootfs.size},
                        {"aliases", img.aliases}});
    return {{"images", list}};
}

int append_catalog(sd_bus_message* reply, const nlohmann::json& data) {
    return append_array(
        reply, "(ssssbtas)", data.value("images", nlohmann::json::array()), [&](auto& img) {
            int r = sd_bus_message_open_container(reply, 'r', "ssssbtas");
            if (r >= 0)
                r = sd_bus_message_append(
                    reply, "ssssbt", img.value("fingerprint", "").c_str(),
                    img.value("architecture", "").c_str(), img.value("description", "").c_str(),
                    img.value("type", "").c_str(), 0, img.value("size", uint64_t{0}));
            std::vector<std::string> aliases;
            for (auto& a : img.value("aliases", nlohmann::json::array()))
                if (a.is_string())
                    aliases.push_back(a.template get<std::string>());
            if (r >= 0)
                r = append_strings(reply, aliases);
            return r < 0 ? r : sd_bus_message_close_container(reply);
        });
}

} // namespace

int method_list_remotes(sd_bus_message* m, void*, sd_bus_error*) {
    return guarded([&] {
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, "(sssbb)", image::load_remotes(), [&](auto& entry) {
                auto& [name, remote] = entry;
                return sd_bus_message_append(reply, "(sssbb)", name.c_str(), remote.url.c_str(),
                                             remote.protocol.c_str(), remote.is_public ? 1 : 0,
                                             remote.ca_pem.empty() ? 0 : 1);
            });
        });
    });
}

int method_add_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        const char *name, *url, *protocol, *ca;
        int is_public = 0;
        if (int r = sd_bus_message_read(m, "sssbs", &name, &url, &protocol, &is_public, &ca); r < 0)
            return r;
        if (auto why = check_new_remote(name, url, protocol, ca); !why.empty())
            return sd_bus_error_set(e, errors::invalid_config, why.c_str());
        auto remotes = image::load_remotes();
        if (int r = check_remote(remotes, name, false, e); r < 0)
            return r;
        remotes[name] = image::Remote{name, url, protocol, is_public != 0, ca};
        return save_and_reply(m, remotes, e);
    });
}

int method_remove_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*>(m, "s", [&](const char* name) {
            auto remotes = image::load_remotes();
            if (int r = check_remote(remotes, name, true, e); r < 0)
                return r;
            remotes.erase(name);
            return save_and_reply(m, remotes, e);
        });
    });
}

int method_rename_remote(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        return with_args<const char*, const char*>(m, "ss", [&](const char* from, const char* to) {
            if (auto why = image::check_remote_name(to); !why.empty())
                return sd_bus_error_set(e, errors::invalid_config, why.c_str());
            auto remotes = image::load_remotes();
            int r = check_remote(remotes, from, true, e);
            if (r < 0 || (r = check_remote(remotes, to, false, e)) < 0)
                return r;
            image::Remote moved = remotes[from];
            moved.name = to;
            remotes.erase(from);
            remotes[to] = moved;
            return save_and_reply(m, remotes, e);
        });
    });
}

// The images a remote offers: its catalog is read in a worker.
int method_list_remote_images(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        return with_args<const char*>(m, "s", [&](const char* name) {
            auto remotes = image::load_remotes();
            if (int r = check_remote(remotes, name, true, e); r < 0)
                return r;
            image::Remote remote = remotes[name];
            // Anyone may ask, so a few at once: more would let one caller fill lodged's queue.
            if (catalog_reads >= max_catalog_reads)
                return sd_bus_error_set(e, errors::busy,
                                        "Too many remote catalogs are being read; try again later");
            if (remote.protocol != "simplestreams")
                return sd_bus_error_setf(e, SD_BUS_ERROR_NOT_SUPPORTED,
                                         "Remote \"%s\" speaks %s; lodge reads simplestreams only",
                                         name, remote.protocol.c_str());
            OperationSpec op;
            op.what = std::string("catalog of ") + name;
            op.kind = OperationKind::cleanup;
            op.idle_timeout_usec = (stall_seconds() + 60) * 1000000ULL;
            op.work = [remote](Worker& w, std::string& why) {
                std::vector<image::RemoteImage> images;
                int r = image::list_remote(remote.url, http_options(remote), images, why);
                if (r >= 0)
                    w.data = catalog_json(images);
                return r < 0 ? r : 0;
            };
            HeldCall call = hold_call(m);
            op.done = [call](const OperationResult& res) {
                catalog_reads--;
                if (res.code < 0)
                    return reply_image_error(call, res.code, res.error);
                reply_with(call.get(),
                           [&](sd_bus_message* reply) { return append_catalog(reply, res.data); });
            };
            std::string error;
            catalog_reads++;
            if (int r = service(ud).manager().operations().start(std::move(op), error); r < 0) {
                catalog_reads--;
                return refuse_operation(e, r, error);
            }
            return 1;
        });
    });
}

// image copy REMOTE:ALIAS local: — kept (not cached), with the given aliases.
int method_copy_image(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return when_managing(m, ud, e, [&] {
        const char* ref;
        std::vector<std::string> aliases;
        int r = sd_bus_message_read(m, "s", &ref);
        if (r < 0 || (r = read_strings(m, aliases)) < 0 || (r = check_aliases(aliases, e)) < 0)
            return r;
        HeldCall call = hold_call(m);
        const image::Store* store = &service(ud).store();
        service(ud).ensure_local(
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

int property_get_downloads(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                           void* ud, sd_bus_error*) {
    return append_array(reply, "(ssttt)", service(ud).downloads(), [reply](auto& entry) {
        auto& [key, d] = entry;
        return sd_bus_message_append(reply, "(ssttt)", key.c_str(), d.stage.c_str(), d.done,
                                     d.total, d.rate);
    });
}

} // namespace image_bus

using namespace image_bus;

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
        image::RemoteImage img;
        if (int r = image::lookup_remote(remote.url, options, name, img, why); r < 0)
            return r;
        image::ImageInfo info;
        int r = image::download_remote(
            remote.url, options, img, work_dir, info,
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
