#include "runtime/control-proto.hpp"
#include "common/validate.hpp"

#include <array>
#include <csignal>
#include <nlohmann/json.hpp>

namespace lodge::runtime::proto {

namespace {

using nlohmann::json;

// What follows a verb on the wire.
enum class Args {
    none,
    optional_timeout, // stop, restart: [SECONDS]
    boot_number,      // wait-boot: N
    optional_signal,  // kill: [SIGNAL] (SIGTERM)
    device,           // nic-remove: DEV
    device_and_json,  // nic-add: DEV {"key":"value",...}
    optional_json,    // apply-limits: [{Limits}]
};

struct VerbInfo {
    Verb verb;
    const char* name;
    Args args;
};

constexpr std::array<VerbInfo, 17> verb_table{{
    {Verb::status, "status", Args::none},
    {Verb::watch, "watch", Args::none},
    {Verb::wait, "wait", Args::none},
    {Verb::wait_boot, "wait-boot", Args::boot_number},
    {Verb::stop, "stop", Args::optional_timeout},
    {Verb::stop_force, "stop-force", Args::none},
    {Verb::restart, "restart", Args::optional_timeout},
    {Verb::reboot, "reboot", Args::none},
    {Verb::kill, "kill", Args::optional_signal},
    {Verb::attach, "attach", Args::none},
    {Verb::nic_add, "nic-add", Args::device_and_json},
    {Verb::nic_remove, "nic-remove", Args::device},
    {Verb::apply_limits, "apply-limits", Args::optional_json},
    {Verb::lxcfs_attach, "lxcfs-attach", Args::none},
    {Verb::lxcfs_detach, "lxcfs-detach", Args::none},
    {Verb::devlxd_attach, "devlxd-attach", Args::none},
    {Verb::devlxd_detach, "devlxd-detach", Args::none},
}};

const VerbInfo* verb_info(Verb verb) {
    for (auto& info : verb_table)
        if (info.verb == verb)
            return &info;
    return nullptr;
}

constexpr std::array<std::pair<State, const char*>, 5> state_table{{
    {State::starting, "starting"},
    {State::running, "running"},
    {State::stopping, "stopping"},
    {State::stopped, "stopped"},
    {State::error, "error"},
}};

json limits_json(const Limits& l) {
    json j = json::object();
    if (l.memory_bytes)
        j["memory_bytes"] = *l.memory_bytes;
    if (l.memory_percent)
        j["memory_percent"] = *l.memory_percent;
    if (l.memory_soft)
        j["memory_soft"] = true;
    if (l.cpu_count)
        j["cpu_count"] = *l.cpu_count;
    if (!l.cpu_set.empty())
        j["cpu_set"] = l.cpu_set;
    if (l.cpu_allowance_percent)
        j["cpu_allowance_percent"] = *l.cpu_allowance_percent;
    if (l.cpu_quota)
        j["cpu_quota"] = {l.cpu_quota->quota_usec, l.cpu_quota->period_usec};
    if (l.processes)
        j["processes"] = *l.processes;
    return j;
}

// Values out of range are refused here, as the parser in common/limits.cpp refuses them.
std::string limits_from_json(const json& j, Limits& out) {
    if (!j.is_object())
        return "apply-limits: expected a JSON object";
    try {
        Limits l;
        if (j.contains("memory_bytes"))
            l.memory_bytes = j.at("memory_bytes").get<uint64_t>();
        if (j.contains("memory_percent"))
            l.memory_percent = j.at("memory_percent").get<unsigned>();
        l.memory_soft = j.value("memory_soft", false);
        if (j.contains("cpu_count"))
            l.cpu_count = j.at("cpu_count").get<unsigned>();
        l.cpu_set = j.value("cpu_set", "");
        if (j.contains("cpu_allowance_percent"))
            l.cpu_allowance_percent = j.at("cpu_allowance_percent").get<unsigned>();
        if (j.contains("cpu_quota"))
            l.cpu_quota = CpuQuota{j.at("cpu_quota").at(0).get<uint64_t>(),
                                   j.at("cpu_quota").at(1).get<uint64_t>()};
        if (j.contains("processes"))
            l.processes = j.at("processes").get<uint64_t>();
        if ((l.memory_percent && (*l.memory_percent == 0 || *l.memory_percent > 100)) ||
            (l.cpu_count && *l.cpu_count == 0) || (!l.cpu_set.empty() && !is_cpuset(l.cpu_set)) ||
            (l.cpu_allowance_percent &&
             (*l.cpu_allowance_percent == 0 || *l.cpu_allowance_percent > 100)) ||
            (l.cpu_quota && (l.cpu_quota->quota_usec == 0 || l.cpu_quota->period_usec < 1000 ||
                             l.cpu_quota->period_usec > 1000000)) ||
            (l.processes && *l.processes == 0))
            return "apply-limits: a limit is out of range";
        out = std::move(l);
        return {};
    } catch (const json::exception&) {
        return "apply-limits: a limit has the wrong type";
    }
}

json nic_json(const net::PluggedNic& n) {
    return {{"device", n.device},       {"nictype", n.nictype},
            {"name", n.name},           {"hwaddr", n.hwaddr},
            {"host_name", n.host_name}, {"host_ifindex", n.host_ifindex},
            {"ifindex", n.ifindex},     {"mtu", n.mtu},
            {"host_mtu", n.host_mtu}};
}

net::PluggedNic nic_from_json(const json& j) {
    net::PluggedNic n;
    n.device = j.value("device", "");
    n.nictype = j.value("nictype", "");
    n.name = j.value("name", "");
    n.hwaddr = j.value("hwaddr", "");
    n.host_name = j.value("host_name", "");
    n.host_ifindex = j.value("host_ifindex", 0);
    n.ifindex = j.value("ifindex", 0);
    n.mtu = j.value("mtu", 0u);
    n.host_mtu = j.value("host_mtu", 0u);
    return n;
}

json status_json(const Status& s) {
    json j;
    j["name"] = s.name;
    j["state"] = state_name(s.state);
    j["reason"] = s.reason;
    j["pid"] = s.pid;
    j["supervisor_pid"] = s.supervisor_pid;
    j["boot_id"] = s.boot_id;
    j["cgroup"] = s.cgroup;
    j["boots"] = s.boots;
    j["lxcfs"] = s.lxcfs;
    j["nics"] = json::array();
    for (auto& n : s.nics)
        j["nics"].push_back(nic_json(n));
    return j;
}

// A status is the object that names a state; anything else in it may be missing (older
// supervisors wrote fewer fields). An unknown state reads as error, never as running.
std::optional<Status> status_from_json(const json& j) {
    if (!j.is_object() || !j.contains("state") || !j["state"].is_string())
        return std::nullopt;
    try {
        Status s;
        s.name = j.value("name", "");
        s.state = state_from_name(j["state"].get<std::string>()).value_or(State::error);
        s.reason = j.value("reason", "");
        s.pid = j.value("pid", 0);
        s.supervisor_pid = j.value("supervisor_pid", 0);
        s.boot_id = j.value("boot_id", "");
        s.cgroup = j.value("cgroup", "");
        s.boots = j.value("boots", 0u);
        s.lxcfs = j.value("lxcfs", false);
        if (j.contains("nics") && j["nics"].is_array())
            for (auto& n : j["nics"])
                if (n.is_object())
                    s.nics.push_back(nic_from_json(n));
        return s;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

} // namespace

const char* verb_name(Verb verb) {
    const VerbInfo* info = verb_info(verb);
    return info ? info->name : "status";
}

std::optional<Verb> verb_from_name(std::string_view name) {
    for (auto& info : verb_table)
        if (name == info.name)
            return info.verb;
    return std::nullopt;
}

const char* state_name(State state) {
    for (auto& [s, name] : state_table)
        if (s == state)
            return name;
    return "error";
}

std::optional<State> state_from_name(std::string_view name) {
    for (auto& [s, n] : state_table)
        if (name == n)
            return s;
    return std::nullopt;
}

Request Request::stop(std::optional<unsigned> timeout) {
    Request r = Request::of(Verb::stop);
    r.timeout = timeout;
    return r;
}

Request Request::restart(std::optional<unsigned> timeout) {
    Request r = Request::of(Verb::restart);
    r.timeout = timeout;
    return r;
}

Request Request::wait_boot(unsigned boot) {
    Request r = Request::of(Verb::wait_boot);
    r.boot = boot;
    return r;
}

Request Request::kill(int signal) {
    Request r = Request::of(Verb::kill);
    r.signal = signal;
    return r;
}

Request Request::nic_add(const std::string& device, const KeyMap& keys) {
    Request r = Request::of(Verb::nic_add);
    r.device = device;
    r.nic = keys;
    return r;
}

Request Request::nic_remove(const std::string& device) {
    Request r = Request::of(Verb::nic_remove);
    r.device = device;
    return r;
}

Request Request::apply_limits(const Limits& limits) {
    Request r = Request::of(Verb::apply_limits);
    r.limits = limits;
    return r;
}

std::string encode(const Request& r) {
    const VerbInfo* info = verb_info(r.verb);
    std::string text = info ? info->name : "status";
    switch (info ? info->args : Args::none) {
    case Args::none:
        break;
    case Args::optional_timeout:
        if (r.timeout)
            text += " " + std::to_string(*r.timeout);
        break;
    case Args::boot_number:
        text += " " + std::to_string(r.boot);
        break;
    case Args::optional_signal:
        text += " " + std::to_string(r.signal);
        break;
    case Args::device:
        text += " " + r.device;
        break;
    case Args::device_and_json:
        text += " " + r.device + " " + json(r.nic).dump();
        break;
    case Args::optional_json:
        if (r.limits)
            text += " " + limits_json(*r.limits).dump();
        break;
    }
    return text;
}

std::string decode(const std::string& text, Request& out) {
    size_t sp = text.find(' ');
    std::string verb = text.substr(0, sp);
    // Everything after the verb: one word, or (nic-add, apply-limits) a word and/or JSON.
    std::string rest = sp == std::string::npos ? "" : text.substr(sp + 1);
    while (!rest.empty() && rest.front() == ' ')
        rest.erase(0, 1);
    while (!rest.empty() && rest.back() == ' ')
        rest.pop_back();
    if (verb.empty())
        return "empty request";
    auto v = verb_from_name(verb);
    if (!v)
        return "unknown request \"" + verb + "\"";
    Request r = Request::of(*v);
    switch (verb_info(*v)->args) {
    case Args::none:
        break;
    case Args::optional_timeout:
        if (!rest.empty()) {
            auto t = parse_uint(rest, 86400 * 7);
            if (!t)
                return "invalid timeout \"" + rest + "\"";
            r.timeout = static_cast<unsigned>(*t);
        }
        break;
    case Args::boot_number: {
        auto n = parse_uint(rest, 1u << 30);
        if (!n)
            return verb + " needs a boot number";
        r.boot = static_cast<unsigned>(*n);
        break;
    }
    case Args::optional_signal: {
        auto s = rest.empty() ? std::optional<int>(SIGTERM) : parse_signal(rest);
        if (!s)
            return "invalid signal \"" + rest + "\"";
        r.signal = *s;
        break;
    }
    case Args::device:
        if (rest.empty() || rest.find(' ') != std::string::npos)
            return verb + " needs a device";
        r.device = rest;
        break;
    case Args::device_and_json: {
        size_t end = rest.find(' ');
        if (rest.empty() || end == std::string::npos)
            return verb + " needs a device and its JSON description";
        r.device = rest.substr(0, end);
        auto j = json::parse(rest.substr(end + 1), nullptr, false);
        if (!j.is_object())
            return verb + ": bad JSON";
        for (auto& [k, val] : j.items()) {
            if (!val.is_string())
                return verb + ": key \"" + k + "\" must be a string";
            r.nic[k] = val.get<std::string>();
        }
        break;
    }
    case Args::optional_json:
        if (!rest.empty()) {
            Limits l;
            if (auto e = limits_from_json(json::parse(rest, nullptr, false), l); !e.empty())
                return e;
            r.limits = std::move(l);
        }
        break;
    }
    out = std::move(r);
    return {};
}

std::string encode(const Status& status) {
    return status_json(status).dump();
}

std::optional<Status> decode_status(const std::string& text) {
    return status_from_json(json::parse(text, nullptr, false));
}

Reply decode_reply(const std::string& text) {
    Reply r;
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object()) {
        r.gone = true;
        return r;
    }
    if (j.contains("error")) {
        r.error = j["error"].is_string() ? j["error"].get<std::string>() : j["error"].dump();
        if (r.error.empty())
            r.error = "the supervisor refused the request";
        return r;
    }
    r.status = status_from_json(j);
    if (j.contains("signal") && j["signal"].is_string())
        r.signal = j["signal"].get<std::string>();
    if (j.contains("plugged") && j["plugged"].is_boolean())
        r.plugged = j["plugged"].get<bool>();
    if (j.contains("nic") && j["nic"].is_object())
        r.nic = nic_from_json(j["nic"]);
    if (!r.status && j.contains("lxcfs") && j["lxcfs"].is_boolean())
        r.lxcfs = j["lxcfs"].get<bool>();
    return r;
}

std::string ok_reply() {
    return json{{"ok", true}}.dump();
}

std::string error_reply(const std::string& error) {
    return json{{"error", error}}.dump();
}

std::string signal_reply(const std::string& signal_name) {
    return json{{"ok", true}, {"signal", signal_name}}.dump();
}

std::string plugged_reply(bool plugged) {
    return json{{"ok", true}, {"plugged", plugged}}.dump();
}

std::string nic_reply(const net::PluggedNic& nic) {
    return json{{"ok", true}, {"nic", nic_json(nic)}}.dump();
}

std::string lxcfs_reply(bool lxcfs) {
    return json{{"ok", true}, {"lxcfs", lxcfs}}.dump();
}

} // namespace lodge::runtime::proto
