// What the backup files share (backup-model.cpp, backup-write.cpp, backup-read.cpp); not for
// other users.
#pragma once

#include "image/backup.hpp"

#include <cstddef>
#include <string>

namespace lodge::image::backup_detail {

inline constexpr const char* index_path = "backup/index.yaml";
inline constexpr const char* container_yaml = "backup/container/backup.yaml";
inline constexpr const char* container_rootfs = "backup/container/rootfs";
inline constexpr const char* snapshots_prefix = "backup/snapshots/";
inline constexpr size_t max_yaml_size = 16 << 20;

// index.yaml and backup.yaml of `source`, as LXD writes them (the rootfses written unshifted).
void backup_documents(const BackupSource& source, std::string& index_text,
                      std::string& backup_text);

// `info` from index.yaml and backup.yaml: what lodge takes of them, the rest named in its notes.
// 0 or -errno with `error` (a virtual machine, an optimized backup, a refused device name).
int parse_backup_documents(const std::string& index_text, const std::string& backup_text,
                           BackupInfo& info, std::string& error);

} // namespace lodge::image::backup_detail
