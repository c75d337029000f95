// What the bus shows to whom, and what a guest can make lodged do: secrets stay off the bus for
// callers without io.lodge1.manage (properties, GetManagedObjects, broadcasts); GetConfig asks
// polkit; a guest flipping its readiness neither rewrites config.json nor floods the bus;
// security.idmap.isolated gives each container a range of its own, and bases that make
// container root a host system id are refused. The polkit cases run a real polkitd on the
// private bus, with a test rule that only its own mount namespace sees.
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <chrono>
#include <fcntl.h>
#include <grp.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <systemd/sd-bus.h>

using namespace lodge;
using namespace lodge::test;

namespace {

constexpr uid_t nobody = 65534;
constexpr uid_t daemon_uid = 1; // "daemon": a user no test rule allows

std::string as_user(uid_t uid, const std::string& cmd) {
    std::string id = std::to_string(uid);
    return "setpriv --reuid=" + id + " --regid=" + id + " --clear-groups " + cmd;
}

std::string object_path(const std::string& name) {
    std::string out = sh("busctl --system call io.lodge1 /io/lodge1 io.lodge1.Manager "
                         "GetContainer s " +
                         name);
    auto a = out.find('"'), b = out.rfind('"');
    return a == std::string::npos || b == a ? "" : out.substr(a + 1, b - a - 1);
}

// Polls `condition` (no fixed sleep decides anything), at most `seconds`.
template <typename F> bool eventually(F condition, int seconds = 60) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
        if (condition())
            return true;
        usleep(20 * 1000);
    }
    return condition();
}

size_t count(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1))
        n++;
    return n;
}

// A passive listener as `uid`: every signal below /io/lodge1, dumped to a file.
class SignalRecorder {
public:
    SignalRecorder(uid_t uid) {
        file = TestRoot::get().dir + "/" + unique_name("signals");
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return;
        pid = fork();
        if (pid == 0) {
            FILE* out = std::fopen(file.c_str(), "w");
            if (!out || setgroups(0, nullptr) < 0 || setresgid(uid, uid, uid) < 0 ||
                setresuid(uid, uid, uid) < 0)
                _exit(1);
            sd_bus* bus = nullptr;
            if (sd_bus_open_system(&bus) < 0 ||
                sd_bus_add_match(bus, nullptr, "type='signal',path_namespace='/io/lodge1'",
                                 on_signal, out) < 0)
                _exit(1);
            if (write(p[1], "1", 1) != 1)
                _exit(1);
            for (;;) {
                int r = sd_bus_process(bus, nullptr);
                if (r < 0)
                    _exit(1);
                if (r == 0 && sd_bus_wait(bus, UINT64_MAX) < 0)
                    _exit(1);
            }
        }
        close(p[1]);
        struct pollfd pfd {
            p[0], POLLIN, 0
        };
        char c = 0;
        ready = poll(&pfd, 1, 30000) == 1 && read(p[0], &c, 1) == 1;
        close(p[0]);
    }
    ~SignalRecorder() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        unlink(file.c_str());
    }
    std::string text() const { return read_text(file); }

    std::string file;
    pid_t pid = -1;
    bool ready = false;

private:
    static int on_signal(sd_bus_message* m, void* userdata, sd_bus_error*) {
        auto* out = static_cast<FILE*>(userdata);
        sd_bus_message_dump(m, out, SD_BUS_MESSAGE_DUMP_WITH_HEADER);
        std::fflush(out);
        return 0;
    }
};

