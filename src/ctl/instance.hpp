// lodgectl verbs for snapshots, restore, copy, rename (snapshot.cpp), files (file.cpp) and
// config edit (config-yaml.cpp), issue 15; declared with the others in verbs.hpp.
#pragma once

#include "ctl/verbs.hpp"

namespace lodge::ctl {

using InstanceOptions = Options;

// file-mount.cpp: lodgectl file mount NAME[/PATH] DIR (sshfs over the guest's sftp-server).
int file_mount(const InstanceOptions& o, sd_bus* bus);

} // namespace lodge::ctl
