// enable and disable: containers started at boot by their lodge@NAME.service.
#include "common/validate.hpp"
#include "ctl/bus.hpp"

namespace lodge::ctl {

// enable/disable: the lodge@NAME.service template instance, through systemd's own API, as
// machinectl enable does for systemd-nspawn@.service.
int verb_enable_or_disable(const Options& o, sd_bus* bus) {
    bool enable = o.args[0] == "enable";
    std::vector<std::string> units;
    for (size_t i = 1; i < o.args.size(); i++) {
        if (auto e = check_container_name(o.args[i]); !e.empty())
            return fail(e);
        BusError err;
        if (int r = call_manager(bus, err, nullptr, "GetContainer", "s", o.args[i].c_str()); r < 0)
            return bus_fail(err, r);
        units.push_back("lodge@" + o.args[i] + ".service");
    }
    std::vector<const char*> strv;
    for (auto& u : units)
        strv.push_back(u.c_str());
    strv.push_back(nullptr);
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
                                       "/org/freedesktop/systemd1",
                                       "org.freedesktop.systemd1.Manager",
                                       enable ? "EnableUnitFiles" : "DisableUnitFiles") < 0)
        return fail("Cannot build the request");
    MessagePtr call(m);
    int r = sd_bus_message_append_strv(m, const_cast<char**>(strv.data()));
    if (r >= 0)
        r = enable ? sd_bus_message_append(m, "bb", 0, 1) : sd_bus_message_append(m, "b", 0);
    BusError err;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
    if (r < 0) {
        if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
            sd_bus_error_has_name(&err.e, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
            return fail("systemd is not running on this host: cannot enable units");
        return bus_fail(err, r);
    }
    BusError reload_err;
    sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                       "org.freedesktop.systemd1.Manager", "Reload", &reload_err.e, nullptr,
                       nullptr);
    return 0;
}

} // namespace lodge::ctl
