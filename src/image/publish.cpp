#include "image/publish.hpp"

#include "common/fd.hpp"
#include "image/import-error.hpp"
#include "image/tar-io.hpp"
#include "image/yaml.hpp"

#include <cerrno>
#include <ctime>
#include <fcntl.h>
#include <sys/utsname.h>

namespace lodge::image {

std::string check_compression(const std::string& c) {
    if (c.empty() || c == "gzip" || c == "xz" || c == "zstd" || c == "none")
        return {};
    return "Unknown compression \"" + c + "\": gzip, xz, zstd or none";
}

int publish_rootfs(const PublishRequest& req, const std::string& work_dir, ImageInfo& info,
                   const CopyProgress& progress, std::string& error) {
    if (auto why = check_compression(req.compression); !why.empty()) {
        error = why;
        return -EINVAL;
    }
    std::string path = work_dir + "/image";
    Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out)
        return daemon::fail_errno(error, errno, "Cannot create " + path);
    Sha256 hash;
    tar_io::FdSink sink{out.get(), &hash};
    tar_io::WriteArchive w;
    if (int r = tar_io::open_tar_writer(sink, req.compression, "image", w, error); r < 0)
        return r;

    // metadata.yaml: the container's image.* keys become the new image's properties.
    struct utsname u {};
    ::uname(&u);
    std::string arch = u.machine;
    std::string yaml;
    if (auto it = req.image_keys.find("image.architecture"); it != req.image_keys.end())
        arch = it->second;
    yaml = "architecture: " + yaml_quoted(arch) +
           "\ncreation_date: " + std::to_string(static_cast<long long>(::time(nullptr))) +
           "\nproperties:\n";
    for (auto& [k, v] : req.image_keys)
        if (k.rfind("image.", 0) == 0 && k != "image.architecture")
            yaml += "  " + yaml_quoted(k.substr(6)) + ": " + yaml_quoted(v) + "\n";
    if (int r = tar_io::write_text_entry(w.get(), "metadata.yaml", yaml, error); r < 0)
        return r;

    uint64_t done = 0;
    if (int r = tar_io::write_tree(w.get(), req.rootfs, "rootfs", req.shift_base, req.shift_size,
                                   done, progress, error);
        r < 0)
        return r;
    if (int r = tar_io::close_tar_writer(w.get(), sink, "image", error); r < 0)
        return r;
    info.fingerprint = hash.hex();
    info.type = "unified";
    info.size = sink.written;
    return read_metadata_into(path, info, error);
}

} // namespace lodge::image
