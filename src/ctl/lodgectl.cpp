// lodgectl: the admin CLI, machinectl-style. It talks to lodged over D-Bus only (CONTRACT §8):
// sources are opened here and passed as file descriptors; lodged never opens a caller's path.
#include "common/fdpass.hpp"
#include "common/sd-util.hpp"
#include "common/validate.hpp"
#include "ctl/image.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <systemd/sd-bus.h>
#include <termios.h>
#include <unistd.h>
#include <vector>

namespace {

struct Options {
    bool json = false;
    bool legend = true;
    bool quiet = false;
    std::string host;
    std::vector<std::string> args;             // verb and its arguments, options removed
    std::map<std::string, std::string> values; // --timeout, --signal, ...
    std::vector<std::string> config;           // -c KEY=VALUE
    bool force = false;
    bool show_log = false;
    bool help = false;
    int pty = -1;                     // -t: 1, -T: 0, else decided by whether stdin is a terminal
    std::vector<std::string> env;     // --env K=V
    std::vector<std::string> command; // after --
};

lodge::ctl::ImageArgs image_args(const Options& o) {
    return {o.json, o.quiet, o.legend, o.args, o.values, o.config};
}

struct Bus {
    sd_bus* bus = nullptr;
    ~Bus() { sd_bus_flush_close_unref(bus); }
};

struct Error {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ~Error() { sd_bus_error_free(&e); }
};

struct Reply {
    sd_bus_message* m = nullptr;
    ~Reply() { sd_bus_message_unref(m); }
};

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

int bus_fail(const Error& err, int r) {
    if (sd_bus_error_is_set(&err.e))
        return fail(err.e.message ? err.e.message : err.e.name);
    return fail(std::string("Failed to talk to lodged: ") + std::strerror(-r));
}

constexpr const char* service = "io.lodge1";
constexpr const char* manager_path = "/io/lodge1";
constexpr const char* manager_iface = "io.lodge1.Manager";

int open_bus(const Options& o, Bus& b) {
    int r = o.host.empty() ? sd_bus_open_system(&b.bus)
                           : sd_bus_open_system_remote(&b.bus, o.host.c_str());
    if (r < 0)
        return fail(std::string("Failed to connect to the system bus: ") + std::strerror(-r)), r;
    // Stop, restart and imports can take long: the reply comes when the work is done.
    sd_bus_set_method_call_timeout(b.bus, 30ULL * 60 * 1000000);
    return 0;
}

int append_map(sd_bus_message* m, const std::vector<std::string>& kvs, std::string& bad) {
    int r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (auto& kv : kvs) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
            bad = kv;
            return -EINVAL;
        }
        if (r >= 0)
            r = sd_bus_message_append(m, "{ss}", kv.substr(0, eq).c_str(),
                                      kv.substr(eq + 1).c_str());
    }
    return r < 0 ? r : sd_bus_message_close_container(m);
}

// ---- properties ------------------------------------------------------------------------------

struct ContainerInfo {
    std::string name, state, reason, unit, root, boot_id;
    uint32_t leader = 0;
    bool privileged = false;
    bool lxcfs = false;
    bool ready = false;
    uint64_t timestamp = 0;
    std::map<std::string, std::string> config;
    std::map<std::string, std::map<std::string, std::string>> devices;
};

int get_info(sd_bus* bus, const std::string& name, ContainerInfo& info, Error& err) {
    Reply reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetContainer", &err.e,
                               &reply.m, "s", name.c_str());
    if (r < 0)
        return r;
    const char* path;
    if ((r = sd_bus_message_read(reply.m, "o", &path)) < 0)
        return r;
    Reply all;
    r = sd_bus_call_method(bus, service, path, "org.freedesktop.DBus.Properties", "GetAll", &err.e,
                           &all.m, "s", "io.lodge1.Container");
    if (r < 0)
        return r;
    if ((r = sd_bus_message_enter_container(all.m, 'a', "{sv}")) < 0)
        return r;
    while ((r = sd_bus_message_enter_container(all.m, 'e', "sv")) > 0) {
        const char* prop;
        sd_bus_message_read(all.m, "s", &prop);
        std::string p = prop;
        const char* contents = nullptr;
        sd_bus_message_peek_type(all.m, nullptr, &contents);
        sd_bus_message_enter_container(all.m, 'v', contents);
        auto str = [&](std::string& out) {
            const char* s;
            sd_bus_message_read(all.m, "s", &s);
            out = s;
        };
        if (p == "Name")
            str(info.name);
        else if (p == "State")
            str(info.state);
        else if (p == "Reason")
            str(info.reason);
        else if (p == "Unit")
            str(info.unit);
        else if (p == "RootDirectory")
            str(info.root);
        else if (p == "BootId")
            str(info.boot_id);
        else if (p == "Leader")
            sd_bus_message_read(all.m, "u", &info.leader);
        else if (p == "Timestamp")
            sd_bus_message_read(all.m, "t", &info.timestamp);
        else if (p == "Privileged" || p == "LXCFS" || p == "Ready") {
            int b = 0;
            sd_bus_message_read(all.m, "b", &b);
            (p == "LXCFS" ? info.lxcfs : p == "Ready" ? info.ready : info.privileged) = b;
        } else if (p == "Config")
            lodge::read_string_map(all.m, info.config);
        else if (p == "Devices") {
            sd_bus_message_enter_container(all.m, 'a', "{sa{ss}}");
            while (sd_bus_message_enter_container(all.m, 'e', "sa{ss}") > 0) {
                const char* dev;
                sd_bus_message_read(all.m, "s", &dev);
                lodge::read_string_map(all.m, info.devices[dev]);
                sd_bus_message_exit_container(all.m);
            }
            sd_bus_message_exit_container(all.m);
        } else
            sd_bus_message_skip(all.m, contents);
        sd_bus_message_exit_container(all.m);
        sd_bus_message_exit_container(all.m);
    }
    return 0;
}

