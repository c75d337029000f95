#include "runtime/nic-set.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstring>

namespace lodge::runtime {

int NicSet::plug_all(const ContainerConfig& config, pid_t child, std::string& error) {
    auto specs = nic_specs(config);
    if (specs.empty())
        return 0;
    netns_ = net::open_netns(child);
    if (!netns_) {
        error =
            std::string("Cannot open the container's network namespace: ") + std::strerror(errno);
        return log_error_errno(errno, "Failed to open the network namespace of %d", child);
    }
    for (auto& spec : specs) {
        net::PluggedNic nic;
        if (int r = net::plug(netns_.get(), spec, nic, error); r < 0) {
            unplug_all();
            return r;
        }
        log_info("Container \"%s\": device \"%s\" is %s (host side %s)", config.name.c_str(),
                 nic.device.c_str(), nic.name.c_str(),
                 nic.host_name.empty() ? spec.parent.c_str() : nic.host_name.c_str());
        nics_.push_back(std::move(nic));
    }
    return 0;
}

void NicSet::unplug_all() {
    for (auto& nic : nics_)
        (void)net::unplug(netns_.get(), nic); // best effort at a stop: failures are logged
    nics_.clear();
    netns_.reset();
}

std::string NicSet::add(const std::string& container, pid_t init, const std::string& device,
                        const KeyMap& keys, net::PluggedNic& out) {
    for (auto& n : nics_)
        if (n.device == device)
            return "Device \"" + device + "\" is already plugged";
    ContainerConfig one;
    one.name = container;
    for (auto& [k, v] : keys) {
        if (k == "volatile.name" || k == "volatile.hwaddr")
            one.config["volatile." + device + k.substr(8)] = v;
        else
            one.devices[device][k] = v;
    }
    if (auto e = check_container_config(one); !e.empty())
        return e;
    if (!netns_) {
        netns_ = net::open_netns(init);
        if (!netns_)
            return std::string("Cannot open the container's network namespace: ") +
                   std::strerror(errno);
    }
    // Without a name from lodged: the first ethN the container does not have yet.
    std::vector<std::string> in_use;
    net::link_names(netns_.get(), in_use);
    fill_nic_volatile(one, in_use);
    std::string why;
    if (net::plug(netns_.get(), nic_spec(one, device), out, why) < 0)
        return why;
    log_info("Container \"%s\": device \"%s\" plugged as %s", container.c_str(), device.c_str(),
             out.name.c_str());
    nics_.push_back(out);
    return {};
}

int NicSet::remove(const std::string& device, std::string& error) {
    for (auto it = nics_.begin(); it != nics_.end(); ++it) {
        if (it->device != device)
            continue;
        if (auto r = net::unplug(netns_.get(), *it); !r) {
            error = "Device \"" + device + "\": " + r.error().message;
            return -r.error().code;
        }
        nics_.erase(it);
        return 1;
    }
    return 0;
}

} // namespace lodge::runtime
