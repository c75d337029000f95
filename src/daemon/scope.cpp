#include "daemon/scope.hpp"
#include "daemon/bus-util.hpp"
#include "common/device-policy.hpp"
#include "common/fd.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <vector>

namespace lodge::daemon {

namespace {

constexpr uint64_t usec_per_sec = 1000000ULL;
// The scope's stop timeout is the container's own one plus this margin, so the supervisor's
// SIGKILL escalation comes first and systemd's only backs it up.
constexpr uint64_t stop_margin_usec = 5 * usec_per_sec;
constexpr uint64_t job_timeout_usec = 30 * usec_per_sec;

constexpr const char* systemd_service = "org.freedesktop.systemd1";
constexpr const char* systemd_path = "/org/freedesktop/systemd1";
constexpr const char* systemd_manager = "org.freedesktop.systemd1.Manager";

struct BusError {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ~BusError() { sd_bus_error_free(&e); }
    const char* text() const { return e.message ? e.message : e.name ? e.name : "unknown error"; }
};

uint64_t now_usec() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * usec_per_sec +
           static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// The scope itself carries no limits.* (the supervisor writes them on the payload cgroup, so it
// stays outside them itself); it only gives up systemd's DefaultTasksMax= and memory defaults,
// which would otherwise cap the supervisor and the guest together.
int append_unlimited(sd_bus_message* m) {
    return sd_bus_message_append(m, "(sv)(sv)", "MemoryMax", "t", UINT64_MAX, "TasksMax", "t",
                                 UINT64_MAX);
}

// The device allow-list (common/device-policy.hpp): systemd installs it on the scope, as a BPF
// program on cgroup2 or as devices.* on a v1 devices hierarchy.
int append_device_policy(sd_bus_message* m) {
    int r = sd_bus_message_append(m, "(sv)", "DevicePolicy", "s", "closed");
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'r', "sv");
    if (r >= 0)
        r = sd_bus_message_append(m, "s", "DeviceAllow");
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'v', "a(ss)");
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "(ss)");
    for (const DeviceRule& rule : device_allow_list()) {
        if (r < 0)
            break;
        r = sd_bus_message_append(m, "(ss)", device_rule_systemd_node(rule).c_str(),
                                  device_rule_access(rule).c_str());
    }
    for (int i = 0; i < 3 && r >= 0; i++)
        r = sd_bus_message_close_container(m);
    return r;
}

// PIDFDs= (pid-reuse safe) exists from systemd 255 on; 252 knows only PIDs=. One property read
// decides, and a refusal of PIDFDs= still falls back to PIDs= below.
bool pid1_has_pidfds(sd_bus* bus) {
    char* version = nullptr;
    BusError err;
    if (sd_bus_get_property_string(bus, systemd_service, systemd_path, systemd_manager, "Version",
                                   &err.e, &version) < 0)
        return false;
    int major = std::atoi(version);
    std::free(version);
    return major >= 255;
}

struct JobWait {
    std::string path; // the job StartTransientUnit returned
    std::string result;
    bool done = false;
};

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error*) {
    return guarded([&] {
        auto* w = static_cast<JobWait*>(userdata);
        uint32_t id = 0;
        const char *path = nullptr, *unit = nullptr, *result = nullptr;
        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
            return 0;
        if (!w->path.empty() && w->path == path) {
            w->result = result;
            w->done = true;
        }
        return 0;
    });
}

int call_start_transient_unit(sd_bus* bus, const ScopeRequest& req, const std::string& unit,
                              bool pidfds, BusError& err, std::string& job) {
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_call(bus, &raw, systemd_service, systemd_path,
                                           systemd_manager, "StartTransientUnit");
    if (r < 0)
        return r;
    MessagePtr m(raw);
    const ContainerConfig& c = *req.config;
    uint64_t stop_timeout = c.shutdown_timeout() * usec_per_sec + stop_margin_usec;
    std::string description = "lodge container " + c.name;
    r = sd_bus_message_append(m.get(), "ss", unit.c_str(), "fail");
    if (r >= 0)
        r = sd_bus_message_open_container(m.get(), 'a', "(sv)");
    if (r >= 0)
        r = sd_bus_message_append(m.get(), "(sv)(sv)(sv)(sv)(sv)", "Slice", "s", "machine.slice",
                                  "Description", "s", description.c_str(), "Delegate", "b", 1,
                                  "CollectMode", "s", "inactive-or-failed", "TimeoutStopUSec", "t",
                                  stop_timeout);
    Fd pidfd;
    if (r >= 0 && pidfds) {
        pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, req.pid, 0)));
        if (!pidfd)
            return -errno;
        r = sd_bus_message_append(m.get(), "(sv)", "PIDFDs", "ah", 1, pidfd.get());
    } else if (r >= 0) {
        r = sd_bus_message_append(m.get(), "(sv)", "PIDs", "au", 1, static_cast<uint32_t>(req.pid));
    }
    if (r >= 0 && !req.controller.empty())
        // PID 1 then asks the controller to stop the container (RequestStop) instead of sending
        // SIGTERM to every process in it; the bus must outlive that at shutdown.
        r = sd_bus_message_append(m.get(), "(sv)(sv)", "Controller", "s", req.controller.c_str(),
                                  "After", "as", 1, "dbus.service");
    if (r >= 0)
        r = append_unlimited(m.get());
    if (r >= 0)
        r = append_device_policy(m.get());
    if (r >= 0)
        r = sd_bus_message_close_container(m.get());
    if (r >= 0)
        r = sd_bus_message_append(m.get(), "a(sa(sv))", 0);
    if (r < 0)
        return r;
    sd_bus_message* reply = nullptr;
    r = sd_bus_call(bus, m.get(), 0, &err.e, &reply);
    if (r < 0)
        return r;
    MessagePtr owned(reply);
    const char* path = nullptr;
    if (int q = sd_bus_message_read(reply, "o", &path); q < 0)
        return q;
    job = path;
    return 0;
}

} // namespace