nlohmann::json info_json(const ContainerInfo& i) {
    return {{"name", i.name},
            {"state", i.state},
            {"reason", i.reason},
            {"leader", i.leader},
            {"unit", i.unit},
            {"root_directory", i.root},
            {"privileged", i.privileged},
            {"lxcfs", i.lxcfs},
            {"ready", i.ready},
            {"boot_id", i.boot_id},
            {"timestamp", i.timestamp},
            {"config", i.config},
            {"devices", i.devices}};
}

// ---- verbs -----------------------------------------------------------------------------------

// A running container's addresses as lodged reads them inside its network namespace (the
// container object's GetAddresses), IPv6 link-local ones left out as `lxc list` does.
void list_addresses(sd_bus* bus, const std::string& path, std::vector<std::string>& ipv4,
                    std::vector<std::string>& ipv6) {
    Error err;
    Reply reply;
    if (sd_bus_call_method(bus, service, path.c_str(), "io.lodge1.Container", "GetAddresses",
                           &err.e, &reply.m, nullptr) < 0)
        return;
    if (sd_bus_message_enter_container(reply.m, 'a', "(iay)") <= 0)
        return;
    while (sd_bus_message_enter_container(reply.m, 'r', "iay") > 0) {
        int32_t family = 0;
        const void* bytes = nullptr;
        size_t len = 0;
        if (sd_bus_message_read(reply.m, "i", &family) < 0 ||
            sd_bus_message_read_array(reply.m, 'y', &bytes, &len) < 0)
            break;
        sd_bus_message_exit_container(reply.m);
        char text[INET6_ADDRSTRLEN] = "";
        bool v4 = family == AF_INET && len == 4, v6 = family == AF_INET6 && len == 16;
        if ((!v4 && !v6) || !inet_ntop(family, bytes, text, sizeof text))
            continue;
        auto* b = static_cast<const uint8_t*>(bytes);
        if (v6 && b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
            continue;
        (v4 ? ipv4 : ipv6).push_back(text);
    }
}

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v)
        out += (out.empty() ? "" : ",") + s;
    return out.empty() ? "-" : out;
}

