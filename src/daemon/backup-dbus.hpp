// io.lodge1.Manager's ExportContainer and ImportBackup (container backups in LXD's layout,
// image/backup.hpp).
#pragma once

#include "daemon/manager.hpp"

namespace lodge::daemon {

// Adds them to /io/lodge1. Returns 0 or -errno.
int register_backup_methods(sd_bus* bus, Manager& m);

} // namespace lodge::daemon
