// lodgectl config edit NAME and config show NAME --expanded: a container's keys and devices as
// one YAML document, as lxc config edit shows them. The edit is sent whole
// (io.lodge1.Manager.UpdateContainer), which lodged checks before anything changes; a bad
// edit is shown and the editor opened again on it.
#include "common/sd-util.hpp"
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

constexpr const char* service = "io.lodge1";
constexpr const char* manager_path = "/io/lodge1";
constexpr const char* manager_iface = "io.lodge1.Manager";

using Devices = std::map<std::string, std::map<std::string, std::string>>;

struct Definition {
    std::map<std::string, std::string> config;
    Devices devices;
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

std::string bus_message(const Error& err, int r) {
    if (sd_bus_error_is_set(&err.e))
        return err.e.message ? err.e.message : err.e.name;
    return std::string("Failed to talk to lodged: ") + std::strerror(-r);
}

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
    Error err;
    Reply config, path_reply, devices;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetContainerConfig",
                               &err.e, &config.m, "s", name.c_str());
    if (r >= 0)
        r = read_string_map(config.m, out.config);
    if (r >= 0)
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetContainer", &err.e,
                               &path_reply.m, "s", name.c_str());
    const char* path = nullptr;
    if (r >= 0)
        r = sd_bus_message_read(path_reply.m, "o", &path);
    if (r >= 0)
        r = sd_bus_get_property(bus, service, path, "io.lodge1.Container", "Devices", &err.e,
                                &devices.m, "a{sa{ss}}");
    if (r >= 0)
        r = read_devices(devices.m, out.devices);
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

private:
    yaml_parser_t parser_{};
    yaml_event_t event_{};
    bool have_ = false;
};

// A mapping of scalars to scalars (the cursor is on its MAPPING_START).
bool read_flat(YamlReader& y, std::map<std::string, std::string>& out, const std::string& where,
               std::string& error) {
    for (;;) {
        if (!y.next(error))
            return false;
        if (y.type() == YAML_MAPPING_END_EVENT)
            return true;
        if (y.type() != YAML_SCALAR_EVENT) {
            error = "Line " + std::to_string(y.line()) + ": expected a key in " + where;
            return false;
        }
        std::string key = y.text();
        if (!y.next(error))
            return false;
        if (y.type() != YAML_SCALAR_EVENT) {
            error = "Line " + std::to_string(y.line()) + ": the value of \"" + key + "\" in " +
                    where + " must be a plain string";
            return false;
        }
        out[key] = y.text();
    }
}

bool from_yaml(const std::string& text, Definition& out, std::string& error) {
    YamlReader y(text);
    if (!y.next(error) || y.type() != YAML_STREAM_START_EVENT || !y.next(error))
        return false;
    if (y.type() == YAML_STREAM_END_EVENT)
        return true; // empty: no keys, no devices
    if (y.type() != YAML_DOCUMENT_START_EVENT || !y.next(error))
        return false;
    if (y.type() != YAML_MAPPING_START_EVENT) {
        error = "Expected a mapping with \"config\" and \"devices\"";
        return false;
    }
    for (;;) {
        if (!y.next(error))
            return false;
        if (y.type() == YAML_MAPPING_END_EVENT)
            return true;
        if (y.type() != YAML_SCALAR_EVENT) {
            error = "Line " + std::to_string(y.line()) + ": expected \"config\" or \"devices\"";
            return false;
        }
        std::string section = y.text();
        if (!y.next(error))
            return false;
        bool empty = y.type() == YAML_SCALAR_EVENT && y.text().empty();
        if (section == "config") {
            if (empty)
                continue;
            if (y.type() != YAML_MAPPING_START_EVENT) {
                error = "Line " + std::to_string(y.line()) + ": \"config\" must be a mapping";
                return false;
            }
            if (!read_flat(y, out.config, "config", error))
                return false;
        } else if (section == "devices") {
            if (empty)
                continue;
            if (y.type() != YAML_MAPPING_START_EVENT) {
                error = "Line " + std::to_string(y.line()) + ": \"devices\" must be a mapping";
                return false;
            }
            for (;;) {
                if (!y.next(error))
                    return false;
                if (y.type() == YAML_MAPPING_END_EVENT)
                    break;
                if (y.type() != YAML_SCALAR_EVENT) {
                    error = "Line " + std::to_string(y.line()) + ": expected a device name";
                    return false;
                }
                std::string dev = y.text();
                if (!y.next(error))
                    return false;
                if (y.type() != YAML_MAPPING_START_EVENT) {
                    error = "Line " + std::to_string(y.line()) + ": device \"" + dev +
                            "\" must be a mapping of keys";
                    return false;
                }
                if (!read_flat(y, out.devices[dev], "device \"" + dev + "\"", error))
                    return false;
            }
        } else {
            error = "Line " + std::to_string(y.line()) + ": unknown section \"" + section +
                    "\" (there are \"config\" and \"devices\")";
            return false;
        }
    }
}

int send(sd_bus* bus, const std::string& name, const Definition& d, std::string& error) {
    sd_bus_message* m = nullptr;
    if (sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                       "UpdateContainer") < 0) {
        error = "Cannot build the request";
        return -ENOMEM;
    }
    Reply call{m};
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
    Error err;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
    if (r < 0)
        error = bus_message(err, r);
    return r;
}

int run_editor(const std::string& path) {
    const char* editor = std::getenv("VISUAL");
    if (!editor || !*editor)
        editor = std::getenv("EDITOR");
    std::string cmd = std::string(editor && *editor ? editor : "vi") + " \"$1\"";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::execl("/bin/sh", "sh", "-c", cmd.c_str(), "sh", path.c_str(), nullptr);
        _exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
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
    char tmp[] = "/tmp/lodgectl-config-XXXXXX.yaml";
    int fd = ::mkstemps(tmp, 5);
    if (fd < 0)
        return fail(std::string("Cannot create a temporary file: ") + std::strerror(errno));
    char header[512];
    std::snprintf(header, sizeof header, edit_header, name.c_str());
    std::string text = std::string(header) + to_yaml(d);
    bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
    ::close(fd);
    int ret = ok ? 0 : fail("Cannot write " + std::string(tmp));
    while (ok) {
        if (run_editor(tmp) < 0) {
            ret = fail("The editor failed; the configuration is unchanged");
            break;
        }
        std::string edited;
        FILE* f = std::fopen(tmp, "r");
        if (!f) {
            ret = fail(std::string("Cannot read ") + tmp);
            break;
        }
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
            edited.append(buf, n);
        std::fclose(f);
        Definition next;
        if (from_yaml(edited, next, error) && send(bus, name, next, error) >= 0)
            break;
        // As lxc config edit: say what is wrong and offer the editor again, edits kept.
        std::fprintf(stderr,
                     "Config parsing error: %s\nPress enter to open the editor again "
                     "or ctrl+c to abort change\n",
                     error.c_str());
        std::string line;
        if (!std::getline(std::cin, line)) {
            ret = 1;
            break;
        }
    }
    ::unlink(tmp);
    return ret;
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
