// dnsmasq for a network (a transient unit under systemd, else a daemon lodged watches), its
// hosts file, the port 53 diagnostic and the registration with systemd-resolved.
#include "network/network-host.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "network/host-util.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <poll.h>
#include <sstream>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace lodge::network {

std::string dnsmasq_binary() {
    const char* env = std::getenv("LODGE_DNSMASQ");
    return env && *env ? env : "dnsmasq";
}
std::string leases_path(const std::string& name) {
    return network_dir(name) + "/dnsmasq.leases";
}
std::string config_path(const std::string& name) {
    return network_runtime_dir(name) + "/dnsmasq.conf";
}
static std::string pid_path(const std::string& name) {
    return network_runtime_dir(name) + "/dnsmasq.pid";
}
static std::string hosts_path(const std::string& name) {
    return network_runtime_dir(name) + "/dnsmasq.hosts";
}

std::string port53_holder(const std::string& address) {
    // Socket inodes bound to port 53 on `address` or the wildcard, from /proc/net/{udp,tcp}{,6}.
    std::vector<std::string> inodes;
    bool v6 = address.find(':') != std::string::npos;
    std::string want; // the kernel's hex spelling of `address`
    if (v6) {
        in6_addr a{};
        ::inet_pton(AF_INET6, address.c_str(), &a);
        char buf[33];
        for (int i = 0; i < 4; i++) {
            uint32_t w;
            std::memcpy(&w, a.s6_addr + 4 * i, 4);
            std::snprintf(buf + 8 * i, 9, "%08X", w);
        }
        want = buf;
    } else {
        in_addr a{};
        ::inet_pton(AF_INET, address.c_str(), &a);
        char buf[9];
        std::snprintf(buf, sizeof buf, "%08X", a.s_addr);
        want = buf;
    }
    for (const char* file :
         {"/proc/net/udp", "/proc/net/tcp", "/proc/net/udp6", "/proc/net/tcp6"}) {
        std::string text;
        read_file(file, text);
        std::istringstream in(text);
        std::string line;
        std::getline(in, line);
        while (std::getline(in, line)) {
            std::istringstream f(line);
            std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
            f >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
            auto colon = local.find(':');
            if (colon == std::string::npos || local.substr(colon + 1) != "0035")
                continue;
            std::string addr = local.substr(0, colon);
            bool wildcard = addr.find_first_not_of('0') == std::string::npos;
            if (wildcard || addr == want)
                inodes.push_back("socket:[" + inode + "]");
        }
    }
    if (inodes.empty())
        return {};
    DIR* proc = ::opendir("/proc");
    if (!proc)
        return "another process";
    std::string found;
    while (auto* e = ::readdir(proc)) {
        std::string pid = e->d_name;
        if (pid.find_first_not_of("0123456789") != std::string::npos)
            continue;
        std::string fddir = "/proc/" + pid + "/fd";
        DIR* fds = ::opendir(fddir.c_str());
        if (!fds)
            continue;
        while (auto* f = ::readdir(fds)) {
            char target[64];
            ssize_t n = ::readlinkat(dirfd(fds), f->d_name, target, sizeof target - 1);
            if (n <= 0)
                continue;
            target[n] = 0;
            if (std::find(inodes.begin(), inodes.end(), target) != inodes.end()) {
                std::string comm;
                read_file("/proc/" + pid + "/comm", comm);
                found = first_line(comm) + " (pid " + pid + ")";
                break;
            }
        }
        ::closedir(fds);
        if (!found.empty())
            break;
    }
    ::closedir(proc);
    return found.empty() ? "another process" : found;
}

void register_with_resolved(const Network& n) {
    if (::access("/run/systemd/resolve/io.systemd.Resolve", F_OK) != 0 ||
        n.get("dns.mode", "managed") == "none")
        return;
    std::vector<std::string> dns = {"resolvectl", "dns", n.name};
    if (auto v4 = parse_cidr4(n.get("ipv4.address")))
        dns.push_back(format_ipv4(v4->addr));
    if (auto v6 = parse_cidr6(n.get("ipv6.address")))
        dns.push_back(format_ipv6(v6->addr));
    if (dns.size() == 3)
        return;
    std::string out, err;
    if (run(dns, "", out, err) != 0 ||
        run({"resolvectl", "domain", n.name, "~" + n.get("dns.domain", "lodge")}, "", out, err) !=
            0)
        log_warning("Network %s: systemd-resolved does not take its DNS server: %s", n.name.c_str(),
                    first_line(err).c_str());
}

