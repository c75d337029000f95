#include "manager.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "devlxd-api.hpp"
#include "machined.hpp"
#include "runtime/control.hpp"
#include "scope.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#ifndef LODGE_SUPERVISOR_PATH
#define LODGE_SUPERVISOR_PATH "/usr/libexec/lodge/lodge-supervisor"
#endif

namespace lodge::daemon {

namespace {

constexpr const char* instance_id_key = "volatile.cloud-init.instance-id";
constexpr int first_status_timeout_ms = 2000;

} // namespace

// The keys cloud-init reads: a change to any gives the guest a new instance-id (LXD 6's
// rule), so that cloud-init runs its per-instance modules again.
bool is_cloud_init_key(const std::string& key) {
    return key.rfind("cloud-init.", 0) == 0 || key == "user.user-data" ||
           key == "user.vendor-data" || key == "user.meta-data" || key == "user.network-config";
}

std::string new_instance_id() {
    sd_id128_t id;
    if (int r = sd_id128_randomize(&id); r < 0) {
        log_error_errno(r, "Cannot make an instance-id");
        return {};
    }
    char text[SD_ID128_UUID_STRING_MAX];
    return sd_id128_to_uuid_string(id, text);
}

std::string supervisor_binary() {
    const char* env = std::getenv("LODGE_SUPERVISOR");
    return env && *env ? env : LODGE_SUPERVISOR_PATH;
}

std::string Container::object_path() const {
    char* path = nullptr;
    if (sd_bus_path_encode("/io/lodge1/container", name().c_str(), &path) < 0)
        return "/io/lodge1/container/_";
    std::string out = path;
    std::free(path);
    return out;
}

// A start under way: the supervisor's notify pipe, read on the loop until READY or ERROR.
struct Manager::Launch {
    Manager* manager = nullptr;
    std::string name;
    ContainerConfig config; // what the supervisor starts from (for its scope)
    runtime::SupervisorLaunch supervisor;
    SourcePtr notify, deadline;
    std::string error; // set when lodged called the start off
    Done done;
};

Manager::Manager(sd_event* event, sd_bus* bus)
    : event_(event), bus_(bus), use_scopes_(use_systemd_scopes()), operations_(event) {}

Manager::~Manager() = default;

int Manager::load() {
    registry_.secure();
    // Removing a big leftover tree takes long: in workers, so lodged answers the bus at once.
    for (auto& stale : registry_.leftovers()) {
        log_info("Removing %s, left behind by an interrupted operation", stale.c_str());
        discard(stale, nullptr);
    }
    for (auto& name : registry_.list()) {
        auto c = std::make_unique<Container>();
        c->manager = this;
        std::string error;
        if (registry_.load(name, c->config, error) < 0) {
            log_error("Skipping container \"%s\": %s", name.c_str(), error.c_str());
            continue;
        }
        // Made before lodge kept one: given one now, once, on disk before anyone sees it.
        if (c->config.get(instance_id_key).empty()) {
            ContainerConfig next = c->config;
            next.config[instance_id_key] = new_instance_id();
            if (int r = registry_.save(next); r < 0)
                log_error_errno(r, "Cannot give \"%s\" an instance-id", name.c_str());
            else
                c->config = std::move(next);
        }
        Container& ref = *c;
        containers_[name] = std::move(c);
        attach_watch(ref);
        // A supervisor answers "watch" with its status at once. lodged is not on the bus yet,
        // so taking that first answer here (bounded) means its first reply after a restart
        // already knows PID 1, as before the restart (CONTRACT §4).
        if (ref.watch) {
            struct pollfd first {
                ref.watch.get(), POLLIN, 0
            };
            if (::poll(&first, 1, first_status_timeout_ms) > 0)
                on_watch(nullptr, ref.watch.get(), 0, &ref);
        }
        if (ref.running())
            restore_ready(ref);
        ref.ready_announced = ref.ready();
        // Stopped while lodged was away: the guest's readiness went with it.
        if (!ref.running() && ref.ready())
            container_stopped(ref);
    }
    return 0;
}

Container* Manager::find(const std::string& name) {
    auto it = containers_.find(name);
    return it == containers_.end() ? nullptr : it->second.get();
}

Container* Manager::find_by_path(const std::string& path) {
    char* name = nullptr;
    if (sd_bus_path_decode(path.c_str(), "/io/lodge1/container", &name) <= 0)
        return nullptr;
    std::string n = name;
    std::free(name);
    return find(n);
}

Container* Manager::find_by_pidns(const std::vector<NamespaceId>& chain) {
    for (auto& ns : chain)
        for (auto& [name, c] : containers_)
            if (c->leader > 0 && c->running() && c->pidns_fd && c->pidns == ns)
                return leader_alive(*c) ? c.get() : nullptr;
    return nullptr;
}

bool Manager::leader_alive(const Container& c) {
    if (!c.leader_fd.valid())
        return false;
    // A pidfd becomes readable once its process has exited.
    struct pollfd p {
        c.leader_fd.get(), POLLIN, 0
    };
    return ::poll(&p, 1, 0) == 0;
}

void Manager::set_leader(Container& c, pid_t leader) {
    if (leader == c.leader && (leader <= 0 || c.pidns_fd))
        return;
    c.leader = leader;
    c.pidns = {};
    c.pidns_fd.reset();
    c.leader_fd = PidFd();
    c.root_uid = 0;
    if (leader <= 0)
        return;
    c.generation = ++last_generation_;
    c.leader_fd = PidFd::open(leader);
    if (!c.leader_fd.valid()) {
        log_error_errno(errno, "Cannot open %s's PID 1 (%d)", c.name().c_str(), leader);
        return;
    }
    if (int r = open_pidns(c.leader_fd, c.pidns_fd, c.pidns); r < 0) {
        log_error_errno(r, "Cannot read the pid namespace of %s's PID 1 (%d)", c.name().c_str(),
                        leader);
        return;
    }
    // The first line of uid_map says where uid 0 went: "0 <host uid> <count>".
    std::ifstream map("/proc/" + std::to_string(leader) + "/uid_map");
    unsigned long inside = 1, outside = 0;
    if (map >> inside >> outside && inside == 0)
        c.root_uid = static_cast<uid_t>(outside);
}

static std::string ready_file(const std::string& name) {
    return paths::container_runtime(name) + "/ready";
}

// The container is down (stopped, crashed, or its guest rebooted): what the guest said about
// itself no longer holds.
void Manager::container_stopped(Container& c) {
    if (on_stopped_)
        on_stopped_(c);
    // A later boot starts not ready, even if lodged restarts before the guest says otherwise.
    ::unlink(ready_file(c.name()).c_str());
    if (!c.ready())
        return;
    std::string error;
    c.config.config["volatile.last_state.ready"] = "false";
    announce_ready(c);
    // The one durable write of readiness: while running it lives in memory and /run only.
    if (commit_config(c, c.config, "Config", error) < 0)
        log_error("Cannot clear the ready state of %s: %s", c.name().c_str(), error.c_str());
}

void Manager::restore_ready(Container& c) {
    std::string text;
    if (read_file(ready_file(c.name()), text) < 0)
        return;
    c.config.config["volatile.last_state.ready"] = text.rfind("true", 0) == 0 ? "true" : "false";
}

Container* Manager::find_by_pid(pid_t pid) {
    // A process belongs to a container when it shares PID 1's pid namespace (kept per leader).
    NamespaceId ns;
    return pidns_of(pid, ns) < 0 ? nullptr : find_by_pidns({ns});
}

// Live state comes from the supervisor's watch stream; without a supervisor, from the state
// file it left behind.
void Manager::attach_watch(Container& c) {
    Fd sock;
    if (runtime::control_connect(c.name(), sock, true) < 0 ||
        ::send(sock.get(), "watch", 5, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        std::string text;
        if (read_file(paths::runtime_state(c.name()), text) == 0) {
            auto j = nlohmann::json::parse(text, nullptr, false);
            if (j.is_object() && j.value("state", "") == "error")
                c.reason = j.value("reason", "");
            else if (j.is_object())
                c.reason = j.value("reason", "");
        }
        c.state = "stopped";
        set_leader(c, 0);
        started(c); // PID 1 ran, and is gone already
        return;
    }
    sd_event_source* s = nullptr;
    if (sd_event_add_io(event_, &s, sock.get(), EPOLLIN, on_watch, &c) < 0) {
        started(c);
        return;
    }
    c.watch_source.reset(s); // a previous source goes while its fd is still open
    c.watch = std::move(sock);
    track_supervisor(c, c.watch.get());
    // The first watch message corrects this at once; a start waiting for it replies then
    // (started()), so an exec right after Start never sees the container half known.
    c.state = "running";
}

// The watch socket's peer is the supervisor (it listens on the control socket itself).
void Manager::track_supervisor(Container& c, int watch_fd) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(watch_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0) {
        log_error_errno(-errno, "Cannot learn the supervisor of %s", c.name().c_str());
        return;
    }
    if (c.supervisor.valid() && c.supervisor.pid() == cred.pid)
        return;
    PidFd pidfd = PidFd::open(cred.pid);
    if (!pidfd.valid()) {
        // Gone already (ESRCH): nothing to wait for.
        if (errno != ESRCH)
            log_error_errno(-errno, "Cannot open a pidfd for the supervisor of %s (%d)",
                            c.name().c_str(), cred.pid);
        return;
    }
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, pidfd.get(), EPOLLIN, on_supervisor_exit, &c); r < 0) {
        log_error_errno(r, "Cannot watch the supervisor of %s", c.name().c_str());
        return;
    }
    // A supervisor we were still waiting for is replaced only once it is gone (see start()).
    // The old source goes before its pidfd is closed (a watched fd closed first leaves a stale
    // epoll entry wherever a forked copy of it lives on).
    c.supervisor_source.reset(s);
    c.supervisor = std::move(pidfd);
}

