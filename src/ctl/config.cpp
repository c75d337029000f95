// config get|set|unset|show and device add|remove|list.
#include "ctl/bus.hpp"

#include <cerrno>
#include <cstdio>

namespace lodge::ctl {

int verb_config(const Options& o, sd_bus* bus) {
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    if (sub == "edit" || (sub == "show" && o.values.count("expanded")))
        return verb_config_yaml(o, bus);
    if (sub == "get" || sub == "show") {
        BusError err;
        ContainerInfo info;
        MessagePtr full;
        // The whole config needs io.lodge1.manage; without it, the public part (the Config
        // property has no cloud-init.*, environment.* or user.* keys).
        int r = call_manager(bus, err, &full, "GetContainerConfig", "s", name.c_str());
        if (r >= 0)
            r = read_string_map(full.get(), info.config);
        else if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_ACCESS_DENIED)) {
            BusError public_err;
            if ((r = get_info(bus, name, info, public_err)) < 0)
                return bus_fail(public_err, r);
        }
        if (r < 0)
            return bus_fail(err, r);
        if (sub == "get") {
            if (o.args.size() != 4)
                return fail("Usage: lodgectl config get NAME KEY");
            // An unset key prints an empty line, as `lxc config get` does.
            auto it = info.config.find(o.args[3]);
            if (o.json) // the value as a JSON string, null when unset
                std::printf("%s\n", (it != info.config.end() ? nlohmann::json(it->second)
                                                             : nlohmann::json())
                                        .dump()
                                        .c_str());
            else
                std::printf("%s\n", it != info.config.end() ? it->second.c_str() : "");
            return 0;
        }
        if (o.json) {
            std::printf("%s\n", nlohmann::json(info.config).dump().c_str());
            return 0;
        }
        for (auto& [k, v] : info.config)
            std::printf("%s: %s\n", k.c_str(), v.c_str());
        return 0;
    }
    if (sub != "set" && sub != "unset")
        return fail("Unknown config command \"" + sub + "\"");
    if (o.args.size() < 4)
        return fail("Usage: lodgectl config " + sub + " NAME " +
                    (sub == "set" ? "KEY=VALUE..." : "KEY..."));
    MessagePtr call = new_manager_call(bus, "SetContainerConfig");
    if (!call)
        return 1;
    sd_bus_message* m = call.get();
    std::string bad;
    int r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0 && (r = append_set_or_unset(m, sub == "set", {o.args.begin() + 3, o.args.end()},
                                           bad)) == -EINVAL)
        return fail("Invalid setting \"" + bad + "\": expected KEY=VALUE");
    BusError err;
    if (r >= 0)
        r = call_message(bus, m, err, nullptr);
    return r < 0 ? bus_fail(err, r) : 0;
}

int verb_device(const Options& o, sd_bus* bus) {
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    BusError err;
    if (sub == "list") {
        ContainerInfo info;
        if (int r = get_info(bus, name, info, err); r < 0)
            return bus_fail(err, r);
        if (o.json) {
            std::printf("%s\n", nlohmann::json(info.devices).dump().c_str());
            return 0;
        }
        for (auto& [dev, keys] : info.devices) {
            std::printf("%s:\n", dev.c_str());
            for (auto& [k, v] : keys)
                std::printf("  %s: %s\n", k.c_str(), v.c_str());
        }
        return 0;
    }
    if (o.args.size() < 4)
        return fail("Usage: lodgectl device " + sub + " NAME DEVICE ...");
    if (sub == "remove") {
        int r = call_manager(bus, err, nullptr, "RemoveContainerDevice", "ss", name.c_str(),
                             o.args[3].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub != "add")
        return fail("Unknown device command \"" + sub + "\"");
    MessagePtr call = new_manager_call(bus, "AddContainerDevice");
    if (!call)
        return 1;
    sd_bus_message* m = call.get();
    std::string bad;
    int r = sd_bus_message_append(m, "ss", name.c_str(), o.args[3].c_str());
    std::vector<std::string> kvs(o.args.begin() + 4, o.args.end());
    // LXD's form: the type as the first word after the device name.
    if (!kvs.empty() && kvs[0].find('=') == std::string::npos)
        kvs[0] = "type=" + kvs[0];
    if (r >= 0 && (r = append_map(m, kvs, bad)) == -EINVAL)
        return fail("Invalid device key \"" + bad + "\": expected KEY=VALUE");
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
    return r < 0 ? bus_fail(err, r) : 0;
}

} // namespace lodge::ctl
