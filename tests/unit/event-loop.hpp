// lodged's event loop for unit tests of its parts.
#pragma once

#include "common/sd-util.hpp"

#include <csignal>

namespace lodge::test {

// A new sd-event loop with SIGCHLD blocked, as lodged has it (sd-event's child sources need
// it); null if sd-event could not make one.
inline EventPtr new_lodged_loop() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    sd_event* e = nullptr;
    if (sd_event_new(&e) < 0)
        return nullptr;
    return EventPtr(e);
}

} // namespace lodge::test