int Manager::on_supervisor_exit(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Container*>(userdata);
        c->supervisor_source.reset();
        c->supervisor.reset();
        c->manager->run_exit_waiters(c->name());
        return 0;
    });
}

void Manager::run_exit_waiters(const std::string& name) {
    auto range = exit_waiters_.equal_range(name);
    std::vector<std::function<void()>> ready;
    for (auto it = range.first; it != range.second; ++it)
        ready.push_back(std::move(it->second));
    exit_waiters_.erase(range.first, range.second);
    // Each may start the container again (and so track a new supervisor): run them after.
    for (auto& fn : ready)
        fn();
}

void Manager::after_supervisor_exit(const std::string& name, std::function<void()> then) {
    Container* c = find(name);
    if (!c || !c->supervisor.valid()) {
        then();
        return;
    }
    exit_waiters_.emplace(name, std::move(then));
}

int Manager::on_watch(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Container*>(userdata);
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) {
            // The supervisor is gone: the container stopped; its last words are in state.json.
            c->watch_source.reset();
            c->watch.reset();
            std::string text;
            read_file(paths::runtime_state(c->name()), text);
            auto j = nlohmann::json::parse(text, nullptr, false);
            c->state = "stopped";
            c->manager->set_leader(*c, 0);
            c->manager->update_nics(*c, nlohmann::json::object());
            if (j.is_object()) {
                c->reason = j.value("reason", "");
                if (j.value("state", "") == "error")
                    c->state = "error";
            }
            c->manager->container_stopped(*c);
            c->manager->emit_state_changed(*c);
            started(*c);
            return 0;
        }
        c->manager->on_status(*c, std::string(buf, static_cast<size_t>(n)));
        return 0;
    });
}

