// Helpers the host side of managed networks shares (network-host.cpp, firewall.cpp,
// dnsmasq.cpp); not an interface of lodge-network.
#pragma once

#include <string>
#include <vector>

namespace lodge::network {

// Runs argv with `input` on stdin and waits for it to exit; stdout and stderr are collected
// in memfds, not pipes, so a daemon the program leaves behind (dnsmasq) cannot hold the read
// side open. The child starts with default signal handling and only fds 0-2 (lodged blocks
// signals for sd-event; a dnsmasq inheriting that mask would ignore SIGTERM). Returns the
// exit status (127: not found) or -errno.
int run(const std::vector<std::string>& argv, const std::string& input, std::string& out,
        std::string& err);
// A program's message: its non-empty lines joined (dnsmasq starts its own with a newline).
std::string first_line(const std::string& s);
int write_sysctl(const std::string& path, const std::string& value);

} // namespace lodge::network
