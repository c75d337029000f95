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

// Issue 7: lxcfs appearing, crashing and coming back while containers run.
TEST_F(LodgedTest, LxcfsIsFollowedLive) {
    if (!exists("/usr/bin/lxcfs") || !exists("/dev/fuse"))
        GTEST_SKIP() << "needs lxcfs and /dev/fuse";
    std::string n = make("lxlive"), p = make("lxlivep");
    ctl("create " + n + " -c limits.memory=256MiB");
    ctl("create " + p + " -c limits.memory=256MiB -c security.privileged=true");
    ctl("start " + n);
    ctl("start " + p);
    // A systemd guest too, when the Debian rootfs is at hand: it must stay up throughout.
    std::string d;
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (tarball && exists(tarball)) {
        d = make("lxlived");
        ctl("create " + d + " " + tarball + " -c limits.memory=256MiB");
        ctl("start " + d);
    }
    auto system_state = [&] {
        return sh(env_path("LODGE_LODGECTL") + " exec " + d +
                  " -- sh -c 'for i in $(seq 600); do s=$(timeout 120 systemctl "
                  "is-system-running --wait 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != offline ] && "
                  "break; sleep 0.2; "
                  "done; echo $s'");
    };
    if (!d.empty()) {
        EXPECT_EQ(system_state(), "running\n");
    }
    const std::string mnt = TestRoot::get().dir + "/lxcfs"; // LODGE_LXCFS_DIR
    sh("mkdir -p " + mnt);
    auto start_lxcfs = [&] {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/usr/bin/lxcfs", "lxcfs", "-f", "-p",
                  (TestRoot::get().dir + "/lxcfs.pid").c_str(), mnt.c_str(), nullptr);
            _exit(127);
        }
        return pid;
    };
    // Runs `script` in the container until it prints `want` (bounded against a hang only):
    // lodged gives the test no event for "binds moved".
    auto eventually = [&](const std::string& c, const std::string& script,
                          const std::string& want) {
        std::string out;
        wait_until([&] {
            out = sh(env_path("LODGE_LODGECTL") + " exec " + c + " -- sh -c '" + script + "' 2>&1");
            return contains(out, want);
        });
        return out;
    };
    const std::string meminfo = "grep MemTotal /proc/meminfo";
    for (auto& c : {n, p})
        EXPECT_FALSE(
            contains(sh(env_path("LODGE_LODGECTL") + " exec " + c + " -- cat /proc/self/mountinfo"),
                     "fuse.lxcfs"));
    // lxcfs appears after the containers started: the binds arrive without a restart.
    pid_t lxcfs = start_lxcfs();
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, meminfo, "262144 kB"), "262144 kB")) << c;
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 /io/lodge1 io.lodge1.Manager LXCFS"),
              "b true\n");
    EXPECT_TRUE(contains(ctl("status " + n), "LXCFS: bound")) << ctl("status " + n);
    // lxcfs dies: reads fall back to the kernel's files instead of failing with ENOTCONN.
    kill(lxcfs, SIGKILL);
    waitpid(lxcfs, nullptr, 0);
    const std::string reads = "cat /proc/meminfo /proc/uptime /proc/cpuinfo >/dev/null && "
                              "! grep -q fuse.lxcfs /proc/self/mountinfo && echo reads-ok";
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, reads, "reads-ok"), "reads-ok")) << c;
    EXPECT_EQ(sh("busctl --system get-property io.lodge1 /io/lodge1 io.lodge1.Manager LXCFS"),
              "b false\n");
    // lxcfs comes back (its dead mount cleared first, as a service manager would): binds too.
    sh("umount -l " + mnt + " 2>/dev/null");
    lxcfs = start_lxcfs();
    for (auto& c : {n, p})
        EXPECT_TRUE(contains(eventually(c, meminfo, "262144 kB"), "262144 kB")) << c;
    if (!d.empty()) {
        EXPECT_TRUE(contains(eventually(d, meminfo, "262144 kB"), "262144 kB"));
        EXPECT_EQ(system_state(), "running\n") << "the systemd guest stayed up";
    }
    // A lodged restart while lxcfs is down reconciles at start.
    daemon->kill9();
    kill(lxcfs, SIGKILL);
    waitpid(lxcfs, nullptr, 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_TRUE(contains(eventually(n, reads, "reads-ok"), "reads-ok"));
    sh("umount -l " + mnt + " 2>/dev/null; rm -f " + TestRoot::get().dir + "/lxcfs.pid");
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

TEST_F(LodgedTest, KillingLodgedNeverTouchesARunningContainer) {
    std::string n = make("crash");
    ctl("create " + n);
    ctl("start " + n);
    auto before = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    ASSERT_EQ(before["state"], "running");
    daemon->kill9();
    // The container's PID 1 is alive while lodged is gone.
    EXPECT_EQ(kill(before["leader"].get<pid_t>(), 0), 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    auto after = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    EXPECT_EQ(after["state"], "running");
    EXPECT_EQ(after["leader"], before["leader"]);
    EXPECT_EQ(after["boot_id"], before["boot_id"]);
    int st = 0;
    ctl("stop " + n, &st);
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("status " + n), "State: stopped"));
}