void Manager::on_status(Container& c, const std::string& text) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return;
    c.state = j.value("state", "stopped");
    c.reason = j.value("reason", "");
    pid_t leader = j.value("pid", 0);
    update_nics(c, j);
    // A guest reboot brings a new PID 1 (and new host veths): machined must follow it.
    if (use_scopes_ && leader > 0 && c.leader > 0 && leader != c.leader)
        machined_register(bus_, c.name(), leader, paths::container_rootfs(c.name()),
                          c.host_ifindices());
    std::string boot_id = j.value("boot_id", "");
    // A new boot id without a stop in between: the guest rebooted. A new boot is a new guest
    // API identity, even should its PID 1 have the old one's pid.
    bool rebooted = !c.boot_id.empty() && !boot_id.empty() && boot_id != c.boot_id;
    if (rebooted)
        set_leader(c, 0);
    set_leader(c, leader);
    if (rebooted)
        container_stopped(c);
    c.boot_id = boot_id;
    c.cgroup = j.value("cgroup", "");
    bool had_lxcfs = c.lxcfs;
    c.lxcfs = j.value("lxcfs", false);
    emit_state_changed(c);
    if (had_lxcfs != c.lxcfs)
        sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container",
                                       "LXCFS", nullptr);
    if (c.state == "running" && on_running_)
        on_running_();
    // A container re-attached after a lodged restart, or one that started while lxcfs moved.
    if (lxcfs_known_ && c.state == "running" && c.lxcfs != lxcfs_live_)
        set_lxcfs_live(lxcfs_live_);
    started(c);
}

void Manager::started(Container& c) {
    if (auto done = std::move(c.start_done)) {
        c.start_done = nullptr;
        done(0, "");
    }
}

void Manager::emit_state_changed(Container& c) {
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", "State",
                                   "Reason", "Leader", nullptr);
}

