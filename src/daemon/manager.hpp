// lodged's model: every container on disk, its live state as its supervisor reports it, and
// the operations the bus objects call. machined's manager is the model for this split. It
// reaches the supervisors only through a SupervisorLink (supervisor-link.hpp).
//
// Files: manager.cpp (the model: lookup, live state, readiness, lxcfs), manager-attach.cpp (the
// status stream of each supervisor), manager-start.cpp (create, delete, start), manager-config.cpp
// (config, devices, id ranges, console), manager-nic.cpp (nic devices).
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "daemon/bus-util.hpp"
#include "daemon/container.hpp"
#include "daemon/operation.hpp"
#include "daemon/polkit.hpp"
#include "daemon/registry.hpp"
#include "daemon/supervisor-link.hpp"

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <set>
#include <string>

namespace lodge::daemon {

// The end of an operation whose reply waits: success, or the Error for the caller.
using Done = std::function<void(const Result<>& result)>;

// Fills a new container's rootfs. Runs in a worker (operation.hpp), which holds the caller's
// source fds (Worker::fd); may add image.* keys taken from the image's metadata. 0 or -errno
// with `error` set; the create reports it as ImportFailed.
using FillRootfs = std::function<int(Worker& worker, const std::string& rootfs_dir,
                                     KeyMap& image_keys, std::string& error)>;

struct CreateRequest {
    ContainerConfig config;
    FillRootfs fill;
    std::vector<Fd> sources;
    // An import from a pipe or socket fails when no data came for this long (0: never).
    uint64_t idle_timeout_usec = 0;
    // The config comes from an existing container (a copy): its volatile.* and image.* keys
    // are lodge's own, not the caller's.
    bool trusted = false;
    // What a failed fill is: an import's (ImportFailed), or a copy's (Failed).
    const char* fill_failure = errors::import_failed;
};

class Manager {
public:
    // `bus` may be a private connection (unit tests); `link` reaches the supervisors.
    Manager(sd_event* event, sd_bus* bus, std::unique_ptr<SupervisorLink> link);
    ~Manager();

    // Loads every container from disk and re-attaches to the supervisors still running.
    int load();
    Container* find(const std::string& name);
    Container* find_by_path(const std::string& path);
    Container* find_by_pid(pid_t pid);
    // The running container whose PID 1 shares the first pid namespace of `chain` it can.
    Container* find_by_pidns(const std::vector<NamespaceId>& chain);
    // Whether PID 1 of this boot still lives (its pidfd says so, whatever lodged has heard).
    static bool leader_alive(const Container& c);
    const std::map<std::string, std::unique_ptr<Container>>& containers() const {
        return containers_;
    }

    // The operations. Each fails at once with the Error for the caller, or succeeds and calls
    // `done` (if it takes one) once the work is over; never both.
    // create: the rootfs is filled in a worker; the container appears (ContainerNew) when whole.
    Result<> create(CreateRequest request, Done done);
    // remove: the container is gone when `done` runs; its files go in a worker afterwards.
    Result<> remove(Container& c, bool force, Done done);
    // start: `done` runs once PID 1 has been exec'd, or with the reason it was not.
    Result<> start(Container& c, Done done);
    // Runs `then` once no supervisor of `name` exists any more: at once if none does, else
    // when the old one has exited (the loop is never blocked meanwhile). `then` finds the
    // container again by name; it may be gone by then (deleted meanwhile).
    void after_supervisor_exit(const std::string& name, std::function<void()> then);
    // Sends a supervisor request; `done` gets the reply ("" when the supervisor went away).
    Result<> request(Container& c, const runtime::proto::Request& request,
                     std::function<void(const runtime::proto::Reply& reply)> done);
    // request() for requests answered {"ok":true} or {"error":...}: `done` gets success or the
    // supervisor's error under `failure` (the bus name the calling site picks for a refusal).
    Result<> request(Container& c, const runtime::proto::Request& request, const char* failure,
                     Done done);
    // `done` runs once limits.* changes reached a running container.
    Result<> set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                        Done done);

    // Devices are stored; a nic is plugged into (or out of) a running container at once, and
    // `done` runs once the supervisor has done that.
    Result<> add_device(Container& c, const std::string& device, const KeyMap& keys, Done done);
    Result<> remove_device(Container& c, const std::string& device, Done done);
    // volatile.last_state.ready, set by the guest and cleared whenever the container stops.
    Result<> set_ready(Container& c, bool ready);

