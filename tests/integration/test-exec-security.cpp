// exec through lodged against a hostile or careless environment (security review findings 3, 5,
// 7 and 16): a guest FUSE trap on /root, `delete --force` with an exec session running, stdio
// descriptors that would open the host to the guest, and the exec helper's image.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <chrono>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <thread>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// A short deadline for the setup in the container, so the trap test takes seconds, not 30.
constexpr const char* setup_timeout = "3";

std::string readlink_str(const std::string& path) {
    char buf[512];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

// Polls `done` every 20 ms for at most `seconds`.
template <typename F> bool eventually(F done, int seconds) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
        if (done())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
}

std::vector<pid_t> host_pids() {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (!d)
        return out;
    while (struct dirent* e = ::readdir(d))
        if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
            out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
    ::closedir(d);
    return out;
}

std::string status_field(pid_t pid, const std::string& field) {
    std::string text = read_text("/proc/" + std::to_string(pid) + "/status");
    size_t pos = text.find("\n" + field + ":");
    if (pos == std::string::npos)
        return "";
    pos += field.size() + 2;
    size_t nl = text.find('\n', pos);
    std::string v = text.substr(pos, nl - pos);
    v.erase(0, v.find_first_not_of(" \t"));
    return v;
}

// lodgectl in the background, its output in a file.
struct Client {
    pid_t pid = -1;
    std::string out_path;
    int status = -1;

    Client(const std::string& args, const std::string& out) : out_path(out) {
        pid = ::fork();
        if (pid == 0) {
            int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            int null = ::open("/dev/null", O_RDONLY);
            ::dup2(null, 0);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::string cmd = env_path("LODGE_LODGECTL") + " " + args;
            ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
    }
    // True once it ended (status then holds the shell-way exit status).
    bool wait_for(int seconds) {
        return eventually(
            [&] {
                int st = 0;
                if (pid < 0)
                    return true;
                if (::waitpid(pid, &st, WNOHANG) != pid)
                    return false;
                status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                pid = -1;
                return true;
            },
            seconds);
    }
    std::string output() const { return read_text(out_path); }
    ~Client() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        ::unlink(out_path.c_str());
    }
};

// ExecContainer with the caller's own descriptors, as any bus client may send it. Returns
// "status N" or the error's name and message.
std::string call_exec(const std::string& name, const std::vector<std::string>& argv, int in,
                      int out, int err, int control) {
    sd_bus* raw = nullptr;
    if (int r = sd_bus_open_system(&raw); r < 0)
        return std::string("no bus: ") + std::strerror(-r);
    std::unique_ptr<sd_bus, decltype(&sd_bus_flush_close_unref)> bus(raw, sd_bus_flush_close_unref);
    sd_bus_message* m = nullptr;
    sd_bus_message_new_method_call(bus.get(), &m, "io.lodge1", "/io/lodge1", "io.lodge1.Manager",
                                   "ExecContainer");
    std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> call(m, sd_bus_message_unref);
    std::vector<char*> args;
    for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    char* no_env[] = {nullptr};
    sd_bus_message_append(m, "s", name.c_str());
    sd_bus_message_append_strv(m, args.data());
    sd_bus_message_append_strv(m, no_env);
    sd_bus_message_append(m, "sbhhhh", "", 0, in, out, err, control);
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call(bus.get(), m, 60 * 1000000ULL, &error, &reply);
    std::string result;
    int32_t status = -1;
    if (r < 0)
        result = std::string(error.name ? error.name : "?") + ": " +
                 (error.message ? error.message : std::strerror(-r));
    else if (sd_bus_message_read(reply, "i", &status) >= 0)
        result = "status " + std::to_string(status);
    sd_bus_error_free(&error);
    sd_bus_message_unref(reply);
    return result;
}

class ExecSecurity : public LodgedFixture {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        ::setenv("LODGE_EXEC_SETUP_TIMEOUT", setup_timeout, 1);
        LodgedFixture::SetUp();
    }
    void TearDown() override {
        if (daemon && !answers()) {
            ADD_FAILURE() << "lodged no longer answers; killing it";
            daemon->kill9();
            // A fresh lodged takes over the running containers, so they can be deleted.
            daemon = std::make_unique<Lodged>();
            daemon->wait_ready();
        }
        LodgedFixture::TearDown();
    }
    std::string make(const std::string& base, const std::string& options = "") {
        std::string n = name_container(base);
        int st = 0;
        std::string out = ctl("create " + n + options, &st);
        EXPECT_EQ(st, 0) << out;
        out = ctl("start " + n, &st);
        EXPECT_EQ(st, 0) << out;
        return n;
    }
    // ListContainers answers within 20 s.
    bool answers() {
        int st = 0;
        sh("timeout 20 " + env_path("LODGE_LODGECTL") + " list >/dev/null 2>&1", &st);
        return st == 0;
    }
    std::string exec(const std::string& n, const std::string& cmd, int* st = nullptr) {
        return sh("timeout 60 " + env_path("LODGE_LODGECTL") + " exec " + n +
                      " --cwd / -- sh -c '" + cmd + "' 2>&1",
                  st);
    }
    pid_t leader(const std::string& n) {
        std::string s = ctl("status " + n);
        size_t pos = s.find("Leader: ");
        return pos == std::string::npos ? -1 : std::atoi(s.c_str() + pos + 8);
    }
    // Host pids of the processes called `comm` in the pid namespace of `init`.
    std::vector<pid_t> in_container(pid_t init, const std::string& comm) {
        std::vector<pid_t> out;
        std::string ns = readlink_str("/proc/" + std::to_string(init) + "/ns/pid");
        for (pid_t p : host_pids()) {
            std::string proc = "/proc/" + std::to_string(p);
            if (!ns.empty() && readlink_str(proc + "/ns/pid") == ns &&
                read_text(proc + "/comm") == comm + "\n")
                out.push_back(p);
        }
        return out;
    }
    std::string tmp(const std::string& base) {
        return TestRoot::get().dir + "/" + unique_name(base);
    }
};

