#include "runtime/lifecycle.hpp"
#include "common/fileio.hpp"
#include "common/validate.hpp"

#include <csignal>
#include <cstdlib>
#include <sys/wait.h>

namespace lodge::runtime {

InitOutcome decode_init_exit(int code, int status) {
    if (code == CLD_EXITED)
        return {InitEnd::exited, "init exited with status " + std::to_string(status)};
    switch (status) {
    case SIGINT:
        return {InitEnd::halted, "halted"};
    case SIGHUP:
        return {InitEnd::rebooted, "rebooted"};
    case SIGSYS:
        return {InitEnd::seccomp, "violated its seccomp policy"};
    default:
        return {InitEnd::killed, "init killed by " + signal_name(status)};
    }
}

bool process_blocks_signal(pid_t pid, int sig) {
    std::string status;
    if (read_file("/proc/" + std::to_string(pid) + "/status", status) < 0)
        return false;
    auto pos = status.find("\nSigBlk:");
    if (pos == std::string::npos)
        return false;
    unsigned long long mask = std::strtoull(status.c_str() + pos + 8, nullptr, 16);
    return sig >= 1 && sig <= 64 && (mask & (1ULL << (sig - 1))) != 0;
}

int choose_stop_signal(const ContainerConfig& c, pid_t init_pid) {
    if (auto sig = c.stop_signal())
        return *sig;
    return process_blocks_signal(init_pid, SIGRTMIN + 3) ? SIGRTMIN + 3 : SIGPWR;
}

} // namespace lodge::runtime
