// The guest API (/dev/lxd/sock) from inside real containers run by a real lodged: every
// endpoint's status, content type and body; who may ask; events over a stream and a websocket;
// security.devlxd live; malformed and hostile requests; 64 clients at once; and, in a Debian
// guest, curl, python3 and cloud-init's LXD datasource.
#include "devlxd-fixture.hpp"

using namespace lodge;
using namespace lodge::test;
using namespace lodge::devlxd_test;

namespace {

TEST_F(DevlxdTest, EveryEndpointAnswersAsLxd) {
    std::string n =
        make("dx-endpoints", "user.foo=bar cloud-init.vendor-data=vd user.meta-data='tags: [a]'");
    SKIP_IF_NO_CONTAINER();
    std::string host = sh("uname -n");
    host.pop_back();

    Reply r = get(n, "/");
    EXPECT_EQ(r, (Reply{200, "application/json", "[\"/1.0\"]\n"}));

    r = get(n, "/1.0");
    EXPECT_EQ(r, (Reply{200, "application/json",
                        api_body_started + host +
                            R"(","auth":"untrusted","supported_storage_drivers":[]})" + "\n"}));

    r = get(n, "/1.0/config");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.type, "application/json");
    auto list = nlohmann::json::parse(r.body);
    std::set<std::string> keys(list.begin(), list.end());
    EXPECT_EQ(keys,
              (std::set<std::string>{"/1.0/config/user.foo", "/1.0/config/cloud-init.vendor-data",
                                     "/1.0/config/user.meta-data"}));

    r = get(n, "/1.0/config/user.foo");
    EXPECT_EQ(r, (Reply{200, "application/octet-stream", "bar"}));
    r = get(n, "/1.0/config/user.f%6fo"); // the key is path-unescaped
    EXPECT_EQ(r.body, "bar");
    r = get(n, "/1.0/config/user.%zz");
    EXPECT_EQ(r.status, 400);
    r = get(n, "/1.0/config/security.privileged");
    EXPECT_EQ(r, (Reply{403, "text/plain; charset=utf-8", "Forbidden\n"}));
    r = get(n, "/1.0/config/user.missing");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, "Not Found\n");

    r = get(n, "/1.0/meta-data");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.type, "application/octet-stream");
    std::string iid = instance_id(n);
    EXPECT_EQ(r.body, "instance-id: " + iid + "\nlocal-hostname: " + n + "\ntags: [a]");

    EXPECT_EQ(ctl("device add " + n + " data type=disk source=/tmp path=/mnt"), "");
    r = get(n, "/1.0/devices");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.type, "application/json");
    EXPECT_EQ(nlohmann::json::parse(r.body),
              nlohmann::json::parse(R"({"data":{"path":"/mnt","source":"/tmp","type":"disk"}})"));

    // A nic without hwaddr: the guest sees the MAC lodge chose (volatile.<dev>.hwaddr).
    EXPECT_EQ(ctl("device add " + n + " net type=nic nictype=p2p"), "");
    std::string mac = ctl("config get " + n + " volatile.net.hwaddr");
    ASSERT_EQ(mac.size(), 18u) << mac;
    mac.pop_back();
    auto devices = nlohmann::json::parse(get(n, "/1.0/devices").body, nullptr, false);
    EXPECT_EQ(devices["net"],
              nlohmann::json({{"type", "nic"}, {"nictype", "p2p"}, {"hwaddr", mac}}))
        << devices.dump();
    EXPECT_EQ(ctl("device remove " + n + " net"), "");

    r = get(n, "/1.0/images/0123456789abcdef/export");
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(r.type, "application/json");
    EXPECT_EQ(nlohmann::json::parse(r.body)["error"], "Forbidden");

    r = get(n, "/1.0/nothing-here");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, "Not Found\n");
    // Paths match exactly (CONTRACT §6): "/1.0/" is not "/1.0".
    for (const char* path : {"/1.0/", "/1.0/config/", "/1.0/meta-data/", "/1.0/devices/"}) {
        r = get(n, path);
        EXPECT_EQ(r.status, 404) << path;
        EXPECT_EQ(r.body, "Not Found\n") << path;
    }
    r = parse_reply(client(n, "DELETE /1.0"));
    EXPECT_EQ(r.status, 501);
    EXPECT_EQ(r.body, "Not Implemented\n");
}