// Finding 5: root in the container mounts a FUSE filesystem that never answers on /root, where
// every exec without --cwd changes to. lodged keeps answering while an exec is caught in it,
// and the exec fails with the deadline's reason instead of hanging.
TEST_F(ExecSecurity, FuseTrapOnRootNeitherFreezesLodgedNorHangsTheExec) {
    std::string n = make("fuse", " -c security.privileged=true");
    int st = 0;
    exec(n, "test -c /dev/fuse", &st);
    if (st != 0)
        GTEST_SKIP() << "no /dev/fuse in the container";
    exec(n, "(exec 3<>/dev/fuse; mount -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 "
            "stall /root && exec sleep 1000000) </dev/null >/dev/null 2>&1 &");
    ASSERT_TRUE(
        eventually([&] { return contains(exec(n, "cat /proc/mounts"), " /root fuse"); }, 30))
        << exec(n, "cat /proc/mounts");

    pid_t init = leader(n);
    ASSERT_GT(init, 0);
    Client trapped("exec " + n + " -- true", tmp("trapped"));
    // Some process of the container sits in chdir(2) (x86-64: 80) on the trap: the exec's setup.
    auto caught = [&] {
        for (pid_t p : host_pids()) {
            std::string proc = "/proc/" + std::to_string(p);
            if (readlink_str(proc + "/ns/pid") ==
                    readlink_str("/proc/" + std::to_string(init) + "/ns/pid") &&
                read_text(proc + "/syscall").rfind("80 ", 0) == 0)
                return true;
        }
        return false;
    };
    ASSERT_TRUE(eventually(caught, 30)) << "the trap caught nothing: " << trapped.output();
    EXPECT_TRUE(answers()) << "lodged froze while an exec was caught in the guest's trap";
    ASSERT_TRUE(trapped.wait_for(60)) << "the exec hangs";
    EXPECT_NE(trapped.status, 0);
    EXPECT_TRUE(contains(trapped.output(), "did not finish within " + std::string(setup_timeout) +
                                               " s (a guest path may be blocked)"))
        << trapped.output();
    EXPECT_TRUE(eventually([&] { return !caught(); }, 30)) << "the caught process was left behind";
    // Execs that avoid the trap still work.
    EXPECT_EQ(exec(n, "echo fine"), "fine\n");
}

// Finding 5, the supervisor's side: a guest FUSE trap over its /dev catches the helper that
// changes /dev/lxd when security.devlxd is toggled. The helper is given up after its deadline,
// so the supervisor still stops the container (before, it waited for the helper forever).
TEST_F(ExecSecurity, FuseTrapOverDevDoesNotWedgeTheSupervisor) {
    std::string n = make("fusedev", " -c security.privileged=true");
    int st = 0;
    exec(n, "test -c /dev/fuse", &st);
    if (st != 0)
        GTEST_SKIP() << "no /dev/fuse in the container";
    pid_t init = leader(n);
    ASSERT_GT(init, 0);
    // From here on the container's /dev never answers: no more execs, the host reads its mounts.
    exec(n, "(exec 3<>/dev/fuse; mount -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 "
            "stall /dev && exec sleep 1000000) </dev/null >/dev/null 2>&1 &");
    std::string mounts = "/proc/" + std::to_string(init) + "/mounts";
    ASSERT_TRUE(eventually([&] { return contains(read_text(mounts), " /dev fuse"); }, 30))
        << read_text(mounts);
    ctl("config set " + n + " security.devlxd=false", &st);
    EXPECT_EQ(st, 0);
    Client stop("stop --force " + n, tmp("stop"));
    ASSERT_TRUE(stop.wait_for(120)) << "the supervisor is wedged in the guest's trap";
    EXPECT_EQ(stop.status, 0) << stop.output();
    EXPECT_TRUE(contains(ctl("status " + n), "stopped")) << ctl("status " + n);
}

