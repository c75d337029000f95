// What the managed-network tests share (test-managed-network.cpp, test-managed-network-proxy.cpp):
// a private bus and lodged, containers and networks named per run and removed afterwards, and
// the host's forwarding sysctls (which a network turns on) put back.
#pragma once

#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

namespace lodge::test {

class NetworkFixture : public ::testing::Test {
protected:
    // `network_prefix` starts every network's name (two letters: a bridge's name has at most 15).
    explicit NetworkFixture(std::string network_prefix) : prefix_(std::move(network_prefix)) {}

    // Saves the sysctls and starts lodged; the caller has checked root and its tools.
    void start_lodged() {
        forward4 = sysctl_value("/proc/sys/net/ipv4/ip_forward");
        forward6 = sysctl_value("/proc/sys/net/ipv6/conf/all/forwarding");
        bus = std::make_unique<PrivateBus>();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
    }
    void TearDown() override {
        for (auto& n : containers)
            ctl("delete --force " + n);
        for (auto& n : networks)
            ctl("network delete " + n);
        daemon.reset();
        bus.reset();
        for (auto& n : networks) { // whatever a failed test left
            sh("ip link del " + n + " 2>/dev/null");
            sh("pkill -F " + TestRoot::get().dir + "/run/networks/" + n +
               "/dnsmasq.pid 2>/dev/null");
        }
        if (!forward4.empty())
            write_file("/proc/sys/net/ipv4/ip_forward", forward4);
        if (!forward6.empty())
            write_file("/proc/sys/net/ipv6/conf/all/forwarding", forward6);
    }
    std::string network(const std::string& tag) {
        std::string n = prefix_ + tag + std::to_string(::getpid() % 100000);
        networks.push_back(n);
        return n;
    }
    std::string container(const std::string& base) {
        std::string n = unique_name(base);
        containers.push_back(n);
        return n;
    }
    std::string exec(const std::string& name, const std::string& cmd, int* st = nullptr) {
        return sh(
            env_path("LODGE_LODGECTL") + " exec " + name + " -- /bin/sh -c '" + cmd + "' 2>&1", st);
    }
    static std::string sysctl_value(const std::string& path) {
        std::string v;
        read_file(path, v);
        return v.substr(0, v.find('\n'));
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> containers, networks;
    std::string forward4, forward6;

private:
    std::string prefix_;
};

} // namespace lodge::test