int Manager::create(CreateRequest req, Done done, std::string& error) {
    ContainerConfig& config = req.config;
    if (auto e = check_container_name(config.name); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    for (auto& [k, v] : config.config)
        if (auto e = check_config_key(k, v, req.trusted ? KeySource::lodge : KeySource::user);
            !e.empty()) {
            error = e;
            return -EINVAL;
        }
    if (auto e = check_container_config(config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (find(config.name) || creating_.count(config.name)) {
        error = "Container \"" + config.name + "\" already exists";
        return -EEXIST;
    }
    if (std::string other = isolated_overlap(nullptr, config); !other.empty()) {
        error = "Invalid value for \"security.idmap.base\": its ids overlap the isolated range "
                "of container \"" +
                other + "\"";
        return -EINVAL;
    }
    config.config[instance_id_key] = new_instance_id();
    std::string work_dir;
    if (int r = registry_.prepare(config.name, work_dir, error); r < 0)
        return r;
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
    op.done = [this, config, work_dir, done](const OperationResult& res) mutable {
        creating_.erase(config.name);
        std::string why = res.error;
        int r = res.code;
        KeyMap image_keys;
        if (r >= 0 && res.data.is_object() && res.data.contains("image_keys"))
            image_keys = res.data["image_keys"].get<KeyMap>();
        if (r >= 0)
            r = registry_.commit(config, work_dir, image_keys, why);
        if (r < 0) {
            // The caller hears of the failure once nothing of it is left on disk.
            discard(work_dir, [done, r, why] { done(r, why); });
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
        done(0, "");
    };
    creating_.insert(name);
    if (int r = operations_.start(std::move(op), error); r < 0) {
        creating_.erase(name);
        remove_tree(work_dir); // an empty rootfs/: nothing was filled
        return r;
    }
    return 0;
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

int Manager::remove(Container& c, bool force, Done done, std::string& error) {
    if (starting(c.name())) {
        error = "Container \"" + c.name() + "\" is starting; delete it once it runs";
        return -EBUSY;
    }
    if (instance_busy(c.name())) {
        error = "Container \"" + c.name() + "\" is being snapshotted, copied or restored";
        return -EBUSY;
    }
    if (!c.running()) {
        finish_remove(c, std::move(done));
        return 0;
    }
    if (!force) {
        error = "Container \"" + c.name() + "\" is running; stop it first or use --force";
        return -EBUSY;
    }
    // The supervisor answers stop-force once the container is down; the delete goes on then.
    std::string name = c.name();
    auto stopped = [this, name, done](const std::string& reply) {
        Container* found = find(name);
        if (!found)
            return done(-ENOENT, "Container \"" + name + "\" is gone");
        auto j = nlohmann::json::parse(reply, nullptr, false);
        if (j.is_object() && j.contains("error") && found->running())
            return done(-EBUSY, j["error"].get<std::string>());
        finish_remove(*found, done);
    };
    if (request_async(c, "stop-force", stopped, error) < 0) {
        if (c.running())
            return -EBUSY;
        finish_remove(c, std::move(done));
    }
    return 0;
}

void Manager::finish_remove(Container& c, Done done) {
    std::string name = c.name(), path = c.object_path(), trash;
    if (int r = registry_.retire(name, trash); r < 0)
        return done(r, "Cannot delete \"" + name + "\": " + std::strerror(-r));
    remove_tree(paths::container_runtime(name));
    started(c); // a start still waiting for its first status did happen
    containers_.erase(name);
    run_exit_waiters(name); // they find the container gone and say so
    sd_bus_emit_object_removed(bus_, path.c_str());
    sd_bus_emit_signal(bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerRemoved", "so",
                       name.c_str(), path.c_str());
    done(0, "");
    // The rename was the delete; the files go off the loop.
    if (!trash.empty())
        discard(trash, nullptr);
}

int Manager::start(Container& c, Done done, std::string& error) {
    if (c.running() || starting(c.name())) {
        error = "Container \"" + c.name() + "\" is already running";
        return -EALREADY;
    }
    if (restoring(c.name())) {
        error = "Container \"" + c.name() + "\" is being restored";
        return -EBUSY;
    }
    std::vector<std::string> args;
    if (const char* root = std::getenv("LODGE_CGROUP_ROOT"); root && *root)
        args.push_back(std::string("--cgroup=") + root + "/lodge-" + c.name() + ".scope");
    // Under systemd the supervisor waits until lodged has put it into lodge-NAME.scope, whose
    // Controller it is (PID 1 asks it, not the whole scope, to stop), and only then makes its
    // supervisor/ and payload/ cgroups below the scope.
    std::string e;
    auto launch = std::make_unique<Launch>();
    launch->manager = this;
    launch->name = c.name();
    launch->done = std::move(done);
    ContainerConfig& config = launch->config;
    config = c.config;
    registry_.load(c.name(), config, e); // what the supervisor will start from
    // nic names and MACs are made once and kept (volatile.<dev>.name/hwaddr), before any start.
    if (fill_nic_volatile(config) && commit_config(c, config, "Config", error) < 0)
        return -EIO;
    if (int r = assign_idmap(c, config, error); r < 0)
        return r;
    else if (r > 0 && commit_config(c, config, "Config", error) < 0)
        return -EIO;
    auto failed = [&](int r, const std::string& why) {
        error = why;
        c.state = "error";
        c.reason = why;
        emit_state_changed(c);
        return r;
    };
    if (int r = launch->supervisor.spawn(supervisor_binary(), c.name(), args, use_scopes_,
                                         use_scopes_, false);
        r < 0)
        return failed(-EIO,
                      "Cannot start lodge-supervisor for " + c.name() + ": " + std::strerror(-r));
    // Its intermediate process exits at once; sd-event reaps it, lodged does not wait for it.
    sd_event_source* s = nullptr;
    if (sd_event_add_child(event_, &s, launch->supervisor.intermediate(), WEXITED, on_reaped,
                           nullptr) < 0)
        while (::waitpid(launch->supervisor.intermediate(), nullptr, 0) < 0 && errno == EINTR)
            ;
    // READY comes once PID 1 has been exec'd, which may take a rootfs shift: off the loop.
    s = nullptr;
    if (int r = sd_event_add_io(event_, &s, launch->supervisor.notify_fd(), EPOLLIN, on_launch,
                                launch.get());
        r < 0) {
        launch->supervisor.release(false);
        return failed(-EIO, "Cannot watch the supervisor of " + c.name());
    }
    launch->notify.reset(s);
    if (use_scopes_ && sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, 30 * 1000000ULL, 0,
                                                  on_launch_deadline, launch.get()) >= 0)
        launch->deadline.reset(s);
    c.state = "starting";
    c.reason.clear();
    emit_state_changed(c);
    launches_[c.name()] = std::move(launch);
    return 0;
}

// Isolated ranges come from a fixed pool above the shared default range (1000000, 65536 ids),
// in 65536-aligned steps; /etc/subuid is not consulted (lodged runs as root and owns the pool).
constexpr uint64_t isolated_pool_start = 1000000 + 65536;
constexpr uint64_t idmap_step = 65536;

static bool ranges_overlap(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
    return a < b + b_size && b < a + a_size;
}

std::string Manager::isolated_overlap(const Container* self, const ContainerConfig& next) const {
    if (!next.config.count("security.idmap.base"))
        return {};
    uint64_t base = next.idmap_base(), size = next.idmap_size();
    for (auto& [name, other] : containers_)
        if (other.get() != self && other->config.config.count("volatile.idmap.base") &&
            other->config.get_bool("security.idmap.isolated", false) &&
            ranges_overlap(base, size, other->config.idmap_base(), other->config.idmap_size()))
            return name;
    return {};
}

int Manager::assign_idmap(const Container& c, ContainerConfig& config, std::string& error) {
    // A container made before bases were checked: refused here, with the key named.
    for (const char* key : {"security.idmap.base", "security.idmap.size"})
        if (config.config.count(key))
            if (auto e = check_config_key(key, config.config.at(key)); !e.empty()) {
                error = e;
                return -EINVAL;
            }
    bool isolated = config.get_bool("security.idmap.isolated", false);
    auto recorded = config.config.find("volatile.idmap.base");
    if (!isolated || config.config.count("security.idmap.base")) {
        if (recorded == config.config.end())
            return 0;
        config.config.erase(recorded); // the range goes back to the pool
        return 1;
    }
    uint64_t size = config.idmap_size();
    auto taken = [&](uint64_t base) {
        for (auto& [name, other] : containers_)
            if (other.get() != &c && !other->config.privileged() &&
                ranges_overlap(base, size, other->config.idmap_base(), other->config.idmap_size()))
                return true;
        return false;
    };
    // Kept across restarts while nobody else's ids moved into it.
    if (recorded != config.config.end())
        if (auto base = parse_uint(recorded->second, UINT32_MAX);
            base && *base >= isolated_pool_start && *base + size <= UINT32_MAX && !taken(*base))
            return 0;
    for (uint64_t base = isolated_pool_start; base + size <= UINT32_MAX; base += idmap_step)
        if (!taken(base)) {
            config.config["volatile.idmap.base"] = std::to_string(base);
            return 1;
        }
    error = "No free range of " + std::to_string(size) + " ids is left for isolated container \"" +
            c.name() + "\"";
    return -ENOSPC;
}

int Manager::on_reaped(sd_event_source* s, const siginfo_t*, void*) {
    sd_event_source_unref(s); // freed once dispatched; sd-event reaps the process first
    return 0;
}

int Manager::on_launch(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* launch = static_cast<Launch*>(userdata);
        launch->manager->step_launch(*launch);
        return 0;
    });
}

int Manager::on_launch_deadline(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* launch = static_cast<Launch*>(userdata);
        launch->error = "lodge-supervisor did not get ready to start " + launch->name;
        log_error("%s within 30 s", launch->error.c_str());
        launch->supervisor.release(false); // it exits untouched; EOF ends the launch
        return 0;
    });
}

