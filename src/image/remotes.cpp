#include "image/remotes.hpp"

#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"

#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>

namespace lodge::image {

std::string remotes_path() {
    return paths::state_dir() + "/remotes.json";
}

RemoteMap load_remotes() {
    std::string text;
    if (read_file(remotes_path(), text) < 0)
        return {{"images",
                 Remote{"images", "https://images.lxd.canonical.com", "simplestreams", true, ""}}};
    auto j = nlohmann::json::parse(text, nullptr, false);
    RemoteMap out;
    if (!j.is_object()) {
        log_error("Ignoring %s: not a JSON object", remotes_path().c_str());
        return out;
    }
    for (auto& [name, r] : j.items()) {
        if (!r.is_object() || !check_remote_name(name).empty())
            continue;
        Remote remote;
        remote.name = name;
        remote.url = r.value("url", "");
        remote.protocol = r.value("protocol", "simplestreams");
        remote.is_public = r.value("public", true);
        remote.ca_pem = r.value("ca", "");
        out[name] = remote;
    }
    return out;
}

int save_remotes(const RemoteMap& remotes, std::string& error) {
    nlohmann::json j = nlohmann::json::object();
    for (auto& [name, r] : remotes) {
        j[name] = {{"url", r.url}, {"protocol", r.protocol}, {"public", r.is_public}};
        if (!r.ca_pem.empty())
            j[name]["ca"] = r.ca_pem;
    }
    if (int rc = mkdir_p(paths::state_dir(), 0755); rc < 0) {
        error = "Cannot create " + paths::state_dir() + ": " + std::strerror(-rc);
        return rc;
    }
    if (int rc = write_file_atomic(remotes_path(), j.dump(2) + "\n", 0600); rc < 0) {
        error = "Cannot write " + remotes_path() + ": " + std::strerror(-rc);
        log_error("%s", error.c_str());
        return rc;
    }
    return 0;
}

std::string check_remote_name(const std::string& name) {
    if (name.empty() || name.size() > 63)
        return "A remote name has 1 to 63 characters";
    if (name == "local")
        return "\"local\" is the image store itself, not a remote";
    for (unsigned char c : name)
        if (!std::isalnum(c) && c != '-' && c != '_' && c != '.')
            return "Remote name \"" + name + "\" may hold only letters, digits, '-', '_' and '.'";
    return {};
}

std::string check_remote_url(const std::string& url) {
    if (url.rfind("https://", 0) != 0 || url.size() <= 8)
        return "Remote URL \"" + url + "\" must start with https://";
    for (unsigned char c : url)
        if (c <= 0x20 || c >= 0x7f)
            return "Remote URL \"" + url + "\" contains a space or control character";
    return {};
}

} // namespace lodge::image
