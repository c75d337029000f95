#include "ctl/network.hpp"

#include "common/config.hpp"
#include "common/sd-util.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace lodge::ctl {
namespace {

constexpr const char* service = "io.lodge1";
constexpr const char* path = "/io/lodge1";
constexpr const char* iface = "io.lodge1.Manager";

struct Call {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    ~Call() {
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
    }
};

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

int bus_fail(const Call& c, int r) {
    if (sd_bus_error_is_set(&c.error))
        return fail(c.error.message ? c.error.message : c.error.name);
    return fail(std::string("Failed to talk to lodged: ") + std::strerror(-r));
}

int usage() {
    return fail(std::string("Usage: lodgectl ") + network_usage);
}

// Appends a{ss} from KEY=VALUE words; `bad` gets the first word without '='.
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

void print_warnings(sd_bus_message* reply) {
    if (sd_bus_message_enter_container(reply, 'a', "s") < 0)
        return;
    const char* w;
    while (sd_bus_message_read(reply, "s", &w) > 0)
        std::fprintf(stderr, "Warning: %s\n", w);
    sd_bus_message_exit_container(reply);
}

int get_map(sd_bus* bus, const char* method, const std::string& name, KeyMap& out) {
    Call c;
    int r = sd_bus_call_method(bus, service, path, iface, method, &c.error, &c.reply, "s",
                               name.c_str());
    if (r < 0)
        return bus_fail(c, r);
    if ((r = read_string_map(c.reply, out)) < 0)
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
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, path, iface, "CreateNetwork") < 0)
        return fail("Cannot build the request");
    MessagePtr call(m);
    std::string bad;
    int r = sd_bus_message_append(m, "s", a.args[2].c_str());
    if (r >= 0 && (r = append_map(m, {a.args.begin() + 3, a.args.end()}, bad)) == -EINVAL)
        return fail("Invalid setting \"" + bad + "\": expected KEY=VALUE");
    Call c;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &c.error, &c.reply);
    if (r < 0)
        return bus_fail(c, r);
    print_warnings(c.reply);
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"name", a.args[2]}, {"created", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Network %s created\n", a.args[2].c_str());
    return 0;
}

int list(const NetworkArgs& a, sd_bus* bus) {
    Call c;
    int r = sd_bus_call_method(bus, service, path, iface, "ListNetworks", &c.error, &c.reply, "");
    if (r < 0)
        return bus_fail(c, r);
    struct Row {
        std::string name, v4, v6;
        uint32_t used;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(c.reply, 'a', "(sssu)");
    const char *n, *v4, *v6;
    uint32_t used;
    while (sd_bus_message_read(c.reply, "(sssu)", &n, &v4, &v6, &used) > 0)
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
    std::vector<std::string> rest(a.args.begin() + 3, a.args.end());
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, path, iface, "SetNetworkConfig") < 0)
        return fail("Cannot build the request");
    MessagePtr call(m);
    std::string bad;
    int r = sd_bus_message_append(m, "s", a.args[2].c_str());
    if (set) {
        // LXD also takes "set NAME KEY VALUE".
        if (rest.size() == 2 && rest[0].find('=') == std::string::npos)
            rest = {rest[0] + "=" + rest[1]};
        if (r >= 0 && (r = append_map(m, rest, bad)) == -EINVAL)
            return fail("Invalid setting \"" + bad + "\": expected KEY=VALUE");
        if (r >= 0)
            r = sd_bus_message_append_strv(m, nullptr);
    } else {
        if (r >= 0)
            r = append_map(m, {}, bad);
        std::vector<const char*> keys;
        for (auto& k : rest)
            keys.push_back(k.c_str());
        keys.push_back(nullptr);
        if (r >= 0)
            r = sd_bus_message_append_strv(m, const_cast<char**>(keys.data()));
    }
    Call c;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &c.error, &c.reply);
    if (r < 0)
        return bus_fail(c, r);
    print_warnings(c.reply);
    return 0;
}

int list_leases(const NetworkArgs& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return usage();
    Call c;
    int r = sd_bus_call_method(bus, service, path, iface, "GetNetworkLeases", &c.error, &c.reply,
                               "s", a.args[2].c_str());
    if (r < 0)
        return bus_fail(c, r);
    struct Row {
        std::string host, mac, addr, type;
        uint64_t expiry;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(c.reply, 'a', "(sssst)");
    const char *h, *mac, *addr, *type;
    uint64_t expiry;
    while (sd_bus_message_read(c.reply, "(sssst)", &h, &mac, &addr, &type, &expiry) > 0)
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
            Call c;
            int r = sd_bus_call_method(bus, service, path, iface, "DeleteNetwork", &c.error,
                                       nullptr, "s", a.args[i].c_str());
            if (r < 0)
                ret = bus_fail(c, r);
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