void Manager::step_launch(Launch& launch) {
    auto step = launch.supervisor.read();
    if (step == runtime::SupervisorLaunch::Step::held) {
        // The supervisor waits, before it touched anything, to be placed into its scope.
        launch.deadline.reset();
        std::string why;
        int r = start_scope(ScopeRequest{&launch.config, launch.supervisor.supervisor_pid(),
                                         launch.supervisor.bus_name()},
                            why);
        if (r < 0)
            launch.error = why;
        if (launch.supervisor.release(r >= 0) < 0 && launch.error.empty())
            launch.error = "Cannot let lodge-supervisor start " + launch.name;
        step = launch.supervisor.read();
    }
    if (step == runtime::SupervisorLaunch::Step::finished)
        finish_launch(launch.name);
}

void Manager::finish_launch(const std::string& name) {
    auto it = launches_.find(name);
    if (it == launches_.end())
        return;
    std::unique_ptr<Launch> launch = std::move(it->second);
    launches_.erase(it);
    launch->notify.reset();
    launch->deadline.reset();
    Container* c = find(name);
    if (!c)
        return launch->done(-ENOENT, "Container \"" + name + "\" is gone");
    runtime::LaunchResult res;
    int r = launch->supervisor.result(res);
    if (r < 0 || !launch->error.empty()) {
        std::string why = !launch->error.empty() ? launch->error : res.error;
        c->state = "error";
        c->reason = why;
        emit_state_changed(*c);
        return launch->done(-EIO, why);
    }
    // Re-read: the supervisor started from what is on disk now.
    std::string e;
    registry_.load(name, c->config, e);
    c->started_usec = static_cast<uint64_t>(std::time(nullptr)) * 1000000ULL;
    set_leader(*c, res.init_pid);
    // The reply waits for the supervisor's first status: what exec needs (the cgroup) is known.
    if (!use_scopes_) {
        c->start_done = std::move(launch->done);
        attach_watch(*c);
        return;
    }
    // The host ends of the veths go to machined with the machine.
    pid_t init_pid = res.init_pid;
    Done done = std::move(launch->done);
    auto registered = [this, name, init_pid, done](const std::string& reply) {
        Container* found = find(name);
        if (!found)
            return done(-ENOENT, "Container \"" + name + "\" is gone");
        update_nics(*found, nlohmann::json::parse(reply, nullptr, false));
        machined_register(bus_, name, init_pid, paths::container_rootfs(name),
                          found->host_ifindices());
        found->start_done = done;
        attach_watch(*found);
    };
    std::string why;
    if (request_async(*c, "status", registered, why) < 0)
        registered("");
}

