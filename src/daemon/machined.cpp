#include "daemon/machined.hpp"
#include "common/log.hpp"

#include <cstdint>
#include <cstring>

namespace lodge::daemon {

void machined_register(sd_bus* bus, const std::string& name, pid_t leader,
                       const std::string& root_directory, const std::vector<int>& ifindices) {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    // The id stays null (16 zero bytes): lodge does not know the guest's machine-id.
    static const uint8_t id[16] = {};
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(
        bus, &m, "org.freedesktop.machine1", "/org/freedesktop/machine1",
        "org.freedesktop.machine1.Manager", "RegisterMachineWithNetwork");
    if (r >= 0)
        r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0)
        r = sd_bus_message_append_array(m, 'y', id, sizeof id);
    if (r >= 0)
        r = sd_bus_message_append(m, "ssus", "lodge", "container", static_cast<uint32_t>(leader),
                                  root_directory.c_str());
    if (r >= 0) {
        std::vector<int32_t> indices(ifindices.begin(), ifindices.end());
        r = sd_bus_message_append_array(m, 'i', indices.data(), indices.size() * sizeof(int32_t));
    }
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err, &reply);
    if (r >= 0)
        log_debug("Registered container \"%s\" with systemd-machined", name.c_str());
    else if (sd_bus_error_has_names(&err, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                    SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                    "org.freedesktop.systemd1.NoSuchUnit"))
        log_debug("No systemd-machined here; container \"%s\" is not registered", name.c_str());
    else
        log_warning("Cannot register container \"%s\" with systemd-machined: %s", name.c_str(),
                    err.message ? err.message : std::strerror(-r));
    sd_bus_message_unref(reply);
    sd_bus_message_unref(m);
    sd_bus_error_free(&err);
}

} // namespace lodge::daemon
