// lodge's nftables table (`nft -f`, one transaction), forwarding sysctls, and the FORWARD
// policy diagnostic.
#include "network/network-host.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "network/host-util.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

namespace lodge::network {
namespace {

std::string nft_binary() {
    const char* env = std::getenv("LODGE_NFT");
    return env && *env ? env : "nft";
}

} // namespace

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

} // namespace lodge::network
