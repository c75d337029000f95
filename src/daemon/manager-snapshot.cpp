// Snapshots (issue 15): taking, deleting and renaming them, and snapshots.schedule and
// snapshots.expiry. The copy runs in a worker (operation.hpp); what makes a snapshot take
// effect is one rename on the loop (snapshot-store.hpp).
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/snapshot-schedule.hpp"
#include "daemon/manager.hpp"
#include "daemon/snapshot-store.hpp"

#include <cerrno>
#include <ctime>

namespace lodge::daemon {
namespace {

uint64_t realtime_now_usec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// The next free name of `pattern` (snapshots.pattern, "snap%d" when unset or invalid).
std::string next_snapshot_name(const Container& c) {
    std::vector<std::string> taken;
    for (auto& s : snapshots::list(c.name()))
        taken.push_back(s.name);
    std::string pattern = c.config.get("snapshots.pattern", "snap%d");
    if (!check_snapshot_pattern(pattern).empty())
        pattern = "snap%d";
    return snapshot_name_from(pattern, taken);
}

} // namespace

void Manager::drop_reader(const std::string& name) {
    auto it = readers_.find(name);
    if (it != readers_.end() && --it->second <= 0)
        readers_.erase(it);
}

Result<std::string> Manager::create_snapshot(Container& c, const std::string& requested, Done done,
                                             uint64_t now_usec) {
    std::string name = c.name();
    std::string snap = requested.empty() ? next_snapshot_name(c) : requested;
    if (now_usec == 0)
        now_usec = realtime_now_usec();
    // snapshots.expiry applies to every snapshot, taken by hand or by the schedule (LXD).
    uint64_t expiry_s = 0, expires_usec = 0;
    if (std::string e = c.config.get("snapshots.expiry");
        !e.empty() && parse_expiry(e, expiry_s).empty())
        expires_usec = now_usec + expiry_s * 1000000;
    if (auto e = snapshots::check_name(snap); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    if (restoring(name))
        return make_error(errors::busy, EBUSY, "Container \"" + name + "\" is being restored");
    auto prepared = snapshots::prepare(name, snap);
    if (!prepared)
        return prepared.error();
    std::string work = *prepared;
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
        // The container may have been deleted meanwhile: its directory went, work dir with it.
        Result<> taken = res.code < 0 ? Result<>(make_error(errors::failed, res.code, res.error))
                                      : snapshots::commit(name, snap, work);
        if (!taken) {
            discard(work, [done, taken] { done(taken); });
            return;
        }
        log_info("Container \"%s\": snapshot \"%s\" taken", name.c_str(), snap.c_str());
        done({});
    };
    add_reader(name);
    std::string why;
    if (int r = operations_.start(std::move(op), why); r < 0) {
        drop_reader(name);
        remove_tree(work);
        return make_error(errors::busy, r, why); // too much queued
    }
    return snap;
}

Result<> Manager::delete_snapshot(Container& c, const std::string& snap) {
    if (auto e = snapshots::check_name(snap); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    // A snapshot, copy or export may be reading this snapshot's files.
    if (instance_busy(c.name()))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() +
                              "\" is being snapshotted, copied, exported or restored");
    auto trash = snapshots::retire(c.name(), snap);
    if (!trash)
        return trash.error();
    discard(*trash, nullptr);
    return {};
}

Result<> Manager::rename_snapshot(Container& c, const std::string& from, const std::string& to) {
    return snapshots::rename(c.name(), from, to);
}

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
            if (s.expires_usec != 0 && s.expires_usec <= now_usec && !instance_busy(name)) {
                if (auto deleted = delete_snapshot(*c, s.name); !deleted)
                    log_error("Cannot delete the expired snapshot \"%s\" of \"%s\": %s",
                              s.name.c_str(), name.c_str(), deleted.error().message.c_str());
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
        auto done = [name](const Result<>& result) {
            if (!result)
                log_error("Scheduled snapshot of \"%s\" failed: %s", name.c_str(),
                          result.error().message.c_str());
        };
        if (auto taken = create_snapshot(*c, "", done, now_usec); !taken)
            log_error("Cannot take the scheduled snapshot of \"%s\": %s", name.c_str(),
                      taken.error().message.c_str());
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