int Manager::request_async(Container& c, const std::string& req,
                           std::function<void(const std::string& reply)> done, std::string& error) {
    auto p = std::make_unique<Pending>();
    p->manager = this;
    p->done = std::move(done);
    return send_request(c, req, std::move(p), error);
}

int Manager::send_request(Container& c, const std::string& req, std::unique_ptr<Pending> p,
                          std::string& error) {
    if (starting(c.name())) {
        error = "Container \"" + c.name() + "\" is starting; try again once it runs";
        return -EBUSY;
    }
    // Non-blocking all the way: a supervisor that stopped reading cannot hold the loop.
    if (runtime::control_connect(c.name(), p->fd, true) < 0 ||
        ::send(p->fd.get(), req.data(), req.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        error = "Container \"" + c.name() + "\" is not running";
        return -ENOTCONN;
    }
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(event_, &s, p->fd.get(), EPOLLIN, on_async_reply, p.get()); r < 0) {
        error = "Cannot watch the supervisor";
        return r;
    }
    p->source.reset(s);
    pending_[p.get()] = std::move(p);
    return 0;
}

int Manager::request_async(Container& c, const std::string& req, Done done, std::string& error) {
    std::string name = c.name();
    return request_async(
        c, req, std::function<void(const std::string&)>([name, done](const std::string& reply) {
            auto j = nlohmann::json::parse(reply, nullptr, false);
            if (!j.is_object())
                done(-ENOTCONN, "Container \"" + name + "\" is not running");
            else if (j.contains("error") && j["error"].is_string())
                done(-EINVAL, j["error"].get<std::string>());
            else
                done(0, "");
        }),
        error);
}

int Manager::on_async_reply(sd_event_source*, int fd, uint32_t, void* userdata) {
    return guarded([&] {
        auto* p = static_cast<Pending*>(userdata);
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        p->manager->end_request(p, n > 0 ? std::string(buf, static_cast<size_t>(n)) : "");
        return 0;
    });
}

int Manager::on_async_timeout(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* p = static_cast<Pending*>(userdata);
        p->manager->end_request(p, "");
        return 0;
    });
}

void Manager::end_request(Pending* p, const std::string& reply) {
    auto it = pending_.find(p);
    if (it == pending_.end())
        return;
    std::unique_ptr<Pending> owned = std::move(it->second);
    pending_.erase(it);
    owned->source.reset();
    owned->timeout.reset();
    if (owned->handover)
        owned->handover(reply, std::move(owned->fd));
    else if (owned->done)
        owned->done(reply);
}

