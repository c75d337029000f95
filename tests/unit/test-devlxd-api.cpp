// The devlxd dialect without sockets: routing, methods, errors, event lines and filters.
#include "devlxd/devlxd-api.hpp"

#include <gtest/gtest.h>

using namespace lodge;
using namespace lodge::daemon::devlxd;

namespace {

struct Fixture {
    ContainerConfig config;
    GuestView view;
    Fixture() {
        config.name = "c1";
        config.config = {{"user.a", "1"},
                         {"user.empty", ""},
                         {"cloud-init.user-data", "#cloud-config\n"},
                         {"security.privileged", "false"},
                         {"volatile.eth0.hwaddr", "00:16:3e:aa:bb:cc"},
                         {"volatile.cloud-init.instance-id", "iid-1"}};
        config.devices["eth0"] = {{"type", "nic"}, {"nictype", "p2p"}};
        config.devices["eth1"] = {{"type", "nic"}, {"hwaddr", "00:16:3e:00:00:01"}};
        view = GuestView{&config, false, "host1"};
    }
    Response get(const std::string& url) {
        return handle(Request{"GET", url, "", false, ""}, view);
    }
};

TEST(DevlxdApi, RootAndApi) {
    Fixture f;
    EXPECT_EQ(f.get("/").body, "[\"/1.0\"]\n");
    Response r = f.get("/1.0");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.body,
              "{\"state\":\"Started\",\"api_version\":\"1.0\",\"instance_type\":\"container\","
              "\"location\":\"host1\",\"auth\":\"untrusted\",\"supported_storage_drivers\":[]}\n");
    f.view.ready = true;
    EXPECT_NE(f.get("/1.0").body.find("\"state\":\"Ready\""), std::string::npos);
}

TEST(DevlxdApi, ConfigListsOnlyGuestKeysAndReadsRawValues) {
    Fixture f;
    EXPECT_EQ(f.get("/1.0/config").body, "[\"/1.0/config/cloud-init.user-data\",\"/1.0/config/"
                                         "user.a\",\"/1.0/config/user.empty\"]\n");
    Response r = f.get("/1.0/config/cloud-init.user-data");
    EXPECT_EQ(r.content_type, "application/octet-stream");
    EXPECT_EQ(r.body, "#cloud-config\n");
    EXPECT_EQ(f.get("/1.0/config/user.empty").status, 404u);
    EXPECT_EQ(f.get("/1.0/config/security.privileged").status, 403u);
    EXPECT_EQ(f.get("/1.0/config/volatile.eth0.hwaddr").status, 403u);
    EXPECT_EQ(f.get("/1.0/config/user.%61").body, "1");
    EXPECT_EQ(f.get("/1.0/config/user.%6").status, 400u);
    EXPECT_EQ(f.get("/1.0/config/user.a/x").status, 404u);
}

TEST(DevlxdApi, MetaDataAndDevices) {
    Fixture f;
    EXPECT_EQ(f.get("/1.0/meta-data").body, "instance-id: iid-1\nlocal-hostname: c1\n");
    EXPECT_EQ(f.get("/1.0/devices").body,
              "{\"eth0\":{\"nictype\":\"p2p\",\"type\":\"nic\",\"hwaddr\":\"00:16:3e:aa:bb:cc\"},"
              "\"eth1\":{\"hwaddr\":\"00:16:3e:00:00:01\",\"type\":\"nic\"}}\n");
}

TEST(DevlxdApi, MethodsAndUnknownPaths) {
    Fixture f;
    EXPECT_EQ(handle(Request{"DELETE", "/1.0", "", false, ""}, f.view).status, 501u);
    Response r = handle(Request{"BREW", "/1.0", "", false, ""}, f.view);
    EXPECT_EQ(r.status, 404u);
    EXPECT_EQ(r.body, "Method \"BREW\" not found\n");
    EXPECT_EQ(f.get("/2.0").status, 404u);
    // Paths match exactly, as LXD's router matches them (CONTRACT §6): no trailing slash.
    for (const char* path : {"/1.0/", "/1.0//", "//1.0", "/1.0/config/", "/1.0/meta-data/",
                             "/1.0/devices/", "/1.0/events/", "/1.0/config/user.a/"}) {
        Response nf = f.get(path);
        EXPECT_EQ(nf.status, 404u) << path;
        EXPECT_EQ(nf.body, "Not Found\n") << path;
    }
    EXPECT_EQ(handle(Request{"PATCH", "/1.0/", "", false, R"({"state":"Ready"})"}, f.view).status,
              404u);
    EXPECT_EQ(f.get("/1.0/images/abc/export").status, 403u);
    EXPECT_EQ(f.get("/1.0/images/abc/export").content_type, "application/json");
}

TEST(DevlxdApi, PatchState) {
    Fixture f;
    Response r = handle(Request{"PATCH", "/1.0", "", false, R"({"state":"Ready"})"}, f.view);
    EXPECT_EQ(r.status, 200u);
    ASSERT_TRUE(r.set_ready.has_value());
    EXPECT_TRUE(*r.set_ready);
    r = handle(Request{"PATCH", "/1.0", "", false, R"({"state":"Started"})"}, f.view);
    EXPECT_FALSE(*r.set_ready);
    r = handle(Request{"PATCH", "/1.0", "", false, R"({"state":"x"})"}, f.view);
    EXPECT_EQ(r.body, "Invalid state \"x\"\n");
    r = handle(Request{"PATCH", "/1.0", "", false, R"({"state":1})"}, f.view);
    EXPECT_EQ(r.status, 400u);
    r = handle(Request{"PATCH", "/1.0", "", false, "{"}, f.view);
    EXPECT_EQ(r.status, 400u);
    EXPECT_FALSE(r.set_ready.has_value());
}

TEST(DevlxdApi, EventsFilterAndLines) {
    EXPECT_EQ(parse_event_types("config"), event_config);
    EXPECT_EQ(parse_event_types("config,device"), event_config | event_device);
    EXPECT_FALSE(parse_event_types("config,logging").has_value());
    Fixture f;
    Response r = handle(Request{"GET", "/1.0/events", "device", true, ""}, f.view);
    EXPECT_EQ(r.kind, Kind::events);
    EXPECT_EQ(r.event_types, unsigned{event_device});
    EXPECT_EQ(handle(Request{"GET", "/1.0/events", "bogus", true, ""}, f.view).status, 400u);
    EXPECT_EQ(rfc3339_nano(1700000000123456), "2023-11-14T22:13:20.123456Z");
    EXPECT_EQ(rfc3339_nano(1700000000000000), "2023-11-14T22:13:20Z");
    EXPECT_EQ(
        config_event("user.a", "1", "2", 1700000000100000),
        R"({"type":"config","timestamp":"2023-11-14T22:13:20.1Z","metadata":{"key":"user.a","old_value":"1","value":"2"}})");
    EXPECT_EQ(
        device_event("added", "d", {{"type", "disk"}}, 1700000000000000),
        R"({"type":"device","timestamp":"2023-11-14T22:13:20Z","metadata":{"action":"added","name":"d","config":{"type":"disk"}}})");
}

} // namespace
