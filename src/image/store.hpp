// The local image store (lodge-images(7)): LXD images kept once, by sha256 fingerprint, under
// <state>/images/ (root-only, 0700):
//
//   images/<fingerprint>/image    the unified tarball, or a split image's metadata tarball
//   images/<fingerprint>/rootfs   a split image's rootfs tarball
//   images/<fingerprint>/info.json  what `image info` shows (metadata.yaml properties, times)
//   images/aliases.json           alias -> fingerprint
//
// The fingerprint is LXD's: sha256 of the unified tarball, or of the metadata tarball followed
// by the rootfs tarball. An image is filled and checked in a hidden work directory
// (images/.tmp-*) and appears under its fingerprint in one rename, so no reader ever sees a half
// image; a crash leaves only hidden directories, removed at the next start (leftovers()).
#pragma once

#include "common/config.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <nettle/sha2.h>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace lodge::image {

struct ImageInfo {
    std::string fingerprint;
    std::string type;  // "unified" or "split"
    uint64_t size = 0; // bytes on disk (both files)
    std::string architecture;
    KeyMap properties;                              // metadata.yaml properties
    uint64_t uploaded_usec = 0, last_used_usec = 0; // CLOCK_REALTIME
    bool cached = false;      // fetched for a launch, not imported or copied on purpose: may expire
    std::string source;       // "remote:alias" for downloads, empty for imports
    bool auto_update = false; // refreshed from `source` on images.auto_update_interval

    nlohmann::json to_json() const;
    static bool from_json(const nlohmann::json& j, ImageInfo& out);
};

using AliasMap = std::map<std::string, std::string>; // alias -> fingerprint

std::string images_dir(); // <state>/images

// A full fingerprint: 64 lowercase hex digits.
bool is_fingerprint(const std::string& s);
// "" or why `alias` cannot be an alias name.
std::string check_alias_name(const std::string& alias);

class Store {
public:
    // Makes images/ (root-only) if needed. 0 or -errno with `error` set.
    int ensure(std::string& error) const;
    std::vector<ImageInfo> list() const;
    int get(const std::string& fingerprint, ImageInfo& out) const;
    // An alias, a full fingerprint or a unique fingerprint prefix: the image's fingerprint.
    // -ENOENT / -EINVAL (ambiguous prefix) with `error` set.
    int resolve(const std::string& ref, std::string& fingerprint, std::string& error) const;

    AliasMap aliases() const;
    // The aliases of one image.
    std::vector<std::string> aliases_of(const std::string& fingerprint) const;
    // Adds (or, with `replace`, moves) an alias. -EEXIST when it names another image.
    int set_alias(const std::string& alias, const std::string& fingerprint, bool replace,
                  std::string& error) const;
    int remove_alias(const std::string& alias, std::string& error) const;

    // A hidden work directory for a new image.
    int prepare(std::string& work_dir, std::string& error) const;
    // info.json into `work_dir`, then the rename that makes the image. -EEXIST when an image
    // with that fingerprint is there already (the work dir is left for the caller).
    int commit(const std::string& work_dir, const ImageInfo& info, std::string& error) const;
    // Renames the image away (it is gone once this returns 0) and drops its aliases; `trash`
    // is what is left to remove, off the loop.
    int retire(const std::string& fingerprint, std::string& trash, std::string& error) const;
    // Rewrites info.json (last use, cached flag).
    int update(const ImageInfo& info) const;
    // Work and trash directories a crash left behind.
    std::vector<std::string> leftovers() const;

    static std::string image_path(const std::string& fingerprint);
    static std::string rootfs_path(const std::string& fingerprint); // split images only
};

// The worker's part of an import: copies the image file(s) into `work_dir` while hashing them,
// syncs them, and reads metadata.yaml. `rootfs_fd` is -1 for a unified image. Fills
// `info` (fingerprint, type, size, architecture, properties). `progress(done, total)` is
// called every few MiB. 0 or -errno with `error` set.
using CopyProgress = std::function<void(uint64_t done, uint64_t total)>;
int ingest(int image_fd, int rootfs_fd, const std::string& work_dir, ImageInfo& info,
           const CopyProgress& progress, std::string& error);

// Reads the tarball at `path` to its end (every header, every byte decompressed): -EINVAL with
// "The WHAT is damaged: ..." when it is not whole.
int verify_tarball(const std::string& path, const std::string& what, std::string& error);

// Reads metadata.yaml from the image file at `image_path` into `info` (architecture,
// properties).
int read_metadata_into(const std::string& image_path, ImageInfo& info, std::string& error);

// Incremental sha256 (nettle).
class Sha256 {
public:
    Sha256() { sha256_init(&ctx_); }
    void update(const void* data, size_t size) {
        sha256_update(&ctx_, size, static_cast<const uint8_t*>(data));
    }
    std::string hex(); // the digest as 64 lowercase hex digits; the object is reset after

private:
    sha256_ctx ctx_;
};

// sha256 of a whole file as 64 hex digits (for checking downloads and tests).
int sha256_file(int fd, std::string& hex, std::string& error);

} // namespace lodge::image