class BusSecurityTest : public LodgedFixture {
protected:
    std::string make(const std::string& base, const std::string& config = "") {
        return create_container(base, config);
    }
    // A RestartContainer call on the stopped container `n` (its status and output) is answered
    // with the method's signature ("s") and leaves `n` running; false (and the reason in
    // skip_reason) when the host cannot give it a rootfs.
    bool restarted(const std::string& n, int st, const std::string& out) {
        if (st != 0 && contains(out, "idmapped")) {
            skip_reason = out;
            return false;
        }
        EXPECT_EQ(st, 0) << out;
        EXPECT_EQ(out, "s \"\"\n");
        EXPECT_TRUE(contains(ctl("status " + n), "State: running"));
        return true;
    }
    // Starts `n`; false (and the reason in skip_reason) when the host cannot give it a rootfs.
    bool start(const std::string& n) {
        int st = -1;
        std::string out = ctl("start " + n, &st);
        if (st != 0 && contains(out, "idmapped")) {
            skip_reason = out;
            return false;
        }
        EXPECT_EQ(st, 0) << out;
        return st == 0;
    }
    std::string container_dir(const std::string& n) {
        return TestRoot::get().dir + "/state/containers/" + n;
    }
    // "0 <host base> <count>" of the running container's PID 1.
    std::vector<unsigned long> uid_map(const std::string& n) {
        std::string show = ctl("show " + n);
        auto at = show.find("Leader=");
        std::vector<unsigned long> out;
        if (at == std::string::npos)
            return out;
        std::string map =
            read_text("/proc/" + std::to_string(std::stoul(show.substr(at + 7))) + "/uid_map");
        unsigned long inside, outside, size;
        if (std::sscanf(map.c_str(), "%lu %lu %lu", &inside, &outside, &size) == 3)
            out = {inside, outside, size};
        return out;
    }

    std::string skip_reason;
};

const std::string secrets = "cloud-init.user-data=SECRET-ci environment.DB_PASSWORD=SECRET-env "
                            "user.token=SECRET-user user.user-data=SECRET-uud limits.processes=100";

TEST_F(BusSecurityTest, SecretsStayOffTheBusForOthers) {
    std::string n = make("secret", secrets);
    std::string path = object_path(n);
    ASSERT_FALSE(path.empty());
    int st = -1;

    // The Config property and GetManagedObjects: public keys only.
    std::string prop = sh(as_user(nobody, "busctl --system get-property io.lodge1 " + path +
                                              " io.lodge1.Container Config 2>&1"),
                          &st);
    EXPECT_EQ(st, 0) << prop;
    EXPECT_TRUE(contains(prop, "limits.processes")) << prop;
    EXPECT_FALSE(contains(prop, "SECRET")) << prop;
    std::string objects = sh(as_user(nobody, "busctl --system call io.lodge1 /io/lodge1 "
                                             "org.freedesktop.DBus.ObjectManager "
                                             "GetManagedObjects 2>&1"),
                             &st);
    EXPECT_EQ(st, 0) << objects;
    EXPECT_TRUE(contains(objects, "limits.processes")) << objects;
    EXPECT_FALSE(contains(objects, "SECRET")) << objects;

    // GetConfig asks polkit, which is not running here: refused.
    std::string get = sh(as_user(nobody, "busctl --system call io.lodge1 " + path +
                                             " io.lodge1.Container GetConfig 2>&1"),
                         &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(get, "Access denied")) << get;
    get = sh(as_user(nobody, "busctl --system call io.lodge1 /io/lodge1 io.lodge1.Manager "
                             "GetContainerConfig s " +
                                 n + " 2>&1"),
             &st);
    EXPECT_NE(st, 0);
    EXPECT_FALSE(contains(get, "SECRET")) << get;

    // lodgectl as nobody shows the public part.
    std::string shown =
        sh(as_user(nobody, env_path("LODGE_LODGECTL") + " config show " + n + " 2>&1"), &st);
    EXPECT_EQ(st, 0) << shown;
    EXPECT_TRUE(contains(shown, "limits.processes: 100")) << shown;
    EXPECT_FALSE(contains(shown, "SECRET")) << shown;
    EXPECT_EQ(sh(as_user(nobody, env_path("LODGE_LODGECTL") + " config get " + n +
                                     " environment.DB_PASSWORD 2>&1")),
              "\n");

    // Broadcasts: a listener sees that Config changed, never the values.
    SignalRecorder listener(nobody);
    ASSERT_TRUE(listener.ready);
    EXPECT_EQ(ctl("config set " + n + " user.token=SECRET-new environment.DB_PASSWORD=SECRET-new2"),
              "");
    EXPECT_EQ(ctl("device add " + n + " data type=disk source=/tmp path=/mnt"), "");
    std::string marker = make("marker");
    ASSERT_TRUE(eventually([&] { return contains(listener.text(), marker); })) << listener.text();
    std::string heard = listener.text();
    EXPECT_TRUE(contains(heard, "PropertiesChanged")) << heard;
    EXPECT_TRUE(contains(heard, "\"Config\"")) << heard;
    EXPECT_FALSE(contains(heard, "SECRET")) << heard;

    // Root sees everything, as before.
    std::string all = ctl("config show " + n);
    for (auto* v : {"SECRET-ci", "SECRET-new", "SECRET-uud", "SECRET-new2", "limits.processes"})
        EXPECT_TRUE(contains(all, v)) << all;
    EXPECT_EQ(ctl("config get " + n + " environment.DB_PASSWORD"), "SECRET-new2\n");
    get = sh("busctl --system call io.lodge1 " + path + " io.lodge1.Container GetConfig 2>&1", &st);
    EXPECT_EQ(st, 0) << get;
    EXPECT_TRUE(contains(get, "SECRET-ci")) << get;
}