bool write_hosts(const std::string& name, const std::vector<Member>& members) {
    std::string text = dnsmasq_hosts(members), old;
    read_file(hosts_path(name), old);
    if (old == text && ::access(hosts_path(name).c_str(), F_OK) == 0)
        return false;
    mkdir_p(network_runtime_dir(name), 0755);
    // dnsmasq re-reads it after dropping privileges: readable by all (MACs and names only).
    write_file_atomic(hosts_path(name), text, 0644, false);
    return true;
}

pid_t find_dnsmasq(const std::string& name) {
    std::string text;
    if (read_file(pid_path(name), text) < 0)
        return 0;
    long pid = std::strtol(text.c_str(), nullptr, 10);
    if (pid <= 0)
        return 0;
    std::string cmdline;
    if (read_file("/proc/" + std::to_string(pid) + "/cmdline", cmdline) < 0)
        return 0;
    // The pid is dnsmasq with this network's config, not a recycled pid.
    if (cmdline.find("--conf-file=" + config_path(name)) == std::string::npos)
        return 0;
    return static_cast<pid_t>(pid);
}

int stop_dnsmasq(const std::string& name) {
    if (sd_booted() > 0) {
        std::string out, err;
        run({"systemctl", "stop", "lodge-dnsmasq-" + name + ".service"}, "", out, err);
    }
    pid_t pid = find_dnsmasq(name);
    if (pid <= 0)
        return 0;
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd)
        return errno == ESRCH ? 0 : -errno;
    ::kill(pid, SIGTERM);
    struct pollfd p {
        pidfd.get(), POLLIN, 0
    };
    // dnsmasq exits at once on SIGTERM; a stuck one is killed after 5 s.
    if (::poll(&p, 1, 5000) <= 0) {
        ::kill(pid, SIGKILL);
        ::poll(&p, 1, 5000);
    }
    ::unlink(pid_path(name).c_str());
    return 0;
}

pid_t start_dnsmasq(const Network& n, std::string& error) {
    std::string rundir = network_runtime_dir(n.name);
    if (int r = mkdir_p(rundir, 0755); r < 0) {
        error = "Cannot create " + rundir + ": " + std::strerror(-r);
        return r;
    }
    DnsmasqPaths p{pid_path(n.name), leases_path(n.name), hosts_path(n.name)};
    if (::access(p.hosts_file.c_str(), F_OK) != 0)
        write_file_atomic(p.hosts_file, "", 0644, false);
    if (int r = write_file_atomic(config_path(n.name), dnsmasq_config(n, p), 0644, false); r < 0) {
        error = "Cannot write " + config_path(n.name) + ": " + std::strerror(-r);
        return r;
    }
    std::vector<std::string> argv;
    if (sd_booted() > 0) {
        // Under systemd dnsmasq is a transient service of its own: it outlives lodged, is
        // restarted on failure, and its log is in the journal.
        argv = {"systemd-run",
                "--quiet",
                "--unit=lodge-dnsmasq-" + n.name,
                "--description=lodge network " + n.name + " (dnsmasq)",
                "--property=Type=forking",
                "--property=PIDFile=" + p.pid_file,
                "--property=Restart=on-failure",
                "--property=CollectMode=inactive-or-failed",
                dnsmasq_binary()};
    } else {
        argv = {dnsmasq_binary()};
    }
    argv.push_back("--conf-file=" + config_path(n.name));
    std::string out, err;
    // dnsmasq forks its daemon and waits for it to finish its setup: a zero exit means it
    // serves; otherwise it printed why (e.g. "failed to create listening socket").
    int r = run(argv, "", out, err);
    if (r != 0) {
        std::string why = first_line(err);
        if (r == 127)
            why = "dnsmasq is not installed (Debian package dnsmasq-base)";
        if (why.find("Address already in use") != std::string::npos ||
            why.find("address already in use") != std::string::npos) {
            auto v4 = parse_cidr4(n.get("ipv4.address"));
            std::string addr = v4 ? format_ipv4(v4->addr) : "";
            std::string holder = addr.empty() ? "another process" : port53_holder(addr);
            error = "Port 53 on " + (addr.empty() ? std::string("the bridge") : addr) +
                    " (bridge " + n.name + ") is already taken by " + holder +
                    ": stop it, or make it listen only on its own interfaces (a system dnsmasq: "
                    "bind-interfaces and except-interface=" +
                    n.name +
                    "; systemd-resolved binds only 127.0.0.53), or set dns.mode=none on this "
                    "network (dnsmasq said: " +
                    why + ")";
        } else {
            error = "dnsmasq for network " + n.name + " did not start: " + why;
        }
        log_error("%s", error.c_str());
        return -EIO;
    }
    pid_t pid = find_dnsmasq(n.name);
    if (pid <= 0) {
        error = "dnsmasq for network " + n.name + " started but left no pid file";
        return -ESRCH;
    }
    return pid;
}

} // namespace lodge::network