int verb_list(const Options& o, sd_bus* bus) {
    Error err;
    Reply reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "ListContainers", &err.e,
                               &reply.m, nullptr);
    if (r < 0)
        return bus_fail(err, r);
    struct Row {
        std::string name, state;
        uint32_t leader;
        std::vector<std::string> ipv4, ipv6;
    };
    std::vector<Row> rows;
    sd_bus_message_enter_container(reply.m, 'a', "(ssuo)");
    const char *name, *state, *path;
    uint32_t leader;
    while ((r = sd_bus_message_read(reply.m, "(ssuo)", &name, &state, &leader, &path)) > 0) {
        rows.push_back({name, state, leader, {}, {}});
        if (leader && !o.quiet)
            list_addresses(bus, path, rows.back().ipv4, rows.back().ipv6);
    }
    if (o.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& row : rows)
            j.push_back({{"name", row.name},
                         {"state", row.state},
                         {"leader", row.leader},
                         {"ipv4", row.ipv4},
                         {"ipv6", row.ipv6}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (o.quiet) {
        for (auto& row : rows)
            std::printf("%s\n", row.name.c_str());
        return 0;
    }
    size_t w = 4, w4 = 4;
    for (auto& row : rows) {
        w = std::max(w, row.name.size());
        w4 = std::max(w4, joined(row.ipv4).size());
    }
    if (o.legend)
        std::printf("%-*s %-8s %-7s %-*s %s\n", static_cast<int>(w), "NAME", "STATE", "LEADER",
                    static_cast<int>(w4), "IPV4", "IPV6");
    for (auto& row : rows)
        std::printf("%-*s %-8s %-7s %-*s %s\n", static_cast<int>(w), row.name.c_str(),
                    row.state.c_str(), row.leader ? std::to_string(row.leader).c_str() : "-",
                    static_cast<int>(w4), joined(row.ipv4).c_str(), joined(row.ipv6).c_str());
    if (o.legend)
        std::printf("\n%zu containers listed.\n", rows.size());
    return 0;
}

int verb_status_or_show(const Options& o, sd_bus* bus, bool show) {
    if (o.args.size() < 2)
        return fail(std::string("Usage: lodgectl ") + (show ? "show" : "status") + " NAME...");
    int ret = 0;
    nlohmann::json all = nlohmann::json::array();
    for (size_t i = 1; i < o.args.size(); i++) {
        Error err;
        ContainerInfo info;
        if (int r = get_info(bus, o.args[i], info, err); r < 0) {
            ret = bus_fail(err, r);
            continue;
        }
        if (o.json) {
            all.push_back(info_json(info));
            continue;
        }
        if (show) {
            std::printf("Name=%s\nState=%s\nReason=%s\nLeader=%u\nUnit=%s\nRootDirectory=%s\n"
                        "Privileged=%s\nBootId=%s\nTimestamp=%llu\n",
                        info.name.c_str(), info.state.c_str(), info.reason.c_str(), info.leader,
                        info.unit.c_str(), info.root.c_str(), info.privileged ? "yes" : "no",
                        info.boot_id.c_str(), static_cast<unsigned long long>(info.timestamp));
            for (auto& [k, v] : info.config)
                std::printf("Config.%s=%s\n", k.c_str(), v.c_str());
            continue;
        }
        std::printf("%s\n", info.name.c_str());
        std::printf("      State: %s%s%s\n", info.state.c_str(), info.reason.empty() ? "" : " (",
                    info.reason.empty() ? "" : (info.reason + ")").c_str());
        if (info.leader)
            std::printf("     Leader: %u\n", info.leader);
        std::printf("       Unit: %s\n", info.unit.c_str());
        std::printf("       Root: %s\n", info.root.c_str());
        std::printf(" Privileged: %s\n", info.privileged ? "yes" : "no");
        if (!info.boot_id.empty() && info.leader)
            std::printf("    Boot ID: %s\n", info.boot_id.c_str());
        if (info.leader) {
            std::printf("      LXCFS: %s\n", info.lxcfs ? "bound" : "not bound");
            std::printf("      Ready: %s\n",
                        info.ready ? "yes (the guest said so on /dev/lxd/sock)" : "no");
        }
        // nics: the name in the container, its MAC, and this boot's host end while running.
        const char* label = "       NICs: ";
        for (auto& [dev, keys] : info.devices) {
            if (keys.count("type") == 0 || keys.at("type") != "nic")
                continue;
            auto key = [&](const std::string& k) {
                auto it = keys.find(k);
                if (it != keys.end())
                    return it->second;
                auto v = info.config.find("volatile." + dev + "." + k);
                return v == info.config.end() ? std::string() : v->second;
            };
            std::string host = key("host_name");
            std::string parent = keys.count("parent") ? keys.at("parent") : "";
            std::printf("%s%s: %s %s (%s%s%s%s)\n", label, dev.c_str(), key("name").c_str(),
                        key("hwaddr").c_str(),
                        keys.count("nictype") ? keys.at("nictype").c_str() : "",
                        parent.empty() ? "" : (" on " + parent).c_str(),
                        host.empty() ? "" : ", host ", host.c_str());
            label = "             ";
        }
    }
    if (o.json)
        std::printf("%s\n", (all.size() == 1 ? all[0] : all).dump().c_str());
    return ret;
}

// A missing file named like a tarball is a typo, not an image name.
bool looks_like_tarball(const std::string& arg) {
    for (const char* ext : {".tar", ".gz", ".xz", ".zst", ".bz2", ".tgz", ".squashfs"})
        if (arg.size() > std::strlen(ext) &&
            arg.compare(arg.size() - std::strlen(ext), std::string::npos, ext) == 0)
            return true;
    return false;
}

int verb_create(const Options& o, sd_bus* bus) {
    if (o.args.size() < 2 || o.args.size() > 4)
        return fail("Usage: lodgectl create NAME [DIRECTORY | TARBALL | METADATA ROOTFS] "
                    "[-c KEY=VALUE]...");
    const std::string& name = o.args[1];
    if (auto e = lodge::check_container_name(name); !e.empty())
        return fail(e);
    std::vector<int> fds;
    const char* method = "CreateContainer";
    for (size_t i = 2; i < o.args.size(); i++) {
        int fd = ::open(o.args[i].c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
        // No such file: an image from the store (or a remote), as `launch` takes it.
        if (fd < 0 && errno == ENOENT && o.args.size() == 3 &&
            o.args[i].find('/') == std::string::npos && !looks_like_tarball(o.args[i]))
            return lodge::ctl::create_from_image(image_args(o), bus, name, o.args[i]);
        if (fd < 0)
            return fail("Cannot open " + o.args[i] + ": " + std::strerror(errno));
        fds.push_back(fd);
    }
    if (fds.size() == 1) {
        struct stat st {};
        ::fstat(fds[0], &st);
        method = S_ISDIR(st.st_mode) ? "CreateContainerFromDirectory" : "ImportContainer";
    } else if (fds.size() == 2) {
        method = "ImportContainerSplit";
    }
    Error err;
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface, method);
    if (r < 0)
        return fail("Cannot build the request");
    Reply call{m};
    std::string bad;
    r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0 && (r = append_map(m, o.config, bad)) == -EINVAL)
        return fail("Invalid config \"" + bad + "\": expected KEY=VALUE");
    for (int fd : fds)
        if (r >= 0)
            r = sd_bus_message_append(m, "h", fd);
    // lodged reads the very file description we opened, so its offset is the import's
    // progress: on a terminal, show it while waiting for the answer.
    uint64_t total = 0;
    for (int fd : fds) {
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            total += static_cast<uint64_t>(st.st_size);
    }
    bool progress = total > 0 && !o.quiet && ::isatty(STDERR_FILENO);
    Reply reply;
    if (r >= 0 && !progress)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    if (r >= 0 && progress) {
        struct Done {
            bool done = false;
            std::string error;
        } done;
        sd_bus_slot* slot = nullptr;
        r = sd_bus_call_async(
            bus, &slot, m,
            [](sd_bus_message* rep, void* ud, sd_bus_error*) {
                auto* d = static_cast<Done*>(ud);
                d->done = true;
                if (const sd_bus_error* e = sd_bus_message_get_error(rep))
                    d->error = e->message ? e->message : e->name;
                return 0;
            },
            &done, UINT64_MAX);
        while (r >= 0 && !done.done) {
            uint64_t read = 0;
            for (int fd : fds)
                if (off_t pos = ::lseek(fd, 0, SEEK_CUR); pos > 0)
                    read += static_cast<uint64_t>(pos);
            std::fprintf(stderr, "\rImporting %s: %3u%% (%.1f of %.1f MiB)", name.c_str(),
                         static_cast<unsigned>(std::min<uint64_t>(100, read * 100 / total)),
                         static_cast<double>(read) / (1 << 20),
                         static_cast<double>(total) / (1 << 20));
            while ((r = sd_bus_process(bus, nullptr)) > 0) {
            }
            if (r >= 0 && !done.done)
                r = sd_bus_wait(bus, 200000);
        }
        std::fprintf(stderr, "\r\033[K");
        sd_bus_slot_unref(slot);
        if (r >= 0 && !done.error.empty()) {
            for (int fd : fds)
                ::close(fd);
            return fail(done.error);
        }
    }
    for (int fd : fds)
        ::close(fd);
    if (r < 0)
        return bus_fail(err, r);
    if (o.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"created", true}}.dump().c_str());
    else if (!o.quiet)
        std::printf("Created container %s\n", name.c_str());
    return 0;
}