TEST_F(BusSecurityTest, ReadinessChurnIsThrottled) {
    std::string n = make("churn");
    sh("cp " + env_path("LODGE_DEVLXD_CLIENT") + " " + container_dir(n) + "/rootfs/devlxd-client");
    // 1001 PATCHes, alternating, ending on Ready.
    write_file_atomic(container_dir(n) + "/rootfs/churn.sh",
                      "for i in $(seq 500); do\n"
                      "  /devlxd-client -d '{\"state\":\"Ready\"}' PATCH /1.0 >/dev/null\n"
                      "  /devlxd-client -d '{\"state\":\"Started\"}' PATCH /1.0 >/dev/null\n"
                      "done\n"
                      "/devlxd-client -d '{\"state\":\"Ready\"}' PATCH /1.0\n",
                      0755);
    if (!start(n))
        GTEST_SKIP() << skip_reason;
    std::string path = object_path(n);

    Fd watch(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    ASSERT_TRUE(watch);
    ASSERT_GE(
        inotify_add_watch(watch.get(), container_dir(n).c_str(), IN_MOVED_TO | IN_CLOSE_WRITE), 0);
    SignalRecorder listener(nobody);
    ASSERT_TRUE(listener.ready);
    auto began = std::chrono::steady_clock::now();
    std::string out = ctl("exec " + n + " -- /bin/sh /churn.sh");
    EXPECT_TRUE(contains(out, "STATUS 200")) << out;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();

    // The final state is right at once.
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 " + path + " io.lodge1.Container Ready"),
              "b true\n");
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "true\n");

    // ... and the bus heard it last (the coalesced announcement comes within the interval).
    auto last_ready = [&] {
        std::string heard = listener.text();
        auto at = heard.rfind("STRING \"Ready\"");
        return at == std::string::npos ? std::string() : heard.substr(at, heard.find('}', at) - at);
    };
    EXPECT_TRUE(eventually([&] { return contains(last_ready(), "BOOLEAN true"); })) << last_ready();
    std::string marker = make("marker");
    ASSERT_TRUE(eventually([&] { return contains(listener.text(), marker); }));

    // No durable write per change.
    size_t writes = 0;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (ssize_t len; (len = read(watch.get(), buf, sizeof buf)) > 0;)
        for (char* p = buf; p < buf + len;) {
            auto* ev = reinterpret_cast<struct inotify_event*>(p);
            if (ev->len && std::string(ev->name) == "config.json")
                writes++;
            p += sizeof(struct inotify_event) + ev->len;
        }
    EXPECT_LE(writes, 2u) << "config.json written " << writes << " times for 1001 PATCHes";

    // At most 4 announcements a second, plus the trailing one.
    std::string heard = listener.text();
    size_t changes = count(heard, "Member=PropertiesChanged");
    std::printf("1001 PATCHes in %.1f s: %zu config.json writes, %zu PropertiesChanged\n", seconds,
                writes, changes);
    size_t allowed = 4 * (static_cast<size_t>(seconds) + 1) + 2;
    EXPECT_LE(changes, allowed) << changes << " PropertiesChanged in " << seconds << " s";
    EXPECT_GE(changes, 1u);
    EXPECT_LE(count(heard, "Member=ContainerReady"), allowed);

    // A lodged restart reads readiness back from /run; a stop clears it on disk.
    daemon->kill9();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "true\n");
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 " + path + " io.lodge1.Container Ready"),
              "b true\n");
    EXPECT_EQ(ctl("stop --force " + n), "");
    // (lodged hears of the stop from the supervisor's watch stream, maybe after the reply.)
    nlohmann::json disk;
    EXPECT_TRUE(eventually([&] {
        disk = nlohmann::json::parse(read_text(container_dir(n) + "/config.json"), nullptr, false);
        return disk.is_object() && disk["config"].value("volatile.last_state.ready", "") == "false";
    })) << disk.dump();
    EXPECT_EQ(ctl("config get " + n + " volatile.last_state.ready"), "false\n");
}

