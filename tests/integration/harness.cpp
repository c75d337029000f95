#include "harness.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/control.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace lodge::test {

std::string env_path(const char* var) {
    const char* v = std::getenv(var);
    if (!v || !*v) {
        ADD_FAILURE() << var << " is not set (run the tests through meson test)";
        return {};
    }
    return v;
}

std::string unique_name(const std::string& base) {
    return base + "-" + std::to_string(::getpid());
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

std::string sh(const std::string& cmd, int* status) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) {
        if (status)
            *status = -1;
        return out;
    }
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    int st = ::pclose(p);
    if (status)
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return out;
}

std::string read_text(const std::string& path) {
    std::string s;
    read_file(path, s);
    return s;
}

bool wait_until(const std::function<bool()>& done, int seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    for (;;) {
        if (done())
            return true;
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

bool wait_until_sh(const std::string& cmd, int seconds) {
    return wait_until(
        [&] {
            int st = 0;
            sh(cmd, &st);
            return st == 0;
        },
        seconds);
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

TestRoot& TestRoot::get() {
    static TestRoot root = [] {
        TestRoot r;
        r.dir = "/tmp/lodge-test-" + std::to_string(::getpid());
        r.cgroup = "lodge-test-" + std::to_string(::getpid());
        // Root-only, as lodged makes it (CONTRACT §2), so every test runs containers that way.
        mkdir_p(r.dir + "/state", 0755);
        ::mkdir((r.dir + "/state/containers").c_str(), 0700);
        ::setenv("LODGE_STATE_DIR", (r.dir + "/state").c_str(), 1);
        ::setenv("LODGE_RUNTIME_DIR", (r.dir + "/run").c_str(), 1);
        ::setenv("LODGE_LOG_DIR", (r.dir + "/log").c_str(), 1);
        // Never the host's /var/lib/lxcfs: tests that want lxcfs start their own.
        ::setenv("LODGE_LXCFS_DIR", (r.dir + "/lxcfs").c_str(), 1);
        return r;
    }();
    return root;
}

TestRoot::~TestRoot() {
    if (dir.empty())
        return;
    for (auto& h : runtime::host_hierarchies())
        ::rmdir((h.mountpoint + "/" + cgroup).c_str());
    remove_tree(dir);
}

Container::Container(std::string n, bool privileged) : name(std::move(n)) {
    auto& root = TestRoot::get();
    dir = root.dir + "/state/containers/" + name;
    rootfs = dir + "/rootfs";
    config.name = name;
    if (privileged)
        config.config["security.privileged"] = "true";
    mkdir_p(dir, 0700);
}

Container::~Container() {
    // Whatever the test did, leave nothing running.
    namespace proto = runtime::proto;
    std::string reply;
    if (runtime::control_request(name, proto::encode(proto::Request::of(proto::Verb::stop_force)),
                                 reply) == 0)
        runtime::control_request(name, proto::encode(proto::Request::of(proto::Verb::wait)), reply);
    sh("umount -R " + rootfs + " 2>/dev/null");
    remove_tree(dir);
    remove_tree(paths::container_runtime(name));
    remove_tree(paths::log_dir() + "/" + name);
}

void Container::make_busybox(bool test_init) {
    int st = 0;
    std::string out = sh(
        "bash " + env_path("LODGE_FIXTURES") + "/make-busybox-rootfs.sh " + rootfs + " 2>&1", &st);
    ASSERT_EQ(st, 0) << out;
    std::string probe = env_path("LODGE_SYSCALL_PROBE");
    ASSERT_EQ(std::system(("cp " + probe + " " + rootfs + "/bin/syscall-probe").c_str()), 0);
    if (test_init) {
        std::string init = env_path("LODGE_TEST_INIT");
        ASSERT_EQ(std::system(
                      ("rm -f " + rootfs + "/sbin/init && cp " + init + " " + rootfs + "/sbin/init")
                          .c_str()),
                  0);
    }
}

void Container::write_config() {
    ASSERT_EQ(save_container_config(paths::container_config(name), config), 0);
}

bool Container::start(std::string* error) {
    write_config();
    runtime::LaunchResult res;
    int r = runtime::launch_supervisor(env_path("LODGE_SUPERVISOR"), name,
                                       {"--cgroup=" + TestRoot::get().cgroup + "/" + name}, res);
    if (error)
        *error = res.error;
    return r == 0;
}

std::string Container::start_and_run(const std::string& cmd) {
    set("environment.TESTINIT_RUN", "(" + cmd + ") > /run.tmp 2>&1; mv /run.tmp /run.out");
    std::string error;
    if (!start(&error)) {
        ADD_FAILURE() << error;
        return {};
    }
    exec("while [ ! -e /run.out ]; do usleep 10000; done");
    return read_text(rootfs + "/run.out");
}

nlohmann::json Container::request(const std::string& req) {
    std::string reply;
    // Bounded: a test waiting for an event that never comes fails instead of hanging.
    int r = runtime::control_request(name, req, reply, 300 * 1000);
    if (r == -EAGAIN || r == -EWOULDBLOCK)
        return nlohmann::json{{"error", "no reply to \"" + req + "\" within 300 s"}};
    if (r < 0)
        return final_state();
    auto j = nlohmann::json::parse(reply, nullptr, false);
    return j.is_discarded() ? nlohmann::json{{"error", "bad reply: " + reply}} : j;
}

nlohmann::json Container::final_state() {
    auto j = nlohmann::json::parse(read_text(paths::runtime_state(name)), nullptr, false);
    return j.is_discarded() ? nlohmann::json{{"error", "no state"}} : j;
}

pid_t Container::pid() {
    auto s = status();
    return s.contains("pid") ? s["pid"].get<pid_t>() : 0;
}

std::string Container::exec(const std::string& cmd, int* status) {
    pid_t p = pid();
    if (p <= 0) {
        ADD_FAILURE() << "container " << name << " is not running";
        return {};
    }
    std::string quoted;
    for (char c : cmd)
        quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    // Bounded, so a test that waits for something that never happens fails instead of hanging.
    // The shell's stdin and stderr are replaced by the container's own /dev/null first: through
    // /proc/self/fd a container process could otherwise reach the host files behind them.
    return sh("timeout 180 nsenter -t " + std::to_string(p) +
                  " -a /bin/sh -c 'exec </dev/null 2>/dev/null; " + quoted + "'",
              status);
}

std::string Container::console_log() {
    return read_text(paths::console_log(name));
}

int exec_in_container(const runtime::ExecRequest& req, runtime::ExecHandle& out,
                      std::string& error) {
    static Fd helper = [] {
        Fd fd;
        std::string why;
        if (runtime::copy_exec_helper(env_path("LODGE_EXEC_HELPER"), fd, why) < 0)
            ADD_FAILURE() << why;
        return fd;
    }();
    return runtime::exec_in_container(req, helper.get(), out, error, 60 * 1000);
}

} // namespace lodge::test
