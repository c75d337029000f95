// lodgectl verbs for snapshots, restore, copy, rename (snapshot.cpp), files (file.cpp) and
// config edit (config-yaml.cpp), issue 15; declared with the others in verbs.hpp.
#pragma once

#include "ctl/verbs.hpp"

namespace lodge::ctl {

using InstanceOptions = Options;

} // namespace lodge::ctl
