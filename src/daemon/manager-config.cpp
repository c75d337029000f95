// A container's config and devices: validated, written to disk before anyone sees them, and
// followed live by a running container (limits.*, security.devlxd, nics, user.* events for the
// guest); isolated id ranges; the console.
#include "common/limits.hpp"
#include "common/log.hpp"
#include "common/nic.hpp"
#include "common/proxy-device.hpp"
#include "common/validate.hpp"
#include "daemon/manager.hpp"
#include "devlxd/devlxd-api.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <set>

namespace lodge::daemon {

namespace {

// Isolated ranges come from a fixed pool above the shared default range (1000000, 65536 ids),
// in 65536-aligned steps; /etc/subuid is not consulted (lodged runs as root and owns the pool).
constexpr uint64_t isolated_pool_start = 1000000 + 65536;
constexpr uint64_t idmap_step = 65536;

// How long the supervisor has to hand over its console.
constexpr uint64_t console_timeout_usec = 5 * 1000000ULL;

bool ranges_overlap(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
    return a < b + b_size && b < a + a_size;
}

Error invalid_config(std::string message) {
    return make_error(errors::invalid_config, EINVAL, std::move(message));
}

Error overlap_error(const std::string& other) {
    return invalid_config("Invalid value for \"security.idmap.base\": its ids overlap the "
                          "isolated range of container \"" +
                          other + "\"");
}

bool touches_limits(const KeyMap& set, const std::vector<std::string>& unset) {
    for (auto& [k, v] : set)
        if (k.rfind("limits.", 0) == 0)
            return true;
    for (auto& k : unset)
        if (k.rfind("limits.", 0) == 0)
            return true;
    return false;
}

} // namespace

Result<> Manager::set_config(Container& c, const KeyMap& set, const std::vector<std::string>& unset,
                             Done done) {
    ContainerConfig next = c.config;
    for (auto& [k, v] : set) {
        if (auto e = check_config_key(k, v); !e.empty())
            return invalid_config(e);
        next.config[k] = v;
    }
    for (auto& k : unset) {
        if (auto e = check_config_key(k, "x");
            e.find("Unknown") != std::string::npos || e.find("read-only") != std::string::npos)
            return invalid_config(e);
        next.config.erase(k);
    }
    if (std::string other = isolated_overlap(&c, next); !other.empty())
        return overlap_error(other);
    bool cloud_init_changed = false;
    for (auto& [k, v] : next.config)
        cloud_init_changed |= is_cloud_init_key(k) && c.config.get(k) != v;
    for (auto& [k, v] : c.config.config)
        cloud_init_changed |= is_cloud_init_key(k) && !next.config.count(k);
    if (cloud_init_changed)
        next.config[instance_id_key] = new_instance_id();
    ContainerConfig before = c.config;
    if (auto saved = commit_config(c, std::move(next), "Config"); !saved)
        return saved;
    if (c.running()) {
        // The guest hears of user.* changes only (LXD's rule), old and new value alike.
        uint64_t now = realtime_usec();
        std::set<std::string> keys;
        for (auto& [k, v] : set)
            keys.insert(k);
        keys.insert(unset.begin(), unset.end());
        for (auto& k : keys) {
            std::string was = before.get(k), is = c.config.get(k);
            if (k.rfind("user.", 0) == 0 && was != is)
                guest_event(c, devlxd::event_config, devlxd::config_event(k, was, is, now));
        }
    }
    bool limits = touches_limits(set, unset) && c.running() && !starting(c.name());
    bool devlxd_changed = c.running() && before.get_bool("security.devlxd", true) !=
                                             c.config.get_bool("security.devlxd", true);
    if (!devlxd_changed) {
        if (limits)
            return apply_limits(c, std::move(done));
        done({});
        return {};
    }
    // The reply waits for /dev/lxd to follow, as `lxc config set` does: a caller that looks
    // right after it sees the new state. A failure there is logged; the key stays saved and
    // holds from the next start.
    std::string target = c.name();
    auto verb = c.config.get_bool("security.devlxd", true) ? runtime::proto::Verb::devlxd_attach
                                                           : runtime::proto::Verb::devlxd_detach;
    auto followed = [this, target, limits, done](const Result<>& r) {
        if (!r)
            log_error("Cannot follow security.devlxd in %s: %s", target.c_str(),
                      r.error().message.c_str());
        // A container stopped or starting again meanwhile takes its limits at that start.
        Container* again = limits ? find(target) : nullptr;
        if (!again || !again->running() || starting(target))
            return done({});
        if (auto sent = apply_limits(*again, done); !sent)
            done(sent);
    };
    if (auto sent = request(c, runtime::proto::Request::of(verb), errors::failed, followed); !sent)
        followed(sent);
    return {};
}

// limits.* apply to a running container at once: the supervisor writes them on the payload
// cgroup, in a (delegated) scope too.
Result<> Manager::apply_limits(Container& c, Done done) {
    return request(c, runtime::proto::Request::apply_limits(limits_of(c.config)), errors::failed,
                   std::move(done));
}

Result<> Manager::commit_config(Container& c, ContainerConfig next, const char* property) {
    if (int r = registry_.save(next); r < 0)
        return make_error(errors::failed, r,
                          std::string("Cannot write config.json: ") + std::strerror(-r));
    c.config = std::move(next);
    sd_bus_emit_properties_changed(bus_, c.object_path().c_str(), "io.lodge1.Container", property,
                                   nullptr);
    return {};
}

Result<> Manager::add_device(Container& c, const std::string& device, const KeyMap& keys,
                             Done done) {
    if (device.empty() || device.find('/') != std::string::npos)
        return invalid_config("Invalid device name \"" + device + "\"");
    if (c.config.devices.count(device))
        return invalid_config("Device \"" + device + "\" already exists");
    ContainerConfig next = c.config;
    next.devices[device] = keys;
    if (auto e = check_container_config(next); !e.empty())
        return invalid_config(e);
    bool nic = is_nic(keys);
    if (is_proxy(keys) && network_check_)
        if (auto e = network_check_(next); !e.empty())
            return invalid_config(e);
    std::optional<runtime::proto::Request> plug;
    if (nic) {
        auto prepared = prepare_nic(c, next, device);
        if (!prepared)
            return prepared.error();
        plug = *prepared;
    }
    // Stored once plugged (a nic of a running container), or at once.
    std::string name = c.name();
    auto store = [this, name, device, keys, next, nic, done](const Result<>& plugged) {
        Container* found = find(name);
        if (!plugged)
            return done(plugged);
        if (!found)
            return done(make_error(errors::no_such_container, ENOENT,
                                   "Container \"" + name + "\" is gone"));
        if (auto saved = commit_config(*found, next, "Devices"); !saved) {
            if (nic && found->running())
                (void)request(*found, runtime::proto::Request::nic_remove(device), errors::failed,
                              [](const Result<>&) {});
            return done(saved);
        }
        // A proxy that cannot listen (its port taken) is not kept.
        if (is_proxy(keys) && on_change_)
            if (auto e = on_change_(*found); !e.empty()) {
                ContainerConfig back = found->config;
                back.devices.erase(device);
                (void)commit_config(*found, back, "Devices");
                on_change_(*found);
                return done(make_error(errors::failed, EIO, e));
            }
        if (nic) // its volatile keys
            sd_bus_emit_properties_changed(bus_, found->object_path().c_str(),
                                           "io.lodge1.Container", "Config", nullptr);
        if (found->running())
            guest_event(*found, devlxd::event_device,
                        devlxd::device_event("added", device, keys, realtime_usec()));
        done({});
    };
    if (!plug) {
        store({});
        return {};
    }
    // The supervisor refusing the nic (its parent is missing, ...) is a config the host cannot
    // carry out.
    return request(c, *plug, errors::invalid_config, store);
}

Result<> Manager::remove_device(Container& c, const std::string& device, Done done) {
    if (!c.config.devices.count(device))
        return make_error(errors::no_such_device, ENOENT,
                          "No device \"" + device + "\" in container \"" + c.name() + "\"");
    KeyMap removed = c.config.devices.at(device);
    std::string name = c.name();
    // Unplugged first (a nic of a running container), then forgotten.
    auto forget = [this, name, device, removed, done](const Result<>& unplugged) {
        Container* found = find(name);
        if (!unplugged)
            return done(unplugged);
        if (!found)
            return done(make_error(errors::no_such_container, ENOENT,
                                   "Container \"" + name + "\" is gone"));
        ContainerConfig next = found->config;
        next.devices.erase(device);
        drop_device_volatile(next, device);
        if (auto saved = commit_config(*found, std::move(next), "Devices"); !saved)
            return done(saved);
        if (is_proxy(removed) && on_change_)
            on_change_(*found);
        if (found->running())
            guest_event(*found, devlxd::event_device,
                        devlxd::device_event("removed", device, removed, realtime_usec()));
        done({});
    };
    if (!is_nic(removed) || !c.running()) {
        forget({});
        return {};
    }
    return request(c, runtime::proto::Request::nic_remove(device), errors::failed, forget);
}

std::string Manager::isolated_overlap(const Container* self, const ContainerConfig& next) const {
    if (!next.config.count("security.idmap.base"))
        return {};
    uint64_t base = next.idmap_base(), size = next.idmap_size();
    for (auto& [name, other] : containers_)
        if (other.get() != self && other->config.config.count("volatile.idmap.base") &&
            other->config.get_bool("security.idmap.isolated", false) &&
            ranges_overlap(base, size, other->config.idmap_base(), other->config.idmap_size()))
            return name;
    return {};
}

Result<bool> Manager::assign_idmap(const Container& c, ContainerConfig& config) {
    // A container made before bases were checked: refused here, with the key named.
    for (const char* key : {"security.idmap.base", "security.idmap.size"})
        if (config.config.count(key))
            if (auto e = check_config_key(key, config.config.at(key)); !e.empty())
                return invalid_config(e);
    bool isolated = config.get_bool("security.idmap.isolated", false);
    auto recorded = config.config.find("volatile.idmap.base");
    if (!isolated || config.config.count("security.idmap.base")) {
        if (recorded == config.config.end())
            return false;
        config.config.erase(recorded); // the range goes back to the pool
        return true;
    }
    uint64_t size = config.idmap_size();
    auto taken = [&](uint64_t base) {
        for (auto& [name, other] : containers_)
            if (other.get() != &c && !other->config.privileged() &&
                ranges_overlap(base, size, other->config.idmap_base(), other->config.idmap_size()))
                return true;
        return false;
    };
    // Kept across restarts while nobody else's ids moved into it.
    if (recorded != config.config.end())
        if (auto base = parse_uint(recorded->second, UINT32_MAX);
            base && *base >= isolated_pool_start && *base + size <= UINT32_MAX && !taken(*base))
            return false;
    for (uint64_t base = isolated_pool_start; base + size <= UINT32_MAX; base += idmap_step)
        if (!taken(base)) {
            config.config["volatile.idmap.base"] = std::to_string(base);
            return true;
        }
    return make_error(errors::start_failed, ENOSPC,
                      "No free range of " + std::to_string(size) +
                          " ids is left for isolated container \"" + c.name() + "\"");
}

Result<> Manager::open_console(Container& c, ConsoleDone done) {
    if (starting(c.name()))
        return make_error(errors::busy, EBUSY,
                          "Container \"" + c.name() + "\" is starting; try again once it runs");
    // The first message is the supervisor's {"ok":true}; after it the socket is the console.
    std::string name = c.name();
    auto handover = [name, done](const std::string& reply, Fd sock) {
        int flags = sock ? ::fcntl(sock.get(), F_GETFL) : -1;
        if (!runtime::proto::decode_reply(reply).ok() || flags < 0 ||
            ::fcntl(sock.get(), F_SETFL, flags & ~O_NONBLOCK) < 0)
            return done(make_error(errors::failed, EIO,
                                   "The supervisor of \"" + name + "\" refused the console"));
        done(std::move(sock));
    };
    SupervisorLink::RequestOptions options;
    options.timeout_usec = console_timeout_usec;
    options.keep_connection = true;
    return link_->request(
        c.name(), runtime::proto::encode(runtime::proto::Request::of(runtime::proto::Verb::attach)),
        handover, options);
}

} // namespace lodge::daemon
