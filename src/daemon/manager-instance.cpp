// Snapshots, restore, copy and rename (issue 15). The copies run in workers (operation.hpp);
// what makes each of them take effect is one rename on the loop (snapshot-store.hpp).
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/snapshot-schedule.hpp"
#include "common/validate.hpp"
#include "daemon/manager.hpp"
#include "daemon/snapshot-store.hpp"
#include "daemon/tree-copy.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

// The snapshot store and the copies report errno and a message; the bus name follows from
// what each errno means for these operations (a missing or existing snapshot has its own).
using Finish = std::function<void(int r, const std::string& why)>;

Finish finish(Done done) {
    return [done](int r, const std::string& why) {
        if (r >= 0)
            return done(Result<>());
        done(instance_error(r, why));
    };
}

Done as_done(Finish finish) {
    return [finish](const Result<>& result) {
        if (result)
            return finish(0, "");
        finish(-result.error().code, result.error().message);
    };
}

uint64_t realtime_now_usec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

bool is_volatile(const std::string& key) {
    return key.rfind("volatile.", 0) == 0;
}

// A container's identity is its own: MACs, instance-id, id range and last state never come
// back from a snapshot. Everything else does.
ContainerConfig restored_config(const ContainerConfig& current, const ContainerConfig& snapshot) {
    ContainerConfig next = snapshot;
    next.name = current.name;
    for (auto it = next.config.begin(); it != next.config.end();)
        it = is_volatile(it->first) ? next.config.erase(it) : std::next(it);
    for (auto& [k, v] : current.config)
        if (is_volatile(k))
            next.config[k] = v;
    bool cloud_init_changed = false;
    for (auto* pair : {&current, &snapshot})
        for (auto& [k, v] : pair->config)
            if (is_cloud_init_key(k))
                cloud_init_changed |= current.get(k) != snapshot.get(k);
    if (cloud_init_changed)
        next.config[instance_id_key] = new_instance_id();
    return next;
}

// What a copy keeps of the source's volatile keys: the nics' names inside the guest. MACs,
// the instance-id (create() makes one), the id range and the last state are new.
void strip_identity(ContainerConfig& config) {
    for (auto it = config.config.begin(); it != config.config.end();) {
        const std::string& k = it->first;
        bool keep = !is_volatile(k) || (k.size() > 5 && k.compare(k.size() - 5, 5, ".name") == 0 &&
                                        k != instance_id_key);
        it = keep ? std::next(it) : config.config.erase(it);
    }
}

// The autostart unit's enablement (`systemctl enable lodge@NAME.service`) is a symlink in
// machines.target.wants; a renamed container keeps it under its new name.
std::string unit_dir() {
    const char* env = std::getenv("LODGE_SYSTEMD_UNIT_DIR");
    return env && *env ? env : "/etc/systemd/system";
}

bool move_autostart(const std::string& from, const std::string& to) {
    std::string wants = unit_dir() + "/machines.target.wants/";
    std::string old_link = wants + "lodge@" + from + ".service";
    std::string new_link = wants + "lodge@" + to + ".service";
    char target[PATH_MAX];
    ssize_t n = ::readlink(old_link.c_str(), target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    ::unlink(new_link.c_str());
    if (::symlink(target, new_link.c_str()) < 0) {
        log_error_errno(errno, "Cannot enable %s", new_link.c_str());
        return false;
    }
    if (::unlink(old_link.c_str()) < 0)
        log_error_errno(errno, "Cannot remove %s", old_link.c_str());
    return true;
}

} // namespace

Error instance_error(int r, const std::string& why) {
    switch (-r) {
    case ENOENT:
        return make_error(errors::no_such_snapshot, ENOENT, why);
    case EEXIST:
        return make_error(errors::snapshot_exists, EEXIST, why);
    case EBUSY:
        return make_error(errors::busy, EBUSY, why);
    case EINVAL:
        return make_error(errors::invalid_config, EINVAL, why);
    case ENOTCONN:
        return make_error(errors::not_running, ENOTCONN, why);
    default:
        return make_error(errors::failed, r, why);
    }
}

void Manager::drop_reader(const std::string& name) {
    auto it = readers_.find(name);
    if (it != readers_.end() && --it->second <= 0)
        readers_.erase(it);
}