TEST_F(BusSecurityTest, IsolatedContainersGetRangesOfTheirOwn) {
    std::string a = make("iso-a", "security.idmap.isolated=true");
    std::string b = make("iso-b", "security.idmap.isolated=true");
    std::string plain = make("iso-plain");
    if (!start(a) || !start(b) || !start(plain))
        GTEST_SKIP() << skip_reason;
    auto map_a = uid_map(a), map_b = uid_map(b), map_plain = uid_map(plain);
    ASSERT_EQ(map_a.size(), 3u);
    ASSERT_EQ(map_b.size(), 3u);
    ASSERT_EQ(map_plain.size(), 3u);
    EXPECT_EQ(map_plain[1], 1000000u);
    EXPECT_NE(map_a[1], map_b[1]);
    for (auto* m : {&map_a, &map_b}) {
        EXPECT_EQ((*m)[0], 0u);
        EXPECT_EQ((*m)[2], 65536u);
        EXPECT_GE((*m)[1], 1000000u + 65536u); // clear of the shared default range
    }
    EXPECT_TRUE(map_a[1] + map_a[2] <= map_b[1] || map_b[1] + map_b[2] <= map_a[1])
        << map_a[1] << " " << map_b[1];
    EXPECT_EQ(ctl("config get " + a + " volatile.idmap.base"), std::to_string(map_a[1]) + "\n");
    int st = -1;
    // Only lodge writes the record; nobody may put another container onto a's ids.
    EXPECT_TRUE(
        contains(ctl("config set " + a + " volatile.idmap.base=1000000", &st), "read-only"));
    EXPECT_NE(st, 0);
    std::string out =
        ctl("config set " + plain + " security.idmap.base=" + std::to_string(map_a[1]), &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "security.idmap.base") && contains(out, a)) << out;

    // Kept across a restart.
    EXPECT_EQ(ctl("restart " + a), "");
    EXPECT_EQ(uid_map(a), map_a);
    // Returned to the pool on delete: the next isolated container may take it.
    unsigned long freed = map_a[1];
    EXPECT_EQ(ctl("delete --force " + a), "");
    std::string c = make("iso-c", "security.idmap.isolated=true");
    ASSERT_TRUE(start(c)) << skip_reason;
    auto map_c = uid_map(c);
    ASSERT_EQ(map_c.size(), 3u);
    EXPECT_EQ(map_c[1], freed); // first fit: the lowest free range
    EXPECT_NE(map_c[1], map_b[1]);
}

