#include "daemon/remote.hpp"

#include "daemon/manager.hpp"

namespace lodge::daemon {

bool held_elsewhere(const Container& c, ownership::Owner* owner) {
    // Our own supervisor holds the lock while it runs and for a moment after "stopped".
    if (c.running() || c.supervisor_alive() || (c.manager && c.manager->starting(c.name())))
        return false;
    ownership::Owner found;
    bool held = ownership::probe(c.name(), found) > 0;
    if (held && owner)
        *owner = std::move(found);
    return held;
}

std::string shown_state(const Container& c) {
    return held_elsewhere(c) ? "remote" : to_string(c.state);
}

std::string shown_reason(const Container& c) {
    ownership::Owner owner;
    return held_elsewhere(c, &owner) ? "running on " + owner.describe() : c.reason;
}

} // namespace lodge::daemon
