// Tier 1: lodged on a private dbus-daemon with the project's bus policy, driven through
// lodgectl and busctl: every verb, its errors, concurrency, a kill -9 of lodged with a
// container running, idle exit and socket activation.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"
#include "nic-shapes.hpp"

#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

class LodgedTest : public LodgedFixture {
protected:
    std::string make(const std::string& base) { return name_container(base); }
};

TEST_F(LodgedTest, CreateStartStopDelete) {
    std::string n = make("d1");
    int st = 0;
    EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("list --no-legend"), n + " stopped")) << ctl("list");
    EXPECT_EQ(ctl("start " + n, &st), "");
    EXPECT_EQ(st, 0);
    std::string list = ctl("list --json");
    auto j = nlohmann::json::parse(list, nullptr, false);
    ASSERT_TRUE(j.is_array()) << list;
    bool found = false;
    for (auto& c : j)
        if (c["name"] == n) {
            found = true;
            EXPECT_EQ(c["state"], "running");
            EXPECT_GT(c["leader"].get<int>(), 0);
        }
    EXPECT_TRUE(found) << list;
    EXPECT_TRUE(contains(ctl("status " + n), "State: running"));
    EXPECT_EQ(ctl("stop " + n + " --timeout 30", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
    EXPECT_EQ(ctl("delete " + n, &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_FALSE(exists(TestRoot::get().dir + "/state/containers/" + n));
}

// A stop returns only once the supervisor is gone, so the next start never meets it, and a
// started container takes an exec at once: 40 forced and 10 graceful rounds, each of which
// must succeed (issue 12).
TEST_F(LodgedTest, StartRightAfterStopAlwaysSucceeds) {
    std::string n = make("again");
    int st = 0;
    ASSERT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    for (int i = 0; i < 50; i++) {
        bool graceful = i >= 40;
        std::string out = ctl("start " + n, &st);
        ASSERT_EQ(st, 0) << "round " << i << ": start: " << out;
        // Started means usable: lodged knows the container's cgroup before Start returns.
        out = ctl("exec " + n + " -- true", &st);
        ASSERT_EQ(st, 0) << "round " << i << ": exec: " << out;
        out = ctl(graceful ? "stop --timeout 60 " + n : "stop --force " + n, &st);
        ASSERT_EQ(st, 0) << "round " << i << ": stop: " << out;
    }
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
}

// The private bus activates only what its own directory holds: never a lodged (or anything
// else) installed on the host through the standard activation directories (issue 12).
TEST_F(LodgedTest, PrivateBusActivatesOnlyItsOwnServices) {
    std::string service = bus->dir + "/services/io.lodge1.TestActivation.service";
    ASSERT_TRUE(write_file_atomic(service, "[D-BUS Service]\nName=io.lodge1.TestActivation\n"
                                           "Exec=/bin/false\nUser=root\n") == 0);
    int st = 0;
    sh("busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus "
       "ReloadConfig",
       &st);
    ASSERT_EQ(st, 0);
    std::string out = sh("busctl --system --json=short call org.freedesktop.DBus "
                         "/org/freedesktop/DBus org.freedesktop.DBus ListActivatableNames",
                         &st);
    ASSERT_EQ(st, 0) << out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_object() && j["data"].is_array() && j["data"][0].is_array()) << out;
    std::set<std::string> names;
    for (auto& n : j["data"][0])
        names.insert(n.get<std::string>());
    EXPECT_EQ(names, (std::set<std::string>{"org.freedesktop.DBus", "io.lodge1.TestActivation"}))
        << out;
}

TEST_F(LodgedTest, CreateFromDirectoryTarballAndLxdImages) {
    const std::string src = TestRoot::get().dir + "/" + unique_name("imgsrc");
    int st = 0;
    sh("mkdir -p " + src + " && bash " + env_path("LODGE_FIXTURES") + "/make-busybox-rootfs.sh " +
           src + "/rootfs",
       &st);
    ASSERT_EQ(st, 0);
    sh("printf 'architecture: x86_64\\ncreation_date: 1700000000\\nproperties:\\n  os: "
       "BusyBox\\n  release: \"1.35\"\\n  description: test image\\n' > " +
       src + "/metadata.yaml && tar -C " + src + "/rootfs -czf " + src +
       "/plain.tar.gz . && tar -C " + src + " -cJf " + src +
       "/unified.tar.xz metadata.yaml rootfs && tar -C " + src + " -cf " + src +
       "/meta.tar metadata.yaml");
    struct Case {
        std::string base, args;
    };
    for (auto& [base, args] :
         {Case{"fromdir", src + "/rootfs"}, Case{"fromtar", src + "/plain.tar.gz"},
          Case{"unified", src + "/unified.tar.xz"},
          Case{"split", src + "/meta.tar " + src + "/plain.tar.gz"}}) {
        std::string n = make(base.c_str());
        EXPECT_EQ(ctl("create " + n + " " + args, &st), "Created container " + n + "\n");
        EXPECT_EQ(st, 0);
        EXPECT_EQ(ctl("start " + n, &st), "");
        EXPECT_EQ(st, 0) << base;
        EXPECT_EQ(sh(env_path("LODGE_LODGECTL") + " exec " + n + " -- readlink /sbin/init 2>&1"),
                  "../bin/busybox\n");
        if (base == "unified" || base == "split") {
            EXPECT_EQ(ctl("config get " + n + " image.os"), "BusyBox\n") << base;
            EXPECT_EQ(ctl("config get " + n + " image.release"), "1.35\n") << base;
        }
        ctl("stop --force " + n);
    }
    // A source that is no image is refused with the reason, and nothing is left.
    sh("head -c 4096 /dev/urandom > " + src + "/garbage.tar");
    std::string n = make("garbage");
    EXPECT_NE(ctl("create " + n + " " + src + "/garbage.tar", &st), "");
    EXPECT_NE(st, 0);
    EXPECT_FALSE(exists(TestRoot::get().dir + "/state/containers/" + n));
    EXPECT_TRUE(contains(ctl("create " + n + " /no/such/path", &st), "Cannot open /no/such/path"));
    EXPECT_NE(st, 0);
    sh("rm -rf " + src);
}

TEST_F(LodgedTest, ErrorsAreClearAndNonZero) {
    int st = 0;
    EXPECT_EQ(ctl("create 1abc", &st), "Container name must not start with a digit\n");
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("create a_b", &st), "letters, digits and '-'"));
    EXPECT_NE(st, 0);
    EXPECT_EQ(ctl("start nosuch", &st), "No container \"nosuch\"\n");
    EXPECT_NE(st, 0);
    std::string n = make("err");
    ctl("create " + n);
    EXPECT_EQ(ctl("create " + n, &st), "Container \"" + n + "\" already exists\n");
    EXPECT_NE(st, 0);
    EXPECT_EQ(ctl("config set " + n + " no.such=1", &st), "Unknown config key \"no.such\"\n");
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("config set " + n + " limits.memory=lots", &st), "limits.memory"));
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("config set " + n + " volatile.x=1", &st), "read-only"));
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("stop " + n, &st), "is not running"));
    EXPECT_NE(st, 0);
    ctl("start " + n);
    EXPECT_TRUE(contains(ctl("start " + n, &st), "already running"));
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("delete " + n, &st), "is running"));
    EXPECT_NE(st, 0);
    EXPECT_EQ(ctl("delete --force " + n, &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("frobnicate"), "Unknown command"));
}

