#include "daemon/network-manager.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "daemon/manager.hpp"
#include "network/network-host.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <net/if.h>
#include <set>
#include <systemd/sd-daemon.h>

namespace lodge::daemon {

using network::Network;

namespace {

// dnsmasq restarts: at most this many within the window, then lodged gives up (and says so).
constexpr unsigned max_restarts = 5;
constexpr uint64_t restart_window_usec = 60 * 1000000ULL;
constexpr uint64_t restart_delay_usec = 1000000ULL;

std::string get(const KeyMap& keys, const std::string& key) {
    auto it = keys.find(key);
    return it == keys.end() ? std::string() : it->second;
}

bool under_systemd() {
    return sd_booted() > 0;
}

} // namespace

NetworkManager::NetworkManager(sd_event* event, Manager& containers)
    : event_(event), containers_(containers) {}

NetworkManager::~NetworkManager() = default;

const Network* NetworkManager::find(const std::string& name) const {
    auto it = networks_.find(name);
    return it == networks_.end() ? nullptr : &it->second;
}

std::vector<std::string> NetworkManager::used_by(const std::string& name) const {
    std::vector<std::string> out;
    for (auto& [cname, c] : containers_.containers())
        for (auto& [dev, keys] : c->config.devices)
            if (is_nic(keys) && get(keys, "network") == name) {
                out.push_back(cname);
                break;
            }
    return out;
}

std::vector<network::Member> NetworkManager::members(const std::string& name,
                                                     const ContainerConfig* extra) const {
    std::vector<network::Member> out;
    auto add = [&](const ContainerConfig& c) {
        for (auto& [dev, keys] : c.devices) {
            if (!is_nic(keys) || get(keys, "network") != name)
                continue;
            std::string mac = get(keys, "hwaddr");
            if (mac.empty())
                mac = c.get("volatile." + dev + ".hwaddr");
            out.push_back({c.name, mac, get(keys, "ipv4.address"), get(keys, "ipv6.address")});
        }
    };
    for (auto& [cname, c] : containers_.containers())
        if (!extra || cname != extra->name)
            add(c->config);
    if (extra)
        add(*extra);
    return out;
}

void NetworkManager::sync_hosts(const std::string& name, const ContainerConfig* extra) {
    if (!network::write_hosts(name, members(name, extra)))
        return;
    // dnsmasq re-reads dhcp-hostsfile on SIGHUP.
    if (pid_t pid = network::find_dnsmasq(name); pid > 0)
        ::kill(pid, SIGHUP);
}

std::string NetworkManager::prepare_container(const ContainerConfig& c) {
    std::set<std::string> touched;
    for (auto& [dev, keys] : c.devices) {
        std::string net = get(keys, "network");
        if (!is_nic(keys) || net.empty())
            continue;
        const Network* n = find(net);
        if (!n)
            return "Device \"" + dev + "\": network \"" + net +
                   "\" does not exist (create it with `lodgectl network create " + net + "`)";
        if (auto want = get(keys, "ipv4.address"); !want.empty()) {
            auto subnet = network::parse_cidr4(n->get("ipv4.address"));
            auto addr = network::parse_ipv4(want);
            if (!subnet)
                return "Device \"" + dev + "\": network \"" + net +
                       "\" has no IPv4 subnet for \"ipv4.address\" " + want;
            if (!addr || !network::Cidr4{*addr, subnet->prefix}.overlaps(*subnet) ||
                *addr == subnet->addr || *addr == subnet->network() ||
                *addr == (subnet->network() | ~subnet->mask()))
                return "Device \"" + dev + "\": \"ipv4.address\" " + want +
                       " is not a free host address of network " + net + " (" +
                       n->get("ipv4.address") + ")";
            for (auto& m : members(net, nullptr))
                if (m.container != c.name && m.ipv4 == want)
                    return "Device \"" + dev + "\": \"ipv4.address\" " + want +
                           " is already given to container " + m.container;
        }
        if (auto want = get(keys, "ipv6.address"); !want.empty()) {
            auto subnet = network::parse_cidr6(n->get("ipv6.address"));
            auto addr = network::parse_cidr6(want + "/128");
            if (!subnet || !addr || !addr->overlaps(*subnet))
                return "Device \"" + dev + "\": \"ipv6.address\" " + want +
                       " is not inside network " + net + "'s IPv6 subnet";
        }
        touched.insert(net);
    }
    for (auto& net : touched)
        sync_hosts(net, &c);
    return {};
}

std::string NetworkManager::second_default(const std::string& name, const KeyMap& config) const {
    auto v = config.find("lodge.default");
    if (v == config.end() || v->second != "true")
        return {};
    for (auto& [other, n] : networks_)
        if (other != name && n.get_bool("lodge.default", false))
            return "Network " + other + " is the default network already (lodge.default=true); " +
                   "unset it there first";
    return {};
}

void NetworkManager::add_default_nic(ContainerConfig& c) const {
    for (auto& [dev, keys] : c.devices)
        if (is_nic(keys))
            return;
    for (auto& [name, n] : networks_)
        if (n.get_bool("lodge.default", false)) {
            if (c.devices.count("eth0"))
                return;
            c.devices["eth0"] = {{"type", "nic"}, {"network", name}, {"name", "eth0"}};
            return;
        }
}

int NetworkManager::bring_up(const Network& n, bool restart_dnsmasq, std::string& error) {
    if (int r = network::ensure_bridge(n, error); r < 0)
        return r;
    // The hosts file is complete before dnsmasq reads it.
    network::write_hosts(n.name, members(n.name, nullptr));
    pid_t pid = network::find_dnsmasq(n.name);
    if (pid > 0 && restart_dnsmasq) {
        daemons_.erase(n.name);
        network::stop_dnsmasq(n.name);
        pid = 0;
    }
    if (pid <= 0) {
        daemons_.erase(n.name);
        pid = network::start_dnsmasq(n, error);
        if (pid < 0)
            return pid;
        log_info("Network %s: dnsmasq started (pid %d)", n.name.c_str(), pid);
    }
    watch(n.name, pid);
    network::register_with_resolved(n);
    return 0;
}

int NetworkManager::apply_firewall(std::string& error) {
    std::vector<Network> all;
    for (auto& [name, n] : networks_)
        all.push_back(n);
    return network::apply_firewall(all, extra_chains_ ? extra_chains_() : std::string(), error);
}

void NetworkManager::watch(const std::string& name, pid_t pid) {
    // Under systemd the transient unit restarts dnsmasq itself.
    if (under_systemd() || daemons_.count(name))
        return;
    auto d = std::make_unique<Daemon>();
    d->owner = this;
    d->network = name;
    d->pidfd = PidFd::open(pid);
    if (!d->pidfd.valid()) {
        log_warning("Network %s: cannot watch dnsmasq (pid %d): %s", name.c_str(), pid,
                    std::strerror(errno));
        return;
    }
    sd_event_source* s = nullptr;
    if (sd_event_add_io(event_, &s, d->pidfd.get(), EPOLLIN, on_dnsmasq_exit, d.get()) < 0)
        return;
    d->source.reset(s);
    daemons_[name] = std::move(d);
}

int NetworkManager::on_dnsmasq_exit(sd_event_source*, int, uint32_t, void* userdata) {
    auto* d = static_cast<Daemon*>(userdata);
    return guarded([&] {
        d->source.reset(); // the pidfd stays readable: one event is enough
        log_warning("Network %s: dnsmasq exited; restarting it", d->network.c_str());
        uint64_t now = 0;
        sd_event_now(d->owner->event_, CLOCK_MONOTONIC, &now);
        if (now - d->window_start > restart_window_usec) {
            d->window_start = now;
            d->restarts = 0;
        }
        if (++d->restarts > max_restarts) {
            log_error("Network %s: dnsmasq died %u times within a minute; not restarting it "
                      "(see `lodgectl network info %s`, then `lodgectl network set` or restart "
                      "lodged)",
                      d->network.c_str(), max_restarts, d->network.c_str());
            return 0;
        }
        sd_event_source* s = nullptr;
        if (sd_event_add_time_relative(d->owner->event_, &s, CLOCK_MONOTONIC, restart_delay_usec, 0,
                                       on_restart, d) >= 0)
            d->restart.reset(s);
        return 0;
    });
}

int NetworkManager::on_restart(sd_event_source*, uint64_t, void* userdata) {
    auto* d = static_cast<Daemon*>(userdata);
    return guarded([&] {
        NetworkManager* self = d->owner;
        std::string name = d->network;
        const Network* n = self->find(name);
        if (!n)
            return 0;
        std::string error;
        pid_t pid = network::start_dnsmasq(*n, error);
        if (pid <= 0)
            return 0; // logged; the next lodged start or `network set` tries again
        d->pidfd = PidFd::open(pid);
        sd_event_source* s = nullptr;
        if (d->pidfd.valid() &&
            sd_event_add_io(self->event_, &s, d->pidfd.get(), EPOLLIN, on_dnsmasq_exit, d) >= 0)
            d->source.reset(s);
        d->restart.reset();
        return 0;
    });
}

void NetworkManager::load() {
    for (auto& name : network::list_networks()) {
        Network n;
        std::string error;
        if (network::load_network(name, n, error) < 0) {
            log_error("%s", error.c_str());
            continue;
        }
        networks_[name] = n;
    }
    for (auto& [name, n] : networks_) {
        std::string error;
        if (bring_up(n, false, error) < 0)
            log_error("Network %s is not up: %s", name.c_str(), error.c_str());
        network::enable_forwarding(network::parse_cidr4(n.get("ipv4.address")).has_value(),
                                   network::parse_cidr6(n.get("ipv6.address")).has_value());
    }
    if (!networks_.empty()) {
        std::string error;
        apply_firewall(error);
    }
}

int NetworkManager::create(const std::string& name, KeyMap config,
                           std::vector<std::string>& warnings, std::string& error) {
    if (auto e = network::check_network_name(name); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (find(name)) {
        error = "Network \"" + name + "\" already exists";
        return -EEXIST;
    }
    if (network::link_exists(name)) {
        error = "An interface named " + name +
                " already exists on the host; a network's name is its bridge's name: pick "
                "another";
        return -EEXIST;
    }
    network::apply_create_defaults(config);
    if (auto e = network::check_network_config(config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (auto e = second_default(name, config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    std::vector<network::Cidr4> used4;
    std::vector<network::Cidr6> used6;
    network::host_subnets(used4, used6, {});
    for (auto& [other, n] : networks_) {
        for (auto& c : network::ipv4_subnets(n))
            used4.push_back(c);
        for (auto& c : network::ipv6_subnets(n))
            used6.push_back(c);
    }
    // An explicit subnet must not take another lodge network's.
    for (auto& [other, n] : networks_) {
        auto mine4 = network::parse_cidr4(get(config, "ipv4.address"));
        for (auto& c : network::ipv4_subnets(n))
            if (mine4 && mine4->overlaps(c)) {
                error = "\"ipv4.address\" " + get(config, "ipv4.address") + " overlaps network " +
                        other + " (" + n.get("ipv4.address") + ")";
                return -EINVAL;
            }
    }
    if (auto e = network::resolve_auto(config, used4, used6); !e.empty()) {
        error = e;
        return -EADDRNOTAVAIL;
    }
    Network n{name, config};
    if (int r = network::save_network(n); r < 0) {
        error = "Cannot store network " + name + ": " + std::strerror(-r);
        return r;
    }
    networks_[name] = n;
    int r = bring_up(n, true, error);
    std::string fw_error;
    if (r >= 0 && (r = apply_firewall(fw_error)) < 0)
        error = fw_error;
    if (r < 0) {
        // Nothing of a network that could not be made stays behind.
        std::string ignored;
        remove(name, ignored);
        return r;
    }
    if (auto w =
            network::enable_forwarding(network::parse_cidr4(n.get("ipv4.address")).has_value(),
                                       network::parse_cidr6(n.get("ipv6.address")).has_value());
        !w.empty())
        warnings.push_back(w);
    if (auto w = network::forward_policy_warning(name); !w.empty())
        warnings.push_back(w);
    for (auto& w : warnings)
        log_warning("Network %s: %s", name.c_str(), w.c_str());
    log_info("Network %s created (%s, %s)", name.c_str(), n.get("ipv4.address").c_str(),
             n.get("ipv6.address").c_str());
    return 0;
}

int NetworkManager::remove(const std::string& name, std::string& error) {
    if (!find(name)) {
        error = "No network \"" + name + "\"";
        return -ENOENT;
    }
    if (auto users = used_by(name); !users.empty()) {
        std::string list;
        for (auto& u : users)
            list += (list.empty() ? "" : ", ") + u;
        error = "Network \"" + name + "\" is in use by " + list +
                "; remove their nics on it first (lodgectl device remove)";
        return -EBUSY;
    }
    daemons_.erase(name);
    network::stop_dnsmasq(name);
    network::delete_bridge(name);
    networks_.erase(name);
    std::string fw_error;
    apply_firewall(fw_error);
    remove_tree(network::network_runtime_dir(name));
    if (int r = remove_tree(network::network_dir(name)); r < 0 && r != -ENOENT)
        log_error_errno(-r, "Cannot remove %s", network::network_dir(name).c_str());
    log_info("Network %s deleted", name.c_str());
    return 0;
}

int NetworkManager::set(const std::string& name, const KeyMap& set,
                        const std::vector<std::string>& unset, std::vector<std::string>& warnings,
                        std::string& error) {
    auto it = networks_.find(name);
    if (it == networks_.end()) {
        error = "No network \"" + name + "\"";
        return -ENOENT;
    }
    Network next = it->second;
    for (auto& k : unset)
        next.config.erase(k);
    for (auto& [k, v] : set)
        next.config[k] = v;
    if (auto e = network::check_network_config(next.config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    if (auto e = second_default(name, next.config); !e.empty()) {
        error = e;
        return -EINVAL;
    }
    std::vector<network::Cidr4> used4;
    std::vector<network::Cidr6> used6;
    network::host_subnets(used4, used6, {name});
    for (auto& [other, n] : networks_)
        if (other != name) {
            for (auto& c : network::ipv4_subnets(n))
                used4.push_back(c);
            for (auto& c : network::ipv6_subnets(n))
                used6.push_back(c);
        }
    for (const char* k : {"ipv4.address", "ipv6.address"})
        if (!next.config.count(k))
            next.config[k] = "none";
    if (auto e = network::resolve_auto(next.config, used4, used6); !e.empty()) {
        error = e;
        return -EADDRNOTAVAIL;
    }
    if (int r = network::save_network(next); r < 0) {
        error = "Cannot store network " + name + ": " + std::strerror(-r);
        return r;
    }
    it->second = next;
    if (int r = bring_up(next, true, error); r < 0)
        return r;
    if (int r = apply_firewall(error); r < 0)
        return r;
    if (auto w =
            network::enable_forwarding(network::parse_cidr4(next.get("ipv4.address")).has_value(),
                                       network::parse_cidr6(next.get("ipv6.address")).has_value());
        !w.empty())
        warnings.push_back(w);
    return 0;
}

KeyMap NetworkManager::info(const std::string& name) const {
    KeyMap out;
    const Network* n = find(name);
    if (!n)
        return out;
    out["name"] = name;
    out["bridge"] = name;
    out["bridge.state"] = network::link_exists(name) ? "up" : "missing";
    std::string mtu;
    read_file("/sys/class/net/" + name + "/mtu", mtu);
    if (!mtu.empty())
        out["bridge.mtu"] = mtu.substr(0, mtu.find('\n'));
    std::string mac;
    read_file("/sys/class/net/" + name + "/address", mac);
    if (!mac.empty())
        out["bridge.hwaddr"] = mac.substr(0, mac.find('\n'));
    out["ipv4.address"] = n->get("ipv4.address", "none");
    out["ipv6.address"] = n->get("ipv6.address", "none");
    pid_t pid = network::find_dnsmasq(name);
    out["dnsmasq"] = pid > 0 ? "running (pid " + std::to_string(pid) + ")" : "not running";
    out["forwarding.ipv4"] = network::forwarding_enabled(false) ? "enabled" : "disabled";
    out["forwarding.ipv6"] = network::forwarding_enabled(true) ? "enabled" : "disabled";
    out["firewall"] = network::firewall_table_exists()
                          ? "nftables table inet " + network::nft_table()
                          : "missing";
    std::string users;
    for (auto& u : used_by(name))
        users += (users.empty() ? "" : ",") + u;
    out["used_by"] = users;
    out["warnings"] = network::forward_policy_warning(name);
    return out;
}

std::vector<network::Lease> NetworkManager::leases(const std::string& name) const {
    std::string text;
    read_file(network::leases_path(name), text);
    auto out = network::parse_leases(text);
    auto ms = members(name, nullptr);
    for (auto& l : out)
        for (auto& m : ms) {
            if (!l.hwaddr.empty() && l.hwaddr == m.hwaddr && l.hostname.empty())
                l.hostname = m.container;
            if (!m.ipv4.empty() && m.ipv4 == l.address)
                l.type = "static";
        }
    return out;
}

} // namespace lodge::daemon
