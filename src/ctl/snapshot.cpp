// lodgectl snapshot|restore|copy|rename: thin callers of io.lodge1.Manager's methods; the work
// happens in lodged.
#include "common/sd-util.hpp"
#include "common/validate.hpp"
#include "ctl/bus.hpp"
#include "ctl/instance.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace lodge::ctl {
namespace {

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
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "ListSnapshots", "s", name.c_str());
    if (r < 0)
        return bus_fail(err, r);
    struct Row {
        std::string first;
        uint64_t created, expires;
    };
    std::vector<Row> rows;
    if ((r = sd_bus_message_enter_container(reply.get(), 'a', "(stt)")) < 0)
        return fail("Bad reply from lodged");
    const char* snap = nullptr;
    uint64_t created = 0, expires = 0;
    while ((r = sd_bus_message_read(reply.get(), "(stt)", &snap, &created, &expires)) > 0)
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
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "GetSnapshot", "ss", name.c_str(), snap.c_str());
    if (r < 0)
        return bus_fail(err, r);
    uint64_t created = 0, expires = 0;
    std::map<std::string, std::string> config;
    std::map<std::string, std::map<std::string, std::string>> devices;
    r = sd_bus_message_read(reply.get(), "tt", &created, &expires);
    if (r >= 0)
        r = read_string_map(reply.get(), config);
    if (r >= 0)
        r = sd_bus_message_enter_container(reply.get(), 'a', "{sa{ss}}");
    while (r >= 0 && (r = sd_bus_message_enter_container(reply.get(), 'e', "sa{ss}")) > 0) {
        const char* dev = nullptr;
        if ((r = sd_bus_message_read(reply.get(), "s", &dev)) < 0 ||
            (r = read_string_map(reply.get(), devices[dev])) < 0 ||
            (r = sd_bus_message_exit_container(reply.get())) < 0)
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
    const char* usage =
        "Usage: lodgectl snapshot create NAME [SNAPSHOT] [--stateless] | list NAME | "
        "show NAME SNAPSHOT | delete NAME SNAPSHOT... | "
        "rename NAME SNAPSHOT NEW";
    if (o.args.size() < 3)
        return fail(usage);
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    BusError err;
    if (sub == "create") {
        if (o.args.size() > 4)
            return fail(usage);
        // A stateful snapshot would checkpoint the processes too (CRIU, as LXD's); lodge's
        // snapshots hold the rootfs and the config only, which --stateless asks for.
        if (o.values.count("stateful"))
            return fail("Stateful snapshots need CRIU to checkpoint the container's processes, "
                        "and lodge does not use it; take a stateless snapshot (the default, "
                        "--stateless)");
        std::string snap = o.args.size() == 4 ? o.args[3] : "";
        MessagePtr reply;
        int r = call_manager(bus, err, &reply, "CreateSnapshot", "ss", name.c_str(), snap.c_str());
        const char* made = nullptr;
        if (r >= 0)
            r = sd_bus_message_read(reply.get(), "s", &made);
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
            BusError e;
            if (int r = call_manager(bus, e, nullptr, "DeleteSnapshot", "ss", name.c_str(),
                                     o.args[i].c_str());
                r < 0)
                ret = bus_fail(e, r);
        }
        return ret;
    }
    if (sub == "rename") {
        if (o.args.size() != 5)
            return fail(usage);
        int r = call_manager(bus, err, nullptr, "RenameSnapshot", "sss", name.c_str(),
                             o.args[3].c_str(), o.args[4].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    return fail("Unknown snapshot command \"" + sub + "\"; " + usage);
}

int verb_restore(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl restore NAME SNAPSHOT [--force]");
    BusError err;
    int r = call_manager(bus, err, nullptr, "RestoreSnapshot", "ssb", o.args[1].c_str(),
                         o.args[2].c_str(), o.force ? 1 : 0);
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
    MessagePtr call = new_manager_call(bus, "CopyContainer");
    if (!call)
        return 1;
    sd_bus_message* m = call.get();
    int r = sd_bus_message_append(m, "sss", source.c_str(), snap.c_str(), name.c_str());
    std::string bad;
    if (r >= 0 && (r = append_map(m, o.config, bad)) == -EINVAL)
        return fail("Invalid config \"" + bad + "\": expected KEY=VALUE");
    if (r >= 0)
        r = sd_bus_message_append(m, "b", o.values.count("no-snapshots") ? 0 : 1);
    BusError err;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
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
    BusError err;
    int r = call_manager(bus, err, nullptr, "RenameContainer", "ss", o.args[1].c_str(),
                         o.args[2].c_str());
    return r < 0 ? bus_fail(err, r) : 0;
}

} // namespace lodge::ctl
