#include "ctl/network.hpp"

#include "common/config.hpp"
#include "common/sd-util.hpp"
#include "ctl/bus.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace lodge::ctl {
namespace {

int usage() {
    return fail(std::string("Usage: lodgectl ") + network_usage);
}

void print_warnings(sd_bus_message* reply) {
    if (sd_bus_message_enter_container(reply, 'a', "s") < 0)
        return;
    const char* w;
    while (sd_bus_message_read(reply, "s", &w) > 0)
        std::fprintf(stderr, "Warning: %s\n", w);
    sd_bus_message_exit_container(reply);
}

// Sends `call`, built so far with `r` (-EINVAL: `bad` is a setting without '='), and shows the
// warnings lodged answers with. Returns the exit status.
int send_showing_warnings(sd_bus* bus, sd_bus_message* call, int r, const std::string& bad) {
    if (r == -EINVAL && !bad.empty())
        return fail("Invalid setting \"" + bad + "\": expected KEY=VALUE");
    BusError err;
    MessagePtr reply;
    if (r >= 0)
        r = call_message(bus, call, err, &reply);
    if (r < 0)
        return bus_fail(err, r);
    print_warnings(reply.get());
    return 0;
}

int get_map(sd_bus* bus, const char* method, const std::string& name, KeyMap& out) {
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, method, "s", name.c_str());
    if (r < 0)
        return bus_fail(err, r);
    if ((r = read_string_map(reply.get(), out)) < 0)
        return fail(std::string("Bad reply from lodged: ") + std::strerror(-r));
    return 0;
}

int print_map(const NetworkArgs& a, const KeyMap& map) {
    if (a.json) {
        std::printf("%s\n", nlohmann::json(map).dump().c_str());
        return 0;
    }
    for (auto& [k, v] : map)
        std::printf("%s: %s\n", k.c_str(), v.c_str());
    return 0;
}

int create(const NetworkArgs& a, sd_bus* bus) {
    if (a.args.size() < 3)
        return usage();
    MessagePtr call = new_manager_call(bus, "CreateNetwork");
    if (!call)
        return 1;
    std::string bad;
    int r = sd_bus_message_append(call.get(), "s", a.args[2].c_str());
    if (r >= 0)
        r = append_map(call.get(), {a.args.begin() + 3, a.args.end()}, bad);
    if (int ret = send_showing_warnings(bus, call.get(), r, bad); ret != 0)
        return ret;
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"name", a.args[2]}, {"created", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Network %s created\n", a.args[2].c_str());
    return 0;
}

