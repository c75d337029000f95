// lodgectl's image verbs (lodge-images(7)): `image list|info|delete|alias|import|export`,
// `launch`, and `create NAME IMAGE`. They talk to lodged's image methods on io.lodge1.Manager.
#pragma once

#include <map>
#include <string>
#include <systemd/sd-bus.h>
#include <vector>

namespace lodge::ctl {

// What the image verbs take from lodgectl's command line.
struct ImageArgs {
    bool json = false, quiet = false, legend = true;
    std::vector<std::string> args;             // the verb and its arguments
    std::map<std::string, std::string> values; // --alias, --privileged, ...
    std::vector<std::string> config;           // -c KEY=VALUE
};

int verb_image(const ImageArgs& a, sd_bus* bus);
// publish NAME: a stopped container into the store.
int verb_publish(const ImageArgs& a, sd_bus* bus);
// remote add|list|remove|rename.
int verb_remote(const ImageArgs& a, sd_bus* bus);
// launch IMAGE NAME: create from the image, then start.
int verb_launch(const ImageArgs& a, sd_bus* bus);
// create NAME IMAGE (an image reference that is not a file).
int create_from_image(const ImageArgs& a, sd_bus* bus, const std::string& name,
                      const std::string& ref);

} // namespace lodge::ctl
