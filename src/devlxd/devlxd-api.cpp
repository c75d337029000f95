#include "devlxd/devlxd-api.hpp"

#include <ctime>

namespace lodge::daemon::devlxd {
namespace {

const char* const json_type = "application/json";
const char* const raw_type = "application/octet-stream";

Response json_response(const nlohmann::ordered_json& j) {
    Response r;
    r.content_type = json_type;
    // LXD's encoder: no HTML escaping (nlohmann never escapes it), then a newline.
    r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    return r;
}

Response raw_response(std::string body) {
    Response r;
    r.content_type = raw_type;
    r.body = std::move(body);
    return r;
}

bool starts_with(const std::string& s, const char* prefix) {
    return s.rfind(prefix, 0) == 0;
}

bool guest_key(const std::string& key) {
    return starts_with(key, "user.") || starts_with(key, "cloud-init.");
}

int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Go's url.PathUnescape: "%XY" decoded, a malformed escape is an error, '+' kept.
std::optional<std::string> path_unescape(const std::string& in) {
    std::string out;
    out.reserve(in.size());
    for (size_t i = 0; i < in.size(); i++) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        int hi = i + 1 < in.size() ? hex_value(in[i + 1]) : -1;
        int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

Response get_root() {
    return json_response(nlohmann::ordered_json::array({"/1.0"}));
}

Response get_api(const GuestView& guest) {
    nlohmann::ordered_json j;
    j["state"] = guest.ready ? "Ready" : "Started";
    j["api_version"] = "1.0";
    j["instance_type"] = "container";
    j["location"] = guest.location;
    j["auth"] = "untrusted";
    j["supported_storage_drivers"] = nlohmann::ordered_json::array();
    return json_response(j);
}

Response patch_api(const Request& req) {
    auto j = nlohmann::json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return error(400, "Invalid request body: " + std::string(j.is_discarded()
                                                                     ? "malformed JSON"
                                                                     : "expected a JSON object"));
    auto it = j.find("state");
    std::string state = it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    if (it != j.end() && !it->is_string())
        return error(400, "Invalid request body: \"state\" must be a string");
    if (state != "Ready" && state != "Started")
        return error(400, "Invalid state \"" + state + "\"");
    Response r = raw_response("");
    r.set_ready = state == "Ready";
    return r;
}

Response get_config_list(const GuestView& guest) {
    auto list = nlohmann::ordered_json::array();
    for (auto& [key, value] : guest.config->config)
        if (guest_key(key))
            list.push_back("/1.0/config/" + key);
    return json_response(list);
}

Response get_config_key(const std::string& escaped, const GuestView& guest) {
    auto key = path_unescape(escaped);
    if (!key)
        return error(400, "Bad Request");
    if (!guest_key(*key))
        return error(403, "Forbidden");
    auto it = guest.config->config.find(*key);
    if (it == guest.config->config.end() || it->second.empty())
        return error(404, "Not Found");
    return raw_response(it->second);
}

Response get_meta_data(const GuestView& guest) {
    const ContainerConfig& c = *guest.config;
    std::string id = c.get("volatile.cloud-init.instance-id");
    std::string body = "instance-id: " + (id.empty() ? c.name : id) + "\n" +
                       "local-hostname: " + c.name + "\n" + c.get("user.meta-data");
    return raw_response(std::move(body));
}

Response get_events(const Request& req) {
    unsigned types = event_config | event_device;
    if (req.has_type && !req.query_type.empty()) {
        auto parsed = parse_event_types(req.query_type);
        if (!parsed)
            return error(400, "Bad Request");
        types = *parsed;
    }
    Response r;
    r.kind = Kind::events;
    r.event_types = types;
    r.content_type = json_type;
    return r;
}

} // namespace

Response error(unsigned status, const std::string& message) {
    Response r;
    r.status = status;
    r.content_type = "text/plain; charset=utf-8";
    r.body = message + "\n";
    return r;
}

Response api_error(unsigned status, const std::string& message) {
    nlohmann::ordered_json j;
    j["type"] = "error";
    j["status"] = "";
    j["status_code"] = 0;
    j["operation"] = "";
    j["error_code"] = status;
    j["error"] = message;
    j["metadata"] = nullptr;
    Response r = json_response(j);
    r.status = status;
    return r;
}

std::optional<unsigned> parse_event_types(const std::string& spec) {
    unsigned mask = 0;
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t comma = spec.find(',', pos);
        std::string t =
            spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (t == "config")
            mask |= event_config;
        else if (t == "device")
            mask |= event_device;
        else if (!t.empty())
            return std::nullopt;
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return mask;
}

Response handle(const Request& req, const GuestView& guest) {
    static const char* const known_methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    bool known = false;
    for (const char* m : known_methods)
        known |= req.method == m;
    if (!known)
        return error(404, "Method \"" + req.method + "\" not found");
    const std::string& url = req.url;
    bool get = req.method == "GET";
    auto only_get = [&](auto&& handler) { return get ? handler() : error(501, "Not Implemented"); };

    if (url == "/")
        return only_get([&] { return get_root(); });
    if (url == "/1.0") { // not "/1.0/": LXD's router matches paths exactly (CONTRACT §6)
        if (req.method == "PATCH")
            return patch_api(req);
        return only_get([&] { return get_api(guest); });
    }
    if (url == "/1.0/config")
        return only_get([&] { return get_config_list(guest); });
    if (starts_with(url, "/1.0/config/") && url.size() > 12 &&
        url.find('/', 12) == std::string::npos)
        return only_get([&] { return get_config_key(url.substr(12), guest); });
    if (url == "/1.0/meta-data")
        return only_get([&] { return get_meta_data(guest); });
    if (url == "/1.0/devices")
        return only_get([&] { return json_response(devices_json(*guest.config)); });
    if (url == "/1.0/events")
        return only_get([&] { return get_events(req); });
    if (starts_with(url, "/1.0/images/") && url.size() > 19 &&
        url.compare(url.size() - 7, 7, "/export") == 0 && url.find('/', 12) == url.size() - 7)
        // security.devlxd.images does not exist in lodge: there is no image store to export.
        return only_get([&] { return api_error(403, "Forbidden"); });
    return error(404, "Not Found");
}

nlohmann::ordered_json devices_json(const ContainerConfig& config) {
    auto out = nlohmann::ordered_json::object();
    for (auto& [name, keys] : config.devices) {
        auto dev = nlohmann::ordered_json::object();
        for (auto& [k, v] : keys)
            dev[k] = v;
        auto type = keys.find("type");
        if (type != keys.end() && type->second == "nic" && !keys.count("hwaddr")) {
            std::string hwaddr = config.get("volatile." + name + ".hwaddr");
            if (!hwaddr.empty())
                dev["hwaddr"] = hwaddr;
        }
        out[name] = std::move(dev);
    }
    return out;
}

std::string rfc3339_nano(uint64_t realtime_usec) {
    time_t secs = static_cast<time_t>(realtime_usec / 1000000);
    unsigned frac = static_cast<unsigned>(realtime_usec % 1000000) * 1000;
    struct tm tm {};
    gmtime_r(&secs, &tm);
    char buf[64];
    size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string out(buf, n);
    if (frac) {
        char f[16];
        std::snprintf(f, sizeof f, ".%09u", frac);
        std::string digits = f;
        while (digits.back() == '0')
            digits.pop_back();
        out += digits;
    }
    return out + "Z";
}

namespace {
std::string event_line(const char* type, nlohmann::ordered_json metadata, uint64_t usec) {
    nlohmann::ordered_json j;
    j["type"] = type;
    j["timestamp"] = rfc3339_nano(usec);
    j["metadata"] = std::move(metadata);
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
} // namespace

std::string config_event(const std::string& key, const std::string& old_value,
                         const std::string& value, uint64_t realtime_usec) {
    nlohmann::ordered_json m;
    m["key"] = key;
    m["old_value"] = old_value;
    m["value"] = value;
    return event_line("config", std::move(m), realtime_usec);
}

std::string device_event(const std::string& action, const std::string& name, const KeyMap& config,
                         uint64_t realtime_usec) {
    nlohmann::ordered_json m;
    m["action"] = action;
    m["name"] = name;
    auto cfg = nlohmann::ordered_json::object();
    for (auto& [k, v] : config)
        cfg[k] = v;
    m["config"] = std::move(cfg);
    return event_line("device", std::move(m), realtime_usec);
}

} // namespace lodge::daemon::devlxd