TEST_F(LodgedTest, ConfigSetGetUnsetAndLiveLimits) {
    std::string n = make("cfg");
    ctl("create " + n + " -c user.a=1 -c environment.X=y");
    EXPECT_EQ(ctl("config get " + n + " user.a"), "1\n");
    ctl("config set " + n + " 'user.b=two words'");
    EXPECT_EQ(ctl("config get " + n + " user.b"), "two words\n");
    ctl("config unset " + n + " user.a");
    EXPECT_EQ(ctl("config get " + n + " user.a"), "\n");
    auto cfg = nlohmann::json::parse(ctl("config show " + n + " --json"), nullptr, false);
    // Besides what was set, the instance-id lodge made at create (volatile, 36-char UUID).
    ASSERT_TRUE(cfg.is_object());
    EXPECT_EQ(cfg.value("volatile.cloud-init.instance-id", "").size(), 36u) << cfg;
    auto set_keys = cfg;
    set_keys.erase("volatile.cloud-init.instance-id");
    EXPECT_EQ(set_keys, (nlohmann::json{{"environment.X", "y"}, {"user.b", "two words"}}));
    // The file on disk holds the same, written atomically.
    auto disk = nlohmann::json::parse(
        read_text(TestRoot::get().dir + "/state/containers/" + n + "/config.json"), nullptr, false);
    EXPECT_EQ(disk["config"], cfg);
    // limits.* reach a running container at once.
    ctl("start " + n);
    int st = 0;
    ctl("config set " + n + " limits.processes=77", &st);
    EXPECT_EQ(st, 0);
    std::string pids =
        "/sys/fs/cgroup/pids/" + TestRoot::get().cgroup + "/lodge-" + n + ".scope/payload/pids.max";
    if (exists(pids)) {
        EXPECT_EQ(read_text(pids), "77\n");
    }
}

