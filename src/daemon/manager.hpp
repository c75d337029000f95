// lodged's model: every container on disk, its live state as its supervisor reports it, and
// the operations the bus objects call. machined's manager is the model for this split.
#pragma once

#include "bus-util.hpp"
#include "common/config.hpp"
#include "common/fd.hpp"
#include "peer.hpp"
#include "polkit.hpp"
#include "registry.hpp"

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace lodge::daemon {

class Manager;

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
    uid_t root_uid = 0;         // the host uid the container's root maps to
    // The supervisor's "watch" stream, while one runs.
    Fd watch;
    SourcePtr watch_source;
    std::string watch_buffer;
    // The supervisor process itself, while it exists: it outlives its "stopped" by a little
    // (it lets go of its socket, cgroup and lock, then exits), and no new one may start before.
    PidFd supervisor;
    SourcePtr supervisor_source;
    std::vector<LiveNic> nics; // empty while stopped

    // config.config plus volatile.<dev>.host_name of the nics plugged now (never on disk).
    KeyMap visible_config() const;
    // The host ends of the veths (for machined's NetworkInterfaces).
    std::vector<int> host_ifindices() const;

    const std::string& name() const { return config.name; }
    std::string object_path() const;
    bool running() const {
        return state == "running" || state == "stopping" || state == "starting";
    }
    // The guest said it is ready (PATCH /1.0 on /dev/lxd/sock), kept as LXD keeps it.
    bool ready() const { return config.get_bool("volatile.last_state.ready", false); }
};

class Manager {
public:
    Manager(sd_event* event, sd_bus* bus);

    // Loads every container from disk and re-attaches to the supervisors still running.
    int load();
    Container* find(const std::string& name);
    Container* find_by_path(const std::string& path);
    Container* find_by_pid(pid_t pid);
    // The running container whose PID 1 shares the first pid namespace of `chain` it can.
    Container* find_by_pidns(const std::vector<NamespaceId>& chain);
    const std::map<std::string, std::unique_ptr<Container>>& containers() const {
        return containers_;
    }

    // The operations. Each returns 0 or -errno with `error` set to a message for the caller.
    int create(ContainerConfig config, const FillRootfs& fill, std::string& error);
    int remove(Container& c, bool force, std::string& error);
    int start(Container& c, std::string& error);
    // Runs `then` once no supervisor of `name` exists any more: at once if none does, else
    // when the old one's pidfd says it has exited (the loop is never blocked meanwhile). `then`
    // finds the container again by name; it may be gone by then (deleted meanwhile).
    void after_supervisor_exit(const std::string& name, std::function<void()> then);
    // Sends a supervisor request whose reply comes later (stop, restart); `done` gets it.
    int request_async(Container& c, const std::string& request,
                      std::function<void(const std::string& reply)> done, std::string& error);
    int request(Container& c, const std::string& request, std::string& reply, std::string& error);
    int set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                   std::string& error);

    // Devices are stored; a nic is plugged into (or out of) a running container at once.
    int add_device(Container& c, const std::string& device, const KeyMap& keys, std::string& error);
    int remove_device(Container& c, const std::string& device, std::string& error);
    // volatile.last_state.ready, set by the guest and cleared whenever the container stops.
    int set_ready(Container& c, bool ready, std::string& error);

    // Guest API events (runtime.md §6.4): user.* config changes and device changes of a
    // running container, already serialised; `type` is a devlxd::EventType.
    using GuestEventSink =
        std::function<void(const Container& c, unsigned type, const std::string& line)>;
    void set_guest_event_sink(GuestEventSink sink) { guest_events_ = std::move(sink); }
    // Called when a container goes down (stop, crash, guest reboot): its guest API streams end.
    void set_on_stopped(std::function<void(const Container&)> fn) { on_stopped_ = std::move(fn); }

    // A control connection to the supervisor, already attached to the console.
    int open_console(Container& c, Fd& out, std::string& error);

    // Called with the live state of LODGE_LXCFS_DIR; brings every running container in line.
    void set_lxcfs_live(bool live);
    // Called whenever a container is seen running (lodged re-arms the lxcfs check with it).
    void set_on_running(std::function<void()> fn) { on_running_ = std::move(fn); }
    bool lxcfs_live() const { return lxcfs_live_; }

    bool idle() const;
    sd_bus* bus() const { return bus_; }
    sd_event* event() const { return event_; }
    Polkit& polkit() { return polkit_; }

private:
    void attach_watch(Container& c);
    void on_status(Container& c, const std::string& json);
    static int on_watch(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_async_reply(sd_event_source*, int fd, uint32_t revents, void* userdata);
    void track_supervisor(Container& c, int watch_fd);
    static int on_supervisor_exit(sd_event_source*, int fd, uint32_t revents, void* userdata);
    void run_exit_waiters(const std::string& name);
    void emit_state_changed(Container& c);
    void set_leader(Container& c, pid_t leader);
    void container_stopped(Container& c);
    void guest_event(const Container& c, unsigned type, const std::string& line);
    // The loop's cached CLOCK_REALTIME: event timestamps of one iteration agree.
    uint64_t realtime_usec() const {
        uint64_t t = 0;
        sd_event_now(event_, CLOCK_REALTIME, &t);
        return t;
    }
    int commit_config(Container& c, ContainerConfig next, const char* property, std::string& error);
    // manager-nic.cpp: volatile keys, host checks and live plugging for nic devices.
    int prepare_nic(Container& c, ContainerConfig& next, const std::string& device,
                    std::string& error);
    int unplug_nic(Container& c, const std::string& device, std::string& error);
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
    struct Pending {
        Manager* manager;
        Fd fd;
        SourcePtr source;
        std::function<void(const std::string&)> done;
    };
    std::map<Pending*, std::unique_ptr<Pending>> pending_;
    // after_supervisor_exit() callbacks, per container name.
    std::multimap<std::string, std::function<void()>> exit_waiters_;
};

std::string supervisor_binary();

} // namespace lodge::daemon
