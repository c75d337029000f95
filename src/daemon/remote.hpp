// A container this lodged does not run but whose lock on (shared) storage is held: another
// node runs it (ownership.hpp). It is shown as "remote", never as stopped-and-startable, and
// lodged refuses to start or delete it. Worked out when asked (the lock may change hands on
// another node at any time, with no event here).
#pragma once

#include "common/ownership.hpp"

#include <string>

namespace lodge::daemon {

struct Container;

// True when no supervisor of this lodged runs `c` and some other process holds its lock;
// `owner` (if given) gets the holder's record.
bool held_elsewhere(const Container& c, ownership::Owner* owner = nullptr);

// c.state, or "remote" when held_elsewhere().
std::string shown_state(const Container& c);
// c.reason, or "running on HOST (...)" when held_elsewhere().
std::string shown_reason(const Container& c);

} // namespace lodge::daemon