    // Guest API events (runtime.md §6.4): user.* config changes and device changes of a
    // running container, already serialised; `type` is a devlxd::EventType.
    using GuestEventSink =
        std::function<void(const Container& c, unsigned type, const std::string& line)>;
    void set_guest_event_sink(GuestEventSink sink) { guest_events_ = std::move(sink); }
    // Called when a container goes down (stop, crash, guest reboot): its guest API streams end.
    void set_on_stopped(std::function<void(const Container&)> fn) { on_stopped_ = std::move(fn); }

    // A control connection to the supervisor, already attached to the console, for `done`.
    using ConsoleDone = std::function<void(Result<Fd> console)>;
    Result<> open_console(Container& c, ConsoleDone done);

    // Called with the live state of LODGE_LXCFS_DIR; brings every running container in line.
    void set_lxcfs_live(bool live);
    // Called whenever a container is seen running (lodged re-arms the lxcfs check with it).
    void set_on_running(std::function<void()> fn) { on_running_ = std::move(fn); }
    bool lxcfs_live() const { return lxcfs_live_; }
    // Checks the managed networks a starting container's nics (or a nic added live) join and
    // updates their DHCP host entries (network-manager.cpp). Returns "" or the problem.
    void set_network_check(std::function<std::string(const ContainerConfig&)> fn) {
        network_check_ = std::move(fn);
    }
    // Called when a container's state or devices changed (proxy devices follow it,
    // proxy-manager.hpp); returns "" or what could not be done, which fails a device add.
    void set_on_change(std::function<std::string(const Container&)> fn) {
        on_change_ = std::move(fn);
    }
    // Devices every new container gets (eth0 on the default network, network-manager.cpp).
    void set_create_defaults(std::function<void(ContainerConfig&)> fn) {
        create_defaults_ = std::move(fn);
    }

    // Issue 15: snapshots (manager-snapshot.cpp), restore (manager-restore.cpp), copy,
    // rename and config edit (manager-copy.cpp). Each failure is the Error its site chose.
    // Snapshots and copies of a running container are allowed (crash-consistent); restore and
    // rename need it stopped. `snap` empty picks the next free "snapN"; the name used is
    // returned. `now_usec` (CLOCK_REALTIME, 0: now) dates it; snapshots.expiry counts from it.
    Result<std::string> create_snapshot(Container& c, const std::string& snap, Done done,
                                        uint64_t now_usec = 0);
    // snapshots.schedule: takes the snapshots due in the minute of `now_usec`
    // (CLOCK_REALTIME) of running containers and deletes the expired ones. A timer runs it
    // each minute; tests run it with a clock of their own (RunSnapshotSchedule). Returns the
    // number of snapshots started.
    unsigned snapshot_tick(uint64_t now_usec);
    void start_snapshot_scheduler();
    Result<> delete_snapshot(Container& c, const std::string& snap);
    Result<> rename_snapshot(Container& c, const std::string& from, const std::string& to);
    // `force`: a running container is stopped (SIGKILL) first.
    Result<> restore_snapshot(Container& c, const std::string& snap, bool force, Done done);
    // A new container `name` from `source` (or its snapshot `snap`), with new MACs and a new
    // instance-id; `overrides` are user keys set on it.
    Result<> copy_container(const std::string& source, const std::string& snap,
                            const std::string& name, const KeyMap& overrides, bool with_snapshots,
                            Done done);
    Result<> rename_container(Container& c, const std::string& name);
    // config edit: the whole definition at once. Keys go through set_config(); lodge's own
    // (volatile.*, image.*) must come back unchanged or be left out; devices of a running
    // container change only with add_device/remove_device.
    Result<> update_container(Container& c, const KeyMap& config,
                              const std::map<std::string, KeyMap>& devices, Done done);
    // A snapshot or copy reads the container, or a restore replaces its rootfs.
    bool instance_busy(const std::string& name) const {
        return readers_.count(name) != 0 || restoring_.count(name) != 0;
    }
    bool restoring(const std::string& name) const { return restoring_.count(name) != 0; }
    // An export reads the container as a snapshot or copy does: restore and snapshot delete
    // wait for end_reading().
    void begin_reading(const std::string& name) { add_reader(name); }
    void end_reading(const std::string& name) { drop_reader(name); }

