// lodgectl snapshot|restore|copy|rename: thin callers of io.lodge1.Manager's methods; the work
// happens in lodged.
#include "common/sd-util.hpp"
#include "common/validate.hpp"
#include "ctl/instance.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace lodge::ctl {
namespace {

constexpr const char* service = "io.lodge1";
constexpr const char* manager_path = "/io/lodge1";
constexpr const char* manager_iface = "io.lodge1.Manager";

struct Error {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ~Error() { sd_bus_error_free(&e); }
};

struct Reply {
    sd_bus_message* m = nullptr;
    ~Reply() { sd_bus_message_unref(m); }
};

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

int bus_fail(const Error& err, int r) {
    if (sd_bus_error_is_set(&err.e))
        return fail(err.e.message ? err.e.message : err.e.name);
    return fail(std::string("Failed to talk to lodged: ") + std::strerror(-r));
}

std::string format_time(uint64_t usec) {
    if (usec == 0)
        return "-";
    time_t t = static_cast<time_t>(usec / 1000000);
    struct tm tm {};
    ::localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm);
    return buf;
}

int snapshot_list(const InstanceOptions& o, sd_bus* bus, const std::string& name) {
    Error err;
    Reply reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "ListSnapshots", &err.e,
                               &reply.m, "s", name.c_str());
    if (r < 0)
        return bus_fail(err, r);
    struct Row {
        std::string first;
        uint64_t created, expires;
    };
    std::vector<Row> rows;
    if ((r = sd_bus_message_enter_container(reply.m, 'a', "(stt)")) < 0)
        return fail("Bad reply from lodged");
    const char* snap = nullptr;
    uint64_t created = 0, expires = 0;
    while ((r = sd_bus_message_read(reply.m, "(stt)", &snap, &created, &expires)) > 0)
        rows.push_back({snap, created, expires});
    if (o.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& row : rows)
            j.push_back({{"name", row.first},
                         {"created_usec", row.created},
                         {"expires_usec", row.expires}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (o.quiet) {
        for (auto& row : rows)
            std::printf("%s\n", row.first.c_str());
        return 0;
    }
    size_t w = 4;
    for (auto& row : rows)
        w = std::max(w, row.first.size());
    if (o.legend)
        std::printf("%-*s %-23s %s\n", static_cast<int>(w), "NAME", "TAKEN", "EXPIRES");
    for (auto& row : rows)
        std::printf("%-*s %-23s %s\n", static_cast<int>(w), row.first.c_str(),
                    format_time(row.created).c_str(), format_time(row.expires).c_str());
    if (o.legend)
        std::printf("\n%zu snapshots listed.\n", rows.size());
    return 0;
}

int snapshot_show(const InstanceOptions& o, sd_bus* bus, const std::string& name,
                  const std::string& snap) {
    Error err;
    Reply reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetSnapshot", &err.e,
                               &reply.m, "ss", name.c_str(), snap.c_str());
    if (r < 0)
        return bus_fail(err, r);
    uint64_t created = 0, expires = 0;
    std::map<std::string, std::string> config;
    std::map<std::string, std::map<std::string, std::string>> devices;
    r = sd_bus_message_read(reply.m, "tt", &created, &expires);
    if (r >= 0)
        r = read_string_map(reply.m, config);
    if (r >= 0)
        r = sd_bus_message_enter_container(reply.m, 'a', "{sa{ss}}");
    while (r >= 0 && (r = sd_bus_message_enter_container(reply.m, 'e', "sa{ss}")) > 0) {
        const char* dev = nullptr;
        if ((r = sd_bus_message_read(reply.m, "s", &dev)) < 0 ||
            (r = read_string_map(reply.m, devices[dev])) < 0 ||
            (r = sd_bus_message_exit_container(reply.m)) < 0)
            break;
    }
    if (r < 0)
        return fail("Bad reply from lodged");
    if (o.json) {
        std::printf("%s\n", nlohmann::json{{"name", snap},
                                           {"container", name},
                                           {"created_usec", created},
                                           {"expires_usec", expires},
                                           {"config", config},
                                           {"devices", devices}}
                                .dump()
                                .c_str());
        return 0;
    }
    std::printf("Name: %s\nContainer: %s\nTaken: %s\nExpires: %s\nConfig:\n", snap.c_str(),
                name.c_str(), format_time(created).c_str(),
                expires ? format_time(expires).c_str() : "never");
    for (auto& [k, v] : config)
        std::printf("  %s: %s\n", k.c_str(), v.c_str());
    if (!devices.empty())
        std::printf("Devices:\n");
    for (auto& [dev, keys] : devices) {
        std::printf("  %s:\n", dev.c_str());
        for (auto& [k, v] : keys)
            std::printf("    %s: %s\n", k.c_str(), v.c_str());
    }
    return 0;
}

} // namespace

