// lodged: the io.lodge1 bus service. Started by bus or socket activation; exits when idle and
// no container runs. Containers live in their supervisors, so lodged coming and going never
// touches them: on start it re-reads the registry and re-attaches to every supervisor.
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/validate.hpp"
#include "daemon/backup-dbus.hpp"
#include "daemon/bus-util.hpp"
#include "daemon/dbus-api.hpp"
#include "daemon/exec.hpp"
#include "daemon/image-dbus.hpp"
#include "daemon/image-update.hpp"
#include "daemon/lxcfs-watch.hpp"
#include "daemon/manager.hpp"
#include "daemon/network-dbus.hpp"
#include "daemon/proxy-manager.hpp"
#include "devlxd/devlxd-server.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <vector>

using namespace lodge;
using namespace lodge::daemon;

namespace {

uint64_t idle_timeout_usec() {
    const char* v = std::getenv("LODGE_IDLE_TIMEOUT");
    auto secs = v ? parse_uint(v, 86400) : std::nullopt;
    return (secs ? *secs : 30) * 1000000ULL;
}

// The guest API's view of the Manager.
class ManagerGuests : public GuestDirectory {
public:
    explicit ManagerGuests(Manager& m) : manager_(m) {}
    std::optional<Guest> find(const PeerIdentity& peer) override {
        Container* c = manager_.find_by_pidns(peer.pidns_chain);
        if (!c)
            return std::nullopt;
        return Guest{c->name(), c->root_uid, &c->config, c->ready(), c->generation};
    }
    std::optional<Guest> current(const std::string& name, uint64_t generation) override {
        Container* c = manager_.find(name);
        if (!c || !c->running() || c->generation != generation || !Manager::leader_alive(*c))
            return std::nullopt;
        return Guest{c->name(), c->root_uid, &c->config, c->ready(), c->generation};
    }
    int set_ready(const std::string& name, bool ready, std::string& error) override {
        Container* c = manager_.find(name);
        if (!c) {
            error = "Container \"" + name + "\" is gone";
            return -ENOENT;
        }
        if (auto r = manager_.set_ready(*c, ready); !r) {
            error = r.error().message;
            return -r.error().code;
        }
        return 0;
    }

private:
    Manager& manager_;
};

} // namespace

