// Authorization of bus callers (CONTRACT §2 polkit actions): root always; anyone else through
// an asynchronous polkit CheckAuthorization, the way systemd's bus_verify_polkit_async() does
// it: the method call is parked, and re-dispatched once polkit has answered.
#pragma once

#include "daemon/bus-util.hpp"

#include <map>
#include <string>

namespace lodge::daemon {

namespace actions {
constexpr const char* manage = "io.lodge1.manage";   // create, delete, config, devices
constexpr const char* control = "io.lodge1.control"; // start, stop, restart, reboot, kill
constexpr const char* exec = "io.lodge1.exec";       // exec, shell, console
} // namespace actions

class Polkit {
public:
    // 1: authorized, go on. 0: asked polkit; the handler returns 1 without replying and runs
    // again with the answer. <0: refused, with `error` set.
    // Call it once per method call: a re-dispatched call consumes the answer at its first
    // verify(), so a second verify() would start a new query and park the call again.
    int verify(sd_bus_message* call, const char* action, const std::string& container,
               sd_bus_error* error);
    // Drops the answer waiting for `call` (its object went away before the re-dispatch).
    void forget(sd_bus_message* call) { queries_.erase(call); }

private:
    struct Query {
        Polkit* owner = nullptr;
        MessagePtr call;
        SlotPtr slot;
        std::string action;
        bool done = false;
        bool authorized = false;
        std::string denial;
    };
    static int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*);
    std::map<sd_bus_message*, std::unique_ptr<Query>> queries_;
};

} // namespace lodge::daemon
