// Writing a container backup (`lodgectl export`); see backup.hpp.
#include "image/backup-detail.hpp"

#include "image/import-error.hpp"
#include "image/publish.hpp"
#include "image/tar-io.hpp"

namespace lodge::image {

using namespace backup_detail;

int write_backup(int out_fd, const BackupSource& src, const CopyProgress& progress,
                 std::string& error) {
    if (auto why = check_compression(src.compression); !why.empty())
        return daemon::fail_invalid(error, why);
    tar_io::FdSink sink{out_fd};
    tar_io::WriteArchive w;
    if (int r = tar_io::open_tar_writer(sink, src.compression, "backup", w, error); r < 0)
        return r;
    std::string index_text, backup_text;
    backup_documents(src, index_text, backup_text);
    // index.yaml first, backup.yaml next: an import reads both without going through rootfs/.
    if (int r = tar_io::write_text_entry(w.get(), index_path, index_text, error); r < 0)
        return r;
    if (int r = tar_io::write_text_entry(w.get(), container_yaml, backup_text, error); r < 0)
        return r;
    uint64_t done = 0;
    if (int r = tar_io::write_tree(w.get(), src.rootfs, container_rootfs, src.shift_base,
                                   src.shift_size, done, progress, error);
        r < 0)
        return r;
    for (auto& s : src.snapshots)
        if (int r = tar_io::write_tree(w.get(), s.dir + "/rootfs",
                                       std::string(snapshots_prefix) + s.name + "/rootfs",
                                       s.shift_base, s.shift_size, done, progress, error);
            r < 0)
            return r;
    if (int r = tar_io::close_tar_writer(w.get(), sink, "backup", error); r < 0)
        return r;
    if (progress)
        progress(done, done);
    return 0;
}

} // namespace lodge::image
