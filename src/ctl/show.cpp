// list, status and show: containers and their properties, as tables, key=value lines or JSON.
#include "ctl/bus.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <sys/socket.h>

namespace lodge::ctl {

namespace {

// A running container's addresses as lodged reads them inside its network namespace (the
// container object's GetAddresses), IPv6 link-local ones left out as `lxc list` does.
void list_addresses(sd_bus* bus, const std::string& path, std::vector<std::string>& ipv4,
                    std::vector<std::string>& ipv6) {
    BusError err;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus, service, path.c_str(), "io.lodge1.Container", "GetAddresses",
                               &err.e, &reply, nullptr);
    MessagePtr reply_owner(reply);
    if (r < 0)
        return;
    if (sd_bus_message_enter_container(reply, 'a', "(iay)") <= 0)
        return;
    while (sd_bus_message_enter_container(reply, 'r', "iay") > 0) {
        int32_t family = 0;
        const void* bytes = nullptr;
        size_t len = 0;
        if (sd_bus_message_read(reply, "i", &family) < 0 ||
            sd_bus_message_read_array(reply, 'y', &bytes, &len) < 0)
            break;
        sd_bus_message_exit_container(reply);
        char text[INET6_ADDRSTRLEN] = "";
        bool v4 = family == AF_INET && len == 4, v6 = family == AF_INET6 && len == 16;
        if ((!v4 && !v6) || !inet_ntop(family, bytes, text, sizeof text))
            continue;
        auto* b = static_cast<const uint8_t*>(bytes);
        if (v6 && b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
            continue;
        (v4 ? ipv4 : ipv6).push_back(text);
    }
}

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v)
        out += (out.empty() ? "" : ",") + s;
    return out.empty() ? "-" : out;
}

} // namespace

int verb_list(const Options& o, sd_bus* bus) {
    BusError err;
    MessagePtr reply_owner;
    int r = call_manager(bus, err, &reply_owner, "ListContainers", nullptr);
    if (r < 0)
        return bus_fail(err, r);
    sd_bus_message* reply = reply_owner.get();
    struct Row {
        std::string name, state;
        uint32_t leader;
        std::vector<std::string> ipv4, ipv6;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(reply, 'a', "(ssuo)");
    const char *name, *state, *path;
    uint32_t leader;
    while ((r = sd_bus_message_read(reply, "(ssuo)", &name, &state, &leader, &path)) > 0) {
        rows.push_back({name, state, leader, {}, {}});
        if (leader && !o.quiet)
            list_addresses(bus, path, rows.back().ipv4, rows.back().ipv6);
    }
    if (o.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& row : rows)
            j.push_back({{"name", row.name},
                         {"state", row.state},
                         {"leader", row.leader},
                         {"ipv4", row.ipv4},
                         {"ipv6", row.ipv6}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (o.quiet) {
        for (auto& row : rows)
            std::printf("%s\n", row.name.c_str());
        return 0;
    }
    size_t w = 4, w4 = 4;
    for (auto& row : rows) {
        w = std::max(w, row.name.size());
        w4 = std::max(w4, joined(row.ipv4).size());
    }
    if (o.legend)
        std::printf("%-*s %-8s %-7s %-*s %s\n", static_cast<int>(w), "NAME", "STATE", "LEADER",
                    static_cast<int>(w4), "IPV4", "IPV6");
    for (auto& row : rows)
        std::printf("%-*s %-8s %-7s %-*s %s\n", static_cast<int>(w), row.name.c_str(),
                    row.state.c_str(), row.leader ? std::to_string(row.leader).c_str() : "-",
                    static_cast<int>(w4), joined(row.ipv4).c_str(), joined(row.ipv6).c_str());
    if (o.legend)
        std::printf("\n%zu containers listed.\n", rows.size());
    return 0;
}

int verb_status_or_show(const Options& o, sd_bus* bus) {
    bool show = o.args[0] == "show";
    int ret = 0;
    nlohmann::json all = nlohmann::json::array();
    for (size_t i = 1; i < o.args.size(); i++) {
        BusError err;
        ContainerInfo info;
        if (int r = get_info(bus, o.args[i], info, err); r < 0) {
            ret = bus_fail(err, r);
            continue;
        }
        if (o.json) {
            all.push_back(info_json(info));
            continue;
        }
        if (show) {
            std::printf("Name=%s\nState=%s\nReason=%s\nLeader=%u\nUnit=%s\nRootDirectory=%s\n"
                        "Privileged=%s\nBootId=%s\nTimestamp=%llu\n",
                        info.name.c_str(), info.state.c_str(), info.reason.c_str(), info.leader,
                        info.unit.c_str(), info.root.c_str(), info.privileged ? "yes" : "no",
                        info.boot_id.c_str(), static_cast<unsigned long long>(info.timestamp));
            for (auto& [k, v] : info.config)
                std::printf("Config.%s=%s\n", k.c_str(), v.c_str());
            continue;
        }
        std::printf("%s\n", info.name.c_str());
        std::printf("      State: %s%s%s\n", info.state.c_str(), info.reason.empty() ? "" : " (",
                    info.reason.empty() ? "" : (info.reason + ")").c_str());
        if (info.leader)
            std::printf("     Leader: %u\n", info.leader);
        std::printf("       Unit: %s\n", info.unit.c_str());
        std::printf("       Root: %s\n", info.root.c_str());
        std::printf(" Privileged: %s\n", info.privileged ? "yes" : "no");
        if (!info.boot_id.empty() && info.leader)
            std::printf("    Boot ID: %s\n", info.boot_id.c_str());
        if (info.leader) {
            std::printf("      LXCFS: %s\n", info.lxcfs ? "bound" : "not bound");
            std::printf("      Ready: %s\n",
                        info.ready ? "yes (the guest said so on /dev/lxd/sock)" : "no");
        }
        // nics: the name in the container, its MAC, and this boot's host end while running.
        const char* label = "       NICs: ";
        for (auto& [dev, keys] : info.devices) {
            if (keys.count("type") == 0 || keys.at("type") != "nic")
                continue;
            auto key = [&](const std::string& k) {
                auto it = keys.find(k);
                if (it != keys.end())
                    return it->second;
                auto v = info.config.find("volatile." + dev + "." + k);
                return v == info.config.end() ? std::string() : v->second;
            };
            std::string host = key("host_name");
            std::string parent = keys.count("parent") ? keys.at("parent") : "";
            std::printf("%s%s: %s %s (%s%s%s%s)\n", label, dev.c_str(), key("name").c_str(),
                        key("hwaddr").c_str(),
                        keys.count("nictype") ? keys.at("nictype").c_str() : "",
                        parent.empty() ? "" : (" on " + parent).c_str(),
                        host.empty() ? "" : ", host ", host.c_str());
            label = "             ";
        }
    }
    if (o.json)
        std::printf("%s\n", (all.size() == 1 ? all[0] : all).dump().c_str());
    return ret;
}

} // namespace lodge::ctl
