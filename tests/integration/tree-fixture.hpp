// A rootfs fixture with every kind of entry a copy, a snapshot or a backup can get wrong
// (owners, modes, setuid bits, xattrs, ACLs, file capabilities, hardlinks, symlinks, fifos),
// and a manifest of a tree to compare two of them (test-snapshots.cpp, test-backup.cpp).
#pragma once

#include "common/fileio.hpp"
#include "harness.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

namespace lodge::test {

// What a manifest line holds beyond mode, owner, size, data, link target, device and xattrs.
struct ManifestDetail {
    bool sparseness = false; // whether a regular file has blocks at all
    bool all_mtimes = false; // every non-directory's mtime (else regular files' only)
};

namespace tree_detail {

struct Walk {
    std::map<std::string, std::string> out;
    std::map<ino_t, std::set<std::string>> inodes;
    std::string root;
    ManifestDetail detail;
};
inline thread_local Walk* walk = nullptr;

inline std::string xattrs_of(const char* path) {
    char names[8192];
    ssize_t n = ::llistxattr(path, names, sizeof names);
    std::set<std::string> out;
    for (ssize_t i = 0; i > -1 && i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
        char value[4096];
        ssize_t v = ::lgetxattr(path, names + i, value, sizeof value);
        std::string hex;
        for (ssize_t k = 0; k < v; k++) {
            char b[3];
            std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(value[k]));
            hex += b;
        }
        out.insert(std::string(names + i) + "=" + hex);
    }
    std::string joined;
    for (auto& x : out)
        joined += x + ";";
    return joined;
}

inline int manifest_entry(const char* path, const struct stat* st, int, struct FTW*) {
    std::string rel = std::string(path).substr(walk->root.size());
    std::ostringstream line;
    line << std::oct << st->st_mode << std::dec << " " << st->st_uid << ":" << st->st_gid;
    if (S_ISREG(st->st_mode)) {
        line << " size=" << st->st_size;
        if (walk->detail.sparseness)
            line << " blocks=" << (st->st_blocks > 0 ? "some" : "none");
        line << " data=" << std::hash<std::string>{}(read_text(path));
        walk->inodes[st->st_ino].insert(rel);
    } else if (S_ISLNK(st->st_mode)) {
        char target[4096];
        ssize_t n = ::readlink(path, target, sizeof target);
        line << " -> " << std::string(target, n > 0 ? static_cast<size_t>(n) : 0);
    } else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
        line << " dev=" << major(st->st_rdev) << "," << minor(st->st_rdev);
    }
    if (S_ISREG(st->st_mode) || (walk->detail.all_mtimes && !S_ISDIR(st->st_mode)))
        line << " mtime=" << st->st_mtim.tv_sec;
    line << " xattrs=" << xattrs_of(path);
    walk->out[rel] = line.str();
    return 0;
}

} // namespace tree_detail

// Everything about the tree at `root` that a faithful copy keeps, one line per entry, by path.
inline std::map<std::string, std::string> manifest(const std::string& root,
                                                   ManifestDetail detail = {}) {
    tree_detail::Walk w{{}, {}, root, detail};
    tree_detail::walk = &w;
    ::nftw(root.c_str(), tree_detail::manifest_entry, 64, FTW_PHYS | FTW_MOUNT);
    tree_detail::walk = nullptr;
    // Hardlinks: every name of an inode points at the first of them.
    for (auto& [ino, names] : w.inodes)
        for (auto& n : names)
            w.out[n] += " links=" + *names.begin();
    return std::move(w.out);
}

// The first differences between two manifests, for a readable failure.
inline std::string diff(const std::map<std::string, std::string>& a,
                        const std::map<std::string, std::string>& b) {
    std::string out;
    int shown = 0;
    for (auto& [k, v] : a) {
        auto it = b.find(k);
        if (it == b.end() || it->second != v) {
            out += "\n  " + k + ": " + v + "\n   vs " + (it == b.end() ? "(missing)" : it->second);
            if (++shown > 8)
                return out;
        }
    }
    for (auto& [k, v] : b)
        if (!a.count(k)) {
            out += "\n  " + k + ": (missing) vs " + v;
            if (++shown > 8)
                return out;
        }
    return out;
}

// An ACL in the kernel's xattr format: user::rwx user:1234:r-x group::r-x mask::r-x other::---.
inline std::string acl_value() {
    struct Entry {
        uint16_t tag, perm;
        uint32_t id;
    };
    const Entry entries[] = {{0x01, 7, UINT32_MAX},
                             {0x02, 5, 1234},
                             {0x04, 5, UINT32_MAX},
                             {0x10, 5, UINT32_MAX},
                             {0x20, 0, UINT32_MAX}};
    uint32_t version = 2;
    std::string v(reinterpret_cast<const char*>(&version), sizeof version);
    v.append(reinterpret_cast<const char*>(entries), sizeof entries);
    return v;
}

// Puts the entries every copy must keep below `rootfs`/fixture: files with other owners, a
// setuid file, a user xattr, an ACL, a file capability, a hardlink, a symlink with its own
// owner and a fifo. Callers add what is theirs (device nodes, sparse files, trusted xattrs).
inline void populate_fixture(const std::string& rootfs) {
    std::string f = rootfs + "/fixture";
    ASSERT_EQ(mkdir_p(f + "/dir/sub", 0755), 0);
    write_file_atomic(f + "/plain", "plain file\n", 0644);
    ASSERT_EQ(::chown((f + "/plain").c_str(), 1000, 1000), 0);
    write_file_atomic(f + "/setuid", "#!/bin/sh\n", 0755);
    ASSERT_EQ(::chmod((f + "/setuid").c_str(), 04755), 0);
    write_file_atomic(f + "/dir/sub/deep", "deep\n", 0600);
    ASSERT_EQ(::chown((f + "/dir").c_str(), 1001, 1002), 0);
    ASSERT_EQ(::setxattr((f + "/plain").c_str(), "user.lodge-test", "value", 5, 0), 0);
    std::string acl = acl_value();
    ASSERT_EQ(
        ::setxattr((f + "/dir").c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0), 0)
        << std::strerror(errno);
    // A file capability (v2: cap_net_raw permitted+effective).
    const unsigned char cap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    write_file_atomic(f + "/capable", "cap\n", 0755);
    ASSERT_EQ(::setxattr((f + "/capable").c_str(), "security.capability", cap, sizeof cap, 0), 0)
        << std::strerror(errno);
    ASSERT_EQ(::link((f + "/plain").c_str(), (f + "/dir/hardlink").c_str()), 0);
    ASSERT_EQ(::symlink("../plain", (f + "/dir/symlink").c_str()), 0);
    ASSERT_EQ(::lchown((f + "/dir/symlink").c_str(), 1003, 1003), 0);
    ASSERT_EQ(::mkfifo((f + "/fifo").c_str(), 0640), 0);
}

// The hidden entries (".new-", ".trash-", ".restore-" work directories) in `dir`.
inline std::vector<std::string> hidden_entries(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] == '.' && std::strcmp(e->d_name, ".") != 0 &&
                std::strcmp(e->d_name, "..") != 0)
                out.push_back(e->d_name);
        ::closedir(d);
    }
    return out;
}

} // namespace lodge::test