// A container that failed shows the same state and reason whether the lodged that shows it
// saw it fail or started afterwards (it was "error" before a lodged restart and "stopped"
// after: the state file was read in two places that disagreed). Two ways to fail: PID 1
// cannot be started at all, and a restart finds it cannot start PID 1 again.
TEST_F(LodgedTest, FailedContainerShowsTheSameAfterLodgedRestart) {
    std::string never = make("nostart"), again = make("norestart");
    int st = 0;
    ASSERT_EQ(ctl("create " + never, &st), "Created container " + never + "\n");
    ASSERT_EQ(ctl("create " + again, &st), "Created container " + again + "\n");
    auto init_of = [](const std::string& n) {
        return TestRoot::get().dir + "/state/containers/" + n + "/rootfs/sbin/init";
    };
    ASSERT_EQ(::unlink(init_of(never).c_str()), 0);
    std::string out = ctl("start " + never, &st);
    EXPECT_NE(st, 0) << out;
    ASSERT_EQ(ctl("start " + again, &st), "");
    ASSERT_EQ(::unlink(init_of(again).c_str()), 0);
    ctl("restart " + again);
    auto show = [](const std::string& n) {
        return nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
    };
    // The failed restart reaches lodged when the supervisor's watch stream ends.
    ASSERT_TRUE(wait_until([&] { return show(again).value("state", "") == "error"; }))
        << show(again).dump();
    auto before_never = show(never), before_again = show(again);
    ASSERT_EQ(before_never.value("state", ""), "error") << before_never.dump();
    EXPECT_FALSE(before_never.value("reason", "").empty());
    EXPECT_TRUE(contains(before_again.value("reason", ""), "restart failed"))
        << before_again.dump();

    daemon.reset();
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    for (auto& [n, before] : {std::pair{never, before_never}, std::pair{again, before_again}}) {
        auto after = show(n);
        EXPECT_EQ(after.value("state", ""), before.value("state", "")) << n << ": " << after.dump();
        EXPECT_EQ(after.value("reason", ""), before.value("reason", "")) << n;
    }
}

// kill -9 of lodged while it creates, starts or stops: whatever moment the kill lands on, the
// restarted lodged shows each container whole or not at all, and its real state.
TEST_F(LodgedTest, KillNineDuringOperationsLosesNothing) {
    std::string base = make("k9");
    const std::string lodgectl = env_path("LODGE_LODGECTL");
    const std::string containers = TestRoot::get().dir + "/state/containers/";
    for (int round = 0; round < 8; round++) {
        std::string n = base + "x" + std::to_string(round);
        created.push_back(n);
        // The kill lands after a different number of microseconds each round.
        std::string op =
            round % 2 ? "create " + n + " && " + lodgectl + " start " + n : "create " + n;
        // (Deliberately a delay, not a wait: any moment must do. The host has no usleep.)
        char delay[32];
        std::snprintf(delay, sizeof delay, "%.4f", round * 0.0025);
        sh("(" + lodgectl + " " + op + " >/dev/null 2>&1 &) ; sleep " + delay);
        daemon->kill9();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
        std::string list = ctl("list --no-legend");
        bool listed = contains(list, n + " ");
        // Listed means complete on disk; not listed means nothing of it remains.
        EXPECT_EQ(listed, exists(containers + n + "/config.json")) << list;
        if (listed) {
            EXPECT_TRUE(exists(containers + n + "/rootfs/sbin/init")) << n;
        } else {
            EXPECT_FALSE(exists(containers + n)) << n;
        }
        // Leftovers go in workers right after the start: wait for them (bounded).
        EXPECT_TRUE(wait_until_sh("[ \"$(ls -A " + containers + " | grep -c '^\\.')\" = 0 ]"))
            << "an unfinished create was left behind";
        // A container that runs is reported running, with its real PID 1.
        auto j = nlohmann::json::parse(ctl("show " + n + " --json"), nullptr, false);
        if (j.is_object() && j.value("state", "") == "running") {
            EXPECT_EQ(kill(j["leader"].get<pid_t>(), 0), 0);
            int st = 0;
            ctl("stop " + n + " --force", &st);
            EXPECT_EQ(st, 0);
        }
    }
}