TEST_F(LodgedTest, DevicesAddListRemove) {
    std::string n = make("dev");
    ctl("create " + n);
    int st = 0;
    EXPECT_EQ(ctl("device add " + n + " data type=disk source=/srv path=/mnt/srv", &st), "");
    EXPECT_EQ(st, 0);
    auto devs = nlohmann::json::parse(ctl("device list " + n + " --json"), nullptr, false);
    EXPECT_EQ(devs["data"]["path"], "/mnt/srv") << devs;
    EXPECT_TRUE(contains(ctl("device add " + n + " data type=disk source=/a path=/b", &st),
                         "already exists"));
    EXPECT_NE(st, 0);
    EXPECT_TRUE(
        contains(ctl("device add " + n + " bad type=disk source=/a path=rel", &st), "absolute"));
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(ctl("device add " + n + " x type=floppy", &st), "unknown type"));
    EXPECT_NE(st, 0);
    EXPECT_EQ(ctl("device remove " + n + " data", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("device remove " + n + " data", &st), "No device"));
    EXPECT_NE(st, 0);
    EXPECT_EQ(ctl("device list " + n + " --json"), "{}\n");
}

// LXD's positional device type, per-verb --help, --json wherever something is printed, and
// the verb table's argument checks (issue 12).
TEST_F(LodgedTest, CliHelpJsonAndPositionalDeviceType) {
    std::string n = make("cli");
    int st = 0;
    auto created = nlohmann::json::parse(ctl("create " + n + " --json", &st), nullptr, false);
    EXPECT_EQ(st, 0);
    EXPECT_EQ(created["name"], n) << created;
    EXPECT_EQ(ctl("device add " + n + " data disk source=/srv path=/mnt/srv", &st), "");
    EXPECT_EQ(st, 0);
    auto devs = nlohmann::json::parse(ctl("device list " + n + " --json"), nullptr, false);
    EXPECT_EQ(devs["data"]["type"], "disk") << devs;
    EXPECT_EQ(devs["data"]["source"], "/srv") << devs;
    EXPECT_TRUE(contains(ctl("device add " + n + " x floppy", &st), "unknown type"));
    EXPECT_NE(st, 0);

    ctl("config set " + n + " user.greeting=hello");
    EXPECT_EQ(ctl("config get " + n + " user.greeting --json"), "\"hello\"\n");
    EXPECT_EQ(ctl("config get " + n + " user.unset --json"), "null\n");
    auto shown = nlohmann::json::parse(ctl("config show " + n + " --json"), nullptr, false);
    EXPECT_EQ(shown["user.greeting"], "hello") << shown;
    auto status = nlohmann::json::parse(ctl("status " + n + " --json"), nullptr, false);
    EXPECT_EQ(status["state"], "stopped") << status;

    // Each verb's --help is its own usage, printed without asking lodged anything.
    for (std::string verb :
         {"list", "status", "show", "create", "delete", "start", "stop", "restart", "reboot",
          "kill", "config", "device", "console", "exec", "shell", "enable", "disable"}) {
        std::string help = sh("DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent " +
                                  env_path("LODGE_LODGECTL") + " " + verb + " --help 2>&1",
                              &st);
        EXPECT_EQ(st, 0) << verb;
        EXPECT_EQ(help.rfind("Usage: lodgectl " + verb, 0), 0u) << help;
        EXPECT_TRUE(contains(ctl("--help"), "  " + verb)) << verb;
    }
    EXPECT_TRUE(contains(ctl("exec --help"), "-- COMMAND..."));
    // Too few or too many arguments: the usage, a failure, nothing sent.
    EXPECT_EQ(ctl("start", &st), "Usage: lodgectl start NAME...\n");
    EXPECT_EQ(st, 1);
    EXPECT_TRUE(contains(ctl("console " + n + " " + n, &st), "Usage: lodgectl console"));
    EXPECT_EQ(st, 1);
    EXPECT_TRUE(contains(ctl("frobnicate", &st), "Unknown command"));
    EXPECT_EQ(st, 1);
}

