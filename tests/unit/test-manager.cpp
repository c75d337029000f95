// Manager's rules (src/daemon/manager.hpp) against a fake SupervisorLink, on a real sd-event
// loop, with the real bus objects on a private peer-to-peer sd-bus connection whose other end
// records every signal: state transitions and what is announced, rollback of a failed launch,
// readiness reset at a stop, the state a supervisor leaves behind, refusals and their bus
// error names. No root, no supervisor, no dbus-daemon.
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "daemon/dbus-api.hpp"
#include "daemon/manager.hpp"
#include "devlxd/devlxd-api.hpp"
#include "event-loop.hpp"

#include <csignal>
#include <cstdlib>
#include <deque>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::daemon;

namespace {

// Records what Manager asks of its supervisors; the test answers in Manager's stead.
class FakeLink : public SupervisorLink {
public:
    struct Launch {
        LaunchSpec spec;
        std::function<void(Result<Launched>)> done;
    };
    struct Request {
        std::string name, text;
        Reply done;
    };
    class FakeWatch : public Watch {
    public:
        FakeWatch(FakeLink& link, std::string name, WatchEvents events)
            : link_(link), name_(std::move(name)), events_(std::move(events)) {
            link_.watches[name_] = this;
        }
        ~FakeWatch() override {
            if (link_.watches[name_] == this)
                link_.watches.erase(name_);
        }
        bool supervisor_alive() const override { return alive; }
        void take_first_status(int) override {}
        bool alive = true;
        FakeLink& link_;
        std::string name_;
        WatchEvents events_;
    };

    Result<> launch(LaunchSpec spec, std::function<void(Result<Launched>)> done) override {
        if (!launch_error.empty())
            return make_error(errors::start_failed, EIO, launch_error);
        launches.push_back({std::move(spec), std::move(done)});
        return {};
    }
    Result<> request(const std::string& name, const std::string& text, Reply done,
                     RequestOptions) override {
        if (!running.count(name))
            return make_error(errors::not_running, ENOTCONN,
                              "Container \"" + name + "\" is not running");
        requests.push_back({name, text, std::move(done)});
        return {};
    }
    std::unique_ptr<Watch> watch(const std::string& name, WatchEvents events) override {
        if (!running.count(name))
            return nullptr;
        return std::make_unique<FakeWatch>(*this, name, std::move(events));
    }
    std::string last_status(const std::string& name) override {
        auto it = left_behind.find(name);
        return it == left_behind.end() ? "" : it->second;
    }
    bool idle() const override { return requests.empty() && launches.empty(); }

    // The test's side.
    // `status`: what the supervisor says along with READY ("" for nothing).
    void launched(Result<pid_t> init, const std::string& status = "") {
        ASSERT_FALSE(launches.empty());
        Launch l = std::move(launches.front());
        launches.pop_front();
        if (init) {
            running.insert(l.spec.name);
            // A real supervisor makes its runtime directory before it says READY.
            ASSERT_EQ(mkdir_p(paths::container_runtime(l.spec.name), 0700), 0);
        }
        if (!init)
            return l.done(init.error());
        l.done(Launched{*init, status});
    }
    void status(const std::string& name, const nlohmann::json& j) {
        ASSERT_TRUE(watches.count(name)) << name << " is not watched";
        auto fn = watches[name]->events_.status;
        fn(j.dump());
    }
    // The supervisor's stream ends (it stopped) and, separately, its process goes.
    void stream_ends(const std::string& name, const nlohmann::json& state_file) {
        ASSERT_TRUE(watches.count(name));
        running.erase(name);
        left_behind[name] = state_file.dump();
        auto fn = watches[name]->events_.end;
        fn();
    }
    void supervisor_exits(const std::string& name) {
        ASSERT_TRUE(watches.count(name));
        watches[name]->alive = false;
        auto fn = watches[name]->events_.exit;
        fn();
    }
    Request answer_next(const std::string& reply) {
        EXPECT_FALSE(requests.empty());
        Request r = std::move(requests.front());
        requests.pop_front();
        r.done(reply, Fd());
        return r;
    }