TEST_F(BusSecurityTest, BasesThatMakeRootAHostSystemIdAreRefused) {
    std::string n = make("base");
    int st = -1;
    for (auto* bad :
         {"security.idmap.base=1000", "security.idmap.base=0", "security.idmap.base=65535",
          "security.idmap.size=100", "security.idmap.size=99999999999"}) {
        std::string out = ctl("config set " + n + " " + bad, &st);
        EXPECT_NE(st, 0) << bad;
        EXPECT_TRUE(contains(out, std::string(bad).substr(0, std::string(bad).find('=')))) << out;
    }
    std::string other = unique_name("base-create");
    std::string out = ctl("create " + other + " -c security.idmap.base=1000", &st);
    if (st == 0)
        created.push_back(other);
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "security.idmap.base")) << out;
    EXPECT_EQ(ctl("config set " + n + " security.idmap.base=2000000"), "");
    EXPECT_EQ(ctl("config get " + n + " security.idmap.base"), "2000000\n");

    // A container that has one from before the check starts no more, and says why.
    std::string file = container_dir(n) + "/config.json";
    auto j = nlohmann::json::parse(read_text(file));
    j["config"]["security.idmap.base"] = "1000";
    write_file_atomic(file, j.dump(2), 0600);
    daemon.reset();
    start_lodged();
    out = ctl("start " + n, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "security.idmap.base")) << out;
    EXPECT_TRUE(contains(ctl("status " + n), "stopped"));
}

// Restart of a stopped container starts it and answers with the method's signature ("s"): it
// used to reply with no arguments, which sd-bus refuses to send (ENOMSG).
TEST_F(BusSecurityTest, RestartOfAStoppedContainerIsAnswered) {
    std::string n = make("restart");
    int st = -1;
    std::string out = sh("busctl --system call -- io.lodge1 /io/lodge1 io.lodge1.Manager "
                         "RestartContainer si " +
                             n + " -1 2>&1",
                         &st);
    if (!restarted(n, st, out))
        GTEST_SKIP() << skip_reason;
}

// ---- a real polkitd --------------------------------------------------------------------------

constexpr const char* polkitd_binary = "/usr/lib/polkit-1/polkitd";

