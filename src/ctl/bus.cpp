// The bus calls every verb file shares, on sd-util's owners.
#include "ctl/bus.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fcntl.h>

namespace lodge::ctl {

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

std::string bus_message(const BusError& err, int r) {
    if (sd_bus_error_is_set(&err.e))
        return err.e.message ? err.e.message : err.e.name;
    return std::string("Failed to talk to lodged: ") + std::strerror(-r);
}

int bus_fail(const BusError& err, int r) {
    return fail(bus_message(err, r));
}

BusPtr open_bus(const Options& o) {
    sd_bus* bus = nullptr;
    int r =
        o.host.empty() ? sd_bus_open_system(&bus) : sd_bus_open_system_remote(&bus, o.host.c_str());
    BusPtr owner(bus);
    if (r < 0) {
        fail(std::string("Failed to connect to the system bus: ") + std::strerror(-r));
        return nullptr;
    }
    // Stop, restart and imports can take long: the reply comes when the work is done.
    sd_bus_set_method_call_timeout(bus, 30ULL * 60 * 1000000);
    return owner;
}

int call_manager(sd_bus* bus, BusError& err, MessagePtr* reply, const char* method,
                 const char* types, ...) {
    sd_bus_message* m = nullptr;
    va_list ap;
    va_start(ap, types);
    int r = sd_bus_call_methodv(bus, service, manager_path, manager_iface, method, &err.e,
                                reply ? &m : nullptr, types, ap);
    va_end(ap);
    if (reply)
        reply->reset(m);
    return r;
}

MessagePtr new_manager_call(sd_bus* bus, const char* method) {
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface, method) < 0) {
        fail("Cannot build the request");
        return nullptr;
    }
    return MessagePtr(m);
}

int append_map(sd_bus_message* m, const std::vector<std::string>& kvs, std::string& bad) {
    int r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (auto& kv : kvs) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
            bad = kv;
            return -EINVAL;
        }
        if (r >= 0)
            r = sd_bus_message_append(m, "{ss}", kv.substr(0, eq).c_str(),
                                      kv.substr(eq + 1).c_str());
    }
    return r < 0 ? r : sd_bus_message_close_container(m);
}

int append_set_or_unset(sd_bus_message* m, bool set, std::vector<std::string> words,
                        std::string& bad) {
    if (set) {
        // LXD also takes "set NAME KEY VALUE".
        if (words.size() == 2 && words[0].find('=') == std::string::npos)
            words = {words[0] + "=" + words[1]};
        int r = append_map(m, words, bad);
        return r < 0 ? r : sd_bus_message_append_strv(m, nullptr);
    }
    int r = append_map(m, {}, bad);
    std::vector<const char*> keys;
    for (auto& k : words)
        keys.push_back(k.c_str());
    keys.push_back(nullptr);
    return r < 0 ? r : sd_bus_message_append_strv(m, const_cast<char**>(keys.data()));
}

int call_message(sd_bus* bus, sd_bus_message* m, BusError& err, MessagePtr* reply) {
    sd_bus_message* answer = nullptr;
    int r = sd_bus_call(bus, m, 0, &err.e, reply ? &answer : nullptr);
    if (reply)
        reply->reset(answer);
    return r;
}

int for_each_name(const Options& o, const std::function<int(const std::string&, BusError&)>& call) {
    int ret = 0;
    for (size_t i = 1; i < o.args.size(); i++) {
        BusError err;
        if (int r = call(o.args[i], err); r < 0)
            ret = bus_fail(err, r);
    }
    return ret;
}

int call_for_fd(sd_bus* bus, const char* method, const std::string& name, int& fd, BusError& err) {
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, method, "s", name.c_str());
    if (r < 0)
        return r;
    int borrowed = -1;
    if ((r = sd_bus_message_read(reply.get(), "h", &borrowed)) < 0)
        return r;
    fd = ::fcntl(borrowed, F_DUPFD_CLOEXEC, 3);
    return fd < 0 ? -errno : 0;
}

// ---- properties ------------------------------------------------------------------------------

namespace {

// The string properties, each with its ContainerInfo field.
const std::map<std::string, std::string ContainerInfo::*> text_properties = {
    {"Name", &ContainerInfo::name},          {"State", &ContainerInfo::state},
    {"Reason", &ContainerInfo::reason},      {"Unit", &ContainerInfo::unit},
    {"RootDirectory", &ContainerInfo::root}, {"BootId", &ContainerInfo::boot_id},
};

} // namespace

int get_info(sd_bus* bus, const std::string& name, ContainerInfo& info, BusError& err) {
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "GetContainer", "s", name.c_str());
    if (r < 0)
        return r;
    const char* path;
    if ((r = sd_bus_message_read(reply.get(), "o", &path)) < 0)
        return r;
    sd_bus_message* all = nullptr;
    r = sd_bus_call_method(bus, service, path, "org.freedesktop.DBus.Properties", "GetAll", &err.e,
                           &all, "s", "io.lodge1.Container");
    MessagePtr all_owner(all);
    if (r < 0)
        return r;
    if ((r = sd_bus_message_enter_container(all, 'a', "{sv}")) < 0)
        return r;
    while ((r = sd_bus_message_enter_container(all, 'e', "sv")) > 0) {
        const char* prop;
        sd_bus_message_read(all, "s", &prop);
        std::string p = prop;
        const char* contents = nullptr;
        sd_bus_message_peek_type(all, nullptr, &contents);
        sd_bus_message_enter_container(all, 'v', contents);
        auto str = [&](std::string& out) {
            const char* s;
            sd_bus_message_read(all, "s", &s);
            out = s;
        };
        if (auto text = text_properties.find(p); text != text_properties.end())
            str(info.*(text->second));
        else if (p == "Leader")
            sd_bus_message_read(all, "u", &info.leader);
        else if (p == "Timestamp")
            sd_bus_message_read(all, "t", &info.timestamp);
        else if (p == "Privileged" || p == "LXCFS" || p == "Ready") {
            int b = 0;
            sd_bus_message_read(all, "b", &b);
            (p == "LXCFS" ? info.lxcfs : p == "Ready" ? info.ready : info.privileged) = b;
        } else if (p == "Config")
            read_string_map(all, info.config);
        else if (p == "Devices") {
            sd_bus_message_enter_container(all, 'a', "{sa{ss}}");
            while (sd_bus_message_enter_container(all, 'e', "sa{ss}") > 0) {
                const char* dev;
                sd_bus_message_read(all, "s", &dev);
                read_string_map(all, info.devices[dev]);
                sd_bus_message_exit_container(all);
            }
            sd_bus_message_exit_container(all);
        } else
            sd_bus_message_skip(all, contents);
        sd_bus_message_exit_container(all);
        sd_bus_message_exit_container(all);
    }
    return 0;
}

nlohmann::json info_json(const ContainerInfo& i) {
    return {{"name", i.name},
            {"state", i.state},
            {"reason", i.reason},
            {"leader", i.leader},
            {"unit", i.unit},
            {"root_directory", i.root},
            {"privileged", i.privileged},
            {"lxcfs", i.lxcfs},
            {"ready", i.ready},
            {"boot_id", i.boot_id},
            {"timestamp", i.timestamp},
            {"config", i.config},
            {"devices", i.devices}};
}

} // namespace lodge::ctl
