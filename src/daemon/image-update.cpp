// Auto-update images and lodged's server keys; see image-update.hpp.
#include "daemon/image-update.hpp"

#include "daemon/container-dbus.hpp"
#include "daemon/image-methods.hpp"
#include "image/remotes.hpp"
#include "image/simplestreams.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

namespace lodge::daemon {
namespace {

constexpr const char* interval_key = "images.auto_update_interval";
constexpr uint64_t default_interval_hours = 6; // LXD's

std::string server_config_path() {
    return paths::state_dir() + "/server.json";
}

int save_server_config(const KeyMap& keys) {
    return write_file_atomic(server_config_path(), nlohmann::json(keys).dump(2) + "\n", 0600);
}

uint64_t interval_usec() {
    KeyMap keys = load_server_config();
    auto it = keys.find(interval_key);
    auto hours = it == keys.end() ? std::optional<uint64_t>(default_interval_hours)
                                  : parse_uint(it->second, 8760);
    return hours ? *hours * 3600ULL * 1000000ULL : default_interval_hours * 3600ULL * 1000000ULL;
}

void split_ref(const std::string& ref, std::string& remote, std::string& name) {
    auto colon = ref.find(':');
    remote = colon == std::string::npos ? "" : ref.substr(0, colon);
    name = colon == std::string::npos ? ref : ref.substr(colon + 1);
}

ImageUpdater& updater(void* ud) {
    return *static_cast<ImageUpdater*>(ud);
}

// SetImageAutoUpdate(image, on): `image` is REMOTE:ALIAS (the newest image fetched under that
// name) or an image of the store that came from a remote.
int method_set_auto_update(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageUpdater& u = updater(ud);
        const char* ref = nullptr;
        int on = 0;
        if (int r = sd_bus_message_read(m, "sb", &ref, &on); r < 0)
            return r;
        if (int r = authorize(m, u.manager(), actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        const image::Store& store = u.images().store();
        image::ImageInfo found;
        for (auto& info : store.list())
            if (info.source == ref && info.uploaded_usec >= found.uploaded_usec)
                found = info;
        if (found.fingerprint.empty()) {
            std::string remote, name, fp, error;
            split_ref(ref, remote, name);
            if (int r = store.resolve(remote == "local" ? name : std::string(ref), fp, error);
                r < 0 || store.get(fp, found) < 0)
                return sd_bus_error_setf(e, "io.lodge1.NoSuchImage", "No image \"%s\"", ref);
        }
        if (found.source.empty())
            return sd_bus_error_setf(e, errors::invalid_config,
                                     "Image %s was not downloaded from a remote: it has nothing "
                                     "to follow",
                                     found.fingerprint.c_str());
        found.auto_update = on != 0;
        if (int r = store.update(found); r < 0)
            return sd_bus_error_set_errno(e, -r);
        return sd_bus_reply_method_return(m, "s", found.fingerprint.c_str());
    });
}

// RefreshImages(): the timer's work, now (for tests and impatient admins).
int method_refresh(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageUpdater& u = updater(ud);
        if (int r = authorize(m, u.manager(), actions::manage, "", e); r <= 0)
            return r == 0 ? 1 : r;
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        u.refresh([call](const ImageUpdater::Refreshed& done) {
            sd_bus_message* reply = nullptr;
            if (sd_bus_message_new_method_return(call.get(), &reply) < 0)
                return;
            MessagePtr owned(reply);
            int r = sd_bus_message_open_container(reply, 'a', "(ss)");
            for (auto& [from, to] : done)
                if (r >= 0)
                    r = sd_bus_message_append(reply, "(ss)", from.c_str(), to.c_str());
            if (r >= 0)
                r = sd_bus_message_close_container(reply);
            if (r >= 0)
                sd_bus_send(nullptr, reply, nullptr);
        });
        return 1;
    });
}

