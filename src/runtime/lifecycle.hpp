// How a container's PID 1 ended and which signal stops it (runtime.md §1.4, §1.6).
#pragma once

#include "common/config.hpp"

#include <string>
#include <sys/types.h>

namespace lodge::runtime {

enum class InitEnd { halted, rebooted, seccomp, exited, killed };

struct InitOutcome {
    InitEnd end;
    std::string reason;
};

// From waitid()'s si_code/si_status for PID 1.
InitOutcome decode_init_exit(int code, int status);

// True if `sig` is blocked in the SigBlk mask of /proc/<pid>/status.
bool process_blocks_signal(pid_t pid, int sig);

// boot.stop.signal, or for "auto" SIGRTMIN+3 when PID 1 blocks it (systemd), else SIGPWR.
int choose_stop_signal(const ContainerConfig& c, pid_t init_pid);

} // namespace lodge::runtime
