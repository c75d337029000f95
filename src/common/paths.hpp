// Where lodge keeps things. Every path can be moved by an environment variable (CONTRACT §2).
#pragma once

#include <string>

namespace lodge::paths {

std::string state_dir();   // LODGE_STATE_DIR, default /var/lib/lodge
std::string runtime_dir(); // LODGE_RUNTIME_DIR, default /run/lodge
std::string log_dir();     // LODGE_LOG_DIR, default /var/log/lodge
std::string lxcfs_dir();   // LODGE_LXCFS_DIR, default /var/lib/lxcfs

std::string container_dir(const std::string& name);     // <state>/containers/<name>
std::string container_config(const std::string& name);  // .../config.json
std::string container_rootfs(const std::string& name);  // .../rootfs
std::string container_runtime(const std::string& name); // <runtime>/containers/<name>
std::string control_socket(const std::string& name);    // .../control
std::string runtime_state(const std::string& name);     // .../state.json
std::string console_log(const std::string& name);       // <log>/<name>/console.log
// The guest API socket: <runtime>/devlxd is root-only (0700), so no host user but root can
// reach the socket; <runtime>/devlxd/guest (0755) holds it and is bound onto /dev/lxd in
// containers; <runtime>/devlxd/sock is a symlink to guest/sock (CONTRACT §2's path).
std::string devlxd_host_dir(); // <runtime>/devlxd
std::string devlxd_dir();      // <runtime>/devlxd/guest

} // namespace lodge::paths