int method_get_server_config(sd_bus_message* m, void*, sd_bus_error*) {
    return guarded([&] {
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        if ((r = append_string_map(reply, load_server_config())) < 0)
            return r;
        return sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_set_server_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        ImageUpdater& u = updater(ud);
        KeyMap set;
        if (int r = read_string_map(m, set); r < 0)
            return r;
        std::vector<std::string> unset;
        if (int r = sd_bus_message_enter_container(m, 'a', "s"); r < 0)
            return r;
        const char* k = nullptr;
        int r;
        while ((r = sd_bus_message_read(m, "s", &k)) > 0)
            unset.push_back(k);
        if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
            return r;
        if ((r = authorize(m, u.manager(), actions::manage, "", e)) <= 0)
            return r == 0 ? 1 : r;
        KeyMap keys = load_server_config();
        for (auto& [key, value] : set) {
            if (auto why = check_server_key(key, value); !why.empty())
                return sd_bus_error_set(e, errors::invalid_config, why.c_str());
            keys[key] = value;
        }
        for (auto& key : unset)
            keys.erase(key);
        if ((r = save_server_config(keys)) < 0)
            return sd_bus_error_set_errno(e, -r);
        u.rearm();
        return sd_bus_reply_method_return(m, "");
    });
}

const sd_bus_vtable update_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("SetImageAutoUpdate", SD_BUS_ARGS("s", image, "b", auto_update),
                            SD_BUS_RESULT("s", fingerprint), method_set_auto_update,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("RefreshImages", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ss)", replaced),
                            method_refresh, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetServerConfig", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{ss}", config),
                            method_get_server_config, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("SetServerConfig", SD_BUS_ARGS("a{ss}", set, "as", unset),
                            SD_BUS_NO_RESULT, method_set_server_config, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

KeyMap load_server_config() {
    std::string text;
    if (read_file(server_config_path(), text) < 0)
        return {};
    auto j = nlohmann::json::parse(text, nullptr, false);
    KeyMap out;
    if (j.is_object())
        for (auto& [k, v] : j.items())
            if (v.is_string())
                out[k] = v.get<std::string>();
    return out;
}

std::string check_server_key(const std::string& key, const std::string& value) {
    if (key == interval_key)
        return parse_uint(value, 8760) ? ""
                                       : "Invalid value for \"" + key +
                                             "\": hours between refreshes, 0 to 8760 (0: never)";
    return "Unknown server key \"" + key + "\" (lodge knows " + interval_key + ")";
}

int ImageUpdater::start(sd_bus* bus) {
    int r = sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager", update_vtable,
                                     this);
    if (r < 0)
        return log_error_errno(r, "Cannot register the image update methods");
    rearm();
    return 0;
}

void ImageUpdater::rearm() {
    uint64_t every = interval_usec();
    if (every == 0) {
        timer_.reset();
        return;
    }
    if (timer_) {
        sd_event_source_set_time_relative(timer_.get(), every);
        sd_event_source_set_enabled(timer_.get(), SD_EVENT_ON);
        return;
    }
    sd_event_source* s = nullptr;
    if (sd_event_add_time_relative(manager_.event(), &s, CLOCK_MONOTONIC, every, 0, on_timer,
                                   this) >= 0)
        timer_.reset(s);
}

int ImageUpdater::on_timer(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<ImageUpdater*>(userdata);
        if (!self->running_) {
            self->running_ = true;
            self->refresh([self](const Refreshed&) { self->running_ = false; });
        }
        self->rearm();
        return 0;
    });
}

void ImageUpdater::refresh(std::function<void(const Refreshed&)> done) {
    std::vector<image::ImageInfo> due;
    for (auto& info : images_.store().list())
        if (info.auto_update && !info.source.empty())
            due.push_back(info);
    auto results = std::make_shared<Refreshed>();
    auto left = std::make_shared<size_t>(due.size());
    auto finish = std::make_shared<std::function<void(const Refreshed&)>>(std::move(done));
    if (due.empty())
        return (*finish)(*results);
    for (auto& info : due)
        check_one(info, [this, info, results, left, finish](const std::string& fresh) {
            if (!fresh.empty() && fresh != info.fingerprint) {
                replace(info, fresh);
                results->emplace_back(info.fingerprint, fresh);
            }
            if (--*left == 0)
                (*finish)(*results);
        });
}