// Calls a by-name Manager method for each NAME argument.
int for_each_name(const Options& o, sd_bus* bus, const char* usage,
                  const std::function<int(const std::string&, Error&)>& call) {
    if (o.args.size() < 2)
        return fail(usage);
    int ret = 0;
    for (size_t i = 1; i < o.args.size(); i++) {
        Error err;
        if (int r = call(o.args[i], err); r < 0)
            ret = bus_fail(err, r);
    }
    (void)bus;
    return ret;
}

int parse_timeout(const Options& o, int32_t& out) {
    out = -1;
    auto it = o.values.find("timeout");
    if (it == o.values.end())
        return 0;
    auto v = lodge::parse_uint(it->second, INT32_MAX);
    if (!v)
        return fail("Invalid --timeout \"" + it->second + "\": expected seconds"), -EINVAL;
    out = static_cast<int32_t>(*v);
    return 0;
}

int verb_config(const Options& o, sd_bus* bus) {
    if (o.args.size() < 3)
        return fail("Usage: lodgectl config get NAME KEY | set NAME KEY=VALUE... | "
                    "unset NAME KEY... | show NAME");
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    if (sub == "get" || sub == "show") {
        Error err;
        ContainerInfo info;
        Reply full;
        // The whole config needs io.lodge1.manage; without it, the public part (the Config
        // property has no cloud-init.*, environment.* or user.* keys).
        int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetContainerConfig",
                                   &err.e, &full.m, "s", name.c_str());
        if (r >= 0)
            r = lodge::read_string_map(full.m, info.config);
        else if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_ACCESS_DENIED)) {
            Error public_err;
            if ((r = get_info(bus, name, info, public_err)) < 0)
                return bus_fail(public_err, r);
        }
        if (r < 0)
            return bus_fail(err, r);
        if (sub == "get") {
            if (o.args.size() != 4)
                return fail("Usage: lodgectl config get NAME KEY");
            // An unset key prints an empty line, as `lxc config get` does.
            auto it = info.config.find(o.args[3]);
            if (o.json) // the value as a JSON string, null when unset
                std::printf("%s\n", (it != info.config.end() ? nlohmann::json(it->second)
                                                             : nlohmann::json())
                                        .dump()
                                        .c_str());
            else
                std::printf("%s\n", it != info.config.end() ? it->second.c_str() : "");
            return 0;
        }
        if (o.json) {
            std::printf("%s\n", nlohmann::json(info.config).dump().c_str());
            return 0;
        }
        for (auto& [k, v] : info.config)
            std::printf("%s: %s\n", k.c_str(), v.c_str());
        return 0;
    }
    if (sub != "set" && sub != "unset")
        return fail("Unknown config command \"" + sub + "\"");
    if (o.args.size() < 4)
        return fail("Usage: lodgectl config " + sub + " NAME " +
                    (sub == "set" ? "KEY=VALUE..." : "KEY..."));
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                       "SetContainerConfig") < 0)
        return fail("Cannot build the request");
    Reply call{m};
    std::vector<std::string> rest(o.args.begin() + 3, o.args.end());
    std::string bad;
    int r = sd_bus_message_append(m, "s", name.c_str());
    if (sub == "set") {
        // LXD also takes "set NAME KEY VALUE".
        if (rest.size() == 2 && rest[0].find('=') == std::string::npos)
            rest = {rest[0] + "=" + rest[1]};
        if (r >= 0 && (r = append_map(m, rest, bad)) == -EINVAL)
            return fail("Invalid setting \"" + bad + "\": expected KEY=VALUE");
        if (r >= 0)
            r = sd_bus_message_append_strv(m, nullptr);
    } else {
        if (r >= 0)
            r = append_map(m, {}, bad);
        std::vector<const char*> keys;
        for (auto& k : rest)
            keys.push_back(k.c_str());
        keys.push_back(nullptr);
        if (r >= 0)
            r = sd_bus_message_append_strv(m, const_cast<char**>(keys.data()));
    }
    Error err;
    Reply reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    return r < 0 ? bus_fail(err, r) : 0;
}

// Reads a fd-returning method's reply, keeping our own copy of the fd.
int call_for_fd(sd_bus* bus, const char* method, const std::string& name, int& fd, Error& err) {
    Reply reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, method, &err.e, &reply.m,
                               "s", name.c_str());
    if (r < 0)
        return r;
    int borrowed = -1;
    if ((r = sd_bus_message_read(reply.m, "h", &borrowed)) < 0)
        return r;
    fd = ::fcntl(borrowed, F_DUPFD_CLOEXEC, 3);
    return fd < 0 ? -errno : 0;
}

int copy_all(int from, int to) {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(from, buf, sizeof buf)) > 0)
        if (::write(to, buf, static_cast<size_t>(n)) != n)
            return -EIO;
    return n < 0 ? -errno : 0;
}

