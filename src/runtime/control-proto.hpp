// The supervisor's control protocol, typed: its verbs, requests and replies, and the one state
// enum that the supervisor, lodged and the tests share. Every (de)serialisation lives in
// control-proto.cpp; nobody else spells a verb or reads a reply's JSON.
//
// On the wire (a SOCK_SEQPACKET unix socket at <runtime>/containers/<name>/control, one request
// per message, one JSON reply per request) a request is its verb and its arguments separated
// by spaces, as before this file existed, so supervisors started before an upgrade and new
// lodgeds understand each other (apply-limits gained a JSON argument; without one the
// supervisor reads limits.* from config.json, as it did).
//
//   status                 Status
//   watch                  Status now, then again at every state change
//   wait                   Status once the container has stopped (at once if not running)
//   wait-boot N            Status once PID 1 has been started N times (reboots count)
//   stop [TIMEOUT]         stop signal, SIGKILL after TIMEOUT s; Status once stopped
//   stop-force             SIGKILL now; Status once stopped
//   restart [TIMEOUT]      stop, then start afresh; Status once running again
//   reboot                 boot.reboot.signal to PID 1; {"ok","signal"} at once
//   kill SIGNAL            the signal to PID 1; {"ok","signal"} at once
//   attach                 {"ok"}, then console output flows to the client and back
//   nic-add DEV JSON       plugs nic DEV (its keys plus "volatile.name"/"volatile.hwaddr");
//                          {"ok","nic"}; config.json is not read
//   nic-remove DEV         unplugs nic DEV; {"ok","plugged"} (false: it was not plugged)
//   apply-limits [JSON]    applies the Limits in JSON (else config.json's) to the payload
//   lxcfs-attach|detach    binds the live lxcfs into the running container, or takes them out
//   devlxd-attach|detach   binds /dev/lxd into the running container, or takes it out
// Any request may be answered {"error": TEXT} instead.
#pragma once

#include "common/limits.hpp"
#include "runtime/net.hpp"

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime::proto {

enum class Verb {
    status,
    watch,
    wait,
    wait_boot,
    stop,
    stop_force,
    restart,
    reboot,
    kill,
    attach,
    nic_add,
    nic_remove,
    apply_limits,
    lxcfs_attach,
    lxcfs_detach,
    devlxd_attach,
    devlxd_detach,
};

const char* verb_name(Verb verb);
std::optional<Verb> verb_from_name(std::string_view name);

// A container's state (CONTRACT "States"), as its supervisor reports it and lodged shows it.
enum class State { starting, running, stopping, stopped, error };

const char* state_name(State state);
std::optional<State> state_from_name(std::string_view name);
// PID 1 exists (or is about to): starting, running or stopping.
inline bool is_alive(State s) {
    return s == State::starting || s == State::running || s == State::stopping;
}

struct Request {
    Verb verb = Verb::status;
    std::optional<unsigned> timeout; // stop, restart (seconds; none: boot.host_shutdown_timeout)
    unsigned boot = 0;               // wait-boot
    int signal = 0;                  // kill
    std::string device;              // nic-add, nic-remove
    KeyMap nic;                      // nic-add: the device's keys, volatile.name/hwaddr
    std::optional<Limits> limits;    // apply-limits

    static Request of(Verb verb) {
        Request r;
        r.verb = verb;
        return r;
    }
    static Request stop(std::optional<unsigned> timeout);
    static Request restart(std::optional<unsigned> timeout);
    static Request wait_boot(unsigned boot);
    static Request kill(int signal);
    static Request nic_add(const std::string& device, const KeyMap& keys);
    static Request nic_remove(const std::string& device);
    static Request apply_limits(const Limits& limits);
};

// The request as sent.
std::string encode(const Request& request);
// Parses a request; "" or what is wrong with it (the supervisor replies that as the error).
std::string decode(const std::string& text, Request& out);

// What the supervisor reports (the status verbs' reply, watch messages, state.json).
struct Status {
    std::string name;
    State state = State::stopped;
    std::string reason;
    pid_t pid = 0; // PID 1 while it runs
    pid_t supervisor_pid = 0;
    std::string boot_id;
    std::string cgroup; // the supervisor's cgroup base
    unsigned boots = 0;
    bool lxcfs = false;
    std::vector<net::PluggedNic> nics;
};

std::string encode(const Status& status);
std::optional<Status> decode_status(const std::string& text);

// Any reply: a status, {"ok":true,...} or {"error":TEXT}; an empty or unreadable one (the
// supervisor went away) is `gone`.
struct Reply {
    bool gone = false;
    std::string error;                  // set: the request was refused
    std::optional<Status> status;       // the status verbs
    std::string signal;                 // reboot, kill: the signal's name
    std::optional<bool> plugged;        // nic-remove
    std::optional<net::PluggedNic> nic; // nic-add
    std::optional<bool> lxcfs;          // lxcfs-attach|detach
    bool ok() const { return !gone && error.empty(); }
};

Reply decode_reply(const std::string& text);

// The replies the supervisor sends.
std::string ok_reply();
std::string error_reply(const std::string& error);
std::string signal_reply(const std::string& signal_name);
std::string plugged_reply(bool plugged);
std::string nic_reply(const net::PluggedNic& nic);
std::string lxcfs_reply(bool lxcfs);

} // namespace lodge::runtime::proto
