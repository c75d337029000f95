// lodgectl's image verbs (lodge-images(7)): `image list|info|delete|alias|import|export`,
// `launch`, and `create NAME IMAGE`. They talk to lodged's image methods on io.lodge1.Manager.
#pragma once

#include "ctl/verbs.hpp"

#include <string>
#include <systemd/sd-bus.h>

namespace lodge::ctl {

// verb_image, verb_publish, verb_remote and verb_launch are declared in verbs.hpp.
// create NAME IMAGE (an image reference that is not a file).
int create_from_image(const Options& a, sd_bus* bus, const std::string& name,
                      const std::string& ref);

} // namespace lodge::ctl