int Manager::create_snapshot(Container& c, std::string& snap, Done reply, std::string& error,
                             uint64_t now_usec) {
    Finish done = finish(std::move(reply));
    std::string name = c.name();
    if (snap.empty()) {
        std::vector<std::string> taken;
        for (auto& s : snapshots::list(name))
            taken.push_back(s.name);
        std::string pattern = c.config.get("snapshots.pattern", "snap%d");
        if (!check_snapshot_pattern(pattern).empty())
            pattern = "snap%d";
        snap = snapshot_name_from(pattern, taken);
    }
    if (now_usec == 0)
        now_usec = realtime_now_usec();
    // snapshots.expiry applies to every snapshot, taken by hand or by the schedule (LXD).
    uint64_t expiry_s = 0, expires_usec = 0;
    if (std::string e = c.config.get("snapshots.expiry");
        !e.empty() && parse_expiry(e, expiry_s).empty())
        expires_usec = now_usec + expiry_s * 1000000;
    if (auto e = snapshots::check_name(snap); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (restoring(name)) {
        error = "Container \"" + name + "\" is being restored";
        return -EBUSY;
    }
    std::string work;
    if (int r = snapshots::prepare(name, snap, work, error); r < 0)
        return r;
    // The config as on disk (the live one carries readiness that lives in memory only).
    ContainerConfig config = c.config;
    std::string ignored;
    registry_.load(name, config, ignored);
    OperationSpec op;
    op.what = "snapshot \"" + snap + "\" of \"" + name + "\"";
    op.kind = OperationKind::import;
    op.work = [dir = paths::container_dir(name), config, work, now_usec,
               expires_usec](Worker& w, std::string& why) {
        return snapshots::fill(
            dir, config, work, now_usec, expires_usec,
            [&w](uint64_t written) { w.progress(written, 0); }, why);
    };
    op.done = [this, name, snap, work, done](const OperationResult& res) {
        drop_reader(name);
        std::string why = res.error;
        int r = res.code;
        // The container may have been deleted meanwhile: its directory went, work dir with it.
        if (r >= 0)
            r = snapshots::commit(name, snap, work, why);
        if (r < 0) {
            discard(work, [done, r, why] { done(r, why); });
            return;
        }
        log_info("Container \"%s\": snapshot \"%s\" taken", name.c_str(), snap.c_str());
        done(0, "");
    };
    add_reader(name);
    if (int r = operations_.start(std::move(op), error); r < 0) {
        drop_reader(name);
        remove_tree(work);
        return r;
    }
    return 0;
}

int Manager::delete_snapshot(Container& c, const std::string& snap, std::string& error) {
    if (auto e = snapshots::check_name(snap); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    std::string trash;
    if (int r = snapshots::retire(c.name(), snap, trash, error); r < 0)
        return r;
    discard(trash, nullptr);
    return 0;
}

int Manager::rename_snapshot(Container& c, const std::string& from, const std::string& to,
                             std::string& error) {
    return snapshots::rename(c.name(), from, to, error);
}

int Manager::restore_snapshot(Container& c, const std::string& snap, bool force, Done reply,
                              std::string& error) {
    Finish done = finish(reply);
    std::string name = c.name();
    ContainerConfig ignored;
    snapshots::Info info;
    if (int r = snapshots::load(name, snap, ignored, info, error); r < 0)
        return r;
    if (instance_busy(name) || starting(name)) {
        error = "Container \"" + name +
                "\" is busy (starting, or being snapshotted, copied or "
                "restored)";
        return -EBUSY;
    }
    if (c.running() && !force) {
        error = "Container \"" + name + "\" is running; stop it first or use --force";
        return -EBUSY;
    }
    // From here no start gets in before the restore is over.
    restoring_.insert(name);
    auto go_on = [this, name, snap, reply] {
        after_supervisor_exit(name,
                              [this, name, snap, reply] { begin_restore(name, snap, reply); });
    };
    if (!c.running()) {
        go_on();
        return 0;
    }
    auto stopped = [this, name, done, go_on](const runtime::proto::Reply& answer) {
        Container* found = find(name);
        if (found && !answer.error.empty() && found->running()) {
            restoring_.erase(name);
            return done(-EBUSY, answer.error);
        }
        go_on();
    };
    if (auto sent =
            request(c, runtime::proto::Request::of(runtime::proto::Verb::stop_force), stopped);
        !sent) {
        error = sent.error().message;
        if (c.running()) {
            restoring_.erase(name);
            return -EBUSY;
        }
        go_on();
    }
    return 0;
}

void Manager::begin_restore(const std::string& name, const std::string& snap, Done reply) {
    Finish done = finish(std::move(reply));
    auto fail = [this, name, done](int r, const std::string& why) {
        restoring_.erase(name);
        done(r, why);
    };
    Container* c = find(name);
    if (!c)
        return fail(-ENOENT, "Container \"" + name + "\" is gone");
    if (c->running())
        return fail(-EBUSY, "Container \"" + name + "\" is running");
    ContainerConfig snap_config, current = c->config;
    snapshots::Info info;
    std::string error, work;
    if (int r = snapshots::load(name, snap, snap_config, info, error); r < 0)
        return fail(r, error);
    registry_.load(name, current, error);
    ContainerConfig next = restored_config(current, snap_config);
    if (int r = snapshots::prepare_restore(name, work, error); r < 0)
        return fail(r, error);
    OperationSpec op;
    op.what = "restore of \"" + name + "\" from \"" + snap + "\"";
    op.kind = OperationKind::import;
    op.work = [name, snap, next, work](Worker& w, std::string& why) {
        return snapshots::fill_restore(
            name, snap, next, work, [&w](uint64_t written) { w.progress(written, 0); }, why);
    };
    op.done = [this, name, snap, work, fail](const OperationResult& res) {
        std::string why = res.error;
        int r = res.code;
        Container* found = find(name);
        if (r >= 0 && (!found || found->running())) {
            r = -EBUSY;
            why = "Container \"" + name + "\" changed while it was being restored";
        }
        ContainerConfig applied;
        bool swapped = false;
        if (r >= 0)
            r = snapshots::commit_restore(name, work, applied, swapped, why);
        if (r < 0 && swapped) {
            // The swap may have happened: the work dir stays for the next start to finish.
            log_error("Restore of \"%s\": %s", name.c_str(), why.c_str());
            return fail(r, why);
        }
        if (r < 0) {
            discard(work, [fail, r, why] { fail(r, why); });
            return;
        }
        found->config = applied;
        sd_bus_emit_properties_changed(bus_, found->object_path().c_str(), "io.lodge1.Container",
                                       "Config", "Devices", nullptr);
        log_info("Container \"%s\": restored from snapshot \"%s\"", name.c_str(), snap.c_str());
        // The work dir now holds the old rootfs.
        discard(work, nullptr);
        fail(0, "");
    };
    if (int r = operations_.start(std::move(op), error); r < 0) {
        remove_tree(work);
        return fail(r, error);
    }
}

int Manager::copy_container(const std::string& source, const std::string& snap,
                            const std::string& name, const KeyMap& overrides, bool with_snapshots,
                            Done reply, std::string& error) {
    Finish done = finish(std::move(reply));
    Container* src = find(source);
    if (!src) {
        error = "No container \"" + source + "\"";
        return -ENOENT;
    }
    if (restoring(source)) {
        error = "Container \"" + source + "\" is being restored";
        return -EBUSY;
    }
    ContainerConfig config = src->config;
    if (snap.empty()) {
        registry_.load(source, config, error);
        error.clear();
    } else {
        snapshots::Info info;
        if (int r = snapshots::load(source, snap, config, info, error); r < 0)
            return r;
    }
    for (auto& [k, v] : overrides)
        if (auto e = check_config_key(k, v); !e.empty()) {
            error = e;
            return -EINVAL;
        }
    strip_identity(config);
    for (auto& [k, v] : overrides)
        config.config[k] = v;
    config.name = name;
    std::string from = snap.empty() ? paths::container_dir(source) : snapshots::path(source, snap);
    CreateRequest req;
    req.config = std::move(config);
    req.trusted = true;
    bool all = with_snapshots && snap.empty();
    req.fill = [from, source, all](Worker& w, const std::string& rootfs, KeyMap&,
                                   std::string& why) {
        auto progress = [&w](uint64_t written) { w.progress(written, 0); };
        std::string dir = rootfs.substr(0, rootfs.find_last_of('/'));
        ::rmdir(rootfs.c_str()); // prepare()'s empty one: copy_tree makes its own
        CopyMethod used;
        if (int r = copy_tree(from + "/rootfs", rootfs, progress, used, why); r < 0)
            return r;
        if (int r = snapshots::copy_marker(from, dir); r < 0) {
            why = std::string("Cannot copy the shift marker: ") + std::strerror(-r);
            return r;
        }
        if (!all)
            return 0;
        auto list = snapshots::list(source);
        if (!list.empty() && ::mkdir((dir + "/snapshots").c_str(), 0700) < 0) {
            int err = errno;
            why = std::string("Cannot create the snapshots directory: ") + std::strerror(err);
            return -err;
        }
        for (auto& s : list)
            if (int r = snapshots::copy_snapshot_dir(snapshots::path(source, s.name),
                                                     dir + "/snapshots/" + s.name, progress, why);
                r < 0)
                return r;
        return 0;
    };
    add_reader(source);
    Finish finished = [this, source, done](int r, const std::string& why) {
        drop_reader(source);
        done(r, why);
    };
    if (auto created = create(std::move(req), as_done(finished)); !created) {
        drop_reader(source);
        error = created.error().message;
        return -created.error().code;
    }
    return 0;
}

int Manager::rename_container(Container& c, const std::string& name, std::string& error) {
    std::string old = c.name();
    if (auto e = check_container_name(name); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (find(name) || creating_.count(name)) {
        error = "Container \"" + name + "\" already exists";
        return -EEXIST;
    }
    if (c.running() || starting(old) || c.supervisor_alive()) {
        error = "Container \"" + old + "\" is running; stop it first";
        return -EBUSY;
    }
    if (instance_busy(old)) {
        error = "Container \"" + old + "\" is being snapshotted, copied or restored";
        return -EBUSY;
    }
    if (::renameat2(AT_FDCWD, paths::container_dir(old).c_str(), AT_FDCWD,
                    paths::container_dir(name).c_str(), RENAME_NOREPLACE) < 0) {
        int err = errno;
        error = err == EEXIST ? "Container \"" + name + "\" already exists"
                              : "Cannot rename \"" + old + "\": " + std::strerror(err);
        return -err;
    }
    ContainerConfig next = c.config;
    next.name = name;
    next.config[instance_id_key] = new_instance_id();
    // The directory's name is what counts (Registry::load); config.json follows it.
    if (int r = registry_.save(next); r < 0)
        log_error_errno(r, "Cannot write the config of \"%s\"", name.c_str());
    // The console log goes along; a stale one of an older container of that name goes away.
    std::string old_log = paths::log_dir() + "/" + old, new_log = paths::log_dir() + "/" + name;
    struct stat st {};
    if (::lstat(old_log.c_str(), &st) == 0) {
        remove_tree(new_log);
        if (::rename(old_log.c_str(), new_log.c_str()) < 0)
            log_error_errno(errno, "Cannot move %s to %s", old_log.c_str(), new_log.c_str());
    }
    remove_tree(paths::container_runtime(old));
    if (move_autostart(old, name))
        sd_bus_call_method_async(bus_, nullptr, "org.freedesktop.systemd1",
                                 "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                 "Reload", nullptr, nullptr, nullptr);
    std::string old_path = c.object_path();
    auto node = std::move(containers_[old]);
    containers_.erase(old);
    node->config = std::move(next);
    std::string new_path = node->object_path();
    containers_[name] = std::move(node);
    sd_bus_emit_object_removed(bus_, old_path.c_str());
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerRemoved", "so",
                       old.c_str(), old_path.c_str());
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerNew", "so", name.c_str(),
                       new_path.c_str());
    sd_bus_emit_object_added(bus_, new_path.c_str());
    log_info("Container \"%s\" renamed to \"%s\"", old.c_str(), name.c_str());
    return 0;
}

} // namespace lodge::daemon

namespace lodge::daemon {

int Manager::update_container(Container& c, const KeyMap& config,
                              const std::map<std::string, KeyMap>& devices, Done reply,
                              std::string& error) {
    Finish done = finish(std::move(reply));
    auto lodge_own = [](const std::string& k) {
        return k.rfind("volatile.", 0) == 0 || k.rfind("image.", 0) == 0;
    };
    KeyMap set;
    std::vector<std::string> unset;
    for (auto& [k, v] : config) {
        auto was = c.config.config.find(k);
        bool same = was != c.config.config.end() && was->second == v;
        if (lodge_own(k)) {
            if (!same) {
                error = "Key \"" + k + "\" is set by lodge only; leave it as it is";
                return -EINVAL;
            }
            continue;
        }
        if (!same)
            set[k] = v;
    }
    for (auto& [k, v] : c.config.config)
        if (!config.count(k) && !lodge_own(k))
            unset.push_back(k);
    bool devices_changed = devices != c.config.devices;
    if (devices_changed) {
        if (c.running() || starting(c.name())) {
            error = "The devices of a running container change with lodgectl device add|remove "
                    "only; stop \"" +
                    c.name() + "\" first";
            return -EBUSY;
        }
        ContainerConfig probe = c.config;
        for (auto& [k, v] : set)
            probe.config[k] = v;
        for (auto& k : unset)
            probe.config.erase(k);
        probe.devices = devices;
        if (auto e = check_container_config(probe); !e.empty()) {
            error = e;
            return -EINVAL;
        }
    }
    std::string name = c.name();
    auto apply_devices = [this, name, devices, devices_changed, done](int r,
                                                                      const std::string& why) {
        if (r < 0 || !devices_changed)
            return done(r, why);
        Container* found = find(name);
        if (!found)
            return done(-ENOENT, "Container \"" + name + "\" is gone");
        if (found->running())
            return done(-EBUSY, "Container \"" + name + "\" was started meanwhile");
        ContainerConfig next = found->config;
        next.devices = devices;
        if (auto saved = commit_config(*found, std::move(next), "Devices"); !saved)
            return done(-saved.error().code, saved.error().message);
        done(0, "");
    };
    if (set.empty() && unset.empty()) {
        apply_devices(0, "");
        return 0;
    }
    if (auto changed = set_config(c, set, unset, as_done(apply_devices)); !changed) {
        error = changed.error().message;
        return -changed.error().code;
    }
    return 0;
}

} // namespace lodge::daemon

namespace lodge::daemon {

unsigned Manager::snapshot_tick(uint64_t now_usec) {
    time_t now = static_cast<time_t>(now_usec / 1000000);
    struct tm local {};
    ::localtime_r(&now, &local);
    uint64_t minute = now_usec / 60000000;
    unsigned started = 0;
    std::vector<std::string> names;
    for (auto& [name, c] : containers_)
        names.push_back(name);
    for (auto& name : names) {
        Container* c = find(name);
        if (!c)
            continue;
        // Expired snapshots go, running container or not.
        for (auto& s : snapshots::list(name))
            if (s.expires_usec != 0 && s.expires_usec <= now_usec && !restoring(name)) {
                std::string error;
                if (delete_snapshot(*c, s.name, error) < 0)
                    log_error("Cannot delete the expired snapshot \"%s\" of \"%s\": %s",
                              s.name.c_str(), name.c_str(), error.c_str());
                else
                    log_info("Container \"%s\": snapshot \"%s\" expired", name.c_str(),
                             s.name.c_str());
            }
        std::string spec = c->config.get("snapshots.schedule");
        // As LXD's default (snapshots.schedule.stopped=false): running containers only.
        if (spec.empty() || !c->running())
            continue;
        CronSchedule cron;
        if (!cron.parse(spec).empty() || !cron.matches(local))
            continue;
        auto& last = last_scheduled_minute_[name];
        if (last == minute)
            continue; // this minute's snapshot is taken already
        last = minute;
        std::string snap, error;
        auto done = [name](int r, const std::string& why) {
            if (r < 0)
                log_error("Scheduled snapshot of \"%s\" failed: %s", name.c_str(), why.c_str());
        };
        if (create_snapshot(*c, snap, as_done(done), error, now_usec) < 0)
            log_error("Cannot take the scheduled snapshot of \"%s\": %s", name.c_str(),
                      error.c_str());
        else
            started++;
    }
    return started;
}

int Manager::on_snapshot_timer(sd_event_source*, uint64_t usec, void* userdata) {
    return guarded([&] {
        auto* m = static_cast<Manager*>(userdata);
        m->snapshot_tick(usec);
        m->start_snapshot_scheduler();
        return 0;
    });
}

void Manager::start_snapshot_scheduler() {
    uint64_t now = 0;
    sd_event_now(event_, CLOCK_REALTIME, &now);
    // The start of the next minute: cron's resolution.
    uint64_t next = (now / 60000000 + 1) * 60000000;
    sd_event_source* s = nullptr;
    if (int r =
            sd_event_add_time(event_, &s, CLOCK_REALTIME, next, 1000000, on_snapshot_timer, this);
        r < 0) {
        log_error_errno(r, "Cannot arm the snapshot schedule");
        return;
    }
    snapshot_timer_.reset(s);
}

} // namespace lodge::daemon