class PolkitTest : public BusSecurityTest {
protected:
    void start_lodged() override {
        if (!exists(polkitd_binary))
            GTEST_SKIP() << "no polkitd (Debian package polkitd)";
        if (!exists("/etc/polkit-1/rules.d") || !exists("/usr/share/polkit-1/actions"))
            GTEST_SKIP() << "polkit's rule and action directories are missing";
        // The bus lets polkitd own its name (the private bus reads only our policy dir).
        sh("cp /usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf " + bus->dir +
           "/policy/ && busctl --system call org.freedesktop.DBus /org/freedesktop/DBus "
           "org.freedesktop.DBus ReloadConfig");
        dir = TestRoot::get().dir + "/" + unique_name("polkit");
        sh("mkdir -p " + dir + "/rules " + dir + "/actions " + dir + "/empty && cp " +
           env_path("LODGE_DBUS_DIR") + "/io.lodge1.policy " + dir + "/actions/ && chmod 755 " +
           dir + " " + dir + "/*");
        write_file_atomic(dir + "/rules/50-lodge-test.rules",
                          "polkit.addRule(function(action, subject) {\n"
                          "  if (action.id.indexOf(\"io.lodge1.\") == 0 && subject.user == "
                          "\"nobody\")\n"
                          "    return polkit.Result.YES;\n"
                          "});\n",
                          0644);
        polkitd = fork();
        if (polkitd == 0) {
            // Our rules and actions, seen by this polkitd only: the host's stay untouched.
            int log = ::open((dir + "/polkitd.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0 || unshare(CLONE_NEWNS) < 0 ||
                mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0 ||
                mount((dir + "/rules").c_str(), "/etc/polkit-1/rules.d", nullptr, MS_BIND,
                      nullptr) < 0 ||
                mount((dir + "/empty").c_str(), "/usr/share/polkit-1/rules.d", nullptr, MS_BIND,
                      nullptr) < 0 ||
                mount((dir + "/actions").c_str(), "/usr/share/polkit-1/actions", nullptr, MS_BIND,
                      nullptr) < 0) {
                std::perror("polkitd setup");
                _exit(126);
            }
            execl(polkitd_binary, polkitd_binary, nullptr);
            _exit(127);
        }
        bool up = eventually(
            [&] {
                int st = -1;
                sh("busctl --system status org.freedesktop.PolicyKit1 >/dev/null 2>&1", &st);
                return st == 0 || waitpid(polkitd, nullptr, WNOHANG) == polkitd;
            },
            30);
        int st = -1;
        sh("busctl --system status org.freedesktop.PolicyKit1 >/dev/null 2>&1", &st);
        if (!up || st != 0)
            GTEST_SKIP() << "polkitd does not run here: " << read_text(dir + "/polkitd.log");
        BusSecurityTest::start_lodged();
    }
    void TearDown() override {
        BusSecurityTest::TearDown();
        if (polkitd > 0) {
            kill(polkitd, SIGTERM);
            waitpid(polkitd, nullptr, 0);
        }
        if (!dir.empty())
            sh("rm -rf " + dir);
    }
    std::string busctl_as(uid_t uid, const std::string& args, int* st) {
        return sh(as_user(uid, "busctl --system --timeout=120 -- " + args + " 2>&1"), st);
    }
    std::string dir;
    pid_t polkitd = -1;
};

TEST_F(PolkitTest, AnAuthorizedRestartOfAStoppedContainerIsAnswered) {
    std::string n = make("pk-restart", secrets);
    int st = -1;
    // Restart authorizes, then starts: one polkit answer must do for both.
    std::string out = busctl_as(
        nobody, "call io.lodge1 /io/lodge1 io.lodge1.Manager RestartContainer si " + n + " -1",
        &st);
    if (!restarted(n, st, out))
        GTEST_SKIP() << skip_reason;
    // The same on the container object, with the container running.
    out = busctl_as(nobody,
                    "call io.lodge1 " + object_path(n) + " io.lodge1.Container Restart i 30", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("status " + n), "State: running"));

    // The rule lets nobody read the secrets; anyone else is refused by polkit.
    out = busctl_as(nobody, "call io.lodge1 /io/lodge1 io.lodge1.Manager GetContainerConfig s " + n,
                    &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "SECRET-env")) << out;
    out = busctl_as(daemon_uid,
                    "call io.lodge1 /io/lodge1 io.lodge1.Manager GetContainerConfig s " + n, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Access denied")) << out; // busctl's words for AccessDenied
    // lodgectl shows lodged's message: polkit's answer.
    std::string as_daemon = as_user(daemon_uid, env_path("LODGE_LODGECTL") + " ");
    out = sh(as_daemon + "config show " + n + " 2>&1", &st);
    EXPECT_FALSE(contains(out, "SECRET")) << out;
    EXPECT_TRUE(contains(out, "limits.processes: 100")) << out;
    out = sh(as_daemon + "stop --force " + n + " 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Interactive authentication required") ||
                contains(out, "Not authorized by polkit"))
        << out;
    EXPECT_TRUE(contains(ctl("status " + n), "State: running"));
    out = busctl_as(
        nobody, "call io.lodge1 /io/lodge1 io.lodge1.Manager StopContainer sib " + n + " -1 true",
        &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
}

} // namespace
