// What the verb files share: lodged's names on the bus, error reporting, calls by name and the
// container's properties read into one struct.
#pragma once

#include "common/sd-util.hpp"
#include "ctl/verbs.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace lodge::ctl {

inline constexpr const char* service = "io.lodge1";
inline constexpr const char* manager_path = "/io/lodge1";
inline constexpr const char* manager_iface = "io.lodge1.Manager";

// Prints `msg` on stderr; returns the failure exit status, 1.
int fail(const std::string& msg);
// The bus error's message, or the transport failure `r`'s.
std::string bus_message(const BusError& err, int r);
// Prints the bus error's message, or the transport failure `r`; returns 1.
int bus_fail(const BusError& err, int r);

// The system bus, or a remote host's over ssh (-H); nullptr after printing why not.
BusPtr open_bus(const Options& o);

// Calls a Manager method; the reply is kept in `reply` when it is not null. Returns >= 0 or
// -errno with `err` set by lodged.
int call_manager(sd_bus* bus, BusError& err, MessagePtr* reply, const char* method,
                 const char* types, ...);

// A new Manager method call to append arguments to; nullptr after printing why not.
MessagePtr new_manager_call(sd_bus* bus, const char* method);

// Appends KEY=VALUE words as an a{ss}; -EINVAL with the bad word in `bad`.
int append_map(sd_bus_message* m, const std::vector<std::string>& kvs, std::string& bad);

// Appends the `a{ss} set, as unset` of a Set*Config call: `words` are set's KEY=VALUE... (or
// LXD's KEY VALUE), or unset's KEY...; -EINVAL with the bad word in `bad`.
int append_set_or_unset(sd_bus_message* m, bool set, std::vector<std::string> words,
                        std::string& bad);

// Sends the call `m`; its reply is kept in `reply` when it is not null. As call_manager.
int call_message(sd_bus* bus, sd_bus_message* m, BusError& err, MessagePtr* reply);

// Calls `call` for each NAME argument; one failure does not stop the others.
int for_each_name(const Options& o, const std::function<int(const std::string&, BusError&)>& call);

// A fd-returning Manager method's fd, our own copy of it.
int call_for_fd(sd_bus* bus, const char* method, const std::string& name, int& fd, BusError& err);

struct ContainerInfo {
    std::string name, state, reason, unit, root, boot_id;
    uint32_t leader = 0;
    bool privileged = false;
    bool lxcfs = false;
    bool ready = false;
    uint64_t timestamp = 0;
    std::map<std::string, std::string> config;
    std::map<std::string, std::map<std::string, std::string>> devices;
};

// A container's io.lodge1.Container properties.
int get_info(sd_bus* bus, const std::string& name, ContainerInfo& info, BusError& err);
nlohmann::json info_json(const ContainerInfo& i);

} // namespace lodge::ctl
