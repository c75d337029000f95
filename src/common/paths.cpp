#include "common/paths.hpp"

#include <cstdlib>

namespace lodge::paths {
namespace {

std::string env_or(const char* var, const char* fallback) {
    const char* v = std::getenv(var);
    return v && *v ? v : fallback;
}

} // namespace

std::string state_dir() {
    return env_or("LODGE_STATE_DIR", "/var/lib/lodge");
}
std::string runtime_dir() {
    return env_or("LODGE_RUNTIME_DIR", "/run/lodge");
}
std::string log_dir() {
    return env_or("LODGE_LOG_DIR", "/var/log/lodge");
}
std::string lxcfs_dir() {
    return env_or("LODGE_LXCFS_DIR", "/var/lib/lxcfs");
}

std::string container_dir(const std::string& name) {
    return state_dir() + "/containers/" + name;
}
std::string container_config(const std::string& name) {
    return container_dir(name) + "/config.json";
}
std::string container_rootfs(const std::string& name) {
    return container_dir(name) + "/rootfs";
}
std::string container_runtime(const std::string& name) {
    return runtime_dir() + "/containers/" + name;
}
std::string control_socket(const std::string& name) {
    return container_runtime(name) + "/control";
}
std::string runtime_state(const std::string& name) {
    return container_runtime(name) + "/state.json";
}
std::string console_log(const std::string& name) {
    return log_dir() + "/" + name + "/console.log";
}
std::string devlxd_host_dir() {
    return runtime_dir() + "/devlxd";
}
std::string devlxd_dir() {
    return devlxd_host_dir() + "/guest";
}

} // namespace lodge::paths
