// lodgectl server show|get|set|unset: lodged's own keys (LXD's server keys; today
// images.auto_update_interval), and `image copy ... --auto-update`, which marks the copied image
// to follow its remote (lodge-images(7)).
#include "ctl/bus.hpp"

#include <cstdio>
#include <string>

namespace lodge::ctl {

int verb_image_or_auto_update(const Options& a, sd_bus* bus) {
    bool auto_update = a.values.count("auto-update") != 0;
    if (auto_update && (a.args.size() < 3 || a.args[1] != "copy"))
        return fail("--auto-update goes with image copy REMOTE:IMAGE local:");
    int status = verb_image(a, bus);
    if (status != 0 || !auto_update)
        return status;
    BusError err;
    int r = call_manager(bus, err, nullptr, "SetImageAutoUpdate", "sb", a.args[2].c_str(), 1);
    return r < 0 ? bus_fail(err, r) : 0;
}

int verb_server(const Options& a, sd_bus* bus) {
    const std::string sub = a.args.size() > 1 ? a.args[1] : "";
    BusError err;
    if (sub == "show" || sub == "get") {
        MessagePtr reply;
        int r = call_manager(bus, err, &reply, "GetServerConfig", "");
        if (r < 0)
            return bus_fail(err, r);
        std::map<std::string, std::string> keys;
        if (read_string_map(reply.get(), keys) < 0)
            return fail("Unexpected answer from lodged");
        if (sub == "get") {
            if (a.args.size() != 3)
                return fail("Usage: lodgectl server get KEY");
            auto it = keys.find(a.args[2]);
            std::printf("%s\n", it == keys.end() ? "" : it->second.c_str());
            return 0;
        }
        if (a.json) {
            std::printf("%s\n", nlohmann::json(keys).dump().c_str());
            return 0;
        }
        for (auto& [k, v] : keys)
            std::printf("%s: %s\n", k.c_str(), v.c_str());
        return 0;
    }
    if ((sub == "set" || sub == "unset") && a.args.size() > 2) {
        MessagePtr m = new_manager_call(bus, "SetServerConfig");
        if (!m)
            return 1;
        std::vector<std::string> words(a.args.begin() + 2, a.args.end());
        std::string bad;
        int r = append_map(m.get(), sub == "set" ? words : std::vector<std::string>{}, bad);
        if (r == -EINVAL)
            return fail("Expected KEY=VALUE, got \"" + bad + "\"");
        if (r >= 0)
            r = sd_bus_message_open_container(m.get(), 'a', "s");
        if (sub == "unset")
            for (auto& k : words)
                if (r >= 0)
                    r = sd_bus_message_append(m.get(), "s", k.c_str());
        if (r >= 0)
            r = sd_bus_message_close_container(m.get());
        if (r >= 0)
            r = sd_bus_call(bus, m.get(), 0, &err.e, nullptr);
        return r < 0 ? bus_fail(err, r) : 0;
    }
    return fail("Usage: lodgectl server show | get KEY | set KEY=VALUE... | unset KEY...");
}

} // namespace lodge::ctl