// Interactive console: Ctrl+a q detaches, as `lxc console` does.
int verb_console(const Options& o, sd_bus* bus) {
    if (o.args.size() != 2)
        return fail("Usage: lodgectl console NAME [--show-log]");
    Error err;
    int fd = -1;
    if (o.show_log) {
        if (int r = call_for_fd(bus, "OpenContainerConsoleLog", o.args[1], fd, err); r < 0)
            return bus_fail(err, r);
        int r = copy_all(fd, STDOUT_FILENO);
        ::close(fd);
        return r < 0 ? 1 : 0;
    }
    if (int r = call_for_fd(bus, "OpenContainerConsole", o.args[1], fd, err); r < 0)
        return bus_fail(err, r);
    bool tty = ::isatty(STDIN_FILENO);
    struct termios saved {};
    if (tty) {
        ::tcgetattr(STDIN_FILENO, &saved);
        struct termios raw = saved;
        ::cfmakeraw(&raw);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        std::fprintf(stderr, "To detach from the console, press: <ctrl>+a q\r\n");
    }
    bool ctrl_a = false, done = false;
    while (!done) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        char buf[4096];
        if (p[0].revents) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                break; // the container stopped
            if (::write(STDOUT_FILENO, buf, static_cast<size_t>(n)) < 0)
                break;
        }
        if (p[1].revents) {
            ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n <= 0) {
                p[1].fd = -1;
                break;
            }
            std::string out;
            for (ssize_t i = 0; i < n; i++) {
                if (tty && ctrl_a && buf[i] == 'q') {
                    done = true;
                    break;
                }
                if (tty && buf[i] == 0x01 && !ctrl_a) {
                    ctrl_a = true;
                    continue;
                }
                if (ctrl_a)
                    out += '\x01';
                ctrl_a = false;
                out += buf[i];
            }
            if (!out.empty() && ::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0)
                break;
        }
    }
    if (tty)
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    ::close(fd);
    return 0;
}

int verb_device(const Options& o, sd_bus* bus) {
    if (o.args.size() < 3)
        return fail("Usage: lodgectl device add NAME DEVICE [TYPE] [KEY=VALUE]... | "
                    "remove NAME DEVICE | list NAME");
    const std::string& sub = o.args[1];
    const std::string& name = o.args[2];
    Error err;
    if (sub == "list") {
        ContainerInfo info;
        if (int r = get_info(bus, name, info, err); r < 0)
            return bus_fail(err, r);
        if (o.json) {
            std::printf("%s\n", nlohmann::json(info.devices).dump().c_str());
            return 0;
        }
        for (auto& [dev, keys] : info.devices) {
            std::printf("%s:\n", dev.c_str());
            for (auto& [k, v] : keys)
                std::printf("  %s: %s\n", k.c_str(), v.c_str());
        }
        return 0;
    }
    if (o.args.size() < 4)
        return fail("Usage: lodgectl device " + sub + " NAME DEVICE ...");
    if (sub == "remove") {
        int r =
            sd_bus_call_method(bus, service, manager_path, manager_iface, "RemoveContainerDevice",
                               &err.e, nullptr, "ss", name.c_str(), o.args[3].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub != "add")
        return fail("Unknown device command \"" + sub + "\"");
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                       "AddContainerDevice") < 0)
        return fail("Cannot build the request");
    Reply call{m};
    std::string bad;
    int r = sd_bus_message_append(m, "ss", name.c_str(), o.args[3].c_str());
    std::vector<std::string> kvs(o.args.begin() + 4, o.args.end());
    // LXD's form: the type as the first word after the device name.
    if (!kvs.empty() && kvs[0].find('=') == std::string::npos)
        kvs[0] = "type=" + kvs[0];
    if (r >= 0 && (r = append_map(m, kvs, bad)) == -EINVAL)
        return fail("Invalid device key \"" + bad + "\": expected KEY=VALUE");
    Reply reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    return r < 0 ? bus_fail(err, r) : 0;
}

// exec: the command's stdio are pipes (or a pty from the container) that we pump, so no file of
// ours ever enters the container; lodged hands back the command's pidfd (signals go straight to
// it) and the pty master over a socket pair, and answers the call with the exit status.
struct ExecState {
    bool replied = false;
    int status = 1;
    std::string error;
};

int on_exec_reply(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* st = static_cast<ExecState*>(userdata);
    st->replied = true;
    if (const sd_bus_error* e = sd_bus_message_get_error(m)) {
        st->error = e->message ? e->message : e->name;
        st->status = 1;
    } else if (int32_t status; sd_bus_message_read(m, "i", &status) >= 0) {
        st->status = status;
    }
    return 0;
}