TEST_F(DevlxdTest, ConfigValuesAreByteExact) {
    std::string n = make("dx-exact");
    SKIP_IF_NO_CONTAINER();
    std::string value = "line one\n  indented: \"quoted\" \\ back\ttab\n\u00fcnic\u00f8de\n\n";
    // Straight through the bus, so no shell or CLI parsing touches the bytes.
    EXPECT_EQ(run({"busctl", "--address=" + bus->address, "call", "io.lodge1", "/io/lodge1",
                   "io.lodge1.Manager", "SetContainerConfig", "sa{ss}as", n, "1", "user.exact",
                   value, "0"}),
              "");
    Reply r = get(n, "/1.0/config/user.exact");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, value);
}

TEST_F(DevlxdTest, ReadyIsReflectedAndClearedAtStop) {
    std::string n = make("dx-ready");
    SKIP_IF_NO_CONTAINER();
    Reply r = parse_reply(client(n, "-d '{\"state\":\"Ready\"}' PATCH /1.0"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "");
    EXPECT_TRUE(contains(get(n, "/1.0").body, "\"state\":\"Ready\""));
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "true\n");
    std::string path = run({"busctl", "--address=" + bus->address, "call", "io.lodge1",
                            "/io/lodge1", "io.lodge1.Manager", "GetContainer", "s", n});
    path = path.substr(path.find('"') + 1);
    path = path.substr(0, path.find('"'));
    EXPECT_EQ(run({"busctl", "--address=" + bus->address, "get-property", "io.lodge1", path,
                   "io.lodge1.Container", "Ready"}),
              "b true\n");

    r = parse_reply(client(n, "-d '{\"state\":\"Sleeping\"}' PATCH /1.0"));
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body, "Invalid state \"Sleeping\"\n");
    r = parse_reply(client(n, "-d '{\"state\":' PATCH /1.0"));
    EXPECT_EQ(r.status, 400);
    EXPECT_TRUE(r.body.rfind("Invalid request body: ", 0) == 0) << r.body;
    EXPECT_TRUE(contains(get(n, "/1.0").body, "\"state\":\"Ready\""));

    r = parse_reply(client(n, "-d '{\"state\":\"Started\"}' PATCH /1.0"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "false\n");
    client(n, "-d '{\"state\":\"Ready\"}' PATCH /1.0");
    EXPECT_EQ(ctl("stop --force " + n), "");
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "false\n");
    EXPECT_EQ(ctl("start " + n), "");
    EXPECT_TRUE(contains(get(n, "/1.0").body, "\"state\":\"Started\""));
}

TEST_F(DevlxdTest, CallersAreToldApartByNamespaceNotName) {
    std::string a = make("dx-a", "user.who=a");
    SKIP_IF_NO_CONTAINER();
    std::string b = make("dx-b", "user.who=b security.privileged=true");
    EXPECT_EQ(get(a, "/1.0/config/user.who").body, "a");
    EXPECT_EQ(get(b, "/1.0/config/user.who").body, "b");
    EXPECT_EQ(get(a, "/1.0/config").body, "[\"/1.0/config/user.who\"]\n");

    // Not root in the container.
    Reply r = get(a, "/1.0", "-u 1000");
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.body, "Access denied for non-root user\n");
    r = get(b, "/1.0", "-u 1000");
    EXPECT_EQ(r.status, 401);

    // A process in a pid namespace nested inside a: found through the namespace's parents.
    int st = -1;
    std::string nested =
        ctl("exec " + a + " -- unshare -p -f /devlxd-client GET /1.0/config/user.who", &st);
    EXPECT_EQ(parse_reply(nested).body, "a") << nested;

    // The host is in no container.
    std::string host = sh(env_path("LODGE_DEVLXD_CLIENT") + " -s " + socket_path + " GET /1.0");
    r = parse_reply(host);
    EXPECT_EQ(r.status, 500);
    EXPECT_EQ(r.body, "Process ID not found in container\n");
}

