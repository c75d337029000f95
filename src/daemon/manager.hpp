// lodged's model: every container on disk, its live state as its supervisor reports it, and
// the operations the bus objects call. machined's manager is the model for this split.
#pragma once

#include "bus-util.hpp"
#include "common/config.hpp"
#include "common/fd.hpp"
#include "operation.hpp"
#include "peer.hpp"
#include "polkit.hpp"
#include "registry.hpp"

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <set>
#include <string>

namespace lodge::runtime {
class SupervisorLaunch;
}

namespace lodge::daemon {

class Manager;

// The end of an operation whose reply waits: 0, or -errno with `error` for the caller.
using Done = std::function<void(int r, const std::string& error)>;

// Fills a new container's rootfs. Runs in a worker (operation.hpp), which holds the caller's
// source fds (Worker::fd); may add image.* keys taken from the image's metadata.
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
};

// A nic plugged into the running container, as its supervisor reports it (per boot).
struct LiveNic {
    std::string device, name, host_name;
    int host_ifindex = 0;
};

struct Container {
    Manager* manager = nullptr;
    ContainerConfig config;
    std::string state = "stopped";
    std::string reason;
    pid_t leader = 0;
    std::string boot_id;
    std::string cgroup;         // the supervisor's cgroup base (payload is below it)
    bool lxcfs = false;         // the supervisor reports lxcfs binds in place
    bool lxcfs_pending = false; // an attach/detach request is under way
    uint64_t started_usec = 0;  // CLOCK_REALTIME of the last start
    NamespaceId pidns;          // PID 1's pid namespace: how guest API callers are told apart
    // PID 1 and its pid namespace, held open while it runs: as long as lodged holds the
    // namespace, no other namespace can be given its inode number (`pidns` stays unique),
    // and a PID 1 that is gone shows on its pidfd before lodged has read the supervisor's word.
    PidFd leader_fd;
    Fd pidns_fd;
    uint64_t generation = 0; // of this PID 1: unique in lodged's life, never reused
    uid_t root_uid = 0;      // the host uid the container's root maps to
    // The supervisor's "watch" stream, while one runs.
    Fd watch;
    SourcePtr watch_source;
    std::string watch_buffer;
    // The supervisor process itself, while it exists: it outlives its "stopped" by a little
    // (it lets go of its socket, cgroup and lock, then exits), and no new one may start before.
    PidFd supervisor;
    SourcePtr supervisor_source;
    std::vector<LiveNic> nics; // empty while stopped
    // Readiness changes are announced on the bus at most every ready_announce_interval; a
    // change inside the window is coalesced into one announcement at its end.
    SourcePtr ready_announce;
    bool ready_announced = false;
    uint64_t ready_announced_usec = 0; // CLOCK_MONOTONIC
    // A start that replies once the watch stream's first status is in (cgroup, nics known).
    std::function<void(int r, const std::string& error)> start_done;

    // config.config plus volatile.<dev>.host_name of the nics plugged now (never on disk).
    KeyMap visible_config() const;
    // visible_config() without the keys that may hold secrets: what any bus caller may read.
    KeyMap public_config() const;
    // The host ends of the veths (for machined's NetworkInterfaces).
    std::vector<int> host_ifindices() const;

    const std::string& name() const { return config.name; }
    std::string object_path() const;
    bool running() const {
        return state == "running" || state == "stopping" || state == "starting";
    }
    // The guest said it is ready (PATCH /1.0 on /dev/lxd/sock), kept as LXD keeps it: in
    // memory and in the runtime dir while the container runs, in config.json once it stops.
    bool ready() const { return config.get_bool("volatile.last_state.ready", false); }
};

class Manager {
public:
    Manager(sd_event* event, sd_bus* bus);
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

