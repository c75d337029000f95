// Image remotes (lodge-images(7)): <state>/remotes.json (root-only, replaced atomically).
// Without the file, the list holds LXD's public image server as `images`.
#pragma once

#include <map>
#include <string>

namespace lodge::image {

struct Remote {
    std::string name, url;
    std::string protocol = "simplestreams"; // or "lxd"
    bool is_public = true;
    std::string ca_pem; // trusted instead of the system store when set
};

using RemoteMap = std::map<std::string, Remote>;

std::string remotes_path();
RemoteMap load_remotes();
int save_remotes(const RemoteMap& remotes, std::string& error);
// "" or why the name cannot be a remote's (`local` is the store itself).
std::string check_remote_name(const std::string& name);
// "" or why the URL is refused (https only).
std::string check_remote_url(const std::string& url);

} // namespace lodge::image
