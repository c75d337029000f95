#include "network/network-host.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/process.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <memory>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sstream>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace lodge::network {
namespace {

struct SockDeleter {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDeleter {
    void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrDeleter {
    void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrDeleter {
    void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct CacheDeleter {
    void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using SockPtr = std::unique_ptr<nl_sock, SockDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;

SockPtr route_socket() {
    SockPtr s(nl_socket_alloc());
    if (s && nl_connect(s.get(), NETLINK_ROUTE) < 0)
        s.reset();
    return s;
}

std::string nl_message(int r) {
    return nl_geterror(r);
}

// Runs argv with `input` on stdin and waits for it to exit; stdout and stderr are collected
// in memfds, not pipes, so a daemon the program leaves behind (dnsmasq) cannot hold the read
// side open. The child starts with default signal handling and only fds 0-2 (lodged blocks
// signals for sd-event; a dnsmasq inheriting that mask would ignore SIGTERM). Returns the
// exit status (127: not found) or -errno.
int run(const std::vector<std::string>& argv, const std::string& input, std::string& out,
        std::string& err) {
    Fd in(::memfd_create("lodge-in", MFD_CLOEXEC)), o(::memfd_create("lodge-out", MFD_CLOEXEC)),
        e(::memfd_create("lodge-err", MFD_CLOEXEC));
    if (!in || !o || !e)
        return -errno;
    for (size_t done = 0; done < input.size();) {
        ssize_t n = ::write(in.get(), input.data() + done, input.size() - done);
        if (n < 0)
            return -errno;
        done += static_cast<size_t>(n);
    }
    ::lseek(in.get(), 0, SEEK_SET);
    std::vector<char*> args; // built before fork: no allocation in the child
    for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        ::dup2(in.get(), 0);
        ::dup2(o.get(), 1);
        ::dup2(e.get(), 2);
        ::syscall(SYS_close_range, 3U, ~0U, 0U);
        reset_signal_state();
        restore_fd_limit();
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    auto slurp = [](int fd, std::string& to) {
        char buf[8192];
        ssize_t n;
        off_t off = 0;
        while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
            to.append(buf, static_cast<size_t>(n));
            off += n;
        }
    };
    slurp(o.get(), out);
    slurp(e.get(), err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A program's message: its non-empty lines joined (dnsmasq starts its own with a newline).
std::string first_line(const std::string& s) {
    std::string out, line;
    for (char c : s + "\n") {
        if (c != '\n') {
            line += c;
            continue;
        }
        if (line.find_first_not_of(" \t") != std::string::npos)
            out += (out.empty() ? "" : "; ") + line.substr(line.find_first_not_of(" \t"));
        line.clear();
    }
    return out;
}

std::string nft_binary() {
    const char* env = std::getenv("LODGE_NFT");
    return env && *env ? env : "nft";
}

int write_sysctl(const std::string& path, const std::string& value) {
    return write_file(path, value);
}

} // namespace

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

bool link_exists(const std::string& name) {
    return ::if_nametoindex(name.c_str()) != 0;
}

int ensure_bridge(const Network& n, std::string& error) {
    SockPtr s = route_socket();
    if (!s) {
        error = "Cannot talk to the kernel (rtnetlink)";
        return -EIO;
    }
    rtnl_link* raw = nullptr;
    if (rtnl_link_get_kernel(s.get(), 0, n.name.c_str(), &raw) < 0) {
        LinkPtr fresh(rtnl_link_alloc());
        rtnl_link_set_name(fresh.get(), n.name.c_str());
        if (int r = rtnl_link_set_type(fresh.get(), "bridge"); r < 0) {
            error = "Cannot create bridge " + n.name + ": " + nl_message(r);
            return -EIO;
        }
        if (int r = rtnl_link_add(s.get(), fresh.get(), NLM_F_CREATE | NLM_F_EXCL); r < 0) {
            error = "Cannot create bridge " + n.name + ": " + nl_message(r);
            log_error("%s", error.c_str());
            return -EIO;
        }
        if (rtnl_link_get_kernel(s.get(), 0, n.name.c_str(), &raw) < 0) {
            error = "Bridge " + n.name + " vanished right after it was created";
            return -ENODEV;
        }
    }
    LinkPtr link(raw);
    if (const char* type = rtnl_link_get_type(link.get()); !type || std::strcmp(type, "bridge")) {
        error = "Interface " + n.name + " exists and is not a bridge; pick another network name";
        return -EEXIST;
    }
    int ifindex = rtnl_link_get_ifindex(link.get());
    // IPv6 addresses on a bridge are usable at once (no DAD on a link lodge owns), so dnsmasq
    // can bind them before any container is plugged.
    write_sysctl("/proc/sys/net/ipv6/conf/" + n.name + "/accept_dad", "0");

    LinkPtr change(rtnl_link_alloc());
    rtnl_link_set_flags(change.get(), IFF_UP);
    if (auto mtu = n.get("bridge.mtu"); !mtu.empty())
        rtnl_link_set_mtu(change.get(), static_cast<unsigned>(std::stoul(mtu)));
    if (auto mac = n.get("bridge.hwaddr"); !mac.empty()) {
        nl_addr* a = nullptr;
        if (nl_addr_parse(mac.c_str(), AF_LLC, &a) == 0) {
            rtnl_link_set_addr(change.get(), a);
            nl_addr_put(a);
        }
    }
    if (int r = rtnl_link_change(s.get(), link.get(), change.get(), 0); r < 0) {
        error = "Cannot configure bridge " + n.name + ": " + nl_message(r);
        log_error("%s", error.c_str());
        return -EIO;
    }

    // Addresses: exactly the configured ones (link-local ones are the kernel's).
    std::vector<std::string> wanted;
    if (parse_cidr4(n.get("ipv4.address")))
        wanted.push_back(n.get("ipv4.address"));
    if (auto v6 = parse_cidr6(n.get("ipv6.address")))
        wanted.push_back(format_ipv6(v6->addr) + "/" + std::to_string(v6->prefix));
    nl_cache* cache_raw = nullptr;
    if (int r = rtnl_addr_alloc_cache(s.get(), &cache_raw); r < 0) {
        error = "Cannot list addresses: " + nl_message(r);
        return -EIO;
    }
    CachePtr cache(cache_raw);
    std::vector<std::string> present;
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
        auto* a = reinterpret_cast<rtnl_addr*>(o);
        if (rtnl_addr_get_ifindex(a) != ifindex)
            continue;
        char buf[128];
        nl_addr* local = rtnl_addr_get_local(a);
        std::string text = nl_addr2str(local, buf, sizeof buf);
        if (text.find('/') == std::string::npos)
            text += "/" + std::to_string(rtnl_addr_get_prefixlen(a));
        if (rtnl_addr_get_family(a) == AF_INET6 && text.rfind("fe80:", 0) == 0)
            continue;
        if (std::find(wanted.begin(), wanted.end(), text) != wanted.end()) {
            present.push_back(text);
            continue;
        }
        if (int r = rtnl_addr_delete(s.get(), a, 0); r < 0)
            log_warning("Cannot remove address %s from %s: %s", text.c_str(), n.name.c_str(),
                        nl_message(r).c_str());
    }
    for (auto& w : wanted) {
        if (std::find(present.begin(), present.end(), w) != present.end())
            continue;
        nl_addr* local = nullptr;
        bool v6 = w.find(':') != std::string::npos;
        if (nl_addr_parse(w.c_str(), v6 ? AF_INET6 : AF_INET, &local) < 0) {
            error = "Cannot parse address " + w;
            return -EINVAL;
        }
        NlAddrPtr owned_local(local);
        AddrPtr a(rtnl_addr_alloc());
        rtnl_addr_set_ifindex(a.get(), ifindex);
        rtnl_addr_set_local(a.get(), local);
        if (v6) {
            rtnl_addr_set_flags(a.get(), IFA_F_NODAD);
        } else if (auto c = parse_cidr4(w)) {
            nl_addr* bcast = nullptr;
            if (nl_addr_parse(format_ipv4(c->network() | ~c->mask()).c_str(), AF_INET, &bcast) ==
                0) {
                rtnl_addr_set_broadcast(a.get(), bcast);
                nl_addr_put(bcast);
            }
        }
        if (int r = rtnl_addr_add(s.get(), a.get(), 0); r < 0 && r != -NLE_EXIST) {
            error = "Cannot add address " + w + " to bridge " + n.name + ": " + nl_message(r);
            log_error("%s", error.c_str());
            return -EIO;
        }
    }
    return 0;
}

int delete_bridge(const std::string& name) {
    SockPtr s = route_socket();
    if (!s)
        return -EIO;
    LinkPtr l(rtnl_link_alloc());
    rtnl_link_set_name(l.get(), name.c_str());
    int r = rtnl_link_delete(s.get(), l.get());
    if (r < 0 && r != -NLE_NODEV && r != -NLE_OBJ_NOTFOUND)
        return log_error_errno(EIO, "Cannot delete bridge %s: %s", name.c_str(),
                               nl_message(r).c_str());
    return 0;
}

void host_subnets(std::vector<Cidr4>& v4, std::vector<Cidr6>& v6,
                  const std::vector<std::string>& skip) {
    SockPtr s = route_socket();
    if (!s)
        return;
    std::vector<int> skip_index;
    for (auto& n : skip)
        if (unsigned i = ::if_nametoindex(n.c_str()))
            skip_index.push_back(static_cast<int>(i));
    auto add = [&](nl_addr* a) {
        if (!a || nl_addr_get_prefixlen(a) == 0)
            return;
        unsigned prefix = nl_addr_get_prefixlen(a);
        if (nl_addr_get_family(a) == AF_INET && nl_addr_get_len(a) == 4) {
            uint32_t be;
            std::memcpy(&be, nl_addr_get_binary_addr(a), 4);
            v4.push_back(Cidr4{ntohl(be), prefix});
        } else if (nl_addr_get_family(a) == AF_INET6 && nl_addr_get_len(a) == 16) {
            Cidr6 c;
            std::memcpy(c.addr.data(), nl_addr_get_binary_addr(a), 16);
            c.prefix = prefix;
            v6.push_back(c);
        }
    };
    nl_cache* raw = nullptr;
    if (rtnl_route_alloc_cache(s.get(), AF_UNSPEC, 0, &raw) == 0) {
        CachePtr cache(raw);
        for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
            auto* r = reinterpret_cast<rtnl_route*>(o);
            bool ours = false;
            if (rtnl_route_get_nnexthops(r) > 0)
                if (auto* nh = rtnl_route_nexthop_n(r, 0))
                    ours = std::count(skip_index.begin(), skip_index.end(),
                                      rtnl_route_nh_get_ifindex(nh)) > 0;
            if (!ours)
                add(rtnl_route_get_dst(r));
        }
    }
    raw = nullptr;
    if (rtnl_addr_alloc_cache(s.get(), &raw) == 0) {
        CachePtr cache(raw);
        for (nl_object* o = nl_cache_get_first(raw); o; o = nl_cache_get_next(o)) {
            auto* a = reinterpret_cast<rtnl_addr*>(o);
            if (std::count(skip_index.begin(), skip_index.end(), rtnl_addr_get_ifindex(a)))
                continue;
            nl_addr* local = rtnl_addr_get_local(a);
            if (!local)
                continue;
            NlAddrPtr copy(nl_addr_clone(local));
            nl_addr_set_prefixlen(copy.get(), rtnl_addr_get_prefixlen(a));
            add(copy.get());
        }
    }
}

int apply_firewall(const std::vector<Network>& networks, const std::string& extra_chains,
                   std::string& error) {
    std::string out, err;
    int r = run({nft_binary(), "-f", "-"}, nft_script(networks, false, extra_chains), out, err);
    if (r != 0) {
        error = "nft could not load lodge's table: " +
                (r < 0 ? std::string(std::strerror(-r)) : first_line(err));
        if (r == 127)
            error = "nft is not installed (Debian package nftables); lodge's networks need it";
        log_error("%s", error.c_str());
        return -EIO;
    }
    return 0;
}

bool firewall_table_exists() {
    std::string out, err;
    return run({nft_binary(), "list", "table", "inet", nft_table()}, "", out, err) == 0;
}

std::string enable_forwarding(bool v4, bool v6) {
    std::string warning;
    if (v4 && !forwarding_enabled(false) && write_sysctl("/proc/sys/net/ipv4/ip_forward", "1") < 0)
        warning += "Cannot turn on net.ipv4.ip_forward: " + std::string(std::strerror(errno));
    if (v6 && !forwarding_enabled(true) &&
        write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1") < 0)
        warning +=
            "Cannot turn on net.ipv6.conf.all.forwarding: " + std::string(std::strerror(errno));
    return warning;
}

bool forwarding_enabled(bool v6) {
    std::string v;
    read_file(v6 ? "/proc/sys/net/ipv6/conf/all/forwarding" : "/proc/sys/net/ipv4/ip_forward", v);
    return !v.empty() && v[0] == '1';
}

std::string forward_policy_warning(const std::string& bridge) {
    std::string out, err, warning;
    if (run({nft_binary(), "-j", "list", "chains"}, "", out, err) == 0) {
        auto j = nlohmann::json::parse(out, nullptr, false);
        if (j.is_object() && j.contains("nftables") && j["nftables"].is_array())
            for (auto& item : j["nftables"]) {
                if (!item.contains("chain"))
                    continue;
                auto& c = item["chain"];
                if (c.value("hook", "") != "forward" || c.value("policy", "") != "drop" ||
                    c.value("table", "").rfind("lodge", 0) == 0)
                    continue;
                std::string family = c.value("family", ""), table = c.value("table", ""),
                            chain = c.value("name", "");
                warning += "Chain \"" + chain + "\" of nftables table \"" + family + " " + table +
                           "\" drops forwarded packets by default (policy drop; Docker sets "
                           "this): traffic between bridge " +
                           bridge +
                           " and other networks will be dropped there. Allow it, e.g. `nft "
                           "insert rule " +
                           family + " " + table + " " + chain + " iifname " + bridge +
                           " accept` and `nft insert rule " + family + " " + table + " " + chain +
                           " oifname " + bridge +
                           " accept` (with Docker: `iptables -I DOCKER-USER -i " + bridge +
                           " -j ACCEPT` and `iptables -I DOCKER-USER -o " + bridge +
                           " -j ACCEPT`).\n";
            }
    }
    // iptables-legacy keeps its rules outside nftables.
    out.clear();
    if (run({"iptables-legacy", "-S", "FORWARD"}, "", out, err) == 0 &&
        out.find("-P FORWARD DROP") != std::string::npos)
        warning += "iptables-legacy's FORWARD chain has policy DROP (Docker sets this): traffic "
                   "of bridge " +
                   bridge +
                   " to other networks will be dropped. Allow it: "
                   "`iptables-legacy -I FORWARD -i " +
                   bridge +
                   " -j ACCEPT` and "
                   "`iptables-legacy -I FORWARD -o " +
                   bridge + " -j ACCEPT`.\n";
    if (!warning.empty())
        warning.pop_back();
    return warning;
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
