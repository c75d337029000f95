// Images that follow their remote (`lodgectl image copy REMOTE:ALIAS local: --auto-update`,
// lodge-images(7)): every images.auto_update_interval hours (LXD's server key, default 6, 0
// never) lodged asks each such image's remote for the alias's newest fingerprint, in a
// worker, and when it moved, downloads the new image through ImageService's download path,
// moves the aliases over and removes the old image. The server keys live in
// $LODGE_STATE_DIR/server.json (GetServerConfig / SetServerConfig, `lodgectl server`).
#pragma once

#include "daemon/image-dbus.hpp"
#include "daemon/manager.hpp"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace lodge::daemon {

// The server keys lodged knows, and their checks.
KeyMap load_server_config();
std::string check_server_key(const std::string& key, const std::string& value);

class ImageUpdater {
public:
    ImageUpdater(Manager& manager, ImageService& images) : manager_(manager), images_(images) {}
    // Registers SetImageAutoUpdate, RefreshImages, GetServerConfig, SetServerConfig on
    // /io/lodge1 and arms the refresh timer.
    int start(sd_bus* bus);

    // (old fingerprint, new fingerprint) of the images a refresh replaced.
    using Refreshed = std::vector<std::pair<std::string, std::string>>;
    // Refreshes every auto-update image now; `done` runs once all are through.
    void refresh(std::function<void(const Refreshed&)> done);
    // Re-reads images.auto_update_interval and arms the timer with it.
    void rearm();

    Manager& manager() { return manager_; }
    ImageService& images() { return images_; }

private:
    static int on_timer(sd_event_source* s, uint64_t usec, void* userdata);
    void check_one(const image::ImageInfo& info, std::function<void(const std::string&)> done);
    void replace(const image::ImageInfo& old, const std::string& fresh);

    Manager& manager_;
    ImageService& images_;
    SourcePtr timer_;
    bool running_ = false; // a timer refresh under way
};

} // namespace lodge::daemon