TEST_F(LodgedTest, ExitsWhenIdleAndNoContainerRuns) {
    daemon.reset();
    auto idle = std::make_unique<Lodged>(std::vector<std::string>{}, "1");
    ASSERT_TRUE(idle->wait_ready());
    int status = 0;
    // It exits on its own after one idle second; waitpid is the event.
    ASSERT_EQ(waitpid(idle->pid, &status, 0), idle->pid);
    idle->pid = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
}

TEST_F(LodgedTest, SocketActivationHandsOverTheDevlxdSocket) {
    daemon.reset();
    std::string sockpath = TestRoot::get().dir + "/" + unique_name("devlxd.sock");
    // systemd-socket-activate passes on only the variables named with -E.
    std::vector<std::string> prefix{"systemd-socket-activate", "-l", sockpath, "--fdname=devlxd"};
    for (const char* var : {"NOTIFY_SOCKET", "DBUS_SYSTEM_BUS_ADDRESS", "LODGE_STATE_DIR",
                            "LODGE_RUNTIME_DIR", "LODGE_LOG_DIR", "LODGE_LXCFS_DIR",
                            "LODGE_SUPERVISOR", "LODGE_CGROUP_ROOT", "LODGE_IDLE_TIMEOUT"}) {
        prefix.push_back("-E");
        prefix.push_back(var);
    }
    auto activated = std::make_unique<Lodged>(prefix);
    // systemd-socket-activate starts lodged on the first connection.
    wait_until_sh("[ -S " + sockpath + " ]");
    Fd c(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sockpath.c_str());
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_TRUE(activated->wait_ready());
    // systemd-socket-activate exec'd lodged in its own process, the listener at fd 3.
    char link[64] = {};
    readlink(("/proc/" + std::to_string(activated->pid) + "/fd/3").c_str(), link, sizeof link - 1);
    EXPECT_TRUE(contains(link, "socket:")) << link;
    EXPECT_TRUE(contains(ctl("list"), "containers listed"));
    activated.reset();
    unlink(sockpath.c_str());
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
}