TEST_F(DevlxdTest, EventsReachStreamsAndWebsocketsFiltered) {
    std::string n = make("dx-events", "user.foo=bar");
    SKIP_IF_NO_CONTAINER();
    std::string exec = env_path("LODGE_LODGECTL") + " exec " + n + " -- /devlxd-client ";
    LineStream all(exec + "-e 3 /1.0/events");
    LineStream ws(exec + "-w 3 '/1.0/events?type=config,device'");
    LineStream devices(exec + "-e 2 '/1.0/events?type=device'");
    LineStream config(exec + "-w 1 '/1.0/events?type=config'");
    for (auto* b : {&all, &ws, &devices, &config})
        ASSERT_EQ(b->line(), "subscribed");

    EXPECT_EQ(ctl("config set " + n + " user.foo=baz"), "");
    // Not user.*: the guest hears nothing of these.
    EXPECT_EQ(ctl("config set " + n + " cloud-init.user-data=x limits.processes=200"), "");
    EXPECT_EQ(ctl("device add " + n + " mnt type=disk source=/tmp path=/mnt"), "");
    EXPECT_EQ(ctl("device remove " + n + " mnt"), "");

    auto check_config = [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        ASSERT_TRUE(j.is_object()) << line;
        EXPECT_EQ(j["type"], "config");
        EXPECT_EQ(j["metadata"],
                  nlohmann::json::parse(R"({"key":"user.foo","old_value":"bar","value":"baz"})"));
        EXPECT_TRUE(contains(j.value("timestamp", ""), "T")) << line;
    };
    auto check_device = [&](const std::string& line, const char* action) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        ASSERT_TRUE(j.is_object()) << line;
        EXPECT_EQ(j["type"], "device");
        EXPECT_EQ(j["metadata"]["action"], action);
        EXPECT_EQ(j["metadata"]["name"], "mnt");
        EXPECT_EQ(j["metadata"]["config"],
                  nlohmann::json::parse(R"({"path":"/mnt","source":"/tmp","type":"disk"})"));
    };
    for (auto* b : {&all, &ws}) {
        check_config(b->line());
        check_device(b->line(), "added");
        check_device(b->line(), "removed");
        EXPECT_EQ(b->wait(), 0);
    }
    check_device(devices.line(), "added");
    check_device(devices.line(), "removed");
    EXPECT_EQ(devices.wait(), 0);
    check_config(config.line());
    EXPECT_EQ(config.wait(), 0);

    // An unknown type is refused.
    EXPECT_EQ(get(n, "/1.0/events?type=nope").status, 400);
}

TEST_F(DevlxdTest, SecurityDevlxdFollowsLive) {
    std::string n = make("dx-toggle");
    SKIP_IF_NO_CONTAINER();
    EXPECT_EQ(get(n, "/1.0").status, 200);
    EXPECT_EQ(ctl("config set " + n + " security.devlxd=false"), "");
    int st = -1;
    ctl("exec " + n + " -- test -e /dev/lxd", &st);
    EXPECT_NE(st, 0) << "/dev/lxd is still there";
    // Even a socket reached another way is refused.
    EXPECT_EQ(ctl("config unset " + n + " security.devlxd"), "");
    ctl("exec " + n + " -- test -S /dev/lxd/sock", &st);
    EXPECT_EQ(st, 0) << "/dev/lxd/sock did not come back";
    EXPECT_EQ(get(n, "/1.0").status, 200);

    std::string off = unique_name("dx-off");
    ctl("create " + off);
    created.push_back(off);
    ctl("config set " + off + " security.devlxd=false");
    EXPECT_EQ(ctl("start " + off), "");
    ctl("exec " + off + " -- test -e /dev/lxd", &st);
    EXPECT_NE(st, 0) << "a container started with security.devlxd=false has /dev/lxd";
}