TEST_F(LodgedTest, ConsoleLogAndLiveConsole) {
    std::string n = make("con");
    ctl("create " + n);
    ctl("start " + n);
    // The busybox init's first words are in the log; waiting for them is waiting for boot.
    // The guest gives no event for "rcS ran".
    std::string log;
    EXPECT_TRUE(wait_until([&] {
        log = ctl("console " + n + " --show-log");
        return contains(log, "lodge-busybox: booted");
    })) << log;
    // Attached (stdin a pipe that stays open), the console streams what the guest writes.
    std::string out = TestRoot::get().dir + "/" + unique_name("console.out");
    sh("(sleep 180 | " + env_path("LODGE_LODGECTL") + " console " + n + " > " + out + " 2>&1 &)");
    EXPECT_TRUE(wait_until_sh("[ -s " + out + " ]")) << "the console never attached";
    auto pid = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false)["leader"];
    sh("nsenter -t " + std::to_string(pid.get<int>()) +
       " -a /bin/sh -c 'exec </dev/null 2>/dev/null; echo console-marker > /dev/console'");
    std::string got; // the file is the only thing to watch
    EXPECT_TRUE(wait_until([&] { return contains(got = read_text(out), "console-marker"); }))
        << got;
    // Stopping the container ends the attached client.
    ctl("stop " + n);
    sh("pkill -f 'lodgectl console " + n + "'");
}

