// `lodgectl publish`: a stopped container's rootfs made into a unified LXD image (metadata.yaml
// + rootfs/) in the store's work directory, hashed as it is written. Runs in a worker.
#pragma once

#include "image/store.hpp"

#include <cstdint>
#include <string>

namespace lodge::image {

struct PublishRequest {
    std::string rootfs;      // the container's rootfs directory
    KeyMap image_keys;       // the container's image.* keys: the new image's properties
    std::string compression; // "gzip" (default), "xz", "zstd" or "none"
    // A rootfs shifted on disk (no idmapped mounts): ids in [shift_base, +shift_size) are
    // written as container ids. 0: not shifted.
    uint32_t shift_base = 0, shift_size = 0;
};

// "" or why `compression` is not one lodge writes.
std::string check_compression(const std::string& compression);

// Writes `work_dir`/image and fills `info` (fingerprint, size, metadata). 0 or -errno.
int publish_rootfs(const PublishRequest& request, const std::string& work_dir, ImageInfo& info,
                   const CopyProgress& progress, std::string& error);

} // namespace lodge::image