int verb_exec(const Options& o, sd_bus* bus) {
    if (o.args.size() != 2 || o.command.empty())
        return fail("Usage: lodgectl exec NAME [-t|-T] [--env K=V]... [--cwd DIR] -- CMD...");
    bool tty_in = ::isatty(STDIN_FILENO);
    bool pty = o.pty == 1 || (o.pty == -1 && tty_in);
    int ctl[2], in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
        return fail(std::string("socketpair: ") + std::strerror(errno));
    if (!pty &&
        (::pipe2(in, O_CLOEXEC) < 0 || ::pipe2(out, O_CLOEXEC) < 0 || ::pipe2(err, O_CLOEXEC) < 0))
        return fail(std::string("pipe: ") + std::strerror(errno));
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                       "ExecContainer") < 0)
        return fail("Cannot build the request");
    Reply call{m};
    std::vector<const char*> argv, envv;
    for (auto& a : o.command)
        argv.push_back(a.c_str());
    argv.push_back(nullptr);
    for (auto& e : o.env)
        envv.push_back(e.c_str());
    envv.push_back(nullptr);
    int r = sd_bus_message_append(m, "s", o.args[1].c_str());
    if (r >= 0)
        r = sd_bus_message_append_strv(m, const_cast<char**>(argv.data()));
    if (r >= 0)
        r = sd_bus_message_append_strv(m, const_cast<char**>(envv.data()));
    auto cwd = o.values.find("cwd");
    if (r >= 0)
        r = sd_bus_message_append(m, "sbhhhh", cwd == o.values.end() ? "" : cwd->second.c_str(),
                                  pty ? 1 : 0, pty ? ctl[1] : in[0], pty ? ctl[1] : out[1],
                                  pty ? ctl[1] : err[1], ctl[1]);
    ExecState st;
    sd_bus_slot* slot = nullptr;
    if (r >= 0)
        r = sd_bus_call_async(bus, &slot, m, on_exec_reply, &st, UINT64_MAX);
    if (r < 0)
        return fail(std::string("Cannot send the request: ") + std::strerror(-r));
    sd_bus_flush(bus);
    // Our copies of the command's ends go, including the ones the request message holds: EOF
    // on the pipes then means the command closed them.
    sd_bus_message_unref(call.m);
    call.m = nullptr;
    ::close(ctl[1]);
    for (int fd : {in[0], out[1], err[1]})
        if (fd >= 0)
            ::close(fd);

    sigset_t sigs;
    sigemptyset(&sigs);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH})
        sigaddset(&sigs, sig);
    ::sigprocmask(SIG_BLOCK, &sigs, nullptr);
    int sfd = ::signalfd(-1, &sigs, SFD_CLOEXEC);

    struct termios saved {};
    bool raw = false;
    int pidfd = -1, master = -1;
    int in_w = pty ? -1 : in[1], out_r = pty ? -1 : out[0], err_r = pty ? -1 : err[0];
    bool stdin_open = true;
    auto set_winsize = [&] {
        struct winsize ws {};
        if (master >= 0 && ::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
            ::ioctl(master, TIOCSWINSZ, &ws);
    };
    auto pump = [](int from, int to) -> bool {
        char buf[65536];
        ssize_t n = ::read(from, buf, sizeof buf);
        if (n <= 0)
            return false;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
            if (w <= 0)
                return false;
            off += w;
        }
        return true;
    };
    for (;;) {
        bool streams_open = out_r >= 0 || err_r >= 0 || master >= 0;
        if (st.replied && !streams_open)
            break;
        std::vector<struct pollfd> p;
        p.push_back({sd_bus_get_fd(bus), static_cast<short>(sd_bus_get_events(bus)), 0});
        p.push_back({ctl[0], POLLIN, 0});
        p.push_back({stdin_open && (in_w >= 0 || master >= 0) ? STDIN_FILENO : -1, POLLIN, 0});
        p.push_back({out_r, POLLIN, 0});
        p.push_back({err_r, POLLIN, 0});
        p.push_back({master, POLLIN, 0});
        p.push_back({sfd, POLLIN, 0});
        // Once the command has ended, a background process still holding its output gets 5 s.
        int ready = ::poll(p.data(), p.size(), st.replied ? 5000 : -1);
        if (ready < 0 && errno != EINTR)
            break;
        if (ready == 0 && st.replied)
            break;
        while (sd_bus_process(bus, nullptr) > 0) {
        }
        if (p[1].revents) {
            std::string what;
            lodge::Fd passed;
            int fd =
                lodge::recv_with_fd(ctl[0], what, passed) > 0 && passed ? passed.release() : -1;
            if (fd < 0) {
                ::close(ctl[0]);
                ctl[0] = -1;
            } else if (what == "pidfd") {
                pidfd = fd;
            } else if (what == "pty") {
                master = fd;
                set_winsize();
                if (tty_in && !raw) {
                    ::tcgetattr(STDIN_FILENO, &saved);
                    struct termios t = saved;
                    ::cfmakeraw(&t);
                    ::tcsetattr(STDIN_FILENO, TCSANOW, &t);
                    raw = true;
                }
            } else {
                ::close(fd);
            }
        }
        if (p[2].revents && !pump(STDIN_FILENO, in_w >= 0 ? in_w : master)) {
            stdin_open = false;
            if (master >= 0)
                (void)!::write(master, "\x04", 1); // end of input, the terminal way
            if (in_w >= 0) {
                ::close(in_w); // the command sees EOF on its stdin
                in_w = -1;
            }
        }
        if (p[3].revents && !pump(out_r, STDOUT_FILENO)) {
            ::close(out_r);
            out_r = -1;
        }
        if (p[4].revents && !pump(err_r, STDERR_FILENO)) {
            ::close(err_r);
            err_r = -1;
        }
        if (p[5].revents && !pump(master, STDOUT_FILENO)) {
            ::close(master); // EIO: the command and everything on its pty are gone
            master = -1;
        }
        if (p[6].revents) {
            struct signalfd_siginfo si {};
            if (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGWINCH)
                    set_winsize();
                else if (pidfd >= 0)
                    ::syscall(SYS_pidfd_send_signal, pidfd, si.ssi_signo, nullptr, 0);
            }
        }
    }
    if (raw)
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    sd_bus_slot_unref(slot);
    if (!st.error.empty())
        return fail(st.error);
    return st.status;
}

