// lodge-supervisor's process setup: argv, the controller bus (--bus-controller), the go byte
// (--wait-go-fd), the log file, the cgroup it lives in; and `lodge-supervisor ctl`.
#include "common/fdpass.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/control.hpp"
#include "runtime/device-bpf.hpp"
#include "runtime/supervisor.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <unistd.h>
#include <vector>

namespace lodge::runtime {
namespace {

// systemd asks the scope's Controller (this process, with --bus-controller) to stop the
// container instead of signalling the scope itself (`systemctl stop lodge-NAME.scope`, host
// shutdown). That is the graceful stop SIGTERM asks for, so it becomes one.
int on_request_stop(sd_bus_message* m, void* userdata, sd_bus_error*) {
    const auto* pid1 = static_cast<const std::string*>(userdata);
    const char* sender = sd_bus_message_get_sender(m);
    if (!sender || *pid1 != sender)
        return 0; // anyone may send us a signal; only PID 1 may stop the container
    log_info("systemd asks to stop the container's scope");
    ::kill(::getpid(), SIGTERM);
    return 0;
}

struct BusDeleter {
    void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
using BusPtr = std::unique_ptr<sd_bus, BusDeleter>;

// --bus-controller: connects to the system bus, learns PID 1's unique name (`pid1`) and
// watches for RequestStop, all before the caller creates the scope with our name as Controller.
Result<> open_controller_bus(BusPtr& out, std::string& pid1) {
    sd_bus* b = nullptr;
    if (int r = sd_bus_open_system(&b); r < 0)
        return log_error_value(r, "Failed to connect to the system bus");
    BusPtr bus(b);
    sd_bus_set_exit_on_disconnect(bus.get(), 0);
    sd_bus_creds* creds = nullptr;
    const char* unique = nullptr;
    int r = sd_bus_get_name_creds(bus.get(), "org.freedesktop.systemd1", SD_BUS_CREDS_UNIQUE_NAME,
                                  &creds);
    if (r >= 0)
        r = sd_bus_creds_get_unique_name(creds, &unique);
    if (r >= 0)
        pid1 = unique;
    sd_bus_creds_unref(creds);
    if (r < 0)
        return log_error_value(r, "Failed to look up systemd on the system bus");
    r = sd_bus_match_signal(bus.get(), nullptr, nullptr, nullptr, "org.freedesktop.systemd1.Scope",
                            "RequestStop", on_request_stop, &pid1);
    if (r < 0)
        return log_error_value(r, "Failed to watch for RequestStop");
    out = std::move(bus);
    return {};
}

// --detach with a hold: away from the caller (who reaps this first process at once) before
// anything else, so that the pid it places into the scope is the supervisor's for good.
void detach_before_hold(int notify_fd) {
    pid_t child = ::fork();
    if (child < 0) {
        dprintf(notify_fd, "ERROR Cannot fork the supervisor: %s\n", std::strerror(errno));
        _exit(1);
    }
    if (child > 0) {
        dprintf(notify_fd, "PID %d\n", static_cast<int>(child));
        _exit(0);
    }
}

// --standby: exec'd by lodged ahead of any start (SupervisorStandby). Away from lodged at once,
// then idle until fd 3 brings one start: its arguments and the pipes an exec for it would have
// had as fds 3 and 4. EOF (lodged exited or let it go) ends it without a trace. False then.
bool wait_for_start(std::vector<std::string>& args) {
    pid_t child = ::fork();
    if (child < 0) {
        log_error_errno(-errno, "Cannot fork the standby supervisor");
        return false;
    }
    if (child > 0)
        _exit(0);
    // Idle, it may be told to go away: lodged's blocked mask (which an exec'd supervisor
    // inherits too) would keep such a signal pending for the container it is about to start.
    sigset_t idle, inherited;
    sigemptyset(&idle);
    for (int sig : {SIGTERM, SIGINT, SIGHUP})
        sigaddset(&idle, sig);
    ::sigprocmask(SIG_UNBLOCK, &idle, &inherited);
    preload_device_program();
    remember_host_hierarchies();
    std::string text;
    std::vector<Fd> fds;
    ssize_t n = recv_with_fds(3, text, fds);
    ::sigprocmask(SIG_SETMASK, &inherited, nullptr);
    ::close(3);
    if (n == 0)
        return false;     // lodged let it go
    std::vector<Fd> high; // the start's descriptors, moved above 4
    auto fail = [&](int err, const char* what) {
        log_error_errno(-err, "Standby supervisor: %s", what);
        int notify = !high.empty() ? high[0].get() : !fds.empty() ? fds[0].get() : -1;
        if (notify >= 0)
            dprintf(notify, "ERROR lodge-supervisor (standby): %s: %s\n", what, std::strerror(err));
        return false;
    };
    if (n < 0)
        return fail(static_cast<int>(-n), "cannot read the start");
    if (fds.empty() || fds.size() > 2)
        return fail(EBADMSG, "the start came with a wrong number of descriptors");
    // Above 4 first, and the received ones closed, so that placing one never closes another
    // (nor does a received one, closed later, close a placed one).
    for (auto& fd : fds) {
        high.emplace_back(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 10));
        if (!high.back())
            return fail(errno, "cannot move the start's descriptors");
    }
    fds.clear();
    for (size_t i = 0; i < high.size(); i++)
        if (::dup2(high[i].get(), 3 + static_cast<int>(i)) < 0)
            return fail(errno, "cannot place the start's descriptors");
    for (size_t start = 0; start < text.size();) {
        size_t end = text.find('\0', start);
        if (end == std::string::npos)
            end = text.size();
        args.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return true;
}

// A standby's command line says `--standby` and a blank argument that reserves room; once it has
// a start, `ps` shows what an exec for that start would have shown, in that room (truncated if
// it does not fit: the title only).
void show_command_line(int argc, char** argv, const std::vector<std::string>& args) {
    char* area = argv[1];
    char* end = argv[argc - 1] + std::strlen(argv[argc - 1]); // its NUL stays
    std::string text;
    for (size_t i = 1; i < args.size(); i++)
        text += (i > 1 ? std::string(1, '\0') : std::string()) + args[i];
    size_t room = static_cast<size_t>(end - area);
    std::memset(area, 0, room);
    std::memcpy(area, text.data(), std::min(room, text.size()));
}

int usage() {
    std::fprintf(stderr, "Usage: lodge-supervisor [--notify-fd=N] [--detach]\n"
                         "                        [--wait-go-fd=N [--bus-controller]]\n"
                         "                        [--cgroup=PATH] [--log-stderr] NAME\n"
                         "       lodge-supervisor ctl NAME REQUEST...\n");
    return 2;
}

int ctl_main(int argc, char** argv) {
    if (argc < 4)
        return usage();
    std::string request;
    for (int i = 3; i < argc; i++)
        request += (i > 3 ? " " : "") + std::string(argv[i]);
    std::string reply;
    if (int r = control_request(argv[2], request, reply); r < 0) {
        std::fprintf(stderr, "Container \"%s\" has no running supervisor: %s\n", argv[2],
                     std::strerror(-r));
        return 1;
    }
    std::printf("%s\n", reply.c_str());
    return proto::decode_reply(reply).ok() ? 0 : 1;
}

int supervise(int argc, char** argv, bool from_standby);

} // namespace
} // namespace lodge::runtime

int main(int argc, char** argv) {
    using namespace lodge;
    if (argc >= 2 && std::strcmp(argv[1], "ctl") == 0)
        return runtime::ctl_main(argc, argv);
    if (argc >= 2 && std::strcmp(argv[1], "--standby") == 0) {
        std::vector<std::string> args{argv[0]};
        if (!runtime::wait_for_start(args))
            return 0;
        runtime::show_command_line(argc, argv, args);
        std::vector<char*> start_argv;
        for (auto& a : args)
            start_argv.push_back(a.data());
        start_argv.push_back(nullptr);
        return runtime::supervise(static_cast<int>(args.size()), start_argv.data(), true);
    }
    return runtime::supervise(argc, argv, false);
}

namespace lodge::runtime {
namespace {

int supervise(int argc, char** argv, bool from_standby) {
    int notify_fd = -1, go_fd = -1;
    std::string cgroup, name;
    bool log_stderr = false, bus_controller = false, detach = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.rfind("--notify-fd=", 0) == 0)
            notify_fd = std::atoi(a.c_str() + 12);
        else if (a.rfind("--wait-go-fd=", 0) == 0)
            go_fd = std::atoi(a.c_str() + 13);
        else if (a == "--bus-controller")
            bus_controller = true;
        else if (a == "--detach")
            detach = true;
        else if (a.rfind("--cgroup=", 0) == 0)
            cgroup = a.substr(9);
        else if (a == "--log-stderr")
            log_stderr = true;
        else if (a[0] == '-')
            return usage();
        else
            name = a;
    }
    if (name.empty() || (bus_controller && go_fd < 0) || (detach && notify_fd < 0))
        return usage();
    // --detach: the caller starts this process and reaps it at once; its child is the
    // supervisor (in a new session already, made by the caller). Held, it forks now; else
    // once the container is known not to run, into its cgroup (Supervisor::run): born there, as
    // moving a process in the unified hierarchy takes a global lock (~10 ms). A standby is
    // detached already: held, it stays the supervisor.
    if (detach && go_fd >= 0) {
        if (from_standby)
            dprintf(notify_fd, "PID %d\n", static_cast<int>(::getpid()));
        else
            detach_before_hold(notify_fd);
    }
    // --bus-controller: the bus name goes to the caller first; it becomes the scope's Controller.
    BusPtr bus;
    std::string pid1_bus_name;
    if (bus_controller) {
        log_set_prefix("lodge-supervisor[" + name + "]");
        const char* unique = nullptr;
        Result<> opened = open_controller_bus(bus, pid1_bus_name);
        if (opened) {
            if (int r = sd_bus_get_unique_name(bus.get(), &unique); r < 0)
                opened = log_error_value(r, "Failed to learn our name on the system bus");
        }
        std::string line =
            opened ? "BUS " + std::string(unique) + "\n" : "ERROR " + opened.error().message + "\n";
        (void)!::write(notify_fd, line.data(), line.size());
        if (!bus)
            return 1;
    }
    // --wait-go-fd: the caller places this process (into its systemd scope) before it makes any
    // cgroup or file; one byte means go, EOF means the start was called off.
    if (go_fd >= 0) {
        char go = 0;
        ssize_t n;
        while ((n = ::read(go_fd, &go, 1)) < 0 && errno == EINTR)
            ;
        ::close(go_fd);
        if (n != 1)
            return 1;
    }
    if (notify_fd >= 0)
        ::fcntl(notify_fd, F_SETFD, FD_CLOEXEC);
    log_set_prefix("lodge-supervisor[" + name + "]");
    if (!log_stderr && check_container_name(name).empty()) {
        std::string log = paths::log_dir() + "/" + name + "/lodge.log";
        if (mkdir_p(paths::log_dir() + "/" + name, 0750) == 0) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
            if (fd >= 0) {
                ::dup2(fd, STDERR_FILENO);
                ::close(fd);
            }
        }
    }
    // Without --cgroup, a supervisor already in a scope made for it (lodged did that through
    // systemd) uses that scope; anywhere else it makes machine.slice/lodge-NAME.scope itself.
    bool own_base = true;
    if (cgroup.empty()) {
        std::string scope = "lodge-" + name + ".scope";
        for (auto& h : host_hierarchies())
            if (h.unified || h.controllers == "name=systemd") {
                std::string mine = own_cgroup(h);
                if (mine.size() >= scope.size() &&
                    mine.compare(mine.size() - scope.size(), scope.size(), scope) == 0) {
                    cgroup = mine;
                    own_base = false;
                }
            }
        if (cgroup.empty())
            cgroup = "machine.slice/" + scope;
    }
    if (!own_base)
        drop_preloaded_device_program(); // the scope's DevicePolicy is in force instead
    Supervisor sup(name, cgroup, own_base);
    sup.set_bus(bus.get());
    sup.set_detach(detach && go_fd < 0);
    return sup.run(notify_fd);
}

} // namespace
} // namespace lodge::runtime