    std::deque<Launch> launches;
    std::deque<Request> requests;
    std::map<std::string, FakeWatch*> watches;
    std::set<std::string> running;
    std::map<std::string, std::string> left_behind;
    std::string launch_error;
};

class ManagerTest : public ::testing::Test {
protected:
    void SetUp() override {
        event = test::new_lodged_loop();
        ASSERT_TRUE(event);
        char tmpl[] = "/tmp/lodge-test-manager-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root = tmpl;
        ::setenv("LODGE_STATE_DIR", (root + "/state").c_str(), 1);
        ::setenv("LODGE_RUNTIME_DIR", (root + "/run").c_str(), 1);
        ::setenv("LODGE_LOG_DIR", (root + "/log").c_str(), 1);
        // No systemd scopes, machined or cgroups: a cgroupfs root that is never touched.
        ::setenv("LODGE_CGROUP_ROOT", (root + "/cgroup").c_str(), 1);
        ASSERT_EQ(mkdir_p(root + "/state/containers", 0700), 0);
        connect_buses();
        auto fake = std::make_unique<FakeLink>();
        link = fake.get();
        manager = std::make_unique<Manager>(event.get(), server.get(), std::move(fake));
        ASSERT_GE(register_bus_objects(server.get(), *manager), 0);
        ASSERT_EQ(manager->load(), 0);
    }
    void TearDown() override {
        manager.reset();
        client.reset();
        server.reset();
        event.reset();
        if (!root.empty())
            remove_tree(root);
    }
    // Two ends of one socket: Manager's bus (a server, anonymous) and the recorder's.
    void connect_buses() {
        int fds[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
        sd_id128_t id;
        ASSERT_GE(sd_id128_randomize(&id), 0);
        sd_bus* s = nullptr;
        ASSERT_GE(sd_bus_new(&s), 0);
        server.reset(s);
        ASSERT_GE(sd_bus_set_fd(s, fds[0], fds[0]), 0);
        ASSERT_GE(sd_bus_set_server(s, 1, id), 0);
        ASSERT_GE(sd_bus_set_anonymous(s, 1), 0);
        ASSERT_GE(sd_bus_start(s), 0);
        ASSERT_GE(sd_bus_attach_event(s, event.get(), 0), 0);
        sd_bus* c = nullptr;
        ASSERT_GE(sd_bus_new(&c), 0);
        client.reset(c);
        ASSERT_GE(sd_bus_set_fd(c, fds[1], fds[1]), 0);
        ASSERT_GE(sd_bus_set_anonymous(c, 1), 0);
        ASSERT_GE(sd_bus_start(c), 0);
        ASSERT_GE(sd_bus_attach_event(c, event.get(), 0), 0);
        ASSERT_GE(sd_bus_add_filter(c, nullptr, record, this), 0);
    }
    // "ContainerNew c1", "State=running", "Ready=true": what a bus client would have seen.
    static int record(sd_bus_message* m, void* userdata, sd_bus_error*) {
        auto* t = static_cast<ManagerTest*>(userdata);
        uint8_t type = 0;
        if (sd_bus_message_get_type(m, &type) < 0 || type != SD_BUS_MESSAGE_SIGNAL)
            return 0;
        std::string member = sd_bus_message_get_member(m);
        if (member != "PropertiesChanged") {
            const char* name = "";
            sd_bus_message_read(m, "s", &name);
            t->seen.push_back(member + " " + name);
            return 0;
        }
        const char* iface = nullptr;
        if (sd_bus_message_read(m, "s", &iface) < 0 ||
            sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
            return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
            const char* prop = nullptr;
            sd_bus_message_read(m, "s", &prop);
            char type = 0;
            const char* contents = nullptr;
            sd_bus_message_peek_type(m, &type, &contents);
            std::string value;
            if (contents && std::string(contents) == "s") {
                const char* v = "";
                sd_bus_message_read(m, "v", "s", &v);
                value = v;
            } else if (contents && std::string(contents) == "b") {
                int v = 0;
                sd_bus_message_read(m, "v", "b", &v);
                value = v ? "true" : "false";
            } else {
                sd_bus_message_skip(m, "v");
            }
            t->seen.push_back(std::string(prop) + "=" + value);
            sd_bus_message_exit_container(m);
        }
        return 0;
    }
    bool saw(const std::string& what) const {
        return std::find(seen.begin(), seen.end(), what) != seen.end();
    }
    void run_until(const std::function<bool()>& done) {
        for (int i = 0; i < 600 && !done(); i++)
            ASSERT_GE(sd_event_run(event.get(), 100000), 0);
        ASSERT_TRUE(done());
    }
    // Lets the loop deliver what is queued on the buses.
    void settle() {
        for (int i = 0; i < 20; i++)
            ASSERT_GE(sd_event_run(event.get(), 0), 0);
    }
    Done capture(std::optional<Result<>>& into) {
        return [&into](const Result<>& r) { into = r; };
    }
    // A stopped container `name` on disk and in the model, its rootfs made by a worker.
    Container& create(const std::string& name, KeyMap config = {}) {
        CreateRequest req;
        req.config.name = name;
        req.config.config = std::move(config);
        req.fill = [](Worker&, const std::string& rootfs, KeyMap&, std::string& error) {
            int r = mkdir_p(rootfs + "/sbin", 0755);
            if (r < 0)
                error = "cannot make the rootfs";
            return r;
        };
        std::optional<Result<>> done;
        auto r = manager->create(std::move(req), capture(done));
        EXPECT_TRUE(r) << r.error().message;
        run_until([&] { return done.has_value(); });
        EXPECT_TRUE(*done) << done->error().message;
        Container* c = manager->find(name);
        EXPECT_NE(c, nullptr);
        return *c;
    }
    // Started through the fake: launched with this process as "PID 1", its first status in.
    Container& start(const std::string& name) {
        Container& c = *manager->find(name);
        std::optional<Result<>> done;
        auto r = manager->start(c, capture(done));
        EXPECT_TRUE(r) << r.error().message;
        link->launched(::getpid());
        link->status(name, {{"state", "running"}, {"pid", ::getpid()}, {"boot_id", "b1"}});
        EXPECT_TRUE(done.has_value() && *done);
        return c;
    }

    std::string root;
    EventPtr event;
    BusPtr server, client;
    FakeLink* link = nullptr;
    std::unique_ptr<Manager> manager;
    std::vector<std::string> seen;
};

TEST_F(ManagerTest, CreateStartStopWalksTheStatesAndAnnouncesEach) {
    create("c1");
    settle();
    EXPECT_TRUE(saw("ContainerNew c1"));
    Container& c = *manager->find("c1");
    EXPECT_EQ(c.state, ContainerState::stopped);

    std::optional<Result<>> started;
    ASSERT_TRUE(manager->start(c, capture(started)));
    EXPECT_EQ(c.state, ContainerState::starting);
    EXPECT_TRUE(manager->starting("c1"));
    ASSERT_EQ(link->launches.size(), 1u);
    EXPECT_EQ(link->launches[0].spec.name, "c1");
    EXPECT_FALSE(link->launches[0].spec.place) << "no scope without systemd";
    settle();
    EXPECT_TRUE(saw("State=starting"));

    link->launched(::getpid());
    EXPECT_FALSE(manager->starting("c1"));
    // The start replies only once the supervisor's first status is in.
    EXPECT_FALSE(started.has_value());
    link->status("c1",
                 {{"state", "running"}, {"pid", ::getpid()}, {"boot_id", "b1"}, {"cgroup", "/x"}});
    ASSERT_TRUE(started.has_value());
    EXPECT_TRUE(*started);
    EXPECT_EQ(c.state, ContainerState::running);
    EXPECT_EQ(c.leader, ::getpid());
    EXPECT_EQ(c.cgroup, "/x");
    EXPECT_GT(c.started_usec, 0u);
    settle();
    EXPECT_TRUE(saw("State=running"));

    std::optional<lodge::runtime::proto::Reply> reply;
    ASSERT_TRUE(manager->request(c, lodge::runtime::proto::Request::stop(std::nullopt),
                                 [&](const lodge::runtime::proto::Reply& r) { reply = r; }));
    EXPECT_EQ(link->answer_next("{\"ok\":true}").text, "stop");
    link->status("c1", {{"state", "stopping"}, {"pid", ::getpid()}, {"boot_id", "b1"}});
    EXPECT_EQ(c.state, ContainerState::stopping);
    link->stream_ends("c1", {{"state", "stopped"}, {"reason", "stopped by request"}});
    EXPECT_EQ(c.state, ContainerState::stopped);
    EXPECT_EQ(c.reason, "stopped by request");
    EXPECT_EQ(c.leader, 0);
    settle();
    EXPECT_TRUE(saw("State=stopping"));
    EXPECT_TRUE(saw("State=stopped"));
}

// The supervisor says its status along with READY: the start replies at once with it (no
// round trip on the watch stream first), and the stream's own first status changes nothing.
TEST_F(ManagerTest, AStartRepliesWithTheStatusGivenAlongWithReady) {
    Container& c = create("c1");
    std::optional<Result<>> started;
    ASSERT_TRUE(manager->start(c, capture(started)));
    nlohmann::json status = {
        {"state", "running"}, {"pid", ::getpid()}, {"boot_id", "b1"}, {"cgroup", "/x"}};
    link->launched(::getpid(), status.dump());
    ASSERT_TRUE(started.has_value());
    EXPECT_TRUE(*started);
    EXPECT_EQ(c.state, ContainerState::running);
    EXPECT_EQ(c.cgroup, "/x");
    EXPECT_TRUE(link->watches.count("c1")) << "the stream is followed all the same";
    link->status("c1", status);
    EXPECT_EQ(c.state, ContainerState::running);
    EXPECT_EQ(c.leader, ::getpid());
}

TEST_F(ManagerTest, AFailedLaunchLeavesTheContainerInErrorAndStartableAgain) {
    Container& c = create("c2");
    std::optional<Result<>> started;
    ASSERT_TRUE(manager->start(c, capture(started)));
    link->launched(make_error(errors::start_failed, EIO, "init is missing"));
    ASSERT_TRUE(started.has_value());
    ASSERT_FALSE(*started);
    EXPECT_STREQ(started->error().bus_name, errors::start_failed);
    EXPECT_EQ(c.state, ContainerState::error);
    EXPECT_EQ(c.reason, "init is missing");
    EXPECT_FALSE(manager->starting("c2"));
    EXPECT_FALSE(c.watch);
    settle();
    EXPECT_TRUE(saw("State=error"));

    // The link refusing at once: the same rollback, the error straight back.
    link->launch_error = "cannot fork";
    auto refused = manager->start(c, capture(started));
    ASSERT_FALSE(refused);
    EXPECT_STREQ(refused.error().bus_name, errors::start_failed);
    EXPECT_EQ(c.state, ContainerState::error);
    EXPECT_EQ(c.reason, "cannot fork");
    EXPECT_FALSE(manager->starting("c2"));

    link->launch_error.clear();
    start("c2");
    EXPECT_EQ(c.state, ContainerState::running);
}

TEST_F(ManagerTest, ReadinessIsAnnouncedAndResetWhenTheContainerStops) {
    create("c3");
    Container& c = start("c3");
    ASSERT_TRUE(manager->set_ready(c, true));
    EXPECT_TRUE(c.ready());
    settle();
    EXPECT_TRUE(saw("ContainerReady c3"));
    EXPECT_TRUE(saw("Ready=true"));
    std::string text;
    ASSERT_EQ(read_file(paths::container_runtime("c3") + "/ready", text), 0);
    EXPECT_EQ(text, "true\n");

    bool stopped_called = false;
    manager->set_on_stopped([&](const Container& s) { stopped_called = s.name() == "c3"; });
    link->stream_ends("c3", {{"state", "stopped"}});
    EXPECT_TRUE(stopped_called);
    EXPECT_FALSE(c.ready());
    // Durable: config.json says not ready, and the runtime copy is gone.
    ASSERT_EQ(read_file(paths::container_config("c3"), text), 0);
    EXPECT_EQ(nlohmann::json::parse(text)["config"]["volatile.last_state.ready"], "false");
    EXPECT_LT(read_file(paths::container_runtime("c3") + "/ready", text), 0);
}

// A new boot id without a stop between: the guest rebooted, and what it said of itself is gone.
TEST_F(ManagerTest, AGuestRebootResetsReadinessAndEndsItsGuestApiIdentity) {
    create("c9");
    Container& c = start("c9");
    uint64_t first_boot = c.generation;
    ASSERT_TRUE(manager->set_ready(c, true));
    int stops = 0;
    manager->set_on_stopped([&](const Container&) { stops++; });
    link->status("c9", {{"state", "running"}, {"pid", ::getpid()}, {"boot_id", "b2"}});
    EXPECT_EQ(stops, 1);
    EXPECT_FALSE(c.ready());
    EXPECT_EQ(c.state, ContainerState::running);
    EXPECT_NE(c.generation, first_boot) << "a new boot is a new guest API identity";
}

// The guest hears of user.* changes and of devices of a running container, nothing else.
TEST_F(ManagerTest, GuestEventsForUserKeysAndDevicesOfARunningContainer) {
    create("c10");
    std::vector<std::pair<unsigned, std::string>> events;
    manager->set_guest_event_sink([&](const Container& c, unsigned type, const std::string& line) {
        if (c.name() == "c10")
            events.emplace_back(type, line);
    });
    std::optional<Result<>> done;
    ASSERT_TRUE(manager->set_config(*manager->find("c10"), {{"user.a", "1"}}, {}, capture(done)));
    EXPECT_TRUE(events.empty()) << "a stopped container hears nothing";
    Container& c = start("c10");
    ASSERT_TRUE(manager->set_config(c, {{"user.a", "2"}, {"boot.stop.signal", "SIGRTMIN+3"}}, {},
                                    capture(done)));
    ASSERT_TRUE(done.has_value() && *done);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].first, devlxd::event_config);
    EXPECT_NE(events[0].second.find("user.a"), std::string::npos) << events[0].second;

