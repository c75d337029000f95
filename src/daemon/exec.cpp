#include "exec.hpp"
#include "common/fdpass.hpp"
#include "common/log.hpp"
#include "container-dbus.hpp"
#include "runtime/attach.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

struct Running {
    MessagePtr call;
    runtime::ExecHandle handle;
    SourcePtr source;
};
std::map<Running*, std::unique_ptr<Running>> running;

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

int on_exit(sd_event_source*, const siginfo_t* si, void* userdata) {
    return guarded([&] {
        auto* r = static_cast<Running*>(userdata);
        int status = si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status;
        sd_bus_reply_method_return(r->call.get(), "i", status);
        running.erase(r); // the source is disabled with it; sd-event reaps the child
        return 0;
    });
}

} // namespace

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
    if (!c.running() || c.leader <= 0 || c.cgroup.empty())
        return sd_bus_error_setf(error, errors::not_running, "Container \"%s\" is not running",
                                 c.name().c_str());
    req.init_pid = c.leader;
    req.config = &c.config;
    req.payload_cgroup = c.cgroup + "/payload";
    req.cwd = cwd ? cwd : "";
    req.pty = pty;
    req.stdin_fd = fds[0];
    req.stdout_fd = fds[1];
    req.stderr_fd = fds[2];

    auto run = std::make_unique<Running>();
    std::string msg;
    if (int e = runtime::exec_in_container(req, run->handle, msg); e < 0)
        return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED, "Cannot run the command in \"%s\": %s",
                                 c.name().c_str(), msg.c_str());
    // The caller signals the command through its pidfd and drives the pty itself.
    send_with_fd(fds[3], "pidfd", run->handle.process.get());
    if (run->handle.pty_master)
        send_with_fd(fds[3], "pty", run->handle.pty_master.get());
    run->handle.pty_master.reset();

    sd_event_source* s = nullptr;
    if (int e = sd_event_add_child_pidfd(event, &s, run->handle.process.get(), WEXITED, on_exit,
                                         run.get());
        e < 0) {
        run->handle.process.send_signal(SIGKILL);
        runtime::exec_wait(run->handle);
        return sd_bus_error_set_errno(error, e);
    }
    run->source.reset(s);
    run->call.reset(sd_bus_message_ref(m));
    running[run.get()] = std::move(run);
    return 1;
}

} // namespace lodge::daemon
