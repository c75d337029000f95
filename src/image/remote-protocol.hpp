// The one place that picks a remote's protocol: simplestreams (simplestreams.hpp) or LXD's
// REST API (lxd-remote.hpp). Catalogs, look-ups and downloads of every remote go through here,
// for image list, info, copy, launch and auto-update alike. Blocks: a worker's work.
#pragma once

#include "image/remotes.hpp"
#include "image/simplestreams.hpp"

#include <string>
#include <vector>

namespace lodge::image {

int list_remote_images(const Remote& remote, const HttpOptions& options,
                       std::vector<RemoteImage>& out, std::string& error);
// The image `ref` (alias or fingerprint prefix) names on `remote` for the host's architecture.
int lookup_remote_image(const Remote& remote, const HttpOptions& options, const std::string& ref,
                        RemoteImage& out, std::string& error);
// Into `work_dir` (image, rootfs), checked against the fingerprint; metadata into `info`.
int download_remote_image(const Remote& remote, const HttpOptions& options, const RemoteImage& img,
                          const std::string& work_dir, ImageInfo& info,
                          const StageProgress& progress, std::string& error);

} // namespace lodge::image
