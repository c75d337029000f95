#include "daemon/manager.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "daemon/scope.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

namespace lodge::daemon {

namespace {

constexpr int first_status_timeout_ms = 2000;

// A guest can flip its state thousands of times a second (PATCH /1.0): no durable write and
// no more than one bus announcement per interval for it.
constexpr uint64_t ready_announce_interval_usec = 250 * 1000;

std::string ready_file(const std::string& name) {
    return paths::container_runtime(name) + "/ready";
}

} // namespace

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

std::string Container::object_path() const {
    char* path = nullptr;
    if (sd_bus_path_encode("/io/lodge1/container", name().c_str(), &path) < 0)
        return "/io/lodge1/container/_";
    std::string out = path;
    std::free(path);
    return out;
}

Manager::Manager(sd_event* event, sd_bus* bus, std::unique_ptr<SupervisorLink> link)
    : event_(event), bus_(bus), link_(std::move(link)), use_scopes_(use_systemd_scopes()),
      operations_(event) {}

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
        if (ref.watch)
            ref.watch->take_first_status(first_status_timeout_ms);
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

Container* Manager::find_by_pid(pid_t pid) {
    // A process belongs to a container when it shares PID 1's pid namespace (kept per leader).
    NamespaceId ns;
    return pidns_of(pid, ns) < 0 ? nullptr : find_by_pidns({ns});
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

Result<> Manager::request(Container& c, const runtime::proto::Request& req,
                          std::function<void(const runtime::proto::Reply& reply)> done) {
    if (starting(c.name()))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() + "\" is starting; try again once it runs");
    return link_->request(
        c.name(), runtime::proto::encode(req),
        [done = std::move(done)](const std::string& reply, Fd) {
            done(runtime::proto::decode_reply(reply));
        },
        SupervisorLink::RequestOptions{});
}

Result<> Manager::request(Container& c, const runtime::proto::Request& req, const char* failure,
                          Done done) {
    std::string name = c.name();
    return request(c, req, [name, failure, done](const runtime::proto::Reply& reply) {
        if (reply.gone)
            done(make_error(errors::not_running, ENOTCONN,
                            "Container \"" + name + "\" is not running"));
        else if (!reply.error.empty())
            done(make_error(failure, EIO, reply.error));
        else
            done({});
    });
}

// The container is down (stopped, crashed, or its guest rebooted): what the guest said about
// itself no longer holds.
void Manager::container_stopped(Container& c) {
    if (on_stopped_)
        on_stopped_(c);
    if (on_change_)
        on_change_(c);
    // A later boot starts not ready, even if lodged restarts before the guest says otherwise.
    ::unlink(ready_file(c.name()).c_str());
    if (!c.ready())
        return;
    c.config.config["volatile.last_state.ready"] = "false";
    announce_ready(c);
    // The one durable write of readiness: while running it lives in memory and /run only.
    if (auto r = commit_config(c, c.config, "Config"); !r)
        log_error("Cannot clear the ready state of %s: %s", c.name().c_str(),
                  r.error().message.c_str());
}

void Manager::restore_ready(Container& c) {
    std::string text;
    if (read_file(ready_file(c.name()), text) < 0)
        return;
    c.config.config["volatile.last_state.ready"] = text.rfind("true", 0) == 0 ? "true" : "false";
}

void Manager::emit_state_changed(Container& c) {
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", "State",
                                   "Reason", "Leader", nullptr);
}

Result<> Manager::set_ready(Container& c, bool ready) {
    if (c.ready() == ready)
        return {};
    c.config.config["volatile.last_state.ready"] = ready ? "true" : "false";
    // /run outlives a lodged restart, not the container: the state a re-attach reads. Losing
    // it costs only a re-attach's knowledge; the guest's word stands.
    if (c.running())
        if (int r =
                write_file_atomic(ready_file(c.name()), ready ? "true\n" : "false\n", 0600, false);
            r < 0)
            log_error_errno(r, "Cannot record the readiness of %s", c.name().c_str());
    announce_ready(c);
    return {};
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

uint64_t Manager::realtime_usec() const {
    uint64_t t = 0;
    sd_event_now(event_, CLOCK_REALTIME, &t);
    return t;
}

void Manager::set_lxcfs_live(bool live) {
    if (!lxcfs_known_ || live != lxcfs_live_) {
        log_info("lxcfs at %s is %s", paths::lxcfs_dir().c_str(), live ? "live" : "gone");
        lxcfs_live_ = live;
        lxcfs_known_ = true;
        sd_bus_emit_properties_changed(bus_, "/io/lodge1", "io.lodge1.Manager", "LXCFS", nullptr);
    }
    for (auto& [name, c] : containers_) {
        if (c->state != ContainerState::running || c->lxcfs == live || c->lxcfs_pending)
            continue;
        std::string target = name;
        c->lxcfs_pending = true;
        // Looked up again on the answer: the container may be gone by then.
        auto done = [this, target](const runtime::proto::Reply&) {
            if (Container* found = find(target))
                found->lxcfs_pending = false;
        };
        auto verb = live ? runtime::proto::Verb::lxcfs_attach : runtime::proto::Verb::lxcfs_detach;
        if (!request(*c, runtime::proto::Request::of(verb), done))
            c->lxcfs_pending = false;
    }
}

bool Manager::idle() const {
    if (!link_->idle() || !launching_.empty() || !operations_.idle() || !exit_waiters_.empty())
        return false;
    for (auto& [name, c] : containers_)
        if (c->running())
            return false;
    return true;
}

} // namespace lodge::daemon