    // The operations. Each returns 0 or -errno with `error` set to a message for the caller;
    // those taking a `Done` call it once the work is over, never when they return < 0.
    // create: the rootfs is filled in a worker; the container appears (ContainerNew) when whole.
    int create(CreateRequest request, Done done, std::string& error);
    // remove: the container is gone when `done` runs; its files go in a worker afterwards.
    int remove(Container& c, bool force, Done done, std::string& error);
    // start: `done` runs once PID 1 has been exec'd, or with the reason it was not.
    int start(Container& c, Done done, std::string& error);
    // Runs `then` once no supervisor of `name` exists any more: at once if none does, else
    // when the old one's pidfd says it has exited (the loop is never blocked meanwhile). `then`
    // finds the container again by name; it may be gone by then (deleted meanwhile).
    void after_supervisor_exit(const std::string& name, std::function<void()> then);
    // Sends a supervisor request; `done` gets the reply ("" when the supervisor went away).
    int request_async(Container& c, const std::string& request,
                      std::function<void(const std::string& reply)> done, std::string& error);
    // request_async for requests answered {"ok":true} or {"error":...}: `done` gets 0 or the error.
    int request_async(Container& c, const std::string& request, Done done, std::string& error);
    // `done` runs once limits.* changes reached a running container.
    int set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                   Done done, std::string& error);

    // Devices are stored; a nic is plugged into (or out of) a running container at once, and
    // `done` runs once the supervisor has done that.
    int add_device(Container& c, const std::string& device, const KeyMap& keys, Done done,
                   std::string& error);
    int remove_device(Container& c, const std::string& device, Done done, std::string& error);
    // volatile.last_state.ready, set by the guest and cleared whenever the container stops.
    int set_ready(Container& c, bool ready, std::string& error);

    // Guest API events (runtime.md §6.4): user.* config changes and device changes of a
    // running container, already serialised; `type` is a devlxd::EventType.
    using GuestEventSink =
        std::function<void(const Container& c, unsigned type, const std::string& line)>;
    void set_guest_event_sink(GuestEventSink sink) { guest_events_ = std::move(sink); }
    // Called when a container goes down (stop, crash, guest reboot): its guest API streams end.
    void set_on_stopped(std::function<void(const Container&)> fn) { on_stopped_ = std::move(fn); }

    // A control connection to the supervisor, already attached to the console, for `done`.
    using ConsoleDone = std::function<void(int r, Fd console, const std::string& error)>;
    int open_console(Container& c, ConsoleDone done, std::string& error);

    // Called with the live state of LODGE_LXCFS_DIR; brings every running container in line.
    void set_lxcfs_live(bool live);
    // Called whenever a container is seen running (lodged re-arms the lxcfs check with it).
    void set_on_running(std::function<void()> fn) { on_running_ = std::move(fn); }
    bool lxcfs_live() const { return lxcfs_live_; }

    // manager-instance.cpp (issue 15): snapshots, restore, copy, rename. Snapshots and copies
    // of a running container are allowed (crash-consistent); restore and rename need it
    // stopped. `snap` empty picks the next free "snapN" and is set to the name used.
    // `now_usec` (CLOCK_REALTIME, 0: now) dates it; snapshots.expiry counts from it.
    int create_snapshot(Container& c, std::string& snap, Done done, std::string& error,
                        uint64_t now_usec = 0);
    // snapshots.schedule: takes the snapshots due in the minute of `now_usec`
    // (CLOCK_REALTIME) of running containers and deletes the expired ones. A timer runs it
    // each minute; tests run it with a clock of their own (RunSnapshotSchedule). Returns the
    // number of snapshots started.
    unsigned snapshot_tick(uint64_t now_usec);
    void start_snapshot_scheduler();
    int delete_snapshot(Container& c, const std::string& snap, std::string& error);
    int rename_snapshot(Container& c, const std::string& from, const std::string& to,
                        std::string& error);
    // `force`: a running container is stopped (SIGKILL) first.
    int restore_snapshot(Container& c, const std::string& snap, bool force, Done done,
                         std::string& error);
    // A new container `name` from `source` (or its snapshot `snap`), with new MACs and a new
    // instance-id; `overrides` are user keys set on it.
    int copy_container(const std::string& source, const std::string& snap, const std::string& name,
                       const KeyMap& overrides, bool with_snapshots, Done done, std::string& error);
    int rename_container(Container& c, const std::string& name, std::string& error);
    // config edit: the whole definition at once. Keys go through set_config(); lodge's own
    // (volatile.*, image.*) must come back unchanged or be left out; devices of a running
    // container change only with add_device/remove_device.
    int update_container(Container& c, const KeyMap& config,
                         const std::map<std::string, KeyMap>& devices, Done done,
                         std::string& error);
    // A snapshot or copy reads the container, or a restore replaces its rootfs.
    bool instance_busy(const std::string& name) const {
        return readers_.count(name) != 0 || restoring_.count(name) != 0;
    }
    bool restoring(const std::string& name) const { return restoring_.count(name) != 0; }

    bool idle() const;
    // A start of `name` is under way (its supervisor not yet READY).
    bool starting(const std::string& name) const { return launches_.count(name) != 0; }
    Operations& operations() { return operations_; }
    sd_bus* bus() const { return bus_; }
    sd_event* event() const { return event_; }
    Polkit& polkit() { return polkit_; }

