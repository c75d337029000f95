// The simplestreams protocol of LXD's public image servers: streams/v1/index.json names the
// product catalogs (datatype image-downloads, format products:1.0, usually
// streams/v1/images.json); each product has aliases, an arch and versions, each version items
// with ftype, path, size and sha256. A container image is either `lxd_combined.tar.gz` (unified;
// fingerprint = its sha256) or `lxd.tar.xz` (metadata) + `root.tar.xz` or `squashfs` (split;
// fingerprint = the lxd.tar.xz item's combined_rootxz_sha256 / combined_sha256 or
// combined_squashfs_sha256, the sha256 of both files one after the other).
#pragma once

#include "image/http.hpp"
#include "image/store.hpp"

#include <string>
#include <vector>

namespace lodge::image {

struct StreamFile {
    std::string ftype, path, sha256;
    uint64_t size = 0;
};

struct RemoteImage {
    std::string product, version; // the newest version of the product
    std::string fingerprint;
    std::string architecture, os, release, variant, description;
    std::vector<std::string> aliases;
    StreamFile metadata;  // lxd_combined.tar.gz for a unified image
    StreamFile rootfs;    // empty ftype for a unified image
    std::string unusable; // why lodge cannot use it ("" if it can)
};

// Parsing, for tests too. 0 or -EINVAL with `error` set.
int parse_stream_index(const std::string& json, std::vector<std::string>& catalog_paths,
                       std::string& error);
// Container images only (VM-only versions are left out); the newest usable version of each
// product.
int parse_stream_products(const std::string& json, std::vector<RemoteImage>& out,
                          std::string& error);
// "amd64" for x86_64 and so on: the names simplestreams uses.
std::string stream_arch(const std::string& uname_machine);
std::string host_stream_arch();
// An image by alias (for the host's architecture, or "alias/ARCH"), or by fingerprint prefix.
const RemoteImage* find_remote_image(const std::vector<RemoteImage>& images, const std::string& ref,
                                     const std::string& arch, std::string& error);

// index.json -> catalogs -> images. Blocks (a worker's work).
int list_remote(const std::string& base_url, const HttpOptions& options,
                std::vector<RemoteImage>& out, std::string& error);

// list_remote, then find_remote_image of `ref` for the host's architecture, into `out`.
int lookup_remote(const std::string& base_url, const HttpOptions& options, const std::string& ref,
                  RemoteImage& out, std::string& error);

// Downloads `img` into `work_dir` (image, rootfs), checking every file's size and sha256 and
// the fingerprint, then reads metadata.yaml into `info`. `progress(stage, done, total)`.
using StageProgress = std::function<void(const std::string& stage, uint64_t done, uint64_t total)>;
int download_remote(const std::string& base_url, const HttpOptions& options, const RemoteImage& img,
                    const std::string& work_dir, ImageInfo& info, const StageProgress& progress,
                    std::string& error);

} // namespace lodge::image