TEST_F(DevlxdTest, MalformedRequestsGetErrorsAndLoseNothing) {
    std::string n = make("dx-malformed", "user.keep=1");
    SKIP_IF_NO_CONTAINER();
    // Truncated: the headers never end; the server gives up on it (header timeout).
    std::string out = raw(n, "GET /1.0 HTTP/1.1\r\nHost: l");
    EXPECT_FALSE(contains(out, " 200 ")) << out;
    // Binary garbage.
    std::string garbage;
    for (int i = 0; i < 4096; i++)
        garbage += static_cast<char>((i * 7919 + 13) & 0xff);
    out = raw(n, garbage);
    EXPECT_TRUE(out.empty() || contains(out, " 400 ")) << out.substr(0, 200);
    // A request line with no version, an unknown method, a huge header, a huge body.
    out = raw(n, "GET\r\n\r\n");
    EXPECT_TRUE(out.empty() || contains(out, " 400 ")) << out;
    out = raw(n, "BREW /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n");
    EXPECT_TRUE(contains(out, "404 ") && contains(out, "Method \"BREW\" not found")) << out;
    out =
        raw(n, "GET /1.0 HTTP/1.1\r\nHost: lxd\r\nX-Big: " + std::string(100000, 'a') + "\r\n\r\n");
    EXPECT_FALSE(contains(out, " 200 ")) << out.substr(0, 200);
    std::string body = "{\"state\":\"Ready\"" + std::string(100000, ' ') + "}";
    out = raw(n, "PATCH /1.0 HTTP/1.1\r\nHost: lxd\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
    EXPECT_TRUE(contains(out, " 413 ")) << out.substr(0, 200);
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "\n");
    // Slowloris: a header byte every 200 ms is cut off long before it completes.
    EXPECT_EQ(client(n, "-S"), "closed\n");

    // lodged is alive and nothing was lost.
    EXPECT_EQ(kill(daemon->pid, 0), 0);
    EXPECT_EQ(get(n, "/1.0/config/user.keep").body, "1");
}

TEST_F(DevlxdTest, SixtyFourClientsTenThousandRequestsEach) {
    std::string n = make("dx-load");
    SKIP_IF_NO_CONTAINER();
    // Warm up, so allocator pools and MHD's connection memory are at their working size.
    EXPECT_EQ(client(n, "-L 64,500 /1.0"), "requests 32000 errors 0\n");
    long before = rss_kib(daemon->pid);
    int st = -1;
    EXPECT_EQ(client(n, "-L 64,10000 /1.0", &st), "requests 640000 errors 0\n");
    EXPECT_EQ(st, 0);
    ASSERT_EQ(kill(daemon->pid, 0), 0) << "lodged died under load";
    long after = rss_kib(daemon->pid);
    std::printf("lodged VmRSS %ld kB before, %ld kB after 640000 requests\n", before, after);
    // ASan's quarantine holds freed memory on purpose: flatness is a plain-build property.
    if (!std::getenv("LODGE_SANITIZED")) {
        EXPECT_LT(after - before, 2048) << "lodged grew by " << after - before << " kB";
    }
    EXPECT_EQ(get(n, "/1.0").status, 200);
}

TEST_F(DevlxdTest, AnswersAreTheSameAfterLodgedRestarts) {
    std::string n = make("dx-restart", "user.a=1");
    SKIP_IF_NO_CONTAINER();
    client(n, "-d '{\"state\":\"Ready\"}' PATCH /1.0");
    std::string before = get(n, "/1.0").body + get(n, "/1.0/config/user.a").body;
    daemon->kill9();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    std::string after = get(n, "/1.0").body + get(n, "/1.0/config/user.a").body;
    EXPECT_EQ(before, after);
    EXPECT_TRUE(contains(after, "\"state\":\"Ready\""));
}

// "pid P fd F" and "ok K refused R" from devlxd-client -F, which then holds its connections.
TEST_F(DevlxdTest, PlainEventStreamIsBareJsonLines) {
    std::string n = make("dx-lines", "user.k=1");
    SKIP_IF_NO_CONTAINER();
    // The response head as LXD's hijacked stream has it: no chunked coding.
    std::string head_cmd =
        env_path("LODGE_LODGECTL") + " exec " + n + " -- /devlxd-client -e 2 /1.0/events";
    LineStream stream(head_cmd);
    ASSERT_EQ(stream.line(), "subscribed");
    EXPECT_EQ(ctl("config set " + n + " user.k=2"), "");
    EXPECT_EQ(ctl("config set " + n + " user.k=3"), "");
    for (const char* value : {"2", "3"}) {
        std::string line = stream.line();
        auto j = nlohmann::ordered_json::parse(line, nullptr, false);
        ASSERT_TRUE(j.is_object()) << line;
        std::vector<std::string> keys;
        for (auto& [k, v] : j.items())
            keys.push_back(k);
        EXPECT_EQ(keys, (std::vector<std::string>{"type", "timestamp", "metadata"})) << line;
        EXPECT_EQ(j["metadata"]["value"], value) << line;
    }
    EXPECT_EQ(stream.wait(), 0);
}