private:
    struct Launch;
    static int on_launch(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_reaped(sd_event_source*, const siginfo_t* si, void* userdata);
    static int on_launch_deadline(sd_event_source*, uint64_t usec, void* userdata);
    void step_launch(Launch& launch);
    void finish_launch(const std::string& name);
    void finish_remove(Container& c, Done done);
    // Removes `path` (a failed create's work dir, a deleted container's trash) in a worker;
    // `then` runs once it is gone (or could not be removed: the next start retries).
    void discard(const std::string& path, std::function<void()> then);
    void attach_watch(Container& c);
    // Ends a start waiting for the first status (`start_done`), if there is one.
    static void started(Container& c);
    void on_status(Container& c, const std::string& json);
    static int on_watch(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_async_reply(sd_event_source*, int fd, uint32_t revents, void* userdata);
    void track_supervisor(Container& c, int watch_fd);
    static int on_supervisor_exit(sd_event_source*, int fd, uint32_t revents, void* userdata);
    void run_exit_waiters(const std::string& name);
    void emit_state_changed(Container& c);
    void set_leader(Container& c, pid_t leader);
    void container_stopped(Container& c);
    void announce_ready(Container& c);
    static int on_ready_announce(sd_event_source*, uint64_t, void* userdata);
    // A running container's readiness from the runtime dir (newer than config.json).
    void restore_ready(Container& c);
    void guest_event(const Container& c, unsigned type, const std::string& line);
    // The loop's cached CLOCK_REALTIME: event timestamps of one iteration agree.
    uint64_t realtime_usec() const {
        uint64_t t = 0;
        sd_event_now(event_, CLOCK_REALTIME, &t);
        return t;
    }
    int commit_config(Container& c, ContainerConfig next, const char* property, std::string& error);
    // security.idmap.isolated: gives `config` a range of its own (volatile.idmap.base), or
    // drops the recorded one when it no longer applies. 1: config changed, 0: not, <0: error.
    int assign_idmap(const Container& c, ContainerConfig& config, std::string& error);
    // The container whose isolated range an explicit security.idmap.base in `next` overlaps.
    std::string isolated_overlap(const Container* self, const ContainerConfig& next) const;
    // manager-nic.cpp: volatile keys, host checks and live plugging for nic devices.
    // Checks and volatile keys; `plug` gets the nic-add request for a running container ("" if
    // the container is stopped).
    int prepare_nic(Container& c, ContainerConfig& next, const std::string& device,
                    std::string& plug, std::string& error);
    void update_nics(Container& c, const nlohmann::json& status);

    sd_event* event_;
    sd_bus* bus_;
    Registry registry_;
    // systemd is PID 1: each container's supervisor goes into its own transient scope.
    bool use_scopes_ = false;
    Polkit polkit_;
    bool lxcfs_live_ = false;
    bool lxcfs_known_ = false;
    std::function<void()> on_running_;
    GuestEventSink guest_events_;
    std::function<void(const Container&)> on_stopped_;
    std::map<std::string, std::unique_ptr<Container>> containers_;
    uint64_t last_generation_ = 0;
    struct Pending {
        Manager* manager;
        Fd fd;
        SourcePtr source, timeout;
        std::function<void(const std::string&)> done;
        // Instead of `done`: the reply and the connection, which goes on (the console).
        std::function<void(const std::string&, Fd)> handover;
    };
    int send_request(Container& c, const std::string& request, std::unique_ptr<Pending> p,
                     std::string& error);
    static int on_async_timeout(sd_event_source*, uint64_t usec, void* userdata);
    void end_request(Pending* p, const std::string& reply);
    std::map<Pending*, std::unique_ptr<Pending>> pending_;
    std::map<std::string, std::unique_ptr<Launch>> launches_; // by container name
    std::set<std::string> creating_;                          // names whose create runs
    Operations operations_;
    // manager-instance.cpp: containers read by snapshots and copies (how many at once), and
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

std::string supervisor_binary();
// A new volatile.cloud-init.instance-id (a UUID), "" if none could be made.
std::string new_instance_id();
// The keys cloud-init reads: a change to any gives the guest a new instance-id.
bool is_cloud_init_key(const std::string& key);

} // namespace lodge::daemon