    bool idle() const;
    // A start of `name` is under way (its supervisor not yet READY).
    bool starting(const std::string& name) const { return launching_.count(name) != 0; }
    Operations& operations() { return operations_; }
    sd_bus* bus() const { return bus_; }
    sd_event* event() const { return event_; }
    Polkit& polkit() { return polkit_; }

private:
    // manager-start.cpp
    void launched(const std::string& name, Result<SupervisorLink::Launched> init, Done done);
    void finish_remove(Container& c, Done done);
    // Removes `path` (a failed create's work dir, a deleted container's trash) in a worker;
    // `then` runs once it is gone (or could not be removed: the next start retries).
    void discard(const std::string& path, std::function<void()> then);
    // manager-attach.cpp: live state from the supervisor's status stream, or from the state
    // file it left behind.
    void attach_watch(Container& c);
    // Ends a start waiting for the first status (`start_done`), if there is one.
    static void started(Container& c);
    void on_status(Container& c, const std::string& json);
    void on_watch_end(Container& c);
    void on_supervisor_exit(const std::string& name);
    void run_exit_waiters(const std::string& name);
    void set_leader(Container& c, pid_t leader);
    // manager.cpp
    void emit_state_changed(Container& c);
    void container_stopped(Container& c);
    void announce_ready(Container& c);
    static int on_ready_announce(sd_event_source*, uint64_t, void* userdata);
    // A running container's readiness from the runtime dir (newer than config.json).
    void restore_ready(Container& c);
    void guest_event(const Container& c, unsigned type, const std::string& line);
    // The loop's cached CLOCK_REALTIME: event timestamps of one iteration agree.
    uint64_t realtime_usec() const;
    // manager-config.cpp
    // Writes `next` to disk (atomically) and only then makes it the container's config.
    Result<> commit_config(Container& c, ContainerConfig next, const char* property);
    // security.idmap.isolated: gives `config` a range of its own (volatile.idmap.base), or
    // drops the recorded one when it no longer applies. true: config changed.
    Result<bool> assign_idmap(const Container& c, ContainerConfig& config);
    // The container whose isolated range an explicit security.idmap.base in `next` overlaps.
    std::string isolated_overlap(const Container* self, const ContainerConfig& next) const;
    // manager-nic.cpp: volatile keys, host checks and live plugging for nic devices.
    // Checks and volatile keys; gives the nic-add request for a running container ("" if the
    // container is stopped).
    // The nic-add request for a running container; nullopt when there is nothing to plug.
    Result<std::optional<runtime::proto::Request>> prepare_nic(Container& c, ContainerConfig& next,
                                                               const std::string& device);
    void update_nics(Container& c, const std::vector<runtime::net::PluggedNic>& plugged);
    runtime::proto::Status left_status(const std::string& name);

    sd_event* event_;
    sd_bus* bus_;
    std::unique_ptr<SupervisorLink> link_;
    Registry registry_;
    // systemd is PID 1: each container's supervisor goes into its own transient scope.
    bool use_scopes_ = false;
    Polkit polkit_;
    bool lxcfs_live_ = false;
    bool lxcfs_known_ = false;
    std::function<void()> on_running_;
    std::function<std::string(const ContainerConfig&)> network_check_;
    std::function<void(ContainerConfig&)> create_defaults_;
    std::function<std::string(const Container&)> on_change_;
    GuestEventSink guest_events_;
    std::function<void(const Container&)> on_stopped_;
    std::map<std::string, std::unique_ptr<Container>> containers_;
    uint64_t last_generation_ = 0;
    std::set<std::string> launching_; // names whose supervisor is not READY yet
    std::set<std::string> creating_;  // names whose create runs
    Operations operations_;
    // manager-snapshot.cpp: containers read by snapshots and copies (how many at once), and
    // those being restored.
    std::map<std::string, int> readers_;
    std::set<std::string> restoring_;
    void add_reader(const std::string& name) { readers_[name]++; }
    void drop_reader(const std::string& name);
    void begin_restore(const std::string& name, const std::string& snap, Done done);
    SourcePtr snapshot_timer_;
    std::map<std::string, uint64_t> last_scheduled_minute_; // per container
    static int on_snapshot_timer(sd_event_source*, uint64_t usec, void* userdata);
    // after_supervisor_exit() callbacks, per container name.
    std::multimap<std::string, std::function<void()>> exit_waiters_;
};

// volatile.cloud-init.instance-id: made at create, made anew when a key cloud-init reads changes
// (LXD 6's rule), so that cloud-init runs its per-instance modules again.
constexpr const char* instance_id_key = "volatile.cloud-init.instance-id";
bool is_cloud_init_key(const std::string& key);
std::string new_instance_id();
// volatile.*: lodge's own keys, part of a container's identity.
inline bool is_volatile_key(const std::string& key) {
    return key.rfind("volatile.", 0) == 0;
}

} // namespace lodge::daemon