TEST_F(DevlxdTest, InstanceIdIsAUuidRenewedWithCloudInitKeys) {
    std::string n = make("dx-iid", "user.foo=1");
    SKIP_IF_NO_CONTAINER();
    std::string id = instance_id(n);
    EXPECT_EQ(id.size(), 36u) << id;
    EXPECT_NE(id, n);
    EXPECT_EQ(get(n, "/1.0/meta-data").body,
              "instance-id: " + id + "\nlocal-hostname: " + n + "\n");
    // Keys cloud-init does not read leave it alone.
    EXPECT_EQ(ctl("config set " + n + " user.foo=2 limits.processes=300"), "");
    EXPECT_EQ(instance_id(n), id);
    // Every key it reads renews it, set, changed or unset.
    std::string last = id;
    for (const char* change :
         {"set cloud-init.user-data=a", "set cloud-init.user-data=b", "set user.user-data=x",
          "set user.meta-data=y", "set user.vendor-data=z", "set user.network-config=w",
          "set cloud-init.network-config=v", "unset cloud-init.user-data"}) {
        std::string verb = change;
        size_t space = verb.find(' ');
        EXPECT_EQ(ctl("config " + verb.substr(0, space) + " " + n + verb.substr(space)), "")
            << change;
        std::string now = instance_id(n);
        EXPECT_EQ(now.size(), 36u) << change;
        EXPECT_NE(now, last) << change;
        last = now;
    }
    // The same value again is no change.
    EXPECT_EQ(ctl("config set " + n + " cloud-init.network-config=v"), "");
    EXPECT_EQ(instance_id(n), last);
    EXPECT_EQ(get(n, "/1.0/meta-data").body,
              "instance-id: " + last + "\nlocal-hostname: " + n + "\ny");
}

TEST_F(DevlxdTest, ContainersFromBeforeInstanceIdsGetOneOnce) {
    std::string n = unique_name("dx-oldiid");
    int st = -1;
    std::string out = ctl("create " + n, &st);
    ASSERT_EQ(st, 0) << out;
    created.push_back(n);
    daemon->kill9();
    // As an older lodge wrote it: no volatile.cloud-init.instance-id.
    std::string path = TestRoot::get().dir + "/state/containers/" + n + "/config.json";
    auto j = nlohmann::json::parse(read_text(path));
    ASSERT_TRUE(j.contains("config")) << j.dump();
    j["config"].erase("volatile.cloud-init.instance-id");
    write_file_atomic(path, j.dump());
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    std::string id = instance_id(n);
    EXPECT_EQ(id.size(), 36u) << id;
    EXPECT_TRUE(contains(read_text(path), id)) << "not on disk";
    daemon->kill9();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_EQ(instance_id(n), id) << "made again at the next start";
}

// A debootstrapped Debian with systemd, curl, python3 and cloud-init.
class DevlxdDebianTest : public DevlxdTest {};

