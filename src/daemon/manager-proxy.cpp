#include "daemon/proxy-manager.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/paths.hpp"
#include "daemon/manager.hpp"
#include "daemon/network-manager.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/net.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <unistd.h>

namespace lodge::daemon {

namespace {

std::string get(const KeyMap& keys, const std::string& key) {
    auto it = keys.find(key);
    return it == keys.end() ? std::string() : it->second;
}

std::vector<ProxyDevice> proxies_of(const ContainerConfig& c) {
    std::vector<ProxyDevice> out;
    for (auto& [dev, keys] : c.devices) {
        ProxyDevice p;
        // The name becomes a record file's name and an nft comment: a config that escaped
        // validation (an old one on disk) must not name a path or script text.
        if (is_proxy(keys) && check_device_name(dev).empty() &&
            parse_proxy_device(dev, keys, p).empty())
            out.push_back(p);
    }
    return out;
}

// What a recorded forwarder serves: a changed device gets a new one.
std::string spec_of(const ProxyDevice& p) {
    return p.listen.text() + " " + p.connect.text();
}

struct Recorded {
    pid_t pid = 0;
    std::string spec;
    uint64_t started = 0; // the forwarder's start time; 0 in records of older lodgeds
};

std::map<std::string, Recorded> recorded(const std::string& dir) {
    std::map<std::string, Recorded> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return out;
    while (auto* e = ::readdir(d)) {
        std::string dev = e->d_name;
        if (dev == "." || dev == "..")
            continue;
        std::string text;
        read_file(dir + "/" + dev, text);
        auto nl = text.find('\n');
        Recorded r;
        r.pid = static_cast<pid_t>(std::atol(text.substr(0, nl).c_str()));
        if (nl != std::string::npos) {
            size_t spec_end = text.find('\n', nl + 1);
            r.spec = text.substr(nl + 1, spec_end - nl - 1);
            if (spec_end != std::string::npos)
                r.started = std::strtoull(text.c_str() + spec_end + 1, nullptr, 10);
        }
        out[dev] = r;
    }
    ::closedir(d);
    return out;
}

int record(const std::string& dir, const std::string& dev, pid_t pid, const std::string& spec,
           uint64_t started) {
    mkdir_p(dir, 0700);
    return write_file_atomic(
        dir + "/" + dev, std::to_string(pid) + "\n" + spec + "\n" + std::to_string(started) + "\n",
        0600);
}

} // namespace

// Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, a process's identity, so a
// record of a forwarder that died cannot name the process that reused its pid.
uint64_t process_start_time(pid_t pid) {
    std::string stat;
    if (pid <= 0 || read_file("/proc/" + std::to_string(pid) + "/stat", stat) < 0)
        return 0;
    size_t paren = stat.rfind(')'); // comm may hold spaces and parentheses
    if (paren == std::string::npos)
        return 0;
    const char* p = stat.c_str() + paren + 1;
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (field == 22)
            return std::strtoull(p, nullptr, 10);
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

std::string proxies_dir(const std::string& container) {
    return paths::runtime_dir() + "/proxies/" + container;
}

ProxyManager::ProxyManager(Manager& containers, NetworkManager& networks)
    : containers_(containers), networks_(networks) {
    networks_.set_extra_chains([this] { return nat_chains(); });
}

std::string ProxyManager::check(const ContainerConfig& c) const {
    for (auto& p : proxies_of(c)) {
        if (!p.nat)
            continue;
        bool found = false;
        for (auto& [dev, keys] : c.devices) {
            if (!is_nic(keys) || get(keys, "network").empty() ||
                !networks_.find(get(keys, "network")))
                continue;
            if (get(keys, p.connect.ipv6 ? "ipv6.address" : "ipv4.address") == p.connect.address)
                found = true;
        }
        if (!found)
            return "Device \"" + p.device + "\": nat=true needs \"connect\" to be the " +
                   "container's static address on a managed network (a nic with network=NET " +
                   "and " + (p.connect.ipv6 ? "ipv6" : "ipv4") + ".address=" + p.connect.address +
                   "); use nat=false to forward to any address in the container";
        for (auto& [name, other] : containers_.containers()) {
            if (name == c.name || !other->running())
                continue;
            for (auto& q : proxies_of(other->config))
                if (q.nat && q.listen.text() == p.listen.text())
                    return "Device \"" + p.device + "\": " + p.listen.text() +
                           " is already forwarded to container " + name + " (device " + q.device +
                           ")";
        }
    }
    return {};
}

std::string ProxyManager::nat_chains() const {
    std::vector<network::NatForward> forwards;
    for (auto& [name, c] : containers_.containers()) {
        if (!c->running())
            continue;
        for (auto& p : proxies_of(c->config))
            if (p.nat)
                forwards.push_back({name, p.device, p.listen, p.connect});
    }
    return network::nft_nat_chains(forwards);
}

std::string ProxyManager::sync(const Container& c) {
    std::string errors;
    std::string dir = proxies_dir(c.name());
    Fd netns, pidns;
    if (c.running() && c.leader > 0) {
        netns = runtime::net::open_netns(c.leader);
        pidns = Fd(::open(("/proc/" + std::to_string(c.leader) + "/ns/pid").c_str(),
                          O_RDONLY | O_CLOEXEC));
    }
    std::map<std::string, ProxyDevice> wanted;
    if (netns && pidns)
        for (auto& p : proxies_of(c.config))
            if (!p.nat)
                wanted[p.device] = p;

    for (auto& [dev, r] : recorded(dir)) {
        auto it = wanted.find(dev);
        if (it != wanted.end() && r.spec == spec_of(it->second) &&
            network::is_forwarder(r.pid, netns.get())) {
            // Serving already (adopted after a lodged restart); an older lodged's record
            // gets the start time that identifies the forwarder from now on.
            if (r.started == 0)
                record(dir, dev, r.pid, r.spec, process_start_time(r.pid));
            wanted.erase(it);
            continue;
        }
        // A forwarder of a removed or changed device (one of a stopped container died with it,
        // and its pid may since be another process's, even another container's forwarder).
        std::string comm;
        read_file("/proc/" + std::to_string(r.pid) + "/comm", comm);
        if (r.pid > 0 && r.started != 0 && process_start_time(r.pid) == r.started &&
            (comm.rfind("systemd-socket-", 0) == 0 || comm.rfind("lodge-proxy-udp", 0) == 0))
            network::stop_forwarder(r.pid);
        ::unlink((dir + "/" + dev).c_str());
    }

    std::vector<std::string> procs;
    if (!wanted.empty() && !c.cgroup.empty())
        for (auto& h : runtime::host_hierarchies())
            procs.push_back(h.mountpoint + "/" + c.cgroup + "/supervisor/cgroup.procs");
    for (auto& [dev, p] : wanted) {
        std::string error;
        Fd listener = network::open_listener(p, error);
        pid_t pid = -1;
        if (listener) {
            network::ForwarderSpawn s{&p, netns.get(), pidns.get(), listener.get(), procs};
            pid = network::spawn_forwarder(s, error);
        }
        if (pid <= 0) {
            errors += (errors.empty() ? "" : "; ") + error;
            continue;
        }
        if (int r = record(dir, dev, pid, spec_of(p), process_start_time(pid)); r < 0)
            log_error_errno(-r, "Cannot record the forwarder of %s/%s", c.name().c_str(),
                            dev.c_str());
        log_info("Container %s: proxy %s forwards %s to %s (pid %d)", c.name().c_str(), dev.c_str(),
                 p.listen.text().c_str(), p.connect.text().c_str(), pid);
    }
    if (!c.running())
        ::rmdir(dir.c_str());

    if (std::string chains = nat_chains(); chains != applied_chains_) {
        std::string error;
        if (networks_.reload_firewall(error) < 0)
            errors += (errors.empty() ? "" : "; ") + error;
        else
            applied_chains_ = chains;
    }
    return errors;
}

} // namespace lodge::daemon