bool use_systemd_scopes() {
    const char* root = std::getenv("LODGE_CGROUP_ROOT");
    return sd_booted() > 0 && !(root && *root);
}

std::string scope_unit_name(const std::string& container) {
    // Container names are [a-zA-Z0-9-]: valid in a unit name as they are, and the supervisor
    // finds its scope by this very name at the end of its cgroup path.
    return "lodge-" + container + ".scope";
}

// A first version that blocks lodged while PID 1 runs the job (tens of milliseconds): its own
// short-lived connection, the JobRemoved match installed before the call, then sd_bus_process/
// sd_bus_wait until our job is gone. machined's deferred-reply style would not block.
int start_scope(const ScopeRequest& req, std::string& error) {
    std::string unit = scope_unit_name(req.config->name);
    auto fail = [&](int r, const std::string& what) {
        error = "Cannot start " + unit + " for container \"" + req.config->name + "\": " + what;
        log_error("%s", error.c_str());
        return r < 0 ? r : -EIO;
    };
    sd_bus* raw = nullptr;
    if (int r = sd_bus_open_system(&raw); r < 0)
        return fail(r, std::string("cannot connect to the system bus: ") + std::strerror(-r));
    BusPtr bus(raw);

    JobWait wait;
    sd_bus_slot* slot = nullptr;
    if (int r = sd_bus_match_signal(bus.get(), &slot, systemd_service, systemd_path,
                                    systemd_manager, "JobRemoved", on_job_removed, &wait);
        r < 0)
        return fail(r, std::string("cannot watch systemd's jobs: ") + std::strerror(-r));
    SlotPtr match(slot);

    bool pidfds = pid1_has_pidfds(bus.get());
    bool reset = false;
    for (;;) {
        BusError err;
        int r = call_start_transient_unit(bus.get(), req, unit, pidfds, err, wait.path);
        if (r >= 0)
            break;
        if (pidfds && (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_PROPERTY_READ_ONLY) ||
                       sd_bus_error_has_name(&err.e, SD_BUS_ERROR_UNKNOWN_PROPERTY))) {
            pidfds = false;
            continue;
        }
        if (!reset && sd_bus_error_has_name(&err.e, "org.freedesktop.systemd1.UnitExists")) {
            // A failed scope of that name lingers (CollectMode= lets inactive ones go, and a
            // failed one goes with reset-failed): clear it and try once more.
            reset = true;
            BusError ignored;
            sd_bus_call_method(bus.get(), systemd_service, systemd_path, systemd_manager,
                               "ResetFailedUnit", &ignored.e, nullptr, "s", unit.c_str());
            continue;
        }
        return fail(r, sd_bus_error_is_set(&err.e) ? err.text() : std::strerror(-r));
    }

    uint64_t deadline = now_usec() + job_timeout_usec;
    while (!wait.done) {
        int r = sd_bus_process(bus.get(), nullptr);
        if (r < 0)
            return fail(r, std::string("lost the system bus: ") + std::strerror(-r));
        if (r > 0)
            continue;
        uint64_t now = now_usec();
        if (now >= deadline)
            return fail(-ETIMEDOUT, "systemd did not finish the start job in time");
        if (r = sd_bus_wait(bus.get(), deadline - now); r < 0)
            return fail(r, std::string("lost the system bus: ") + std::strerror(-r));
    }
    if (wait.result != "done")
        return fail(-EIO, "the start job ended with \"" + wait.result + "\"");
    log_info("Container \"%s\" runs in %s", req.config->name.c_str(), unit.c_str());
    return 0;
}

} // namespace lodge::daemon
