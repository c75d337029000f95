// What lodgectl's image verb files share (image.cpp: the store; image-remote.cpp: remotes and
// downloads; image-launch.cpp: launch, create from an image, publish).
#pragma once

#include "ctl/bus.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lodge::ctl::images {

// One image as ListImages/GetImage give it (and what a remote catalog row is matched on).
struct Entry {
    std::string fingerprint, type, architecture, source;
    uint64_t size = 0, uploaded = 0, last_used = 0;
    std::map<std::string, std::string> properties;
    std::vector<std::string> aliases;
    bool cached = false;
};

// FILTER: a fingerprint prefix, a part of an alias, or KEY=VALUE on the properties.
bool matches(const Entry& e, const std::string& filter);
// "local:x" is "x"; other remotes are lodged's to resolve.
std::string local_ref(const std::string& ref);
std::string joined(const std::vector<std::string>& v);
std::string size_of(uint64_t bytes);

// Appends the --alias value as an `as` (empty without one).
int append_aliases(sd_bus_message* m, const Options& a);
// A new Manager call with `first` and the --alias value as an `as` (empty without one);
// nullptr after printing why not.
MessagePtr new_call_with_aliases(sd_bus* bus, const char* method, const std::string& first,
                                 const Options& a);
// Prints the fingerprint `reply` carries: JSON, bare (-q), or "<done> with fingerprint: FP".
int print_fingerprint(const Options& a, sd_bus_message* reply, const char* done);

// image-remote.cpp
// Calls `m`, showing lodged's download progress on a terminal meanwhile.
int call_showing_downloads(const Options& a, sd_bus* bus, sd_bus_message* m, BusError& err,
                           MessagePtr& reply);
// image list REMOTE: [FILTER]
int list_remote_images(const Options& a, sd_bus* bus, const std::string& remote,
                       const std::string& filter);
// image copy REMOTE:IMAGE local:
int image_copy(const Options& a, sd_bus* bus);

} // namespace lodge::ctl::images
