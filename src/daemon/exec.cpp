#include "daemon/exec.hpp"
#include "common/fdpass.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"
#include "daemon/container-dbus.hpp"
#include "runtime/attach.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LODGE_EXEC_HELPER_PATH
#define LODGE_EXEC_HELPER_PATH "/usr/libexec/lodge/lodge-exec"
#endif

namespace lodge::daemon {
namespace {

Fd helper_exe;            // the sealed copy of lodge-exec
std::string helper_error; // why there is none

struct Running {
    MessagePtr call;
    std::string container;
    runtime::ExecHandle handle;
    Fd control; // the caller's socket for the pidfd and the pty master
    SourcePtr handshake, deadline, helper_exit;
    bool setup_done = false;
    bool replied = false;
};
std::map<Running*, std::unique_ptr<Running>> running;

std::string helper_path() {
    const char* env = std::getenv("LODGE_EXEC_HELPER");
    return env && *env ? env : LODGE_EXEC_HELPER_PATH;
}

unsigned setup_timeout_sec() {
    const char* v = std::getenv("LODGE_EXEC_SETUP_TIMEOUT");
    auto secs = v ? parse_uint(v, 3600) : std::nullopt;
    return secs && *secs > 0 ? static_cast<unsigned>(*secs) : exec_setup_timeout_default;
}

int read_strv(sd_bus_message* m, std::vector<std::string>& out) {
    char** v = nullptr;
    int r = sd_bus_message_read_strv(m, &v);
    if (r < 0)
        return r;
    for (char** p = v; p && *p; p++) {
        out.emplace_back(*p);
        std::free(*p);
    }
    std::free(v);
    return 0;
}

void reply_error(Running& r, const char* name, const std::string& message) {
    if (r.replied)
        return;
    r.replied = true;
    sd_bus_reply_method_errorf(r.call.get(), name, "%s", message.c_str());
}

// The command was exec'd: the caller gets its pidfd (signals go straight to it) and the pty.
void stop_watching_handshake(Running& r) {
    r.handshake.reset(); // the source before its fd
    r.handle.handshake.reset();
    r.deadline.reset();
}

void setup_finished(Running& r) {
    r.setup_done = true;
    stop_watching_handshake(r);
    send_with_fd(r.control.get(), "pidfd", r.handle.process.get());
    if (r.handle.pty_master)
        send_with_fd(r.control.get(), "pty", r.handle.pty_master.get());
    r.handle.pty_master.reset();
}

void setup_failed(Running& r, const std::string& why) {
    stop_watching_handshake(r);
    reply_error(r, SD_BUS_ERROR_FAILED,
                "Cannot run the command in \"" + r.container + "\": " + why);
}

// Feeds what the helper sent to the handshake; true once it ended either way.
bool advance(Running& r) {
    std::string why;
    int res = runtime::exec_setup_read(r.handle, why);
    if (res == 1)
        setup_finished(r);
    else if (res < 0)
        setup_failed(r, why);
    return res != 0;
}

int on_handshake(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        advance(*static_cast<Running*>(userdata));
        return 0;
    });
}

int on_deadline(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* r = static_cast<Running*>(userdata);
        if (advance(*r)) // the end was waiting in the socket
            return 0;
        // A guest path the command had to resolve never answered (a FUSE server that does not
        // reply, a frozen cgroup): the caller gets the reason, the helper and command go.
        runtime::exec_abort(r->handle);
        std::string msg = "exec setup in container \"" + r->container +
                          "\" did not finish within " + std::to_string(setup_timeout_sec()) +
                          " s (a guest path may be blocked)";
        log_error("%s", msg.c_str());
        stop_watching_handshake(*r);
        reply_error(*r, SD_BUS_ERROR_TIMEOUT, msg);
        return 0;
    });
}

int on_helper_exit(sd_event_source*, const siginfo_t* si, void* userdata) {
    return guarded([&] {
        auto* r = static_cast<Running*>(userdata);
        if (!r->setup_done && !r->replied && !advance(*r)) {
            runtime::exec_abort(r->handle);
            setup_failed(*r, "the exec helper died before starting the command");
        }
        if (!r->replied) {
            r->replied = true;
            sd_bus_reply_method_return(r->call.get(), "i", runtime::exec_status(*si));
        }
        running.erase(r); // the source goes with it; sd-event reaps the helper
        return 0;
    });
}

} // namespace

