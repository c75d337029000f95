// A container's life on disk and in its supervisor: create (the rootfs filled in a worker),
// delete (one rename, the files removed in a worker) and start (the supervisor launched
// through the SupervisorLink, the reply once its first status is in).
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "daemon/machined.hpp"
#include "daemon/manager.hpp"
#include "daemon/remote.hpp"
#include "daemon/scope.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace lodge::daemon {

namespace {

Error gone(const std::string& name) {
    return make_error(errors::no_such_container, ENOENT, "Container \"" + name + "\" is gone");
}

} // namespace

Result<> Manager::create(CreateRequest req, Done done) {
    ContainerConfig& config = req.config;
    if (auto e = check_container_name(config.name); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    for (auto& [k, v] : config.config)
        if (auto e = check_config_key(k, v, req.trusted ? KeySource::lodge : KeySource::user);
            !e.empty())
            return make_error(errors::invalid_config, EINVAL, e);
    if (auto e = check_container_config(config); !e.empty())
        return make_error(errors::invalid_config, EINVAL, e);
    if (find(config.name) || creating_.count(config.name))
        return make_error(errors::container_exists, EEXIST,
                          "Container \"" + config.name + "\" already exists");
    if (std::string other = isolated_overlap(nullptr, config); !other.empty())
        return make_error(errors::invalid_config, EINVAL,
                          "Invalid value for \"security.idmap.base\": its ids overlap the "
                          "isolated range of container \"" +
                              other + "\"");
    if (create_defaults_)
        create_defaults_(config);
    config.config[instance_id_key] = new_instance_id();
    std::string work_dir, why;
    if (int r = registry_.prepare(config.name, work_dir, why); r < 0)
        return make_error(r == -EEXIST ? errors::container_exists : errors::failed, r, why);
    std::string name = config.name;
    OperationSpec op;
    op.what = "import of \"" + name + "\"";
    op.kind = OperationKind::import;
    op.fds = std::move(req.sources);
    op.idle_timeout_usec = req.idle_timeout_usec;
    // The worker fills the hidden work dir; a failure empties it there, off the loop.
    op.work = [fill = std::move(req.fill), rootfs = work_dir + "/rootfs"](Worker& w,
                                                                          std::string& why) {
        KeyMap image_keys;
        int r = fill(w, rootfs, image_keys, why);
        if (r < 0) {
            remove_tree(rootfs);
            return r;
        }
        // On disk before it is registered (a crash must not leave a half-written rootfs under
        // a name), and synced here rather than by lodged's fsync of config.json, which would
        // wait on the loop for the whole import's writeback.
        Fd root(::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!root || ::syncfs(root.get()) < 0) {
            int err = errno;
            why = std::string("Cannot sync the imported rootfs: ") + std::strerror(err);
            log_error_errno(err, "Cannot sync the imported rootfs");
            remove_tree(rootfs);
            return -err;
        }
        w.data["image_keys"] = image_keys;
        return 0;
    };
    // Back on the loop: config.json and the rename that makes the container, or the cleanup.
    op.done = [this, config, work_dir, done,
               fill_failure = req.fill_failure](const OperationResult& res) mutable {
        creating_.erase(config.name);
        Result<> made;
        if (res.code < 0)
            made = make_error(fill_failure, res.code, res.error);
        KeyMap image_keys;
        if (made && res.data.is_object() && res.data.contains("image_keys"))
            image_keys = res.data["image_keys"].get<KeyMap>();
        std::string why;
        if (made)
            if (int r = registry_.commit(config, work_dir, image_keys, why); r < 0)
                // Two creates of one name raced to the final rename.
                made = make_error(r == -EEXIST ? errors::container_exists : errors::failed, r, why);
        if (!made) {
            // The caller hears of the failure once nothing of it is left on disk.
            discard(work_dir, [done, made] { done(made); });
            return;
        }
        auto c = std::make_unique<Container>();
        c->manager = this;
        c->config = std::move(config);
        std::string path = c->object_path(), created = c->name();
        containers_[created] = std::move(c);
        sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerNew", "so",
                           created.c_str(), path.c_str());
        sd_bus_emit_object_added(bus_, path.c_str());
        done({});
    };
    creating_.insert(name);
    if (int r = operations_.start(std::move(op), why); r < 0) {
        creating_.erase(name);
        remove_tree(work_dir); // an empty rootfs/: nothing was filled
        return make_error(r == -EBUSY ? errors::busy : errors::failed, r, why);
    }
    return {};
}

void Manager::discard(const std::string& path, std::function<void()> then) {
    OperationSpec op;
    op.what = "removal of " + path;
    op.kind = OperationKind::cleanup;
    op.work = [path](Worker&, std::string& why) {
        int r = Registry::remove_retired(path);
        if (r < 0)
            why = "Cannot remove " + path + ": " + std::strerror(-r);
        return r;
    };
    op.done = [then](const OperationResult& res) {
        if (res.code < 0)
            log_error("%s (lodged retries at its next start)", res.error.c_str());
        if (then)
            then();
    };
    std::string why;
    if (operations_.start(std::move(op), why) < 0) {
        log_error("Cannot remove %s now: %s (lodged retries at its next start)", path.c_str(),
                  why.c_str());
        if (then)
            then();
    }
}

