// The supervisor's control protocol (runtime/control-proto.hpp): every request survives its
// wire form, the wire form is what supervisors from before the typed protocol take, and
// replies and statuses decode as lodged reads them.
#include "runtime/control-proto.hpp"

#include <csignal>
#include <gtest/gtest.h>

using namespace lodge;
using namespace lodge::runtime::proto;

namespace {

Request round_trip(const Request& r) {
    Request out;
    EXPECT_EQ(decode(encode(r), out), "") << encode(r);
    EXPECT_EQ(out.verb, r.verb);
    return out;
}

} // namespace

TEST(ControlProto, VerbNamesRoundTrip) {
    for (int v = 0; v <= static_cast<int>(Verb::devlxd_detach); v++) {
        auto verb = static_cast<Verb>(v);
        EXPECT_EQ(verb_from_name(verb_name(verb)), verb) << verb_name(verb);
    }
    EXPECT_FALSE(verb_from_name("launch"));
}

// The words older supervisors and the man page know.
TEST(ControlProto, WireFormatUnchanged) {
    EXPECT_EQ(encode(Request::of(Verb::stop_force)), "stop-force");
    EXPECT_EQ(encode(Request::stop(std::nullopt)), "stop");
    EXPECT_EQ(encode(Request::stop(5)), "stop 5");
    EXPECT_EQ(encode(Request::restart(0)), "restart 0");
    EXPECT_EQ(encode(Request::wait_boot(2)), "wait-boot 2");
    EXPECT_EQ(encode(Request::kill(9)), "kill 9");
    EXPECT_EQ(encode(Request::nic_remove("eth1")), "nic-remove eth1");
    EXPECT_EQ(encode(Request::nic_add("eth1", {{"nictype", "p2p"}})),
              "nic-add eth1 {\"nictype\":\"p2p\"}");
    EXPECT_EQ(encode(Request::of(Verb::lxcfs_attach)), "lxcfs-attach");
}

TEST(ControlProto, Arguments) {
    EXPECT_EQ(round_trip(Request::stop(30)).timeout, 30u);
    EXPECT_FALSE(round_trip(Request::restart(std::nullopt)).timeout);
    EXPECT_EQ(round_trip(Request::wait_boot(3)).boot, 3u);
    EXPECT_EQ(round_trip(Request::kill(SIGUSR1)).signal, SIGUSR1);
    auto nic = round_trip(Request::nic_add("n0", {{"nictype", "bridged"}, {"parent", "br0"}}));
    EXPECT_EQ(nic.device, "n0");
    EXPECT_EQ(nic.nic.at("parent"), "br0");
    Request r;
    ASSERT_EQ(decode("kill SIGTERM", r), "");
    EXPECT_EQ(r.signal, SIGTERM);
    ASSERT_EQ(decode("kill", r), "");
    EXPECT_EQ(r.signal, SIGTERM);
}

TEST(ControlProto, LimitsTravelTyped) {
    Limits l;
    ASSERT_EQ(parse_limit("limits.cpu", "0-1", l), "");
    ASSERT_EQ(parse_limit("limits.memory", "50%", l), "");
    ASSERT_EQ(parse_limit("limits.cpu.allowance", "25ms/100ms", l), "");
    ASSERT_EQ(parse_limit("limits.processes", "9", l), "");
    ASSERT_EQ(parse_limit("limits.memory.enforce", "soft", l), "");
    auto out = round_trip(Request::apply_limits(l));
    ASSERT_TRUE(out.limits);
    EXPECT_EQ(*out.limits, l);
    // No payload (lodge-supervisor ctl NAME apply-limits): config.json's.
    Request bare;
    ASSERT_EQ(decode("apply-limits", bare), "");
    EXPECT_FALSE(bare.limits);
}

TEST(ControlProto, BadRequests) {
    Request r;
    EXPECT_NE(decode("", r), "");
    EXPECT_NE(decode("launch", r).find("unknown request"), std::string::npos);
    EXPECT_NE(decode("stop soon", r).find("invalid timeout"), std::string::npos);
    EXPECT_NE(decode("wait-boot", r), "");
    EXPECT_NE(decode("kill SIGNOPE", r).find("invalid signal"), std::string::npos);
    EXPECT_NE(decode("nic-add eth1", r), "");
    EXPECT_NE(decode("nic-add eth1 [1]", r), "");
    EXPECT_NE(decode("nic-add eth1 {\"mtu\":1500}", r).find("must be a string"), std::string::npos);
    EXPECT_NE(decode("nic-remove", r), "");
    EXPECT_NE(decode("apply-limits {\"processes\":0}", r), "");
    EXPECT_NE(decode("apply-limits {\"cpu_set\":\"x\"}", r), "");
    EXPECT_NE(decode("apply-limits {\"memory_bytes\":\"lots\"}", r), "");
}

TEST(ControlProto, StatusRoundTrip) {
    Status s;
    s.name = "c1";
    s.state = State::stopping;
    s.reason = "stopped";
    s.pid = 42;
    s.boots = 2;
    s.boot_id = "abc";
    s.cgroup = "machine.slice/lodge-c1.scope";
    s.lxcfs = true;
    runtime::net::PluggedNic n;
    n.device = "eth0";
    n.host_name = "veth1";
    n.host_ifindex = 7;
    s.nics.push_back(n);
    auto back = decode_status(encode(s));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->state, State::stopping);
    EXPECT_EQ(back->reason, "stopped");
    EXPECT_EQ(back->pid, 42);
    EXPECT_EQ(back->boots, 2u);
    EXPECT_TRUE(back->lxcfs);
    ASSERT_EQ(back->nics.size(), 1u);
    EXPECT_EQ(back->nics[0].host_ifindex, 7);
}

TEST(ControlProto, StatusDecoding) {
    EXPECT_FALSE(decode_status(""));
    EXPECT_FALSE(decode_status("{\"ok\":true}"));
    EXPECT_EQ(decode_status("{\"state\":\"error\",\"reason\":\"no init\"}")->state, State::error);
    // An unknown state is never taken for running.
    EXPECT_EQ(decode_status("{\"state\":\"flying\"}")->state, State::error);
    for (auto st : {State::starting, State::running, State::stopping, State::stopped, State::error})
        EXPECT_EQ(state_from_name(state_name(st)), st);
    EXPECT_TRUE(is_alive(State::stopping));
    EXPECT_FALSE(is_alive(State::error));
}

TEST(ControlProto, Replies) {
    EXPECT_TRUE(decode_reply("").gone);
    EXPECT_FALSE(decode_reply("").ok());
    EXPECT_TRUE(decode_reply(ok_reply()).ok());
    auto e = decode_reply(error_reply("container is not running"));
    EXPECT_FALSE(e.ok());
    EXPECT_EQ(e.error, "container is not running");
    EXPECT_EQ(decode_reply(signal_reply("SIGINT")).signal, "SIGINT");
    EXPECT_EQ(decode_reply(plugged_reply(false)).plugged, false);
    EXPECT_EQ(decode_reply(lxcfs_reply(true)).lxcfs, true);
    runtime::net::PluggedNic n;
    n.name = "eth1";
    EXPECT_EQ(decode_reply(nic_reply(n)).nic->name, "eth1");
    Status s;
    s.state = State::stopped;
    s.reason = "halted";
    auto r = decode_reply(encode(s));
    ASSERT_TRUE(r.ok() && r.status);
    EXPECT_EQ(r.status->reason, "halted");
}
