// lodgectl config edit NAME and config show NAME --expanded: a container's keys and devices as
// one YAML document, as lxc config edit shows them. The edit is sent whole
// (io.lodge1.Manager.UpdateContainer), which lodged checks before anything changes; a bad
// edit is shown and the editor opened again on it.
#include "common/sd-util.hpp"
#include "ctl/bus.hpp"
#include "ctl/editor.hpp"
#include "ctl/instance.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

namespace lodge::ctl {
namespace {

using Devices = std::map<std::string, std::map<std::string, std::string>>;

struct Definition {
    std::map<std::string, std::string> config;
    Devices devices;
};

int read_devices(sd_bus_message* m, Devices& out) {
    int r = sd_bus_message_enter_container(m, 'a', "{sa{ss}}");
    while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sa{ss}")) > 0) {
        const char* dev = nullptr;
        if ((r = sd_bus_message_read(m, "s", &dev)) < 0 || (r = read_string_map(m, out[dev])) < 0 ||
            (r = sd_bus_message_exit_container(m)) < 0)
            return r;
    }
    return r < 0 ? r : sd_bus_message_exit_container(m);
}

int fetch(sd_bus* bus, const std::string& name, Definition& out, std::string& error) {
    BusError err;
    MessagePtr config, path_reply;
    int r = call_manager(bus, err, &config, "GetContainerConfig", "s", name.c_str());
    if (r >= 0)
        r = read_string_map(config.get(), out.config);
    if (r >= 0)
        r = call_manager(bus, err, &path_reply, "GetContainer", "s", name.c_str());
    const char* path = nullptr;
    if (r >= 0)
        r = sd_bus_message_read(path_reply.get(), "o", &path);
    sd_bus_message* devices = nullptr;
    if (r >= 0)
        r = sd_bus_get_property(bus, service, path, "io.lodge1.Container", "Devices", &err.e,
                                &devices, "a{sa{ss}}");
    MessagePtr devices_reply(devices);
    if (r >= 0)
        r = read_devices(devices, out.devices);
    if (r < 0)
        error = bus_message(err, r);
    return r;
}

// Plain where YAML reads it back as the same text, else a double-quoted (JSON) string.
std::string scalar(const std::string& s) {
    bool plain =
        !s.empty() &&
        s.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-+") == std::string::npos &&
        s[0] != '-';
    return plain ? s : nlohmann::json(s).dump();
}

std::string to_yaml(const Definition& d) {
    std::ostringstream out;
    out << "config:" << (d.config.empty() ? " {}" : "") << "\n";
    for (auto& [k, v] : d.config)
        out << "  " << scalar(k) << ": " << scalar(v) << "\n";
    out << "devices:" << (d.devices.empty() ? " {}" : "") << "\n";
    for (auto& [dev, keys] : d.devices) {
        out << "  " << scalar(dev) << ":" << (keys.empty() ? " {}" : "") << "\n";
        for (auto& [k, v] : keys)
            out << "    " << scalar(k) << ": " << scalar(v) << "\n";
    }
    return out.str();
}

// A small reader over libyaml's events for the document to_yaml() writes.
class YamlReader {
public:
    explicit YamlReader(const std::string& text) {
        yaml_parser_initialize(&parser_);
        yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
                                     text.size());
    }
    ~YamlReader() {
        if (have_)
            yaml_event_delete(&event_);
        yaml_parser_delete(&parser_);
    }
    // The next event, or false with `error` set.
    bool next(std::string& error) {
        if (have_)
            yaml_event_delete(&event_);
        have_ = yaml_parser_parse(&parser_, &event_) != 0;
        if (!have_)
            error = std::string("Invalid YAML at line ") +
                    std::to_string(parser_.problem_mark.line + 1) + ": " +
                    (parser_.problem ? parser_.problem : "syntax error");
        return have_;
    }
    yaml_event_type_t type() const { return event_.type; }
    std::string text() const {
        return std::string(reinterpret_cast<const char*>(event_.data.scalar.value),
                           event_.data.scalar.length);
    }
    size_t line() const { return event_.start_mark.line + 1; }

    // The next event, which must be of `type`; else false with `error` saying "Line N:
    // <wanted>".
    bool next_is(yaml_event_type_t type, const std::string& wanted, std::string& error) {
        if (!next(error))
            return false;
        if (event_.type == type)
            return true;
        error = "Line " + std::to_string(line()) + ": " + wanted;
        return false;
    }
    // Reads the next event: true at `end` (MAPPING_END), else false (`key` set to the key's
    // scalar; `error` set when it was no scalar).
    bool key_or_end(std::string& key, const std::string& wanted, bool& failed, std::string& error) {
        failed = !next(error);
        if (failed || event_.type == YAML_MAPPING_END_EVENT)
            return true;
        if (event_.type != YAML_SCALAR_EVENT) {
            error = "Line " + std::to_string(line()) + ": " + wanted;
            failed = true;
            return true;
        }
        key = text();
        return false;
    }

private:
    yaml_parser_t parser_{};
    yaml_event_t event_{};
    bool have_ = false;
};

// A mapping of scalars to scalars (the cursor is on its MAPPING_START).
bool read_flat(YamlReader& y, std::map<std::string, std::string>& out, const std::string& where,
               std::string& error) {
    std::string key;
    bool failed = false;
    while (!y.key_or_end(key, "expected a key in " + where, failed, error)) {
        if (!y.next_is(YAML_SCALAR_EVENT,
                       "the value of \"" + key + "\" in " + where + " must be a plain string",
                       error))
            return false;
        out[key] = y.text();
    }
    return !failed;
}

