// exec, shell and console: lodgectl's end of a command's or a console's streams, all moved by
// one pump.
#include "common/fdpass.hpp"
#include "ctl/bus.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

namespace lodge::ctl {

namespace {

// Moves what one read of `from` gives to `to`, all of it. Returns the bytes moved, 0 at the
// end of `from`, or -errno.
ssize_t pump(int from, int to) {
    char buf[65536];
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0)
        return n < 0 ? -errno : 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        off += w;
    }
    return n;
}

int copy_all(int from, int to) {
    ssize_t r;
    while ((r = pump(from, to)) > 0) {
    }
    return static_cast<int>(r);
}

} // namespace

// Interactive console: Ctrl+a q detaches, as `lxc console` does.
int verb_console(const Options& o, sd_bus* bus) {
    if (o.args.size() != 2)
        return fail("Usage: lodgectl console NAME [--show-log]");
    BusError err;
    int fd = -1;
    if (o.show_log) {
        if (int r = call_for_fd(bus, "OpenContainerConsoleLog", o.args[1], fd, err); r < 0)
            return bus_fail(err, r);
        int r = copy_all(fd, STDOUT_FILENO);
        ::close(fd);
        return r < 0 ? 1 : 0;
    }
    if (int r = call_for_fd(bus, "OpenContainerConsole", o.args[1], fd, err); r < 0)
        return bus_fail(err, r);
    bool tty = ::isatty(STDIN_FILENO);
    struct termios saved {};
    if (tty) {
        ::tcgetattr(STDIN_FILENO, &saved);
        struct termios raw = saved;
        ::cfmakeraw(&raw);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        std::fprintf(stderr, "To detach from the console, press: <ctrl>+a q\r\n");
    }
    bool ctrl_a = false, done = false;
    while (!done) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents) {
            if (pump(fd, STDOUT_FILENO) <= 0)
                break; // the container stopped
        }
        if (p[1].revents) {
            char buf[4096];
            ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n <= 0) {
                p[1].fd = -1;
                break;
            }
            std::string out;
            for (ssize_t i = 0; i < n; i++) {
                if (tty && ctrl_a && buf[i] == 'q') {
                    done = true;
                    break;
                }
                if (tty && buf[i] == 0x01 && !ctrl_a) {
                    ctrl_a = true;
                    continue;
                }
                if (ctrl_a)
                    out += '\x01';
                ctrl_a = false;
                out += buf[i];
            }
            if (!out.empty() && ::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0)
                break;
        }
    }
    if (tty)
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    ::close(fd);
    return 0;
}

// exec: the command's stdio are pipes (or a pty from the container) that we pump, so no file of
// ours ever enters the container; lodged hands back the command's pidfd (signals go straight to
// it) and the pty master over a socket pair, and answers the call with the exit status.
namespace {

struct ExecState {
    bool replied = false;
    int status = 1;
    std::string error;
};

int on_exec_reply(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* st = static_cast<ExecState*>(userdata);
    st->replied = true;
    if (const sd_bus_error* e = sd_bus_message_get_error(m)) {
        st->error = e->message ? e->message : e->name;
        st->status = 1;
    } else if (int32_t status; sd_bus_message_read(m, "i", &status) >= 0) {
        st->status = status;
    }
    return 0;
}

} // namespace

