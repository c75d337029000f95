// The LXD REST API as an image server, for public images (what an untrusted client without a
// certificate may read): GET /1.0/images?recursion=1 lists them, /1.0/images/aliases/NAME
// names an alias's target, /1.0/images/FINGERPRINT describes one and .../export sends it: one
// tarball for a unified image (fingerprint = its sha256), or multipart/form-data with the parts
// `metadata` then `rootfs` for a split one (fingerprint = sha256 of both, one after the other).
// Answers come in LXD's envelope: {"type":"sync","metadata":...} or
// {"type":"error","error":"...","error_code":N}. Blocks: a worker's work.
#pragma once

#include "image/remotes.hpp"
#include "image/simplestreams.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lodge::image {

// The public container images of `remote`.
int lxd_list_remote(const Remote& remote, const HttpOptions& options, std::vector<RemoteImage>& out,
                    std::string& error);

// An image of `remote` by alias or fingerprint (prefix); -ENOENT when it has none, -EACCES
// when it is not public.
int lxd_lookup_remote(const Remote& remote, const HttpOptions& options, const std::string& ref,
                      RemoteImage& out, std::string& error);

// Downloads the export of `img` into `work_dir` (image, and rootfs for a split image), checks
// the fingerprint, reads metadata.yaml into `info`.
int lxd_download_remote(const Remote& remote, const HttpOptions& options, const RemoteImage& img,
                        const std::string& work_dir, ImageInfo& info, const StageProgress& progress,
                        std::string& error);

// For tests too: one entry of /1.0/images (false when it is no usable public container image,
// with `why`); the parts of a multipart export in `export_path` into `metadata_path` and
// `rootfs_path`, `combined_sha256` = sha256 of both.
bool parse_lxd_image(const nlohmann::json& entry, RemoteImage& out, std::string& why);
// The whole /1.0/images?recursion=1 list: its usable images into `out`; -EPROTO when it is no
// list or lists more entries than lodge reads.
int parse_lxd_image_list(const nlohmann::json& list, const std::string& remote_name,
                         std::vector<RemoteImage>& out, std::string& error);
int split_lxd_multipart(const std::string& export_path, const std::string& boundary,
                        const std::string& metadata_path, const std::string& rootfs_path,
                        std::string& combined_sha256, std::string& error);
// The boundary of a multipart/form-data Content-Type ("" when it is not one, has none or two,
// or one that RFC 2046 does not allow).
std::string multipart_boundary(const std::string& content_type);

} // namespace lodge::image
