// Copy and rename of containers, and config edit's whole-definition update (issue 15). A copy
// is a create (manager-start.cpp) whose rootfs is filled, in a worker, from the source.
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "daemon/manager.hpp"
#include "daemon/snapshot-store.hpp"
#include "daemon/tree-copy.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

// What a copy keeps of the source's volatile keys: the nics' names inside the guest. MACs,
// the instance-id (create() makes one), the id range and the last state are new.
void strip_identity(ContainerConfig& config) {
    for (auto it = config.config.begin(); it != config.config.end();) {
        const std::string& k = it->first;
        bool keep =
            !is_volatile_key(k) ||
            (k.size() > 5 && k.compare(k.size() - 5, 5, ".name") == 0 && k != instance_id_key);
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

// In the worker: the rootfs (and marker, and with `all` the snapshots) of the container or
// snapshot directory `from` copied into the new container's work dir.
int fill_copy(Worker& w, const std::string& from, const std::string& source, bool all,
              const std::string& rootfs, std::string& why) {
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
}

} // namespace

Result<> Manager::copy_container(const std::string& source, const std::string& snap,
                                 const std::string& name, const KeyMap& overrides,
                                 bool with_snapshots, Done done) {
    Container* src = find(source);
    if (!src)
        return make_error(errors::no_such_container, ENOENT, "No container \"" + source + "\"");
    if (restoring(source))
        return make_error(errors::busy, EBUSY, "Container \"" + source + "\" is being restored");
    ContainerConfig config = src->config;
    if (snap.empty()) {
        std::string ignored;
        registry_.load(source, config, ignored);
    } else {
        snapshots::Info info;
        if (auto found = snapshots::load(source, snap, config, info); !found)
            return found;
    }
    for (auto& [k, v] : overrides)
        if (auto e = check_config_key(k, v); !e.empty())
            return make_error(errors::invalid_config, EINVAL, e);
    strip_identity(config);
    for (auto& [k, v] : overrides)
        config.config[k] = v;
    config.name = name;
    std::string from = snap.empty() ? paths::container_dir(source) : snapshots::path(source, snap);
    CreateRequest req;
    req.config = std::move(config);
    req.trusted = true;
    req.fill_failure = errors::failed;
    bool all = with_snapshots && snap.empty();
    req.fill = [from, source, all](Worker& w, const std::string& rootfs, KeyMap&,
                                   std::string& why) {
        return fill_copy(w, from, source, all, rootfs, why);
    };
    add_reader(source);
    Done finished = [this, source, done](const Result<>& result) {
        drop_reader(source);
        done(result);
    };
    if (auto created = create(std::move(req), finished); !created) {
        drop_reader(source);
        return created; // InvalidName, ContainerExists, InvalidConfig, ... as create() says
    }
    return {};
}

Result<> Manager::rename_container(Container& c, const std::string& name) {
    std::string old = c.name();
    if (auto e = check_container_name(name); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    Error exists =
        make_error(errors::container_exists, EEXIST, "Container \"" + name + "\" already exists");
    if (find(name) || creating_.count(name))
        return exists;
    if (c.running() || starting(old) || c.supervisor_alive())
        return make_error(errors::busy, EBUSY,
                          "Container \"" + old + "\" is running; stop it first");
    if (instance_busy(old))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + old + "\" is being snapshotted, copied or restored");
    if (::renameat2(AT_FDCWD, paths::container_dir(old).c_str(), AT_FDCWD,
                    paths::container_dir(name).c_str(), RENAME_NOREPLACE) < 0) {
        int err = errno;
        if (err == EEXIST)
            return exists;
        return make_error(errors::failed, err,
                          "Cannot rename \"" + old + "\": " + std::strerror(err));
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
    return {};
}

Result<> Manager::update_container(Container& c, const KeyMap& config,
                                   const std::map<std::string, KeyMap>& devices, Done done) {
    auto lodge_own = [](const std::string& k) {
        return is_volatile_key(k) || k.rfind("image.", 0) == 0;
    };
    KeyMap set;
    std::vector<std::string> unset;
    for (auto& [k, v] : config) {
        auto was = c.config.config.find(k);
        bool same = was != c.config.config.end() && was->second == v;
        if (lodge_own(k)) {
            if (!same)
                return make_error(errors::invalid_config, EINVAL,
                                  "Key \"" + k + "\" is set by lodge only; leave it as it is");
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
        if (c.running() || starting(c.name()))
            return make_error(errors::busy, EBUSY,
                              "The devices of a running container change with lodgectl device "
                              "add|remove only; stop \"" +
                                  c.name() + "\" first");
        ContainerConfig probe = c.config;
        for (auto& [k, v] : set)
            probe.config[k] = v;
        for (auto& k : unset)
            probe.config.erase(k);
        probe.devices = devices;
        if (auto e = check_container_config(probe); !e.empty())
            return make_error(errors::invalid_config, EINVAL, e);
    }
    std::string name = c.name();
    Done apply_devices = [this, name, devices, devices_changed, done](const Result<>& keys) {
        if (!keys || !devices_changed)
            return done(keys);
        Container* found = find(name);
        if (!found)
            return done(make_error(errors::no_such_container, ENOENT,
                                   "Container \"" + name + "\" is gone"));
        if (found->running())
            return done(make_error(errors::busy, EBUSY,
                                   "Container \"" + name + "\" was started meanwhile"));
        ContainerConfig next = found->config;
        next.devices = devices;
        done(commit_config(*found, std::move(next), "Devices"));
    };
    if (set.empty() && unset.empty()) {
        apply_devices({});
        return {};
    }
    return set_config(c, set, unset, apply_devices);
}

} // namespace lodge::daemon
