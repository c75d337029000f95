// nic devices in lodged: volatile keys are made here (lodged is the only writer of config.json)
// and committed with the device; a running container gets the nic plugged or unplugged live by
// its supervisor. Host names are per boot: the supervisor picks them and reports them in its
// status, lodged only mirrors them in memory (Container::nics) and never writes them to disk.
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/validate.hpp"
#include "daemon/manager.hpp"
#include "runtime/net.hpp"

#include <cerrno>

namespace lodge::daemon {

// Names already inside the running container count as used (LXD does the same): a guest that
// made its own eth1 keeps it.
static std::vector<std::string> names_in_container(const Container& c) {
    std::vector<std::string> names;
    if (!c.running() || c.leader <= 0)
        return names;
    Fd netns = runtime::net::open_netns(c.leader);
    if (netns)
        runtime::net::link_names(netns.get(), names);
    return names;
}

Result<std::optional<runtime::proto::Request>>
Manager::prepare_nic(Container& c, ContainerConfig& next, const std::string& device) {
    fill_nic_volatile(next, names_in_container(c));
    if (auto e = check_container_config(next); !e.empty())
        return make_error(errors::invalid_config, EINVAL, e);
    if (network_check_)
        if (auto e = network_check_(next); !e.empty())
            return make_error(errors::invalid_config, EINVAL, e);
    if (auto e = runtime::net::check_host_side(nic_spec(next, device)); !e.empty())
        return make_error(errors::invalid_config, EINVAL, e);
    if (!c.running())
        return std::optional<runtime::proto::Request>();
    // The device with its volatile keys, as the supervisor's nic-add takes it.
    KeyMap spec = next.devices.at(device);
    for (const char* key : {"name", "hwaddr"})
        if (auto v = next.get("volatile." + device + "." + key); !v.empty())
            spec[std::string("volatile.") + key] = v;
    return std::optional(runtime::proto::Request::nic_add(device, spec));
}

void Manager::update_nics(Container& c, const std::vector<runtime::net::PluggedNic>& plugged) {
    std::vector<LiveNic> nics;
    for (auto& n : plugged)
        nics.push_back({n.device, n.name, n.host_name, n.host_ifindex});
    bool changed = nics.size() != c.nics.size();
    for (size_t i = 0; !changed && i < nics.size(); i++)
        changed = nics[i].host_name != c.nics[i].host_name || nics[i].device != c.nics[i].device;
    c.nics = std::move(nics);
    // volatile.<dev>.host_name is part of the Config property while the container runs.
    if (changed)
        sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container",
                                       "Config", nullptr);
}

KeyMap Container::visible_config() const {
    KeyMap shown = config.config;
    for (auto& n : nics)
        if (!n.host_name.empty())
            shown["volatile." + n.device + ".host_name"] = n.host_name;
    return shown;
}

KeyMap Container::public_config() const {
    KeyMap shown = visible_config();
    std::erase_if(shown, [](const auto& kv) { return is_secret_config_key(kv.first); });
    return shown;
}

std::vector<int> Container::host_ifindices() const {
    std::vector<int> out;
    for (auto& n : nics)
        if (n.host_ifindex > 0)
            out.push_back(n.host_ifindex);
    return out;
}

} // namespace lodge::daemon
