// The seam between Manager and the supervisors: starting one, sending it requests, following
// its status stream and its exit. lodged's ControlSocketLink speaks the control socket
// (runtime/control.hpp); unit tests give Manager a fake (tests/unit/test-manager.cpp), so its
// rules run without root and without real supervisors. Everything is asynchronous: callbacks
// run on the caller's sd-event loop, never inside the call that started the work.
#pragma once

#include "common/error.hpp"
#include "common/fd.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

typedef struct sd_event sd_event;

namespace lodge::daemon {

class SupervisorLink {
public:
    virtual ~SupervisorLink() = default;

    struct LaunchSpec {
        std::string name;
        std::vector<std::string> args; // extra lodge-supervisor arguments
        // The supervisor waits, before it touches anything, until `place` has run with its pid
        // and bus name (lodged puts it into its systemd scope); a failure calls the start off.
        std::function<Result<>(pid_t supervisor, const std::string& bus_name)> place;
    };
    struct Launched {
        pid_t init = 0;     // PID 1's host pid
        std::string status; // the supervisor's status then (JSON), "" when it did not say
    };
    // Starts the supervisor of `spec.name`; `done` gets PID 1 once it has been exec'd, or why
    // the start failed (StartFailed).
    virtual Result<> launch(LaunchSpec spec, std::function<void(Result<Launched>)> done) = 0;

    struct RequestOptions {
        uint64_t timeout_usec = 0;    // 0: as long as the supervisor lives
        bool keep_connection = false; // the reply's connection goes on (the console)
    };
    // The reply text ("" when the supervisor went away or the timeout passed), with the
    // connection when asked to keep it.
    using Reply = std::function<void(const std::string& reply, Fd connection)>;
    // The one entry point for supervisor requests. NotRunning when no supervisor answers.
    virtual Result<> request(const std::string& name, const std::string& request, Reply done,
                             RequestOptions options) = 0;

    // A running supervisor followed: its status stream, then its exit.
    class Watch {
    public:
        virtual ~Watch() = default;
        // The supervisor process still exists (it outlives the end of its stream a little).
        virtual bool supervisor_alive() const = 0;
        // Waits at most `timeout_ms` for the first status and delivers it (lodged's own start,
        // before it is on the bus); nothing when it is already in or the stream ended.
        virtual void take_first_status(int timeout_ms) = 0;
    };
    struct WatchEvents {
        std::function<void(const std::string& status)> status; // JSON, the first one at once
        std::function<void()> end;  // the stream ended: the container stopped
        std::function<void()> exit; // the supervisor process is gone (after `end`)
    };
    // nullptr when no supervisor runs for `name`. The events may destroy the Watch.
    virtual std::unique_ptr<Watch> watch(const std::string& name, WatchEvents events) = 0;
    // The state the last supervisor left behind (state.json), "" when there is none.
    virtual std::string last_status(const std::string& name) = 0;

    // No request or launch is under way.
    virtual bool idle() const = 0;
};

// The real link: lodge-supervisor (supervisor_binary()) over the control socket, on `event`.
std::unique_ptr<SupervisorLink> make_control_socket_link(sd_event* event);

// LODGE_SUPERVISOR, or the installed lodge-supervisor.
std::string supervisor_binary();

} // namespace lodge::daemon
