// lodged's proxy devices (lodge.conf(5), network/proxy.hpp): brings each running container's
// proxies in line with its config whenever its state or devices change. nat=false devices get
// a forwarder in the container (recorded in <runtime>/proxies/<container>/<device> so a
// restarted lodged adopts it); nat=true devices become DNAT rules in lodge's nftables table,
// loaded with the networks' rules in one transaction.
#pragma once

#include "common/config.hpp"
#include "network/proxy.hpp"

#include <string>
#include <vector>

namespace lodge::daemon {

class Manager;
class NetworkManager;
struct Container;

class ProxyManager {
public:
    ProxyManager(Manager& containers, NetworkManager& networks);

    // What the keys alone cannot tell (called for a starting container and for a device
    // added live): nat=true needs "connect" to be the container's static address on a managed
    // network, and no other container may hold the same nat listen address. "" or the problem.
    std::string check(const ContainerConfig& c) const;
    // Forwarders started or stopped and the DNAT rules reloaded as `c` now is. Returns "" or
    // what failed (a port already taken, a missing forwarder program).
    std::string sync(const Container& c);
    // The DNAT chains of every running container (NetworkManager's extra chains).
    std::string nat_chains() const;

private:
    Manager& containers_;
    NetworkManager& networks_;
    std::string applied_chains_;
};

// <runtime>/proxies/<container>
std::string proxies_dir(const std::string& container);

} // namespace lodge::daemon