TEST_F(LodgedTest, OthersAreRefusedWithoutPolkitButMayRead) {
    std::string n = make("auth");
    ctl("create " + n);
    std::string as_nobody =
        "setpriv --reuid=65534 --regid=65534 --clear-groups " + env_path("LODGE_LODGECTL") + " ";
    int st = 0;
    std::string out = sh(as_nobody + "start " + n + " 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "polkit")) << out;
    out = sh(as_nobody + "delete " + n + " 2>&1", &st);
    EXPECT_NE(st, 0);
    out = sh(as_nobody + "list -q 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, n)) << out;
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
}

TEST_F(LodgedTest, ExecStatusStreamsEnvironmentAndSignals) {
    std::string n = make("exec");
    ctl("create " + n);
    ctl("start " + n);
    const std::string exec = env_path("LODGE_LODGECTL") + " exec " + n + " ";
    int st = 0;
    // stdout and stderr stay apart; the command's exit status becomes lodgectl's.
    std::string out = sh(exec + "-- sh -c 'echo to-out; echo to-err >&2; exit 7' 2>/dev/null", &st);
    EXPECT_EQ(out, "to-out\n");
    EXPECT_EQ(st, 7);
    out = sh(exec + "-- sh -c 'echo to-out; echo to-err >&2' 2>&1 >/dev/null", &st);
    EXPECT_EQ(out, "to-err\n");
    EXPECT_EQ(sh("printf 'line one\\nline two\\n' | " + exec + "-- cat"), "line one\nline two\n");
    EXPECT_EQ(sh(exec + "--env FOO=bar --cwd /tmp -- sh -c 'echo $FOO $PWD $container'"),
              "bar /tmp lxc\n");
    // Only pipes reach the container: no file of the caller's.
    std::string links = sh(exec + "-- sh -c 'for i in 0 1 2; do readlink /proc/$$/fd/$i; done'");
    EXPECT_EQ(std::count(links.begin(), links.end(), '\n'), 3) << links;
    size_t pipes = 0;
    for (size_t pos = 0; (pos = links.find("pipe:", pos)) != std::string::npos; pos++)
        pipes++;
    EXPECT_EQ(pipes, 3u) << links;
    sh(exec + "-- no-such-command 2>/dev/null", &st);
    EXPECT_EQ(st, 127);
    sh(exec + "-- sh -c 'kill -9 $$'", &st);
    EXPECT_EQ(st, 137);
    // A signal to lodgectl reaches the command.
    pid_t client = fork();
    if (client == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execl(env_path("LODGE_LODGECTL").c_str(), "lodgectl", "exec", n.c_str(), "--", "sleep",
              "1000", nullptr);
        _exit(99);
    }
    // Wait (bounded) until the command runs in the container: nothing announces it.
    const std::string has_sleep =
        "has_sleep() { for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && "
        "return 0; done; return 1; }; ";
    sh(exec + "-- sh -c '" + has_sleep +
       "end=$(($(date +%s) + 180)); until has_sleep; do [ $(date +%s) -lt $end ] || exit 1; usleep "
       "10000; done'");
    kill(client, SIGTERM);
    int status = 0;
    ASSERT_EQ(waitpid(client, &status, 0), client);
    EXPECT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 143) << "SIGTERM reached the command";
    EXPECT_EQ(sh(exec + "-- sh -c '" + has_sleep + "has_sleep || echo none'"), "none\n");
    // With -t the command gets a pty of the container's own devpts.
    out = sh("echo 'tty; exit 3' | " + exec + "-t -- sh", &st);
    EXPECT_TRUE(contains(out, "/dev/pts/")) << out;
    EXPECT_EQ(st, 3);
    EXPECT_TRUE(contains(ctl("exec nosuch -- true", &st), "No container"));
    EXPECT_NE(st, 0);
    ctl("stop --force " + n);
    EXPECT_TRUE(contains(ctl("exec " + n + " -- true", &st), "is not running"));
    EXPECT_NE(st, 0);
}

TEST_F(LodgedTest, BusApiIsIntrospectableAndTyped) {
    std::string n = make("bus");
    ctl("create " + n);
    std::string intro = sh("busctl --system introspect io.lodge1 /io/lodge1 2>&1");
    EXPECT_TRUE(contains(intro, "io.lodge1.Manager")) << intro;
    EXPECT_TRUE(contains(intro, ".ListContainers")) << intro;
    std::string tree = sh("busctl --system tree io.lodge1 2>&1");
    EXPECT_TRUE(contains(tree, "/io/lodge1/container/")) << tree;
    std::string err = sh("busctl --system call io.lodge1 /io/lodge1 io.lodge1.Manager "
                         "GetContainer s nosuch 2>&1");
    EXPECT_TRUE(contains(err, "No container")) << err;
    std::string state = sh("busctl --system get-property io.lodge1 $(busctl --system call "
                           "io.lodge1 /io/lodge1 io.lodge1.Manager GetContainer s " +
                           n + " | cut -d'\"' -f2) io.lodge1.Container State 2>&1");
    EXPECT_EQ(state, "s \"stopped\"\n");
}

TEST_F(LodgedTest, ConcurrentCreatesOfOneNameCreateOne) {
    std::string n = make("race");
    std::string out =
        sh("for i in 1 2 3 4; do " + env_path("LODGE_LODGECTL") + " create " + n +
           " >/dev/null 2>&1 & done; wait; " + env_path("LODGE_LODGECTL") + " list --no-legend -q");
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    // The losers' work directories (and leftovers of earlier tests) go in workers: wait for
    // them, bounded.
    EXPECT_TRUE(wait_until_sh("[ \"$(ls -A " + TestRoot::get().dir +
                              "/state/containers | grep -c '^\\.')\" = 0 ]"))
        << "no half-made container left behind";
}

} // namespace