int verb_snapshot(const InstanceOptions& o, sd_bus* bus) {
    const char* usage = "Usage: lodgectl snapshot create NAME [SNAPSHOT] | list NAME | "
                        "show NAME SNAPSHOT | delete NAME SNAPSHOT... | "
                        "rename NAME SNAPSHOT NEW";
    if (o.args.size() < 3)
        return fail(usage);
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    Error err;
    if (sub == "create") {
        if (o.args.size() > 4)
            return fail(usage);
        std::string snap = o.args.size() == 4 ? o.args[3] : "";
        Reply reply;
        int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "CreateSnapshot",
                                   &err.e, &reply.m, "ss", name.c_str(), snap.c_str());
        const char* made = nullptr;
        if (r >= 0)
            r = sd_bus_message_read(reply.m, "s", &made);
        if (r < 0)
            return bus_fail(err, r);
        if (o.json)
            std::printf("%s\n", nlohmann::json{{"name", name}, {"snapshot", made}}.dump().c_str());
        else if (!o.quiet)
            std::printf("Created snapshot %s of %s\n", made, name.c_str());
        return 0;
    }
    if (sub == "list")
        return o.args.size() == 3 ? snapshot_list(o, bus, name) : fail(usage);
    if (sub == "show")
        return o.args.size() == 4 ? snapshot_show(o, bus, name, o.args[3]) : fail(usage);
    if (sub == "delete") {
        if (o.args.size() < 4)
            return fail(usage);
        int ret = 0;
        for (size_t i = 3; i < o.args.size(); i++) {
            Error e;
            if (int r =
                    sd_bus_call_method(bus, service, manager_path, manager_iface, "DeleteSnapshot",
                                       &e.e, nullptr, "ss", name.c_str(), o.args[i].c_str());
                r < 0)
                ret = bus_fail(e, r);
        }
        return ret;
    }
    if (sub == "rename") {
        if (o.args.size() != 5)
            return fail(usage);
        int r =
            sd_bus_call_method(bus, service, manager_path, manager_iface, "RenameSnapshot", &err.e,
                               nullptr, "sss", name.c_str(), o.args[3].c_str(), o.args[4].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    return fail("Unknown snapshot command \"" + sub + "\"; " + usage);
}

int verb_restore(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl restore NAME SNAPSHOT [--force]");
    Error err;
    int r =
        sd_bus_call_method(bus, service, manager_path, manager_iface, "RestoreSnapshot", &err.e,
                           nullptr, "ssb", o.args[1].c_str(), o.args[2].c_str(), o.force ? 1 : 0);
    return r < 0 ? bus_fail(err, r) : 0;
}

int verb_copy(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl copy SOURCE[/SNAPSHOT] NAME [-c KEY=VALUE]... "
                    "[--no-snapshots]");
    std::string source = o.args[1], snap;
    if (auto slash = source.find('/'); slash != std::string::npos) {
        snap = source.substr(slash + 1);
        source.resize(slash);
    }
    const std::string& name = o.args[2];
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                       "CopyContainer") < 0)
        return fail("Cannot build the request");
    Reply call{m};
    int r = sd_bus_message_append(m, "sss", source.c_str(), snap.c_str(), name.c_str());
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (auto& kv : o.config) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            return fail("Invalid config \"" + kv + "\": expected KEY=VALUE");
        if (r >= 0)
            r = sd_bus_message_append(m, "{ss}", kv.substr(0, eq).c_str(),
                                      kv.substr(eq + 1).c_str());
    }
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    if (r >= 0)
        r = sd_bus_message_append(m, "b", o.values.count("no-snapshots") ? 0 : 1);
    Error err;
    Reply reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    if (r < 0)
        return bus_fail(err, r);
    if (o.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"created", true}}.dump().c_str());
    else if (!o.quiet)
        std::printf("Created container %s as a copy of %s\n", name.c_str(), o.args[1].c_str());
    return 0;
}

int verb_rename(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl rename NAME NEW_NAME");
    if (auto e = check_container_name(o.args[2]); !e.empty())
        return fail(e);
    Error err;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "RenameContainer", &err.e,
                               nullptr, "ss", o.args[1].c_str(), o.args[2].c_str());
    return r < 0 ? bus_fail(err, r) : 0;
}

} // namespace lodge::ctl