int verb_exec(const Options& o, sd_bus* bus) {
    if (o.args.size() != 2 || o.command.empty())
        return fail("Usage: lodgectl exec NAME [-t|-T] [--env K=V]... [--cwd DIR] -- CMD...");
    bool tty_in = ::isatty(STDIN_FILENO);
    bool pty = o.pty == 1 || (o.pty == -1 && tty_in);
    int ctl[2], in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
        return fail(std::string("socketpair: ") + std::strerror(errno));
    if (!pty &&
        (::pipe2(in, O_CLOEXEC) < 0 || ::pipe2(out, O_CLOEXEC) < 0 || ::pipe2(err, O_CLOEXEC) < 0))
        return fail(std::string("pipe: ") + std::strerror(errno));
    MessagePtr call = new_manager_call(bus, "ExecContainer");
    if (!call)
        return 1;
    sd_bus_message* m = call.get();
    std::vector<const char*> argv, envv;
    for (auto& a : o.command)
        argv.push_back(a.c_str());
    argv.push_back(nullptr);
    for (auto& e : o.env)
        envv.push_back(e.c_str());
    envv.push_back(nullptr);
    int r = sd_bus_message_append(m, "s", o.args[1].c_str());
    if (r >= 0)
        r = sd_bus_message_append_strv(m, const_cast<char**>(argv.data()));
    if (r >= 0)
        r = sd_bus_message_append_strv(m, const_cast<char**>(envv.data()));
    auto cwd = o.values.find("cwd");
    if (r >= 0)
        r = sd_bus_message_append(m, "sbhhhh", cwd == o.values.end() ? "" : cwd->second.c_str(),
                                  pty ? 1 : 0, pty ? ctl[1] : in[0], pty ? ctl[1] : out[1],
                                  pty ? ctl[1] : err[1], ctl[1]);
    ExecState st;
    sd_bus_slot* slot = nullptr;
    if (r >= 0)
        r = sd_bus_call_async(bus, &slot, m, on_exec_reply, &st, UINT64_MAX);
    if (r < 0)
        return fail(std::string("Cannot send the request: ") + std::strerror(-r));
    sd_bus_flush(bus);
    // Our copies of the command's ends go, including the ones the request message holds: EOF
    // on the pipes then means the command closed them.
    call.reset();
    ::close(ctl[1]);
    for (int fd : {in[0], out[1], err[1]})
        if (fd >= 0)
            ::close(fd);

    sigset_t sigs;
    sigemptyset(&sigs);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH})
        sigaddset(&sigs, sig);
    ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
    int sfd = ::signalfd(-1, &sigs, SFD_CLOEXEC);

    struct termios saved {};
    bool raw = false;
    int pidfd = -1, master = -1;
    int in_w = pty ? -1 : in[1], out_r = pty ? -1 : out[0], err_r = pty ? -1 : err[0];
    bool stdin_open = true;
    auto set_winsize = [&] {
        struct winsize ws {};
        if (master >= 0 && ::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
            ::ioctl(master, TIOCSWINSZ, &ws);
    };
    for (;;) {
        bool streams_open = out_r >= 0 || err_r >= 0 || master >= 0;
        if (st.replied && !streams_open)
            break;
        std::vector<struct pollfd> p;
        p.push_back({sd_bus_get_fd(bus), static_cast<short>(sd_bus_get_events(bus)), 0});
        p.push_back({ctl[0], POLLIN, 0});
        p.push_back({stdin_open && (in_w >= 0 || master >= 0) ? STDIN_FILENO : -1, POLLIN, 0});
        p.push_back({out_r, POLLIN, 0});
        p.push_back({err_r, POLLIN, 0});
        p.push_back({master, POLLIN, 0});
        p.push_back({sfd, POLLIN, 0});
        // Once the command has ended, a background process still holding its output gets 5 s.
        int ready = ::poll(p.data(), p.size(), st.replied ? 5000 : -1);
        if (ready < 0 && errno != EINTR)
            break;
        if (ready == 0 && st.replied)
            break;
        while (sd_bus_process(bus, nullptr) > 0) {
        }
        if (p[1].revents) {
            std::string what;
            lodge::Fd passed;
            int fd =
                lodge::recv_with_fd(ctl[0], what, passed) > 0 && passed ? passed.release() : -1;
            if (fd < 0) {
                ::close(ctl[0]);
                ctl[0] = -1;
            } else if (what == "pidfd") {
                pidfd = fd;
            } else if (what == "pty") {
                master = fd;
                set_winsize();
                if (tty_in && !raw) {
                    ::tcgetattr(STDIN_FILENO, &saved);
                    struct termios t = saved;
                    ::cfmakeraw(&t);
                    ::tcsetattr(STDIN_FILENO, TCSANOW, &t);
                    raw = true;
                }
            } else {
                ::close(fd);
            }
        }
        if (p[2].revents && pump(STDIN_FILENO, in_w >= 0 ? in_w : master) <= 0) {
            stdin_open = false;
            if (master >= 0)
                (void)!::write(master, "\x04", 1); // end of input, the terminal way
            if (in_w >= 0) {
                ::close(in_w); // the command sees EOF on its stdin
                in_w = -1;
            }
        }
        if (p[3].revents && pump(out_r, STDOUT_FILENO) <= 0) {
            ::close(out_r);
            out_r = -1;
        }
        if (p[4].revents && pump(err_r, STDERR_FILENO) <= 0) {
            ::close(err_r);
            err_r = -1;
        }
        if (p[5].revents && pump(master, STDOUT_FILENO) <= 0) {
            ::close(master); // EIO: the command and everything on its pty are gone
            master = -1;
        }
        if (p[6].revents) {
            struct signalfd_siginfo si {};
            if (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGWINCH)
                    set_winsize();
                else if (pidfd >= 0)
                    ::syscall(SYS_pidfd_send_signal, pidfd, si.ssi_signo, nullptr, 0);
            }
        }
    }
    if (raw)
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    sd_bus_slot_unref(slot);
    if (!st.error.empty())
        return fail(st.error);
    return st.status;
}

int verb_shell(const Options& o, sd_bus* bus) {
    Options sh = o;
    sh.command = {"/bin/sh", "-l"};
    if (sh.pty == -1)
        sh.pty = 1;
    return verb_exec(sh, bus);
}

} // namespace lodge::ctl
