// Process state a new program should start from.
#pragma once

namespace lodge {

// Every signal back to its default action and none blocked: what a container's PID 1 and an
// exec'd command must see, whatever the supervisor or lodged had set.
void reset_signal_state();

} // namespace lodge
