#include "common/process.hpp"

#include <cerrno>
#include <csignal>
#include <sys/resource.h>

namespace lodge {
namespace {
// Written once at startup, before any fork; read (no allocation) in forked children.
struct rlimit saved_nofile {};
bool nofile_raised = false;
} // namespace

void reset_signal_state() {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            ::sigaction(sig, &sa, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

long raise_fd_limit() {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur >= rl.rlim_max)
        return static_cast<long>(rl.rlim_cur);
    struct rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) < 0)
        return -errno;
    saved_nofile = rl;
    nofile_raised = true;
    return static_cast<long>(raised.rlim_cur);
}

void restore_fd_limit() {
    if (nofile_raised)
        ::setrlimit(RLIMIT_NOFILE, &saved_nofile);
}

} // namespace lodge
