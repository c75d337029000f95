#include "daemon/network-dbus.hpp"

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
    const char* name = SD_BUS_ERROR_FAILED;
    switch (-r) {
    case ENOENT:
        name = net_errors::no_such_network;
        break;
    case EEXIST:
        name = net_errors::network_exists;
        break;
    case EBUSY:
        name = net_errors::network_in_use;
        break;
    case EADDRNOTAVAIL:
        name = net_errors::no_free_subnet;
        break;
    case EINVAL:
        name = errors::invalid_config;
        break;
    }
    return sd_bus_error_set(error, name, msg.c_str());
}

// Reads the network name at the head of `m`; with `must_exist`, sets NoSuchNetwork if absent.
const char* read_name(sd_bus_message* m, void* ud, bool must_exist, sd_bus_error* error) {
    const char* name = nullptr;
    if (sd_bus_message_read(m, "s", &name) < 0 || !name) {
        sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Expected a network name");
        return nullptr;
    }
    if (must_exist && !nets(ud).find(name)) {
        nets(ud).manager().polkit().forget(m);
        sd_bus_error_setf(error, net_errors::no_such_network, "No network \"%s\"", name);
        return nullptr;
    }
    return name;
}

int reply_warnings(sd_bus_message* m, const std::vector<std::string>& warnings) {
    sd_bus_message* reply = nullptr;
    int r = sd_bus_message_new_method_return(m, &reply);
    if (r < 0)
        return r;
    MessagePtr owned(reply);
    r = sd_bus_message_open_container(reply, 'a', "s");
    for (auto& w : warnings)
        if (r >= 0)
            r = sd_bus_message_append(reply, "s", w.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
}

int reply_map(sd_bus_message* m, const KeyMap& map) {
    sd_bus_message* reply = nullptr;
    int r = sd_bus_message_new_method_return(m, &reply);
    if (r < 0)
        return r;
    MessagePtr owned(reply);
    r = sd_bus_message_open_container(reply, 'a', "{ss}");
    for (auto& [k, v] : map)
        if (r >= 0)
            r = sd_bus_message_append(reply, "{ss}", k.c_str(), v.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(reply);
    return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
}

int read_strings(sd_bus_message* m, std::vector<std::string>& out) {
    int r = sd_bus_message_enter_container(m, 'a', "s");
    if (r < 0)
        return r;
    const char* s;
    while ((r = sd_bus_message_read(m, "s", &s)) > 0)
        out.push_back(s);
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

int method_list_networks(sd_bus_message* m, void* ud, sd_bus_error*) {
    return guarded([&] {
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        r = sd_bus_message_open_container(reply, 'a', "(sssu)");
        for (auto& [name, n] : nets(ud).networks())
            if (r >= 0)
                r = sd_bus_message_append(reply, "(sssu)", name.c_str(),
                                          n.get("ipv4.address", "none").c_str(),
                                          n.get("ipv6.address", "none").c_str(),
                                          static_cast<uint32_t>(nets(ud).used_by(name).size()));
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_create_network(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, false, e);
        if (!name)
            return -EINVAL;
        KeyMap config;
        if (int r = read_string_map(m, config); r < 0)
            return r;
        int a = nets(ud).manager().polkit().verify(m, actions::manage, "", e);
        if (a <= 0)
            return a < 0 ? a : 1;
        std::vector<std::string> warnings;
        std::string error;
        if (int r = nets(ud).create(name, config, warnings, error); r < 0)
            return reply_network_error(e, r, error);
        return reply_warnings(m, warnings);
    });
}

int method_delete_network(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, true, e);
        if (!name)
            return -ENOENT;
        int a = nets(ud).manager().polkit().verify(m, actions::manage, "", e);
        if (a <= 0)
            return a < 0 ? a : 1;
        std::string error;
        if (int r = nets(ud).remove(name, error); r < 0)
            return reply_network_error(e, r, error);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_get_network_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, true, e);
        if (!name)
            return -ENOENT;
        return reply_map(m, nets(ud).find(name)->config);
    });
}

int method_set_network_config(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, true, e);
        if (!name)
            return -ENOENT;
        KeyMap set;
        std::vector<std::string> unset;
        if (int r = read_string_map(m, set); r < 0)
            return r;
        if (int r = read_strings(m, unset); r < 0)
            return r;
        int a = nets(ud).manager().polkit().verify(m, actions::manage, "", e);
        if (a <= 0)
            return a < 0 ? a : 1;
        std::vector<std::string> warnings;
        std::string error;
        if (int r = nets(ud).set(name, set, unset, warnings, error); r < 0)
            return reply_network_error(e, r, error);
        return reply_warnings(m, warnings);
    });
}

int method_get_network_info(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, true, e);
        if (!name)
            return -ENOENT;
        return reply_map(m, nets(ud).info(name));
    });
}

int method_get_network_leases(sd_bus_message* m, void* ud, sd_bus_error* e) {
    return guarded([&] {
        const char* name = read_name(m, ud, true, e);
        if (!name)
            return -ENOENT;
        sd_bus_message* reply = nullptr;
        int r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
            return r;
        MessagePtr owned(reply);
        r = sd_bus_message_open_container(reply, 'a', "(sssst)");
        for (auto& l : nets(ud).leases(name))
            if (r >= 0)
                r = sd_bus_message_append(reply, "(sssst)", l.hostname.c_str(), l.hwaddr.c_str(),
                                          l.address.c_str(), l.type.c_str(), l.expiry);
        if (r >= 0)
            r = sd_bus_message_close_container(reply);
        return r < 0 ? r : sd_bus_send(nullptr, reply, nullptr);
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