// The devices section: device names to mappings of keys (the cursor is on its MAPPING_START).
bool read_devices_section(YamlReader& y, Devices& out, std::string& error) {
    std::string dev;
    bool failed = false;
    while (!y.key_or_end(dev, "expected a device name", failed, error))
        if (!y.next_is(YAML_MAPPING_START_EVENT, "device \"" + dev + "\" must be a mapping of keys",
                       error) ||
            !read_flat(y, out[dev], "device \"" + dev + "\"", error))
            return false;
    return !failed;
}

bool from_yaml(const std::string& text, Definition& out, std::string& error) {
    YamlReader y(text);
    if (!y.next(error) || y.type() != YAML_STREAM_START_EVENT || !y.next(error))
        return false;
    if (y.type() == YAML_STREAM_END_EVENT)
        return true; // empty: no keys, no devices
    if (y.type() != YAML_DOCUMENT_START_EVENT ||
        !y.next_is(YAML_MAPPING_START_EVENT, "expected a mapping with \"config\" and \"devices\"",
                   error))
        return false;
    std::string section;
    bool failed = false;
    while (!y.key_or_end(section, "expected \"config\" or \"devices\"", failed, error)) {
        if (section != "config" && section != "devices") {
            error = "Line " + std::to_string(y.line()) + ": unknown section \"" + section +
                    "\" (there are \"config\" and \"devices\")";
            return false;
        }
        if (!y.next(error))
            return false;
        if (y.type() == YAML_SCALAR_EVENT && y.text().empty())
            continue; // "config:" with nothing after it
        if (y.type() != YAML_MAPPING_START_EVENT) {
            error = "Line " + std::to_string(y.line()) + ": \"" + section + "\" must be a mapping";
            return false;
        }
        bool read = section == "config" ? read_flat(y, out.config, "config", error)
                                        : read_devices_section(y, out.devices, error);
        if (!read)
            return false;
    }
    return !failed;
}

int send(sd_bus* bus, const std::string& name, const Definition& d, std::string& error) {
    MessagePtr call = new_manager_call(bus, "UpdateContainer");
    if (!call) {
        error = "Cannot build the request";
        return -ENOMEM;
    }
    sd_bus_message* m = call.get();
    int r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (auto& [k, v] : d.config)
        if (r >= 0)
            r = sd_bus_message_append(m, "{ss}", k.c_str(), v.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "{sa{ss}}");
    for (auto& [dev, keys] : d.devices) {
        if (r >= 0)
            r = sd_bus_message_open_container(m, 'e', "sa{ss}");
        if (r >= 0)
            r = sd_bus_message_append(m, "s", dev.c_str());
        if (r >= 0)
            r = sd_bus_message_open_container(m, 'a', "{ss}");
        for (auto& [k, v] : keys)
            if (r >= 0)
                r = sd_bus_message_append(m, "{ss}", k.c_str(), v.c_str());
        if (r >= 0)
            r = sd_bus_message_close_container(m);
        if (r >= 0)
            r = sd_bus_message_close_container(m);
    }
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    BusError err;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
    if (r < 0)
        error = bus_message(err, r);
    return r;
}

constexpr const char* edit_header =
    "### This is the configuration of container %s, as YAML: \"config\" holds its keys,\n"
    "### \"devices\" its devices (see lodge.conf(5)). volatile.* and image.* keys are lodge's;\n"
    "### leave them as they are. Lines starting with # are ignored.\n";

int edit(sd_bus* bus, const std::string& name) {
    Definition d;
    std::string error;
    if (fetch(bus, name, d, error) < 0)
        return fail(error);
    if (!::isatty(STDIN_FILENO)) {
        std::ostringstream in;
        in << std::cin.rdbuf();
        Definition next;
        if (!from_yaml(in.str(), next, error) || send(bus, name, next, error) < 0)
            return fail(error);
        return 0;
    }
    char header[512];
    std::snprintf(header, sizeof header, edit_header, name.c_str());
    std::string text = std::string(header) + to_yaml(d);
    EditSession session;
    session.suffix = ".yaml";
    session.reopen = true;
    session.what = "the configuration";
    session.fill = [&text](int fd) {
        if (::write(fd, text.data(), text.size()) == ssize_t(text.size()))
            return true;
        fail(std::string("Cannot write the temporary file: ") + std::strerror(errno));
        return false;
    };
    session.accept = [bus, &name](int fd) {
        std::string edited, error;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0)
            edited.append(buf, static_cast<size_t>(n));
        Definition next;
        if (from_yaml(edited, next, error) && send(bus, name, next, error) >= 0)
            return std::string();
        return error;
    };
    return edit_in_editor(session);
}

} // namespace

int verb_config_yaml(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl config edit NAME | config show NAME --expanded");
    if (o.args[1] == "edit")
        return edit(bus, o.args[2]);
    Definition d;
    std::string error;
    if (fetch(bus, o.args[2], d, error) < 0)
        return fail(error);
    if (o.json)
        std::printf("%s\n",
                    nlohmann::json{{"config", d.config}, {"devices", d.devices}}.dump().c_str());
    else
        std::printf("%s", to_yaml(d).c_str());
    return 0;
}

} // namespace lodge::ctl