int Manager::set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                        Done done, std::string& error) {
    ContainerConfig next = c.config;
    for (auto& [k, v] : set) {
        if (auto e = check_config_key(k, v); !e.empty()) {
            error = e;
            return -EINVAL;
        }
        next.config[k] = v;
    }
    for (auto& k : unset) {
        if (auto e = check_config_key(k, "x");
            e.find("Unknown") != std::string::npos || e.find("read-only") != std::string::npos) {
            error = e;
            return -EINVAL;
        }
        next.config.erase(k);
    }
    if (std::string other = isolated_overlap(&c, next); !other.empty()) {
        error = "Invalid value for \"security.idmap.base\": its ids overlap the isolated range "
                "of container \"" +
                other + "\"";
        return -EINVAL;
    }
    bool cloud_init_changed = false;
    for (auto& [k, v] : next.config)
        cloud_init_changed |= is_cloud_init_key(k) && c.config.get(k) != v;
    for (auto& [k, v] : c.config.config)
        cloud_init_changed |= is_cloud_init_key(k) && !next.config.count(k);
    if (cloud_init_changed)
        next.config[instance_id_key] = new_instance_id();
    ContainerConfig before = c.config;
    if (int r = commit_config(c, std::move(next), "Config", error); r < 0)
        return r;
    if (c.running()) {
        // The guest hears of user.* changes only (LXD's rule), old and new value alike.
        uint64_t now = realtime_usec();
        std::set<std::string> keys;
        for (auto& [k, v] : set)
            keys.insert(k);
        keys.insert(unset.begin(), unset.end());
        for (auto& k : keys) {
            std::string was = before.get(k), is = c.config.get(k);
            if (k.rfind("user.", 0) == 0 && was != is)
                guest_event(c, devlxd::event_config, devlxd::config_event(k, was, is, now));
        }
        bool devlxd_was = before.get_bool("security.devlxd", true);
        bool devlxd_is = c.config.get_bool("security.devlxd", true);
        if (devlxd_was != devlxd_is) {
            std::string target = c.name();
            auto done = [target](const std::string& reply) {
                if (reply.find("\"ok\"") == std::string::npos)
                    log_error("Cannot follow security.devlxd in %s: %s", target.c_str(),
                              reply.c_str());
            };
            std::string why;
            if (request_async(c, devlxd_is ? "devlxd-attach" : "devlxd-detach", done, why) < 0)
                log_error("Cannot follow security.devlxd in %s: %s", target.c_str(), why.c_str());
        }
    }
    // limits.* apply to a running container at once.
    bool limits = false;
    for (auto& [k, v] : set)
        limits |= k.rfind("limits.", 0) == 0;
    for (auto& k : unset)
        limits |= k.rfind("limits.", 0) == 0;
    if (limits && c.running() && !starting(c.name())) {
        // The supervisor writes them on the payload cgroup, in a (delegated) scope too.
        return request_async(c, "apply-limits", std::move(done), error) < 0 ? -EIO : 0;
    }
    done(0, "");
    return 0;
}

// Writes `next` to disk (atomically) and only then makes it the container's config.
int Manager::commit_config(Container& c, ContainerConfig next, const char* property,
                           std::string& error) {
    if (int r = registry_.save(next); r < 0) {
        error = std::string("Cannot write config.json: ") + std::strerror(-r);
        return r;
    }
    c.config = std::move(next);
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", property,
                                   nullptr);
    return 0;
}

int Manager::add_device(Container& c, const std::string& device, const KeyMap& keys, Done done,
                        std::string& error) {
    if (device.empty() || device.find('/') != std::string::npos) {
        error = "Invalid device name \"" + device + "\"";
        return -EINVAL;
    }
    if (c.config.devices.count(device)) {
        error = "Device \"" + device + "\" already exists";
        return -EEXIST;
    }
    ContainerConfig next = c.config;
    next.devices[device] = keys;
    if (auto e = check_container_config(next); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    bool nic = is_nic(keys);
    std::string plug;
    if (nic && prepare_nic(c, next, device, plug, error) < 0)
        return -EINVAL;
    // Stored once plugged (a nic of a running container), or at once.
    std::string name = c.name();
    auto store = [this, name, device, keys, next, nic, done](int r, const std::string& why) {
        Container* found = find(name);
        if (r < 0 || !found)
            return done(r < 0 ? -EINVAL : -ENOENT, r < 0 ? why : "Container is gone");
        std::string err;
        if (int w = commit_config(*found, next, "Devices", err); w < 0) {
            if (nic && found->running()) {
                std::string ignored;
                request_async(*found, "nic-remove " + device, Done([](int, const std::string&) {}),
                              ignored);
            }
            return done(w, err);
        }
        if (nic) // its volatile keys
            sd_bus_emit_properties_changed(bus_, found->object_path().c_str(),
                                           "io.lodge1.Container", "Config", nullptr);
        if (found->running())
            guest_event(*found, devlxd::event_device,
                        devlxd::device_event("added", device, keys, realtime_usec()));
        done(0, "");
    };
    if (plug.empty()) {
        store(0, "");
        return 0;
    }
    return request_async(c, plug, Done(store), error) < 0 ? -EINVAL : 0;
}

int Manager::remove_device(Container& c, const std::string& device, Done done, std::string& error) {
    if (!c.config.devices.count(device)) {
        error = "No device \"" + device + "\" in container \"" + c.name() + "\"";
        return -ENOENT;
    }
    KeyMap removed = c.config.devices.at(device);
    std::string name = c.name();
    // Unplugged first (a nic of a running container), then forgotten.
    auto forget = [this, name, device, removed, done](int r, const std::string& why) {
        Container* found = find(name);
        if (r < 0 || !found)
            return done(r < 0 ? -EIO : -ENOENT, r < 0 ? why : "Container is gone");
        ContainerConfig next = found->config;
        next.devices.erase(device);
        drop_device_volatile(next, device);
        std::string err;
        if (int w = commit_config(*found, std::move(next), "Devices", err); w < 0)
            return done(w, err);
        if (found->running())
            guest_event(*found, devlxd::event_device,
                        devlxd::device_event("removed", device, removed, realtime_usec()));
        done(0, "");
    };
    if (!is_nic(removed) || !c.running()) {
        forget(0, "");
        return 0;
    }
    return request_async(c, "nic-remove " + device, Done(forget), error) < 0 ? -EIO : 0;
}

// A guest can flip its state thousands of times a second (PATCH /1.0): no durable write and
// no more than one bus announcement per interval for it.
constexpr uint64_t ready_announce_interval_usec = 250 * 1000;

int Manager::set_ready(Container& c, bool ready, std::string& error) {
    if (c.ready() == ready)
        return 0;
    c.config.config["volatile.last_state.ready"] = ready ? "true" : "false";
    // /run outlives a lodged restart, not the container: the state a re-attach reads.
    if (c.running())
        if (int r =
                write_file_atomic(ready_file(c.name()), ready ? "true\n" : "false\n", 0600, false);
            r < 0) {
            error = std::string("Cannot record readiness: ") + std::strerror(-r);
            log_error("Cannot record the readiness of %s: %s", c.name().c_str(), error.c_str());
        }
    announce_ready(c);
    return 0;
}

void Manager::announce_ready(Container& c) {
    if (c.ready_announce)
        return; // one is due; it says whatever is true then
    uint64_t now = 0;
    sd_event_now(event_, CLOCK_MONOTONIC, &now);
    uint64_t due = c.ready_announced_usec + ready_announce_interval_usec;
    if (c.ready_announced_usec == 0 || now >= due) {
        on_ready_announce(nullptr, now, &c);
        return;
    }
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_time(event_, &s, CLOCK_MONOTONIC, due, 0, on_ready_announce, &c);
        r < 0) {
        log_error_errno(r, "Cannot schedule the readiness signal of %s", c.name().c_str());
        return;
    }
    c.ready_announce.reset(s);
}

