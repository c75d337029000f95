#include "daemon/network-dbus.hpp"

#include "daemon/bus-method.hpp"
#include "daemon/container-dbus.hpp"
#include "daemon/manager.hpp"

#include <cerrno>

namespace lodge::daemon {
namespace {

namespace net_errors {
constexpr const char* no_such_network = "io.lodge1.NoSuchNetwork";
constexpr const char* network_exists = "io.lodge1.NetworkExists";
constexpr const char* network_in_use = "io.lodge1.NetworkInUse";
constexpr const char* no_free_subnet = "io.lodge1.NoFreeSubnet";
} // namespace net_errors

NetworkManager& nets(void* ud) {
    return *static_cast<NetworkManager*>(ud);
}

int reply_network_error(sd_bus_error* error, int r, const std::string& msg) {
    return set_bus_error(error, error_for(r, msg,
                                          {{ENOENT, net_errors::no_such_network},
                                           {EEXIST, net_errors::network_exists},
                                           {EBUSY, net_errors::network_in_use},
                                           {EADDRNOTAVAIL, net_errors::no_free_subnet},
                                           {EINVAL, errors::invalid_config}}));
}

// Reads the network name at the head of `m` and runs `body(name)`; with `must_exist`, sets
// NoSuchNetwork if there is no such network.
template <typename Body>
int on_network(sd_bus_message* m, void* ud, bool must_exist, sd_bus_error* error, Body&& body) {
    return guarded([&] {
        const char* name = nullptr;
        if (sd_bus_message_read(m, "s", &name) < 0 || !name)
            return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Expected a network name");
        if (must_exist && !nets(ud).find(name)) {
            // A call parked for polkit whose network went away meanwhile.
            nets(ud).manager().polkit().forget(m);
            return sd_bus_error_setf(error, net_errors::no_such_network, "No network \"%s\"", name);
        }
        return body(name);
    });
}

// Runs `body` for a caller allowed io.lodge1.manage.
template <typename Body>
int when_managing(sd_bus_message* m, void* ud, sd_bus_error* e, Body&& body) {
    return if_allowed(nets(ud).manager().polkit().verify(m, actions::manage, "", e), body);
}

// The reply of a change: the warnings it gave, or its failure.
int reply_change(sd_bus_message* m, sd_bus_error* e, int r, const std::string& error,
                 const std::vector<std::string>& warnings) {
    if (r < 0)
        return reply_network_error(e, r, error);
    return reply_with(m, [&](sd_bus_message* reply) { return append_strings(reply, warnings); });
}

int reply_map(sd_bus_message* m, const KeyMap& map) {
    return reply_with(m, [&](sd_bus_message* reply) { return append_string_map(reply, map); });
}

int method_list_networks(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, "(sssu)", nets(ud).networks(), [&](auto& entry) {
                auto& [name, n] = entry;
                return sd_bus_message_append(reply, "(sssu)", name.c_str(),
                                             n.get("ipv4.address", "none").c_str(),
                                             n.get("ipv6.address", "none").c_str(),
                                             static_cast<uint32_t>(nets(ud).used_by(name).size()));
            });
        });
    });
}

int method_create_network(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, false, e, [&](const char* name) {
        KeyMap config;
        if (int r = read_string_map(m, config); r < 0)
            return r;
        return when_managing(m, ud, e, [&] {
            std::vector<std::string> warnings;
            std::string error;
            int r = nets(ud).create(name, config, warnings, error);
            return reply_change(m, e, r, error, warnings);
        });
    });
}

int method_delete_network(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, true, e, [&](const char* name) {
        return when_managing(m, ud, e, [&] {
            std::string error;
            if (int r = nets(ud).remove(name, error); r < 0)
                return reply_network_error(e, r, error);
            return sd_bus_reply_method_return(m, nullptr);
        });
    });
}

int method_get_network_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, true, e,
                      [&](const char* name) { return reply_map(m, nets(ud).find(name)->config); });
}

int method_set_network_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, true, e, [&](const char* name) {
        KeyMap set;
        std::vector<std::string> unset;
        int r = read_string_map(m, set);
        if (r < 0 || (r = read_strings(m, unset)) < 0)
            return r;
        return when_managing(m, ud, e, [&] {
            std::vector<std::string> warnings;
            std::string error;
            int r = nets(ud).set(name, set, unset, warnings, error);
            return reply_change(m, e, r, error, warnings);
        });
    });
}

int method_get_network_info(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, true, e,
                      [&](const char* name) { return reply_map(m, nets(ud).info(name)); });
}

int method_get_network_leases(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return on_network(m, ud, true, e, [&](const char* name) {
        return reply_with(m, [&](sd_bus_message* reply) {
            return append_array(reply, "(sssst)", nets(ud).leases(name), [&](auto& l) {
                return sd_bus_message_append(reply, "(sssst)", l.hostname.c_str(), l.hwaddr.c_str(),
                                             l.address.c_str(), l.type.c_str(), l.expiry);
            });
        });
    });
}

const sd_bus_vtable network_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_ARGS("ListNetworks", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssu)", networks),
                            method_list_networks, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("CreateNetwork", SD_BUS_ARGS("s", name, "a{ss}", config),
                            SD_BUS_RESULT("as", warnings), method_create_network,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("DeleteNetwork", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                            method_delete_network, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetNetworkConfig", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("a{ss}", config), method_get_network_config,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("SetNetworkConfig", SD_BUS_ARGS("s", name, "a{ss}", set, "as", unset),
                            SD_BUS_RESULT("as", warnings), method_set_network_config,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetNetworkInfo", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a{ss}", info),
                            method_get_network_info, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_ARGS("GetNetworkLeases", SD_BUS_ARGS("s", name),
                            SD_BUS_RESULT("a(sssst)", leases), method_get_network_leases,
                            SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

} // namespace

int register_network_methods(sd_bus* bus, NetworkManager& networks) {
    return sd_bus_add_object_vtable(bus, nullptr, "/io/lodge1", "io.lodge1.Manager", network_vtable,
                                    &networks);
}

} // namespace lodge::daemon
