// Restoring a snapshot (issue 15): the copy runs in a worker (operation.hpp); the restore
// itself is one rename on the loop (snapshot-store.hpp's commit_restore).
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"
#include "daemon/manager.hpp"
#include "daemon/snapshot-store.hpp"

#include <cerrno>

namespace lodge::daemon {
namespace {

// A container's identity is its own: MACs, instance-id, id range and last state never come
// back from a snapshot. Everything else does.
ContainerConfig restored_config(const ContainerConfig& current, const ContainerConfig& snapshot) {
    ContainerConfig next = snapshot;
    next.name = current.name;
    for (auto it = next.config.begin(); it != next.config.end();)
        it = is_volatile_key(it->first) ? next.config.erase(it) : std::next(it);
    for (auto& [k, v] : current.config)
        if (is_volatile_key(k))
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

Error busy(const std::string& name, const std::string& why) {
    return make_error(errors::busy, EBUSY, "Container \"" + name + "\" " + why);
}

} // namespace

Result<> Manager::restore_snapshot(Container& c, const std::string& snap, bool force, Done done) {
    std::string name = c.name();
    ContainerConfig ignored;
    snapshots::Info info;
    if (auto found = snapshots::load(name, snap, ignored, info); !found)
        return found;
    if (instance_busy(name) || starting(name))
        return busy(name, "is busy (starting, or being snapshotted, copied or restored)");
    if (c.running() && !force)
        return busy(name, "is running; stop it first or use --force");
    // From here no start gets in before the restore is over.
    restoring_.insert(name);
    auto go_on = [this, name, snap, done] {
        after_supervisor_exit(name, [this, name, snap, done] { begin_restore(name, snap, done); });
    };
    if (!c.running()) {
        go_on();
        return {};
    }
    auto stopped = [this, name, done, go_on](const runtime::proto::Reply& answer) {
        Container* found = find(name);
        if (found && !answer.error.empty() && found->running()) {
            restoring_.erase(name);
            return done(busy(name, "could not be stopped: " + answer.error));
        }
        go_on();
    };
    if (auto sent =
            request(c, runtime::proto::Request::of(runtime::proto::Verb::stop_force), stopped);
        !sent) {
        if (c.running()) {
            restoring_.erase(name);
            return busy(name, "could not be stopped: " + sent.error().message);
        }
        go_on();
    }
    return {};
}

void Manager::begin_restore(const std::string& name, const std::string& snap, Done reply) {
    auto done = [this, name, reply](const Result<>& result) {
        restoring_.erase(name);
        reply(result);
    };
    Container* c = find(name);
    if (!c)
        return done(
            make_error(errors::no_such_container, ENOENT, "Container \"" + name + "\" is gone"));
    if (c->running())
        return done(busy(name, "is running"));
    ContainerConfig snap_config, current = c->config;
    snapshots::Info info;
    if (auto found = snapshots::load(name, snap, snap_config, info); !found)
        return done(found);
    std::string ignored;
    registry_.load(name, current, ignored);
    ContainerConfig next = restored_config(current, snap_config);
    auto prepared = snapshots::prepare_restore(name);
    if (!prepared)
        return done(prepared.error());
    std::string work = *prepared;
    OperationSpec op;
    op.what = "restore of \"" + name + "\" from \"" + snap + "\"";
    op.kind = OperationKind::import;
    op.work = [name, snap, next, work](Worker& w, std::string& why) {
        return snapshots::fill_restore(
            name, snap, next, work, [&w](uint64_t written) { w.progress(written, 0); }, why);
    };
    op.done = [this, name, snap, work, done](const OperationResult& res) {
        Result<> restored;
        if (res.code < 0)
            restored = make_error(errors::failed, res.code, res.error);
        Container* found = find(name);
        if (restored && (!found || found->running()))
            restored = busy(name, "changed while it was being restored");
        ContainerConfig applied;
        bool swapped = false;
        if (restored)
            restored = snapshots::commit_restore(name, work, applied, swapped);
        if (!restored && swapped) {
            // The swap happened: the work dir stays for the next start to finish.
            log_error("Restore of \"%s\": %s", name.c_str(), restored.error().message.c_str());
            return done(restored);
        }
        if (!restored) {
            discard(work, [done, restored] { done(restored); });
            return;
        }
        found->config = applied;
        sd_bus_emit_properties_changed(bus_, found->object_path().c_str(), "io.lodge1.Container",
                                       "Config", "Devices", nullptr);
        log_info("Container \"%s\": restored from snapshot \"%s\"", name.c_str(), snap.c_str());
        // The work dir now holds the old rootfs.
        discard(work, nullptr);
        done({});
    };
    std::string why;
    if (int r = operations_.start(std::move(op), why); r < 0) {
        remove_tree(work);
        return done(make_error(errors::busy, r, why)); // too much queued
    }
}

} // namespace lodge::daemon