int Manager::on_ready_announce(sd_event_source*, uint64_t now, void* userdata) {
    return guarded([&] {
        auto* c = static_cast<Container*>(userdata);
        Manager* m = c->manager;
        c->ready_announce.reset();
        c->ready_announced_usec = now;
        bool ready = c->ready();
        if (ready == c->ready_announced)
            return 0; // flipped and flipped back inside the window
        c->ready_announced = ready;
        sd_bus_emit_properties_changed(m->bus_, c->object_path().c_str(), "io.lodge1.Container",
                                       "Ready", "Config", nullptr);
        if (ready) {
            log_info("Container %s is ready", c->name().c_str());
            sd_bus_emit_signal(m->bus_, "/io/lodge1", "io.lodge1.Manager", "ContainerReady", "so",
                               c->name().c_str(), c->object_path().c_str());
        }
        return 0;
    });
}

void Manager::guest_event(const Container& c, unsigned type, const std::string& line) {
    if (guest_events_)
        guest_events_(c, type, line);
}

int Manager::open_console(Container& c, ConsoleDone done, std::string& error) {
    auto p = std::make_unique<Pending>();
    p->manager = this;
    // The first message is the supervisor's {"ok":true}; after it the socket is the console.
    std::string name = c.name();
    p->handover = [name, done](const std::string& reply, Fd sock) {
        int flags = sock ? ::fcntl(sock.get(), F_GETFL) : -1;
        if (reply.find("\"ok\"") == std::string::npos || flags < 0 ||
            ::fcntl(sock.get(), F_SETFL, flags & ~O_NONBLOCK) < 0)
            return done(-EIO, Fd(), "The supervisor of \"" + name + "\" refused the console");
        done(0, std::move(sock), "");
    };
    sd_event_source* s = nullptr;
    if (sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, 5 * 1000000ULL, 0, on_async_timeout,
                                   p.get()) >= 0)
        p->timeout.reset(s);
    return send_request(c, "attach", std::move(p), error);
}

void Manager::set_lxcfs_live(bool live) {
    if (!lxcfs_known_ || live != lxcfs_live_) {
        log_info("lxcfs at %s is %s", paths::lxcfs_dir().c_str(), live ? "live" : "gone");
        lxcfs_live_ = live;
        lxcfs_known_ = true;
        sd_bus_emit_properties_changed(bus_, "/io/lodge1", "io.lodge1.Manager", "LXCFS", nullptr);
    }
    for (auto& [name, c] : containers_) {
        if (c->state != "running" || c->lxcfs == live || c->lxcfs_pending)
            continue;
        std::string error, target = name;
        c->lxcfs_pending = true;
        // Looked up again on the answer: the container may be gone by then.
        auto done = [this, target](const std::string&) {
            if (Container* found = find(target))
                found->lxcfs_pending = false;
        };
        if (request_async(*c, live ? "lxcfs-attach" : "lxcfs-detach", done, error) < 0)
            c->lxcfs_pending = false;
    }
}

bool Manager::idle() const {
    if (!pending_.empty() || !launches_.empty() || !operations_.idle() || !exit_waiters_.empty())
        return false;
    for (auto& [name, c] : containers_)
        if (c->running())
            return false;
    return true;
}

} // namespace lodge::daemon