TEST_F(DevlxdDebianTest, CurlPythonAndCloudInitReadTheGuestApi) {
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (!tarball || !exists(tarball))
        GTEST_SKIP() << "no Debian rootfs tarball (scripts/test.sh makes one; "
                        "it sets LODGE_DEBIAN_TARBALL)";
    std::string n = unique_name("dx-debian");
    int st = -1;
    std::string out = ctl(std::string("create ") + n + " " + tarball, &st);
    ASSERT_EQ(st, 0) << out;
    created.push_back(n);
    if (!exists(rootfs(n) + "/usr/bin/cloud-init"))
        GTEST_SKIP() << "the Debian rootfs has no cloud-init (scripts/test.sh includes it)";
    // locale: false, because minbase has no `locales` for cloud-init's locale module to use.
    std::string user_data = "#cloud-config\nlocale: false\nwrite_files:\n"
                            "- path: /var/tmp/from-user-data\n  content: hello from user-data\n";
    std::string vendor_data =
        "#cloud-config\nbootcmd:\n- echo vendor > /var/tmp/from-vendor-data\n";
    std::string network = "version: 1\nconfig: []\n";
    std::string cmd =
        "busctl --address=" + bus->address +
        " call io.lodge1 /io/lodge1 io.lodge1.Manager SetContainerConfig 'sa{ss}as' " + n +
        " 4 cloud-init.user-data '" + user_data + "' cloud-init.vendor-data '" + vendor_data +
        "' cloud-init.network-config '" + network + "' user.meta-data 'tags: [lodge]' 0";
    ASSERT_EQ(sh(cmd + " 2>&1", &st), "");
    unlink((rootfs(n) + "/etc/cloud/cloud-init.disabled").c_str());
    ASSERT_EQ(ctl("start " + n, &st), "") << "start failed";
    auto in = [&](const std::string& c, int* status = nullptr) {
        return ctl("exec " + n + " -- " + c, status);
    };
    // systemd settles with cloud-init's four stages done (bounded by systemd's own timeouts).
    in("systemctl is-system-running --wait");
    out = in("cloud-init status --wait --long");
    EXPECT_TRUE(contains(out, "status: done"))
        << out << in("cat /var/log/cloud-init.log | grep -i -E 'warn|error|trace' | head -40");

    // curl
    EXPECT_EQ(in("curl -s --unix-socket /dev/lxd/sock -w ' %{http_code} %{content_type}' "
                 "http://lxd/1.0/config/user.meta-data"),
              "tags: [lodge] 200 application/octet-stream");
    out = in("curl -s --unix-socket /dev/lxd/sock http://lxd/1.0");
    EXPECT_TRUE(out.rfind(api_body_started, 0) == 0) << out;
    EXPECT_EQ(in("curl -s -o /dev/null -w '%{http_code}' --unix-socket /dev/lxd/sock "
                 "http://lxd/1.0/nope"),
              "404");

    // python3, standard library only
    out = in(
        "python3 -c 'import http.client, socket, json\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(\"/dev/lxd/sock\")\n"
        "c = C(\"lxd\"); c.request(\"GET\", \"/1.0/devices\"); r = c.getresponse()\n"
        "print(r.status, r.getheader(\"Content-Type\"), json.loads(r.read()))\n"
        "c.request(\"GET\", \"/1.0/meta-data\"); r = c.getresponse(); print(r.status, "
        "repr(r.read().decode()))'");
    // instance-id: the UUID lodge keeps in volatile.cloud-init.instance-id, not the name.
    std::string iid = instance_id(n);
    EXPECT_EQ(iid.size(), 36u) << iid;
    EXPECT_EQ(out, "200 application/json {}\n200 'instance-id: " + iid + "\\nlocal-hostname: " + n +
                       "\\ntags: [lodge]'\n");

    // cloud-init: the LXD datasource found /dev/lxd/sock and read everything through it.
    EXPECT_EQ(in("cloud-init query v1.platform"), "lxd\n");
    EXPECT_EQ(in("cloud-init query v1.instance_id"), iid + "\n");
    EXPECT_EQ(in("cloud-init query v1.local_hostname"), n + "\n");
    EXPECT_EQ(in("cloud-init query userdata"), user_data + "\n");
    EXPECT_EQ(in("cloud-init query vendordata"), vendor_data + "\n");
    EXPECT_EQ(in("cat /var/tmp/from-user-data"), "hello from user-data");
    EXPECT_EQ(in("cat /var/tmp/from-vendor-data"), "vendor\n");
    out = in("cloud-init query ds");
    auto ds = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(ds.is_object()) << out;
    EXPECT_EQ(ds["network-config"], network) << out;
    EXPECT_EQ(ds["meta-data"], "instance-id: " + iid + "\nlocal-hostname: " + n + "\ntags: [lodge]")
        << out;
    EXPECT_EQ(ds["config"]["user.meta-data"], "tags: [lodge]") << out;
    EXPECT_EQ(ds["devices"], nlohmann::json::object()) << out;

    // New user-data is a new instance to cloud-init: the id changes, and so does what the
    // datasource reads at the next boot.
    EXPECT_EQ(ctl("config set " + n + " cloud-init.user-data='#cloud-config'"), "");
    std::string renewed = instance_id(n);
    EXPECT_EQ(renewed.size(), 36u) << renewed;
    EXPECT_NE(renewed, iid);
    EXPECT_EQ(in("curl -s --unix-socket /dev/lxd/sock http://lxd/1.0/meta-data"),
              "instance-id: " + renewed + "\nlocal-hostname: " + n + "\ntags: [lodge]");
}

} // namespace