// Asks the remote which image its alias names now (a catalog read, in a worker); when that
// is another, fetches it through ImageService. `done` gets the fingerprint now stored for the
// alias ("" when the remote could not be asked or the download failed).
void ImageUpdater::check_one(const image::ImageInfo& info,
                             std::function<void(const std::string&)> done) {
    std::string remote_name, name;
    split_ref(info.source, remote_name, name);
    auto remotes = image::load_remotes();
    auto it = remotes.find(remote_name);
    if (it == remotes.end() || it->second.protocol != "simplestreams") {
        log_warning("Image %s follows %s, whose remote is gone or not simplestreams",
                    info.fingerprint.c_str(), info.source.c_str());
        return done("");
    }
    image::Remote remote = it->second;
    OperationSpec op;
    op.what = "update check of " + info.source;
    op.kind = OperationKind::cleanup;
    op.idle_timeout_usec = 600ULL * 1000000;
    op.work = [remote, name](Worker& w, std::string& why) {
        image::RemoteImage img;
        if (int r =
                image::lookup_remote(remote.url, image_bus::http_options(remote), name, img, why);
            r < 0)
            return r;
        w.data["fingerprint"] = img.fingerprint;
        return 0;
    };
    op.done = [this, info, done](const OperationResult& res) {
        std::string newest = res.code >= 0 ? res.data.value("fingerprint", "") : "";
        if (res.code < 0) {
            log_warning("Cannot check %s for a newer image: %s", info.source.c_str(),
                        res.error.c_str());
            return done("");
        }
        if (newest == info.fingerprint)
            return done(newest);
        log_info("Image %s (%s): the remote has %s; downloading it", info.fingerprint.c_str(),
                 info.source.c_str(), newest.c_str());
        images_.ensure_local(
            info.source, info.cached,
            [info, done](int r, const std::string& fp, const std::string& why) {
                if (r < 0)
                    log_warning("Cannot update image %s from %s: %s", info.fingerprint.c_str(),
                                info.source.c_str(), why.c_str());
                done(r < 0 ? "" : fp);
            },
            true);
    };
    std::string error;
    if (manager_.operations().start(std::move(op), error) < 0) {
        log_warning("Cannot check %s for a newer image: %s", info.source.c_str(), error.c_str());
        done("");
    }
}

// The new image takes the old one's aliases and flags; the old one goes.
void ImageUpdater::replace(const image::ImageInfo& old, const std::string& fresh) {
    const image::Store& store = images_.store();
    image::ImageInfo info;
    if (store.get(fresh, info) < 0)
        return;
    info.auto_update = true;
    info.cached = old.cached;
    store.update(info);
    std::string why;
    for (auto& alias : store.aliases_of(old.fingerprint))
        if (store.set_alias(alias, fresh, true, why) < 0)
            log_warning("Cannot move alias %s to image %s: %s", alias.c_str(), fresh.c_str(),
                        why.c_str());
    std::string trash;
    if (store.retire(old.fingerprint, trash, why) < 0) {
        log_warning("Cannot remove image %s after its update: %s", old.fingerprint.c_str(),
                    why.c_str());
        return;
    }
    log_info("Image %s replaced by %s (%s)", old.fingerprint.c_str(), fresh.c_str(),
             old.source.c_str());
    sd_bus_emit_signal(manager_.bus(), "/io/lodge1", "io.lodge1.Manager", "ImageRemoved", "s",
                       old.fingerprint.c_str());
    OperationSpec op;
    op.what = "removal of " + trash;
    op.kind = OperationKind::cleanup;
    op.work = [trash](Worker&, std::string& error) {
        int r = remove_tree(trash);
        if (r < 0)
            error = "Cannot remove " + trash;
        return r;
    };
    op.done = [](const OperationResult&) {};
    std::string error;
    if (manager_.operations().start(std::move(op), error) < 0)
        log_warning("Cannot remove %s now: %s (lodged retries at its next start)", trash.c_str(),
                    error.c_str());
}

} // namespace lodge::daemon