    ASSERT_TRUE(manager->add_device(
        c, "data", {{"type", "disk"}, {"source", "/tmp"}, {"path", "/mnt"}}, capture(done)));
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[1].first, devlxd::event_device);
    EXPECT_TRUE(c.config.devices.count("data"));
    ASSERT_TRUE(manager->remove_device(c, "data", capture(done)));
    ASSERT_EQ(events.size(), 3u);
    EXPECT_NE(events[2].second.find("removed"), std::string::npos) << events[2].second;
    EXPECT_FALSE(c.config.devices.count("data"));
    settle();
    EXPECT_TRUE(saw("Devices="));
}

TEST_F(ManagerTest, ASupervisorThatFailedLeavesErrorAndItsReasonAndStartWaitsForItsExit) {
    create("c4");
    Container& c = start("c4");
    link->stream_ends("c4", {{"state", "error"}, {"reason", "PID 1 was killed"}});
    EXPECT_EQ(c.state, ContainerState::error);
    EXPECT_EQ(c.reason, "PID 1 was killed");
    EXPECT_FALSE(c.running());
    // The supervisor still exists for a moment: a start waits for it to go.
    bool ran = false;
    manager->after_supervisor_exit("c4", [&] { ran = true; });
    EXPECT_FALSE(ran);
    EXPECT_TRUE(c.supervisor_alive());
    link->supervisor_exits("c4");
    EXPECT_TRUE(ran);
    EXPECT_FALSE(c.supervisor_alive());
    EXPECT_TRUE(manager->idle());
}