Result<> Manager::remove(Container& c, bool force, Done done) {
    if (starting(c.name()))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() + "\" is starting; delete it once it runs");
    if (ownership::Owner owner; held_elsewhere(c, &owner))
        return make_error(errors::busy, EBUSY, ownership::held_message(c.name(), owner));
    if (instance_busy(c.name()))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() +
                              "\" is being snapshotted, copied or restored");
    if (!c.running()) {
        finish_remove(c, std::move(done));
        return {};
    }
    if (!force)
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() +
                              "\" is running; stop it first or use --force");
    // The supervisor answers stop-force once the container is down; the delete goes on then.
    std::string name = c.name();
    auto stopped = [this, name, done](const runtime::proto::Reply& reply) {
        Container* found = find(name);
        if (!found)
            return done(gone(name));
        if (!reply.error.empty() && found->running())
            return done(make_error(errors::busy, EBUSY, reply.error));
        finish_remove(*found, done);
    };
    if (auto sent =
            request(c, runtime::proto::Request::of(runtime::proto::Verb::stop_force), stopped);
        !sent) {
        if (c.running())
            return make_error(errors::busy, EBUSY, sent.error().message);
        finish_remove(c, std::move(done));
    }
    return {};
}

void Manager::finish_remove(Container& c, Done done) {
    std::string name = c.name(), path = c.object_path(), trash;
    if (int r = registry_.retire(name, trash); r < 0)
        return done(
            make_error(errors::failed, r, "Cannot delete \"" + name + "\": " + std::strerror(-r)));
    remove_tree(paths::container_runtime(name));
    started(c); // a start still waiting for its first status did happen
    containers_.erase(name);
    run_exit_waiters(name); // they find the container gone and say so
    sd_bus_emit_object_removed(bus_, path.c_str());
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerRemoved", "so",
                       name.c_str(), path.c_str());
    done({});
    // The rename was the delete; the files go off the loop.
    if (!trash.empty())
        discard(trash, nullptr);
}

Result<> Manager::start(Container& c, Done done) {
    if (c.running() || starting(c.name()))
        return make_error(errors::already_running, EALREADY,
                          "Container \"" + c.name() + "\" is already running");
    // Before anything is written to its (maybe shared) directory; the supervisor's lock decides.
    if (ownership::Owner owner; held_elsewhere(c, &owner))
        return make_error(errors::busy, EBUSY, ownership::held_message(c.name(), owner));
    if (restoring(c.name()))
        return make_error(errors::busy, EBUSY, "Container \"" + c.name() + "\" is being restored");
    SupervisorLink::LaunchSpec spec;
    spec.name = c.name();
    if (const char* root = std::getenv("LODGE_CGROUP_ROOT"); root && *root)
        spec.args.push_back(std::string("--cgroup=") + root + "/lodge-" + c.name() + ".scope");
    ContainerConfig config = c.config;
    std::string e;
    registry_.load(c.name(), config, e); // what the supervisor will start from
    // nic names and MACs are made once and kept (volatile.<dev>.name/hwaddr), before any start.
    if (fill_nic_volatile(config))
        if (auto saved = commit_config(c, config, "Config"); !saved)
            return make_error(errors::start_failed, saved.error().code, saved.error().message);
    if (network_check_)
        if (auto e = network_check_(config); !e.empty())
            return make_error(errors::invalid_config, EINVAL, e);
    auto assigned = assign_idmap(c, config);
    if (!assigned)
        return assigned.error();
    if (*assigned)
        if (auto saved = commit_config(c, config, "Config"); !saved)
            return make_error(errors::start_failed, saved.error().code, saved.error().message);
    // Under systemd the supervisor waits until lodged has put it into lodge-NAME.scope, whose
    // Controller it is (PID 1 asks it, not the whole scope, to stop), and only then makes its
    // supervisor/ and payload/ cgroups below the scope.
    if (use_scopes_)
        spec.place = [config](pid_t supervisor, const std::string& bus_name) -> Result<> {
            std::string why;
            if (int r = start_scope(ScopeRequest{&config, supervisor, bus_name}, why); r < 0)
                return make_error(errors::start_failed, r, why);
            return {};
        };
    std::string name = c.name();
    auto launched_fn = [this, name, done](Result<SupervisorLink::Launched> init) {
        launched(name, std::move(init), done);
    };
    if (auto r = link_->launch(std::move(spec), launched_fn); !r) {
        c.state = ContainerState::error;
        c.reason = r.error().message;
        emit_state_changed(c);
        return r.error();
    }
    launching_.insert(name);
    c.state = ContainerState::starting;
    c.reason.clear();
    emit_state_changed(c);
    return {};
}

void Manager::launched(const std::string& name, Result<SupervisorLink::Launched> init, Done done) {
    launching_.erase(name);
    Container* c = find(name);
    if (!c)
        return done(gone(name));
    if (!init) {
        c->state = ContainerState::error;
        c->reason = init.error().message;
        emit_state_changed(*c);
        return done(init.error());
    }
    // Re-read: the supervisor started from what is on disk now.
    std::string e;
    registry_.load(name, c->config, e);
    c->started_usec = static_cast<uint64_t>(std::time(nullptr)) * 1000000ULL;
    set_leader(*c, init->init);
    // The reply waits for the supervisor's first status: what exec needs (the cgroup) is known.
    // The supervisor says it along with READY; else it comes first on the watch stream.
    if (!use_scopes_) {
        c->start_done = std::move(done);
        attach_watch(*c);
        if (Container* found = find(name); found && found->watch && !init->status.empty())
            on_status(*found, init->status);
        return;
    }
    // The host ends of the veths go to machined with the machine.
    pid_t init_pid = init->init;
    auto registered = [this, name, init_pid, done](const runtime::proto::Reply& reply) {
        Container* found = find(name);
        if (!found)
            return done(gone(name));
        if (reply.status)
            update_nics(*found, reply.status->nics);
        machined_register(bus_, name, init_pid, paths::container_rootfs(name),
                          found->host_ifindices());
        found->start_done = done;
        attach_watch(*found);
    };
    if (!request(*c, runtime::proto::Request::of(runtime::proto::Verb::status), registered))
        registered(runtime::proto::decode_reply(""));
}

} // namespace lodge::daemon