int list(const NetworkArgs& a, sd_bus* bus) {
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "ListNetworks", "");
    if (r < 0)
        return bus_fail(err, r);
    struct Row {
        std::string name, v4, v6;
        uint32_t used;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(reply.get(), 'a', "(sssu)");
    const char *n, *v4, *v6;
    uint32_t used;
    while (sd_bus_message_read(reply.get(), "(sssu)", &n, &v4, &v6, &used) > 0)
        rows.push_back({n, v4, v6, used});
    if (a.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& row : rows)
            j.push_back({{"name", row.name},
                         {"ipv4.address", row.v4},
                         {"ipv6.address", row.v6},
                         {"used_by", row.used}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (a.quiet) {
        for (auto& row : rows)
            std::printf("%s\n", row.name.c_str());
        return 0;
    }
    size_t w = 4, w4 = 4, w6 = 4;
    for (auto& row : rows) {
        w = std::max(w, row.name.size());
        w4 = std::max(w4, row.v4.size());
        w6 = std::max(w6, row.v6.size());
    }
    if (a.legend)
        std::printf("%-*s %-*s %-*s %s\n", int(w), "NAME", int(w4), "IPV4", int(w6), "IPV6",
                    "USED BY");
    for (auto& row : rows)
        std::printf("%-*s %-*s %-*s %u\n", int(w), row.name.c_str(), int(w4), row.v4.c_str(),
                    int(w6), row.v6.c_str(), row.used);
    if (a.legend)
        std::printf("\n%zu networks listed.\n", rows.size());
    return 0;
}

int set_or_unset(const NetworkArgs& a, sd_bus* bus, bool set) {
    if (a.args.size() < 4)
        return usage();
    MessagePtr call = new_manager_call(bus, "SetNetworkConfig");
    if (!call)
        return 1;
    std::string bad;
    int r = sd_bus_message_append(call.get(), "s", a.args[2].c_str());
    if (r >= 0)
        r = append_set_or_unset(call.get(), set, {a.args.begin() + 3, a.args.end()}, bad);
    return send_showing_warnings(bus, call.get(), r, bad);
}

int list_leases(const NetworkArgs& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return usage();
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "GetNetworkLeases", "s", a.args[2].c_str());
    if (r < 0)
        return bus_fail(err, r);
    struct Row {
        std::string host, mac, addr, type;
        uint64_t expiry;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(reply.get(), 'a', "(sssst)");
    const char *h, *mac, *addr, *type;
    uint64_t expiry;
    while (sd_bus_message_read(reply.get(), "(sssst)", &h, &mac, &addr, &type, &expiry) > 0)
        rows.push_back({h, mac, addr, type, expiry});
    if (a.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& row : rows)
            j.push_back({{"hostname", row.host},
                         {"hwaddr", row.mac},
                         {"address", row.addr},
                         {"type", row.type},
                         {"expiry", row.expiry}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    size_t w = 8, wa = 7;
    for (auto& row : rows) {
        w = std::max(w, row.host.size());
        wa = std::max(wa, row.addr.size());
    }
    if (a.legend)
        std::printf("%-*s %-17s %-*s %s\n", int(w), "HOSTNAME", "MAC ADDRESS", int(wa), "ADDRESS",
                    "TYPE");
    for (auto& row : rows)
        std::printf("%-*s %-17s %-*s %s\n", int(w), row.host.c_str(), row.mac.c_str(), int(wa),
                    row.addr.c_str(), row.type.c_str());
    if (a.legend)
        std::printf("\n%zu leases listed.\n", rows.size());
    return 0;
}

} // namespace

int verb_network(const NetworkArgs& a, sd_bus* bus) {
    if (a.args.size() < 2)
        return usage();
    const std::string& sub = a.args[1];
    if (sub == "create")
        return create(a, bus);
    if (sub == "list")
        return a.args.size() == 2 ? list(a, bus) : usage();
    if (sub == "list-leases")
        return list_leases(a, bus);
    if (sub == "set" || sub == "unset")
        return set_or_unset(a, bus, sub == "set");
    if (sub == "delete") {
        if (a.args.size() < 3)
            return usage();
        int ret = 0;
        for (size_t i = 2; i < a.args.size(); i++) {
            BusError err;
            if (int r = call_manager(bus, err, nullptr, "DeleteNetwork", "s", a.args[i].c_str());
                r < 0)
                ret = bus_fail(err, r);
        }
        return ret;
    }
    if (sub == "show" || sub == "info" || sub == "get") {
        if (a.args.size() != (sub == "get" ? 4u : 3u))
            return usage();
        KeyMap map;
        if (int r =
                get_map(bus, sub == "info" ? "GetNetworkInfo" : "GetNetworkConfig", a.args[2], map);
            r != 0)
            return r;
        if (sub == "get") {
            auto it = map.find(a.args[3]);
            if (a.json)
                std::printf("%s\n",
                            (it != map.end() ? nlohmann::json(it->second) : nlohmann::json())
                                .dump()
                                .c_str());
            else
                std::printf("%s\n", it != map.end() ? it->second.c_str() : "");
            return 0;
        }
        if (sub == "show" && !a.json) {
            std::printf("name: %s\nconfig:\n", a.args[2].c_str());
            for (auto& [k, v] : map)
                std::printf("  %s: %s\n", k.c_str(), v.c_str());
            return 0;
        }
        return print_map(a, map);
    }
    return fail("Unknown network command \"" + sub + "\"; see lodgectl network --help");
}

} // namespace lodge::ctl