// Both arrive in one loop iteration in any order: an exit seen first must not lose the stop.
TEST_F(ManagerTest, ASupervisorExitSeenBeforeItsStreamEndsStillEndsInStopped) {
    create("c11");
    Container& c = start("c11");
    link->supervisor_exits("c11");
    EXPECT_TRUE(c.running());
    link->stream_ends("c11", {{"state", "stopped"}});
    EXPECT_EQ(c.state, ContainerState::stopped);
    EXPECT_FALSE(c.supervisor_alive());
}

TEST_F(ManagerTest, ARunningContainerIsNotStartedTwiceNorDeletedWithoutForce) {
    create("c5");
    Container& c = start("c5");
    std::optional<Result<>> done;
    auto again = manager->start(c, capture(done));
    ASSERT_FALSE(again);
    EXPECT_STREQ(again.error().bus_name, errors::already_running);
    EXPECT_TRUE(link->launches.empty());

    auto removed = manager->remove(c, false, capture(done));
    ASSERT_FALSE(removed);
    EXPECT_STREQ(removed.error().bus_name, errors::busy);
    EXPECT_NE(manager->find("c5"), nullptr);

    // With force: stop-force first, and the container goes once the supervisor answered.
    ASSERT_TRUE(manager->remove(c, true, capture(done)));
    EXPECT_EQ(link->requests.front().text, "stop-force");
    link->stream_ends("c5", {{"state", "stopped"}});
    link->answer_next("{\"ok\":true}");
    ASSERT_TRUE(done.has_value());
    EXPECT_TRUE(*done);
    EXPECT_EQ(manager->find("c5"), nullptr);
    settle();
    EXPECT_TRUE(saw("ContainerRemoved c5"));
}

