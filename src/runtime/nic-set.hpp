// The nics plugged into one boot of a container, with the network namespace they live in
// (held, so that unplugging at a stop still reaches devices inside it).
#pragma once

#include "common/config.hpp"
#include "common/fd.hpp"
#include "runtime/net.hpp"

#include <string>
#include <sys/types.h>
#include <vector>

namespace lodge::runtime {

class NicSet {
public:
    // At start, before PID 1 runs: every nic of `config` into the namespace of `child`.
    // 0, or -errno with `error` set and nothing left plugged.
    int plug_all(const ContainerConfig& config, pid_t child, std::string& error);
    // Into the running container whose PID 1 is `init`: nic `device` with `keys` (its device
    // keys plus volatile.name/hwaddr). "" with `out` set, or the problem.
    std::string add(const std::string& container, pid_t init, const std::string& device,
                    const KeyMap& keys, net::PluggedNic& out);
    // 1: unplugged, 0: it was not plugged, -errno with `error` set.
    int remove(const std::string& device, std::string& error);
    // At every stop, guest reboot and failed start: host ends go now, not whenever the kernel
    // gets round to the dead namespace.
    void unplug_all();
    const std::vector<net::PluggedNic>& nics() const { return nics_; }

private:
    Fd netns_;
    std::vector<net::PluggedNic> nics_;
};

} // namespace lodge::runtime
