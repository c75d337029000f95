// The image store on the bus (lodge-images(7)): io.lodge1.Manager's image methods, on a
// vtable of their own on /io/lodge1. Reading the store is open to every caller (images hold no
// secrets of lodge's); changing it, exporting an image and creating from one need
// io.lodge1.manage. Copying files in and unpacking them run in Operation workers.
#pragma once

#include "image/store.hpp"
#include "manager.hpp"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lodge::daemon {

// One image entry on the bus: fingerprint, type, architecture, size, uploaded and last-used
// times (µs, CLOCK_REALTIME), properties, aliases, cached, source.
inline constexpr const char* image_entry_signature = "(sssttta{ss}asbs)";

class ImageService {
public:
    explicit ImageService(Manager& manager) : manager_(manager) {}
    // Registers the vtable; removes what an interrupted import or delete left (in workers).
    int start(sd_bus* bus);

    // Creates container `request.config.name` from the local image `ref` (alias, fingerprint
    // or prefix): `done` as Manager::create's.
    int create_from(const std::string& ref, CreateRequest request, Done done, std::string& error);

    Manager& manager() { return manager_; }
    const image::Store& store() const { return store_; }

private:
    Manager& manager_;
    image::Store store_;
    SlotPtr slot_;
};

} // namespace lodge::daemon
