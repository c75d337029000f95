// lodged's managed networks (issue 17, lodge-network(7)): the networks on disk, their bridge,
// firewall table and dnsmasq kept in place (re-created at lodged start when missing: after a
// host reboot, or when something removed them), dnsmasq watched through a pidfd and restarted
// when it dies, and the operations behind the bus methods.
#pragma once

#include "common/fd.hpp"
#include "daemon/bus-util.hpp"
#include "network/network-config.hpp"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lodge::daemon {

class Manager;

class NetworkManager {
public:
    NetworkManager(sd_event* event, Manager& containers);
    ~NetworkManager();

    // Loads every network on disk and brings each up (bridge, addresses, table, dnsmasq;
    // a dnsmasq still running from before lodged's restart is adopted, not restarted).
    void load();

    Manager& manager() { return containers_; }
    const network::Network* find(const std::string& name) const;
    const std::map<std::string, network::Network>& networks() const { return networks_; }
    // Containers with a nic on `name`.
    std::vector<std::string> used_by(const std::string& name) const;

    // Each returns 0 or -errno with `error` for the caller; `warnings` collects what the caller
    // should read (a FORWARD policy that drops, forwarding that could not be turned on).
    int create(const std::string& name, KeyMap config, std::vector<std::string>& warnings,
               std::string& error);
    int remove(const std::string& name, std::string& error);
    int set(const std::string& name, const KeyMap& set, const std::vector<std::string>& unset,
            std::vector<std::string>& warnings, std::string& error);
    // What `network info` prints: bridge state, addresses, dnsmasq, forwarding, warnings.
    KeyMap info(const std::string& name) const;
    std::vector<network::Lease> leases(const std::string& name) const;

    // Called for a container about to start (or to get a nic live): every nic's network must
    // exist; static addresses must lie in its subnet and be unique; the DHCP host entries of
    // its networks are brought up to date. Returns "" or the problem.
    std::string prepare_container(const ContainerConfig& c);
    // A new container gets eth0 on the network with lodge.default=true, if there is one and
    // the container has no nic yet (what LXD's default profile gives).
    void add_default_nic(ContainerConfig& c) const;

    // Chains that go into lodge's table besides the networks' own (proxy devices' DNAT,
    // proxy-manager.cpp); asked for each time the table is loaded.
    void set_extra_chains(std::function<std::string()> fn) { extra_chains_ = std::move(fn); }
    // Loads the table again (a proxy device's DNAT came or went). 0 or -errno with `error`.
    int reload_firewall(std::string& error) { return apply_firewall(error); }

private:
    struct Daemon {
        NetworkManager* owner = nullptr;
        std::string network;
        PidFd pidfd;
        SourcePtr source, restart;
        unsigned restarts = 0;
        uint64_t window_start = 0;
    };
    // Bridge, addresses, dnsmasq config and daemon for one network. `restart_dnsmasq`: a
    // running dnsmasq is restarted (its config changed), else adopted.
    int bring_up(const network::Network& n, bool restart_dnsmasq, std::string& error);
    int apply_firewall(std::string& error);
    // "" or why `config` cannot make `name` the default network (another one is).
    std::string second_default(const std::string& name, const KeyMap& config) const;
    void watch(const std::string& name, pid_t pid);
    void sync_hosts(const std::string& name, const ContainerConfig* extra);
    std::vector<network::Member> members(const std::string& name,
                                         const ContainerConfig* extra) const;
    static int on_dnsmasq_exit(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_restart(sd_event_source*, uint64_t usec, void* userdata);

    sd_event* event_;
    Manager& containers_;
    std::map<std::string, network::Network> networks_;
    std::map<std::string, std::unique_ptr<Daemon>> daemons_;
    std::function<std::string()> extra_chains_;
};

} // namespace lodge::daemon