int main() {
    log_set_prefix("lodged");
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGCHLD, SIGTERM, SIGINT})
        sigaddset(&mask, sig);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    // Every container watch, exec and guest API connection is an fd. Out of descriptors, sd-bus
    // gets a truncated SCM_RIGHTS message, drops the bus connection and lodged is cut off from
    // its callers (seen with 500 containers and 500 concurrent execs under the 1024 soft limit).
    if (long n = raise_fd_limit(); n < 0)
        log_error_errno(static_cast<int>(n), "Failed to raise RLIMIT_NOFILE");

    // The devlxd listener from systemd (lodged.socket), read before anything unsets the env;
    // without one, lodged makes it itself.
    char** names = nullptr;
    int nfds = sd_listen_fds_with_names(1, &names);
    int devlxd_listener = -1;
    for (int i = 0; i < nfds; i++) {
        const char* name = names && names[i] ? names[i] : "";
        if (std::strcmp(name, "devlxd") == 0 || (nfds == 1 && devlxd_listener < 0))
            devlxd_listener = SD_LISTEN_FDS_START + i;
        std::free(names ? names[i] : nullptr);
    }
    std::free(names);
    Fd own_listener;
    if (devlxd_listener < 0 && open_devlxd_listener(own_listener) == 0)
        devlxd_listener = own_listener.get();
    else if (devlxd_listener >= 0)
        prepare_devlxd_dirs(); // systemd made them; make sure of their modes all the same

    sd_event* e = nullptr;
    if (int r = sd_event_default(&e); r < 0)
        return log_error_errno(r, "Failed to allocate the event loop"), 1;
    EventPtr event(e);
    sd_event_add_signal(event.get(), nullptr, SIGTERM, nullptr, nullptr);
    sd_event_add_signal(event.get(), nullptr, SIGINT, nullptr, nullptr);
    sd_event_set_watchdog(event.get(), 1);
    sd_bus* b = nullptr;
    if (int r = sd_bus_open_system(&b); r < 0)
        return log_error_errno(r, "Failed to connect to the system bus"), 1;
    BusPtr bus(b);

    // Before any container can see an exec helper: its image is a sealed copy made now.
    prepare_exec_helper();

    Manager manager(event.get(), bus.get(), make_control_socket_link(event.get()));
    if (int r = register_bus_objects(bus.get(), manager); r < 0)
        return log_error_errno(r, "Failed to register the bus objects"), 1;
    ImageService images(manager);
    if (images.start(bus.get()) < 0)
        return 1;
    if (register_backup_methods(bus.get(), manager) < 0)
        return 1;
    ImageUpdater updater(manager, images);
    if (updater.start(bus.get()) < 0)
        return 1;
    ManagerGuests guests(manager);
    DevlxdServer devlxd(event.get(), guests);
    manager.set_guest_event_sink(
        [&devlxd](const Container& c, unsigned type, const std::string& line) {
            devlxd.publish(c.name(), type, line);
        });
    manager.set_on_stopped([&devlxd](const Container& c) { devlxd.drop_container(c.name()); });
    NetworkManager networks(event.get(), manager);
    if (int r = register_network_methods(bus.get(), networks); r < 0)
        return log_error_errno(r, "Failed to register the network methods"), 1;
    ProxyManager proxies(manager, networks);
    manager.set_network_check([&networks, &proxies](const ContainerConfig& c) {
        if (auto e = networks.prepare_container(c); !e.empty())
            return e;
        return proxies.check(c);
    });
    manager.set_on_change([&proxies](const Container& c) { return proxies.sync(c); });
    manager.set_create_defaults([&networks](ContainerConfig& c) { networks.add_default_nic(c); });
    networks.load();
    manager.load();
    if (devlxd_listener >= 0 && devlxd.start(devlxd_listener) < 0)
        return 1;
    LxcfsWatch lxcfs(event.get(), manager);
    lxcfs.start();
    manager.set_on_running([&lxcfs] { lxcfs.rearm(); });
    if (int r = sd_bus_request_name(bus.get(), "io.lodge1", 0); r < 0)
        return log_error_errno(r, "Failed to own io.lodge1"), 1;
    if (int r = sd_bus_attach_event(bus.get(), event.get(), SD_EVENT_PRIORITY_NORMAL); r < 0)
        return log_error_errno(r, "Failed to attach the bus to the event loop"), 1;
    // A lost bus connection leaves nobody able to reach lodged: exit with a failure then, so
    // that systemd restarts it (Restart=on-failure) or the bus activates it afresh.
    sd_bus_set_exit_on_disconnect(bus.get(), 1);
    sd_notify(0, "READY=1\nSTATUS=Running");
    log_info("Ready, %zu containers", manager.containers().size());

    uint64_t timeout = idle_timeout_usec();
    for (;;) {
        if (sd_event_get_state(event.get()) == SD_EVENT_FINISHED) {
            int code = 0;
            sd_event_get_exit_code(event.get(), &code);
            if (code != 0)
                log_error("Lost the bus connection; exiting");
            return code;
        }
        bool idle = timeout > 0 && manager.idle() && execs_in_flight() == 0;
        int r = sd_event_run(event.get(), idle ? timeout : UINT64_MAX);
        if (r < 0)
            return log_error_errno(r, "Event loop failed"), 1;
        if (r == 0 && idle && manager.idle() && execs_in_flight() == 0) {
            log_info("Idle and no container runs; exiting");
            sd_notify(0, "STOPPING=1");
            sd_bus_release_name(bus.get(), "io.lodge1");
            break;
        }
    }
    return 0;
}