TEST_F(ManagerTest, ConfigAndDeviceErrorsCarryTheirBusNames) {
    Container& c = create("c6");
    std::optional<Result<>> done;
    auto r = manager->set_config(c, {{"bogus.name", "1"}}, {}, capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::invalid_config);
    r = manager->set_config(c, {{"limits.memory", "lots"}}, {}, capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::invalid_config);
    EXPECT_FALSE(done.has_value());

    r = manager->add_device(c, "a/b", {{"type", "disk"}}, capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::invalid_config);
    r = manager->remove_device(c, "missing", capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::no_such_device);

    CreateRequest bad;
    bad.config.name = "9lives";
    r = manager->create(std::move(bad), capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::invalid_name);
    CreateRequest dup;
    dup.config.name = "c6";
    r = manager->create(std::move(dup), capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::container_exists);
}

TEST_F(ManagerTest, LiveLimitsGoToTheSupervisorAndItsRefusalIsNoStartFailure) {
    create("c7");
    Container& c = start("c7");
    std::optional<Result<>> done;
    ASSERT_TRUE(manager->set_config(c, {{"limits.memory", "64MB"}}, {}, capture(done)));
    EXPECT_EQ(c.config.get("limits.memory"), "64MB") << "stored before it is applied";
    EXPECT_FALSE(done.has_value());
    // The limits travel typed, in the request itself.
    EXPECT_EQ(link->answer_next("{\"error\":\"cannot write memory.max\"}").text,
              "apply-limits {\"memory_bytes\":64000000}");
    ASSERT_TRUE(done.has_value());
    ASSERT_FALSE(*done);
    EXPECT_STREQ(done->error().bus_name, errors::failed);
    EXPECT_EQ(done->error().message, "cannot write memory.max");

    // A supervisor that cannot be reached: NotRunning, at once.
    link->running.erase("c7");
    auto r = manager->set_config(c, {{"limits.memory", "128MB"}}, {}, capture(done));
    ASSERT_FALSE(r);
    EXPECT_STREQ(r.error().bus_name, errors::not_running);
}

TEST_F(ManagerTest, AFailedImportIsImportFailedAndLeavesNothing) {
    CreateRequest req;
    req.config.name = "c8";
    req.fill = [](Worker&, const std::string&, KeyMap&, std::string& error) {
        error = "Not a tarball";
        return -EINVAL;
    };
    std::optional<Result<>> done;
    ASSERT_TRUE(manager->create(std::move(req), capture(done)));
    run_until([&] { return done.has_value(); });
    ASSERT_FALSE(*done);
    EXPECT_STREQ(done->error().bus_name, errors::import_failed);
    EXPECT_EQ(done->error().message, "Not a tarball");
    EXPECT_EQ(manager->find("c8"), nullptr);
    EXPECT_NE(::access(paths::container_dir("c8").c_str(), F_OK), 0);
    settle();
    EXPECT_FALSE(saw("ContainerNew c8"));
}

} // namespace