int prepare_exec_helper() {
    std::string path = helper_path();
    int r = runtime::copy_exec_helper(path, helper_exe, helper_error);
    if (r < 0)
        helper_error = "the exec helper " + path + " is unusable: " + helper_error;
    return r;
}

size_t execs_in_flight() {
    return running.size();
}

int op_exec(sd_bus_message* m, Container& c, sd_event* event, sd_bus_error* error) {
    if (int r = authorize(m, *c.manager, actions::exec, c.name(), error); r <= 0)
        return r == 0 ? 1 : r;
    runtime::ExecRequest req;
    int pty = 0;
    const char* cwd = nullptr;
    int fds[4] = {-1, -1, -1, -1};
    int r = read_strv(m, req.argv);
    if (r >= 0)
        r = read_strv(m, req.env);
    if (r >= 0)
        r = sd_bus_message_read(m, "sbhhhh", &cwd, &pty, &fds[0], &fds[1], &fds[2], &fds[3]);
    if (r < 0)
        return r;
    if (req.argv.empty())
        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "No command given");
    // Only what a terminal session or a pipe would be: a directory or host file as stdio would
    // give the guest a handle outside its root.
    std::string bad;
    const char* names[] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < 3 && !pty; i++)
        if (runtime::check_exec_stdio(fds[i], names[i], bad) < 0)
            return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, bad.c_str());
    struct stat st {};
    if (::fstat(fds[3], &st) < 0 || !S_ISSOCK(st.st_mode))
        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                "Refusing the control descriptor: it must be a socket");
    if (!c.running() || c.leader <= 0 || c.cgroup.empty())
        return sd_bus_error_setf(error, errors::not_running, "Container \"%s\" is not running",
                                 c.name().c_str());
    if (!helper_exe)
        return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "Cannot run the command in \"%s\": %s",
                                 c.name().c_str(), helper_error.c_str());
    req.init_pid = c.leader;
    req.config = &c.config;
    req.payload_cgroup = c.cgroup + "/payload";
    req.cwd = cwd ? cwd : "";
    req.pty = pty;
    req.stdin_fd = fds[0];
    req.stdout_fd = fds[1];
    req.stderr_fd = fds[2];

    auto run = std::make_unique<Running>();
    run->container = c.name();
    // A caller that never reads its control socket must not block lodged.
    run->control.reset(::fcntl(fds[3], F_DUPFD_CLOEXEC, 3));
    if (!run->control || ::fcntl(run->control.get(), F_SETFL, O_NONBLOCK) < 0)
        return sd_bus_error_set_errno(error, errno);
    std::string msg;
    if (int e = runtime::exec_spawn(req, helper_exe.get(), run->handle, msg); e < 0)
        return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "Cannot run the command in \"%s\": %s",
                                 c.name().c_str(), msg.c_str());

    sd_event_source* s = nullptr;
    int e = sd_event_add_child_pidfd(event, &s, run->handle.helper.get(), WEXITED, on_helper_exit,
                                     run.get());
    if (e >= 0) {
        run->helper_exit.reset(s);
        e = sd_event_add_io(event, &s, run->handle.handshake.get(), EPOLLIN, on_handshake,
                            run.get());
    }
    if (e >= 0) {
        run->handshake.reset(s);
        e = sd_event_add_time_relative(event, &s, CLOCK_MONOTONIC, setup_timeout_sec() * 1000000ULL,
                                       0, on_deadline, run.get());
    }
    if (e < 0) {
        runtime::exec_abort(run->handle);
        runtime::exec_wait(run->handle);
        return sd_bus_error_set_errno(error, e);
    }
    run->deadline.reset(s);
    run->call.reset(sd_bus_message_ref(m));
    running[run.get()] = std::move(run);
    return 1;
}

} // namespace lodge::daemon