// enable/disable: the lodge@NAME.service template instance, through systemd's own API, as
// machinectl enable does for systemd-nspawn@.service.
int verb_enable(const Options& o, sd_bus* bus, bool enable) {
    if (o.args.size() < 2)
        return fail(std::string("Usage: lodgectl ") + (enable ? "enable" : "disable") + " NAME...");
    std::vector<std::string> units;
    for (size_t i = 1; i < o.args.size(); i++) {
        if (auto e = lodge::check_container_name(o.args[i]); !e.empty())
            return fail(e);
        Error err;
        if (int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetContainer",
                                       &err.e, nullptr, "s", o.args[i].c_str());
            r < 0)
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
    Reply call{m};
    int r = sd_bus_message_append_strv(m, const_cast<char**>(strv.data()));
    if (r >= 0)
        r = enable ? sd_bus_message_append(m, "bb", 0, 1) : sd_bus_message_append(m, "b", 0);
    Error err;
    Reply reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    if (r < 0) {
        if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
            sd_bus_error_has_name(&err.e, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
            return fail("systemd is not running on this host: cannot enable units");
        return bus_fail(err, r);
    }
    Error reload_err;
    sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                       "org.freedesktop.systemd1.Manager", "Reload", &reload_err.e, nullptr,
                       nullptr);
    return 0;
}

// ---- the verb table ----------------------------------------------------------------------

struct Verb {
    const char* name;
    size_t min_args, max_args; // arguments after the verb (options excluded)
    const char* usage;         // after "lodgectl "
    const char* summary;
    std::function<int(const Options&, sd_bus*)> run;
};
constexpr size_t any = SIZE_MAX;

// A by-name Manager method called for each NAME argument.
std::function<int(const Options&, sd_bus*)> by_name(const char* method, const char* types,
                                                    int32_t (*extra1)(const Options&) = nullptr,
                                                    int32_t (*extra2)(const Options&) = nullptr) {
    return [=](const Options& o, sd_bus* bus) {
        return for_each_name(o, bus, "", [&](const std::string& name, Error& err) {
            if (extra2)
                return sd_bus_call_method(bus, service, manager_path, manager_iface, method, &err.e,
                                          nullptr, types, name.c_str(), extra1(o), extra2(o));
            if (extra1)
                return sd_bus_call_method(bus, service, manager_path, manager_iface, method, &err.e,
                                          nullptr, types, name.c_str(), extra1(o));
            return sd_bus_call_method(bus, service, manager_path, manager_iface, method, &err.e,
                                      nullptr, types, name.c_str());
        });
    };
}

int32_t timeout_of(const Options& o) {
    int32_t t = -1;
    parse_timeout(o, t); // checked before the call (check_timeout)
    return t;
}
int32_t force_of(const Options& o) {
    return o.force ? 1 : 0;
}
int32_t signal_of(const Options& o) {
    auto it = o.values.find("signal");
    auto s = it == o.values.end() ? std::optional<int>(SIGTERM) : lodge::parse_signal(it->second);
    return s ? *s : SIGTERM;
}

// Option values are checked before anything is sent.
std::function<int(const Options&, sd_bus*)>
checked(std::function<int(const Options&, sd_bus*)> run) {
    return [run](const Options& o, sd_bus* bus) {
        int32_t t;
        if (parse_timeout(o, t) < 0)
            return 1;
        if (auto it = o.values.find("signal");
            it != o.values.end() && !lodge::parse_signal(it->second))
            return fail("Invalid --signal \"" + it->second + "\"");
        return run(o, bus);
    };
}

const std::vector<Verb>& verbs() {
    static const std::vector<Verb> table = {
        {"list", 0, 0, "list [--json] [--no-legend] [-q]",
         "List containers: state, leader and addresses (-q: names only).", verb_list},
        {"status", 1, any, "status NAME... [--json]", "Show a container's state.",
         [](const Options& o, sd_bus* bus) { return verb_status_or_show(o, bus, false); }},
        {"show", 1, any, "show NAME... [--json]", "Show a container's properties.",
         [](const Options& o, sd_bus* bus) { return verb_status_or_show(o, bus, true); }},
        {"create", 1, 3,
         "create NAME [DIRECTORY | TARBALL | METADATA ROOTFS | [REMOTE:]IMAGE] [-c KEY=VALUE]...",
         "Create a container from the built-in image, a directory, a tarball, an LXD image file "
         "or an image of the store.",
         verb_create},
        {"launch", 2, 2, "launch [REMOTE:]IMAGE NAME [-c KEY=VALUE]... [--privileged]",
         "Create a container from an image and start it.",
         [](const Options& o, sd_bus* bus) { return lodge::ctl::verb_launch(image_args(o), bus); }},
        {"image", 1, any,
         "image list [REMOTE:] [FILTER] | info IMAGE | delete IMAGE... | alias create ALIAS IMAGE "
         "| "
         "alias delete ALIAS | alias list | import FILE [ROOTFS] [--alias ALIAS] | export IMAGE "
         "DIR | copy REMOTE:IMAGE local: [--alias ALIAS]",
         "Manage the local image store.",
         [](const Options& o, sd_bus* bus) { return lodge::ctl::verb_image(image_args(o), bus); }},
        {"publish", 1, 1, "publish NAME [--alias ALIAS] [--compression gzip|xz|zstd|none]",
         "Make an image of a stopped container in the store.",
         [](const Options& o, sd_bus* bus) {
             return lodge::ctl::verb_publish(image_args(o), bus);
         }},
        {"remote", 1, 3,
         "remote add NAME URL [--protocol simplestreams|lxd] [--public] [--ca FILE] | list | "
         "remove NAME | rename NAME NEW",
         "Manage image servers.",
         [](const Options& o, sd_bus* bus) { return lodge::ctl::verb_remote(image_args(o), bus); }},
        {"delete", 1, any, "delete NAME... [--force]",
         "Delete containers (--force: a running one is killed first).",
         by_name("DeleteContainer", "sb", force_of)},
        {"start", 1, any, "start NAME...", "Start containers.", by_name("StartContainer", "s")},
        {"stop", 1, any, "stop NAME... [--timeout SECONDS] [--force]",
         "Stop containers: the stop signal, SIGKILL after the timeout (--force: at once).",
         checked(by_name("StopContainer", "sib", timeout_of, force_of))},
        {"restart", 1, any, "restart NAME... [--timeout SECONDS]",
         "Stop and start containers again.",
         checked(by_name("RestartContainer", "si", timeout_of))},
        {"reboot", 1, any, "reboot NAME...", "Send the reboot signal to PID 1.",
         by_name("RebootContainer", "s")},
        {"kill", 1, any, "kill NAME... [--signal SIGNAL]", "Send a signal (SIGTERM) to PID 1.",
         checked(by_name("KillContainer", "si", signal_of))},
        {"config", 2, any,
         "config get NAME KEY | set NAME KEY=VALUE... | unset NAME KEY... | show NAME [--json]",
         "Read and change a container's configuration.", verb_config},
        {"device", 2, any,
         "device add NAME DEVICE [TYPE] [KEY=VALUE]... | remove NAME DEVICE | list NAME [--json]",
         "Add, remove and list a container's devices.", verb_device},
        {"console", 1, 1, "console NAME [--show-log]",
         "Attach to the console (Ctrl+a q detaches); --show-log prints its log.", verb_console},
        {"exec", 1, 1, "exec NAME [-t|-T] [--env KEY=VALUE]... [--cwd DIR] -- COMMAND...",
         "Run a command in the container; exits with its status.", verb_exec},
        {"shell", 1, 1, "shell NAME [--env KEY=VALUE]... [--cwd DIR]",
         "A login shell (/bin/sh -l) in the container, on a terminal.",
         [](const Options& o, sd_bus* bus) {
             Options sh = o;
             sh.command = {"/bin/sh", "-l"};
             if (sh.pty == -1)
                 sh.pty = 1;
             return verb_exec(sh, bus);
         }},
        {"enable", 1, any, "enable NAME...", "Start containers at boot (lodge@NAME.service).",
         [](const Options& o, sd_bus* bus) { return verb_enable(o, bus, true); }},
        {"disable", 1, any, "disable NAME...", "Do not start containers at boot.",
         [](const Options& o, sd_bus* bus) { return verb_enable(o, bus, false); }},
    };
    return table;
}