// Finding 7 and finding 3's exec part: while an exec session runs, its command is the child of
// lodge-exec, which runs from a sealed memfd (never lodged's or another host binary), and
// `delete --force` neither deadlocks lodged nor leaves the session hanging.
TEST_F(ExecSecurity, SessionRunsFromASealedHelperAndDeleteForceEndsIt) {
    std::string n = make("sess");
    pid_t init = leader(n);
    ASSERT_GT(init, 0);
    Client session("exec " + n + " -- sleep 1000", tmp("session"));
    std::vector<pid_t> sleeps;
    ASSERT_TRUE(eventually([&] { return !(sleeps = in_container(init, "sleep")).empty(); }, 30))
        << session.output();

    pid_t parent = std::atoi(status_field(sleeps[0], "PPid").c_str());
    ASSERT_GT(parent, 0);
    EXPECT_NE(parent, daemon->pid) << "the command is lodged's child";
    std::string exe = readlink_str("/proc/" + std::to_string(parent) + "/exe");
    EXPECT_EQ(exe.rfind("/memfd:lodge-exec", 0), 0u) << exe;
    EXPECT_EQ(status_field(parent, "PPid"), std::to_string(daemon->pid));

    // lodged's copy is sealed: nobody, host root included, can change what the next exec runs.
    bool found = false;
    std::string fd_dir = "/proc/" + std::to_string(daemon->pid) + "/fd";
    DIR* d = ::opendir(fd_dir.c_str());
    ASSERT_NE(d, nullptr);
    std::vector<std::string> links;
    while (struct dirent* e = ::readdir(d))
        if (e->d_name[0] != '.')
            links.push_back(fd_dir + "/" + e->d_name);
    ::closedir(d);
    for (auto& link : links) {
        if (readlink_str(link).rfind("/memfd:lodge-exec", 0) != 0)
            continue;
        found = true;
        Fd copy(::open(link.c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(copy) << std::strerror(errno);
        int seals = ::fcntl(copy.get(), F_GET_SEALS);
        int want = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
        EXPECT_EQ(seals & want, want) << std::hex << seals;
        // Either the kernel refuses to open it for writing at all, or every write fails.
        Fd writer(::open(link.c_str(), O_WRONLY | O_CLOEXEC));
        if (writer) {
            EXPECT_LT(::pwrite(writer.get(), "x", 1, 0), 0);
            EXPECT_LT(::ftruncate(writer.get(), 0), 0);
        }
    }
    EXPECT_TRUE(found) << "lodged holds no memfd copy of lodge-exec";

    int st = 0;
    std::string out =
        sh("timeout 60 " + env_path("LODGE_LODGECTL") + " delete --force " + n + " 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(answers());
    ASSERT_TRUE(session.wait_for(60)) << "the exec session outlived its container";
    EXPECT_EQ(session.status, 128 + SIGKILL) << session.output();
    EXPECT_FALSE(contains(ctl("list --no-legend"), n));
}

// The same with stop --force, and the container comes back for more execs.
TEST_F(ExecSecurity, StopForceWithASessionRunning) {
    std::string n = make("stopf");
    pid_t init = leader(n);
    ASSERT_GT(init, 0);
    Client session("exec " + n + " -- sleep 1000", tmp("session"));
    ASSERT_TRUE(eventually([&] { return !in_container(init, "sleep").empty(); }, 30))
        << session.output();
    int st = 0;
    std::string out =
        sh("timeout 60 " + env_path("LODGE_LODGECTL") + " stop --force " + n + " 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    ASSERT_TRUE(session.wait_for(60));
    EXPECT_EQ(session.status, 128 + SIGKILL) << session.output();
    EXPECT_EQ(ctl("start " + n, &st), "");
    EXPECT_EQ(exec(n, "echo again"), "again\n");
}

// Finding 16: a bus caller's stdio descriptors enter the container only if they are pipes,
// sockets or terminals; a directory or a host file is refused, named, and nothing runs.
TEST_F(ExecSecurity, StdioThatIsNoPipeSocketOrTerminalIsRefused) {
    std::string n = make("stdio");
    const std::string marker = "/tmp/" + unique_name("ran");
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    Fd control(pair[0]), caller_end(pair[1]);
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    Fd dir(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    std::string host_file = tmp("hostfile");
    write_file_atomic(host_file, "host data\n");
    Fd file(::open(host_file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(null && dir && file);

    std::string out = call_exec(n, {"sh", "-c", "echo ran > " + marker}, dir.get(), null.get(),
                                null.get(), control.get());
    EXPECT_TRUE(contains(out, "org.freedesktop.DBus.Error.InvalidArgs")) << out;
    EXPECT_TRUE(contains(out, "stdin")) << out;
    EXPECT_TRUE(contains(out, "only pipes, sockets and terminals")) << out;
    out = call_exec(n, {"sh", "-c", "echo ran > " + marker + "; echo leaked"}, null.get(),
                    file.get(), null.get(), control.get());
    EXPECT_TRUE(contains(out, "stdout")) << out;
    EXPECT_EQ(read_text(host_file), "host data\n");
    ::unlink(host_file.c_str());
    EXPECT_EQ(exec(n, "cat " + marker + " 2>/dev/null || echo nothing ran"), "nothing ran\n");
    // Pipes still do.
    int st = 0;
    EXPECT_EQ(sh("echo in | " + env_path("LODGE_LODGECTL") + " exec " + n + " -- cat", &st),
              "in\n");
    EXPECT_EQ(st, 0);
}

} // namespace