// nic devices through lodged (CONTRACT §3): volatile keys made and kept by lodged, live plug
// and unplug, the host name mirrored into Config while running, GetAddresses and the list
// columns, and refusals that leave config.json as it was. The bridge is made by the test.
TEST_F(LodgedTest, NicsHotPlugAddressesAndRefusals) {
    struct Bridge {
        std::string name = "lnbd" + std::to_string(getpid());
        bool ok = false;
        Bridge() {
            int st = 0;
            sh("ip link add " + name + " type bridge && ip link set " + name + " up", &st);
            ok = st == 0;
        }
        ~Bridge() { sh("ip link del " + name + " 2>/dev/null"); }
    } br;
    if (!br.ok)
        GTEST_SKIP() << "cannot create a bridge";
    std::string n = make("nic");
    ctl("create " + n);
    int st = 0;
    EXPECT_EQ(ctl("device add " + n + " net0 type=nic nictype=bridged parent=" + br.name, &st), "");
    ASSERT_EQ(st, 0);
    EXPECT_EQ(ctl("config get " + n + " volatile.net0.name"), "eth0\n");
    std::string mac = ctl("config get " + n + " volatile.net0.hwaddr");
    EXPECT_TRUE(mac.size() == 18 && is_lxd_mac(mac.substr(0, 17))) << mac;

    ASSERT_EQ(ctl("start " + n, &st), "");
    auto in = [&](const std::string& cmd) {
        return sh(env_path("LODGE_LODGECTL") + " exec " + n + " -- sh -c '" + cmd + "'");
    };
    EXPECT_EQ(in("cat /sys/class/net/eth0/address"), mac);
    std::string host = ctl("config get " + n + " volatile.net0.host_name");
    EXPECT_TRUE(host.size() == 13 && is_veth_name(host.substr(0, 12))) << host;
    host.pop_back();
    EXPECT_TRUE(contains(sh("readlink /sys/class/net/" + host + "/master"), br.name));
    std::string status = ctl("status " + n);
    EXPECT_TRUE(contains(status, "NICs: net0: eth0 " + mac.substr(0, 17) + " (bridged on " +
                                     br.name + ", host " + host + ")"))
        << status;

    // Hot plug: in at once, with its volatile keys kept; out at once, keys and host end gone.
    EXPECT_EQ(ctl("device add " + n + " net1 type=nic nictype=p2p", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(ctl("config get " + n + " volatile.net1.name"), "eth1\n");
    EXPECT_EQ(in("ls /sys/class/net | tr \"\\n\" \" \""), "eth0 eth1 lo ");
    std::string host1 = ctl("config get " + n + " volatile.net1.host_name");
    host1.pop_back();
    EXPECT_TRUE(exists("/sys/class/net/" + host1)) << host1;
    EXPECT_EQ(ctl("device remove " + n + " net1", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(in("ls /sys/class/net | tr \"\\n\" \" \""), "eth0 lo ");
    EXPECT_FALSE(exists("/sys/class/net/" + host1)) << host1;
    EXPECT_EQ(ctl("config get " + n + " volatile.net1.name"), "\n");

    // Addresses from inside the container's namespace: GetAddresses and the list columns.
    in("echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad; ip addr add 169.254.9.9/16 dev eth0; "
       "ip -6 addr add fd99::9/64 dev eth0");
    std::string path = "/io/lodge1/container/";
    for (char ch : n)
        path += ch == '-' ? std::string("_2d") : std::string(1, ch);
    std::string addrs =
        sh("busctl --system call io.lodge1 " + path + " io.lodge1.Container GetAddresses 2>&1");
    EXPECT_TRUE(contains(addrs, "2 4 169 254 9 9")) << addrs;
    EXPECT_TRUE(contains(addrs, "10 16 253 153 0 0 0 0 0 0 0 0 0 0 0 0 0 9")) << addrs;
    auto list = nlohmann::json::parse(ctl("list --json"), nullptr, false);
    bool found = false;
    for (auto& row : list)
        if (row["name"] == n) {
            found = true;
            EXPECT_EQ(row["ipv4"], nlohmann::json::array({"169.254.9.9"})) << row;
            EXPECT_EQ(row["ipv6"], nlohmann::json::array({"fd99::9"})) << row;
        }
    EXPECT_TRUE(found);
    std::string text = ctl("list");
    EXPECT_TRUE(contains(text, "IPV4") && contains(text, "169.254.9.9") &&
                contains(text, "fd99::9"))
        << text;

    // Refusals name the device and the key and leave config.json untouched.
    std::string config = TestRoot::get().dir + "/state/containers/" + n + "/config.json";
    std::string before = read_text(config);
    std::string missing = "lnno" + std::to_string(getpid());
    struct Bad {
        std::string args, expect;
    };
    for (auto& [args, expect] :
         {Bad{"nictype=bridged parent=" + missing, "\"parent\" \"" + missing + "\" does not exist"},
          Bad{"nictype=bridged parent=lo", "\"parent\" \"lo\" is not a bridge"},
          Bad{"nictype=p2p name=eth0", "\"name\" \"eth0\" is already used by device \"net0\""},
          Bad{"nictype=p2p hwaddr=zz:16:3e:00:00:01", "invalid \"hwaddr\""},
          Bad{"nictype=p2p mtu=70000", "invalid \"mtu\""},
          Bad{"nictype=vxlan", "unknown \"nictype\" \"vxlan\""}}) {
        std::string out = ctl("device add " + n + " bad type=nic " + args, &st);
        EXPECT_NE(st, 0) << args;
        EXPECT_TRUE(contains(out, "Device \"bad\": ") && contains(out, expect))
            << args << ": " << out;
    }
    EXPECT_EQ(read_text(config), before) << "a refused device changed config.json";

    // Restart: the same name and MAC (persisted), a new host end (per boot).
    EXPECT_EQ(ctl("stop --force " + n, &st), "");
    EXPECT_FALSE(exists("/sys/class/net/" + host)) << host;
    EXPECT_EQ(ctl("config get " + n + " volatile.net0.host_name"), "\n");
    ASSERT_EQ(ctl("start " + n, &st), "");
    EXPECT_EQ(in("cat /sys/class/net/eth0/address"), mac);
    std::string host2 = ctl("config get " + n + " volatile.net0.host_name");
    EXPECT_NE(host2, host + "\n");
    EXPECT_TRUE(host2.size() == 13 && is_veth_name(host2.substr(0, 12))) << host2;
    EXPECT_TRUE(contains(read_text(config), mac.substr(0, 17)));
    EXPECT_FALSE(contains(read_text(config), "host_name")) << "host names are never on disk";
    ctl("stop --force " + n);
}

} // namespace
