#include "image/remote-protocol.hpp"

#include "image/lxd-remote.hpp"

#include "common/log.hpp"

#include <cerrno>

namespace lodge::image {
namespace {

int unknown_protocol(const Remote& remote, std::string& error) {
    error = "Remote \"" + remote.name + "\" speaks \"" + remote.protocol +
            "\", which lodge does not know (simplestreams or lxd)";
    log_error("%s", error.c_str());
    return -EOPNOTSUPP;
}

} // namespace

int list_remote_images(const Remote& remote, const HttpOptions& options,
                       std::vector<RemoteImage>& out, std::string& error) {
    if (remote.protocol == "simplestreams")
        return list_remote(remote.url, options, out, error);
    if (remote.protocol == "lxd")
        return lxd_list_remote(remote, options, out, error);
    return unknown_protocol(remote, error);
}

int lookup_remote_image(const Remote& remote, const HttpOptions& options, const std::string& ref,
                        RemoteImage& out, std::string& error) {
    if (remote.protocol == "simplestreams")
        return lookup_remote(remote.url, options, ref, out, error);
    if (remote.protocol == "lxd")
        return lxd_lookup_remote(remote, options, ref, out, error);
    return unknown_protocol(remote, error);
}

int download_remote_image(const Remote& remote, const HttpOptions& options, const RemoteImage& img,
                          const std::string& work_dir, ImageInfo& info,
                          const StageProgress& progress, std::string& error) {
    if (remote.protocol == "simplestreams")
        return download_remote(remote.url, options, img, work_dir, info, progress, error);
    if (remote.protocol == "lxd")
        return lxd_download_remote(remote, options, img, work_dir, info, progress, error);
    return unknown_protocol(remote, error);
}

} // namespace lodge::image