const Verb* find_verb(const std::string& name) {
    for (auto& v : verbs())
        if (name == v.name)
            return &v;
    return nullptr;
}

void usage() {
    std::printf("lodgectl [OPTIONS] COMMAND ...\n\nCommands:\n");
    for (auto& v : verbs())
        std::printf("  %s\n      %s\n", v.usage, v.summary);
    std::printf("\nOptions:\n"
                "  --json               JSON output (every command that prints something)\n"
                "  --no-legend          No table header and footer\n"
                "  -q, --quiet          Less output (list: names only)\n"
                "  -H, --host [USER@]HOST  Operate on a remote host over ssh\n"
                "  -h, --help           This help; COMMAND --help: that command's\n\n"
                "Exit status: 0 on success, 1 on failure; exec and shell exit with the command's\n"
                "status. See lodgectl(1).\n");
}

void verb_usage(const Verb& v) {
    std::printf("Usage: lodgectl %s\n\n%s\n", v.usage, v.summary);
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const std::string& key) -> bool {
            if (a == "--" + key) {
                if (i + 1 >= argc)
                    return false;
                o.values[key] = argv[++i];
                return true;
            }
            if (a.rfind("--" + key + "=", 0) == 0) {
                o.values[key] = a.substr(key.size() + 3);
                return true;
            }
            return false;
        };
        if (a == "--") {
            for (int j = i + 1; j < argc; j++)
                o.command.push_back(argv[j]);
            break;
        }
        if (a == "--json")
            o.json = true;
        else if (a == "-t" || a == "--tty")
            o.pty = 1;
        else if (a == "-T" || a == "--no-tty")
            o.pty = 0;
        else if ((a == "--env" || a == "-e") && i + 1 < argc)
            o.env.push_back(argv[++i]);
        else if (a.rfind("--env=", 0) == 0)
            o.env.push_back(a.substr(6));
        else if (a == "--no-legend")
            o.legend = false;
        else if (a == "-q" || a == "--quiet")
            o.quiet = true;
        else if (a == "-f" || a == "--force")
            o.force = true;
        else if (a == "--show-log")
            o.show_log = true;
        else if ((a == "-H" || a == "--host") && i + 1 < argc)
            o.host = argv[++i];
        else if (a == "-c" && i + 1 < argc)
            o.config.push_back(argv[++i]);
        else if (a == "-h" || a == "--help")
            o.help = true;
        else if (value("timeout") || value("signal") || value("cwd") || value("alias") ||
                 value("protocol") || value("ca") || value("compression"))
            continue;
        else if (a == "--privileged" || a == "--public")
            o.values[a.substr(2)] = "true";
        else if (a.size() > 1 && a[0] == '-' && a != "-")
            return fail("Unknown option " + a);
        else
            o.args.push_back(a);
    }
    const Verb* verb = o.args.empty() ? nullptr : find_verb(o.args[0]);
    if (o.help) {
        if (verb)
            verb_usage(*verb);
        else
            usage();
        return 0;
    }
    if (o.args.empty()) {
        usage();
        return 1;
    }
    if (!verb)
        return fail("Unknown command \"" + o.args[0] + "\"; see lodgectl --help");
    size_t n = o.args.size() - 1;
    if (n < verb->min_args || n > verb->max_args)
        return fail(std::string("Usage: lodgectl ") + verb->usage);
    Bus b;
    if (open_bus(o, b) < 0)
        return 1;
    return verb->run(o, b.bus);
}
