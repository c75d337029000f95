// Small file helpers: whole-file reads and atomic replacement.
#pragma once

#include <string>

namespace lodge {

// Reads a whole file. Returns 0 or -errno.
int read_file(const std::string& path, std::string& out);
int read_file_at(int dirfd, const std::string& path, std::string& out);

// Writes to a temporary file in the same directory, fsyncs it, renames it over `path` and
// fsyncs the directory, so readers see the old or the new content, never a mix. `durable`
// false skips both fsyncs: for runtime files (/run) that need no survival across a crash of
// the machine, only the all-or-nothing view the rename gives.
int write_file_atomic(const std::string& path, const std::string& content, unsigned mode = 0644,
                      bool durable = true);

// Writes a short string to an existing file such as a cgroup or /proc knob. Returns 0 or -errno.
int write_file(const std::string& path, const std::string& content);

// mkdir -p with the given mode for created components. Returns 0 or -errno.
int mkdir_p(const std::string& path, unsigned mode = 0755);

// rm -rf that never crosses into another filesystem (bind mounts stay untouched).
int remove_tree(const std::string& path);

} // namespace lodge
