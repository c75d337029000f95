// Remotes and simplestreams downloads against the local HTTPS image server of
// image-remote-fixture.hpp: launch from a remote, a second launch served from the store,
// squashfs images, concurrent launches that download once, auto-update and its due refresh,
// cached images' expiry, cloud-init in a Debian image from a remote. The failure cases are in
// test-image-remote-failures.cpp, LXD servers in test-image-remote-lxd.cpp.
#include "image-remote-fixture.hpp"

using namespace lodge;
using namespace lodge::test;

namespace {

TEST_F(ImageRemote, RemotesAddListRenameRemove) {
    auto j = nlohmann::json::parse(ctl("remote list --json"), nullptr, false);
    ASSERT_TRUE(j.is_array());
    EXPECT_TRUE(contains(j.dump(), "\"ca\":true,\"name\":\"" + remote + "\"")) << j.dump();
    int st = 0;
    std::string out = ctl("remote add " + remote + " " + url, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "already exists")) << out;
    out = ctl("remote add " + unique_name("plain") + " http://127.0.0.1:1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "https://")) << out;
    out = ctl("remote add local " + url, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "local")) << out;
    std::string renamed = unique_name("r2");
    EXPECT_EQ(ctl("remote rename " + remote + " " + renamed, &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_TRUE(contains(ctl("remote list"), renamed));
    EXPECT_FALSE(contains(ctl("remote list"), remote + " "));
    EXPECT_EQ(ctl("remote remove " + renamed, &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_FALSE(contains(ctl("remote list"), renamed));
    // Root-only on disk.
    struct stat s {};
    ASSERT_EQ(stat((TestRoot::get().dir + "/state/remotes.json").c_str(), &s), 0);
    EXPECT_EQ(s.st_mode & 0777, 0600u);
}

TEST_F(ImageRemote, LaunchFromRemoteThenFromTheStore) {
    std::string out = ctl("image list " + remote + ": --json");
    auto j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_array()) << out;
    EXPECT_TRUE(contains(out, "\"bbu\"")) << out;
    EXPECT_TRUE(contains(out, "\"bbs\"")) << out;

    int st = 0;
    std::string c1 = make("r1"), c2 = make("r2"), c3 = make("r3");
    out = ctl("launch " + remote + ":bbu " + c1, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("status " + c1), "State: running"));
    EXPECT_EQ(ctl("config get " + c1 + " image.os"), "BusyBox\n");
    EXPECT_EQ(requests("lxd_combined.tar.gz"), "1\n");
    std::string fp = ctl("config get " + c1 + " volatile.base_image");
    EXPECT_EQ(fp, sh("sha256sum " + dir + "/img/unified.tar.gz | cut -d' ' -f1"));

    // Served from the store: the server sees no second download.
    out = ctl("launch " + remote + ":bbu " + c2, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(requests("lxd_combined.tar.gz"), "1\n");
    auto info =
        nlohmann::json::parse(ctl("image info " + fp.substr(0, 12) + " --json"), nullptr, false);
    EXPECT_EQ(info["source"], remote + ":bbu");
    EXPECT_EQ(info["cached"], true);

    // A split image (lxd.tar.xz + root.tar.xz), fingerprint = combined sha256.
    out = ctl("create " + c3 + " " + remote + ":bbs", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("config get " + c3 + " volatile.base_image"),
              sh("cat " + dir + "/img/meta.tar.xz " + dir +
                 "/img/root.tar.xz | sha256sum | cut -d' ' -f1"));
    EXPECT_EQ(ctl("start " + c3, &st), "");
    EXPECT_EQ(st, 0);

    // image copy keeps it (no longer cached) under an alias.
    std::string alias = unique_name("mine");
    out = ctl("image copy " + remote + ":bbs local: --alias " + alias + " -q", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, ctl("config get " + c3 + " volatile.base_image"));
    info = nlohmann::json::parse(ctl("image info " + alias + " --json"), nullptr, false);
    EXPECT_EQ(info["cached"], false) << info.dump();
    EXPECT_EQ(requests("root.tar.xz"), "1\n");
}

// An image whose rootfs the server offers only as squashfs (lxd.tar.xz + root.squashfs, as
// LXD's servers publish most images): unsquashfs unpacks it; ids and user xattrs come through,
// a device node outside /dev and a trusted.* xattr do not.
TEST_F(ImageRemote, LaunchFromASquashfsImage) {
    if (sh("command -v mksquashfs unsquashfs >/dev/null && echo yes") != "yes\n")
        GTEST_SKIP() << "needs squashfs-tools";
    std::string img = dir + "/img";
    int st = 0;
    std::string out =
        sh("set -e; cp -a " + img + "/rootfs " + img + "/sqroot && echo squashed > " + img +
               "/sqroot/root/marker && chown 1000:1001 " + img +
               "/sqroot/root/marker && "
               "setfattr -n user.lodge -v kept " +
               img +
               "/sqroot/root/marker && "
               "setfattr -n trusted.lodge -v dropped " +
               img +
               "/sqroot/root/marker && "
               "mknod " +
               img +
               "/sqroot/root/disk b 7 200 && "
               "mksquashfs " +
               img + "/sqroot " + img +
               "/root.squashfs -noappend -quiet "
               ">/dev/null && python3 " +
               env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root + " bb-squash bbq " +
               arch + " --meta " + img + "/meta.tar.xz --squashfs " + img + "/root.squashfs 2>&1",
           &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(ctl("image list " + remote + ":"), "bbq"));
    std::string c = make("sq");
    out = ctl("launch " + remote + ":bbq " + c, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + c + " -- cat /root/marker"), "squashed\n");
    EXPECT_EQ(ctl("exec " + c + " -- stat -c %u:%g /root/marker"), "1000:1001\n");
    EXPECT_EQ(ctl("exec " + c + " -- stat -c %u /bin/busybox"), "0\n");
    std::string rootfs = TestRoot::get().dir + "/state/containers/" + c + "/rootfs";
    EXPECT_EQ(
        sh("getfattr --absolute-names --only-values -n user.lodge " + rootfs + "/root/marker 2>&1"),
        "kept");
    EXPECT_FALSE(contains(sh("getfattr --absolute-names -d -m - " + rootfs + "/root/marker"),
                          "trusted.lodge"));
    EXPECT_FALSE(exists(rootfs + "/root/disk"));
    EXPECT_EQ(requests("root.squashfs"), "1\n");
    // The fingerprint is the combined sha256 of both files, as the catalog says.
    auto info = nlohmann::json::parse(ctl("image list --json"), nullptr, false);
    ASSERT_TRUE(info.is_array() && info.size() == 1u) << info.dump();
    EXPECT_EQ(info[0]["type"], "split");
    EXPECT_EQ(info[0]["fingerprint"].get<std::string>() + "\n",
              sh("cat " + img + "/meta.tar.xz " + img +
                 "/root.squashfs | sha256sum | cut -d' ' "
                 "-f1"));
}

TEST_F(ImageRemote, ConcurrentLaunchesDownloadOnce) {
    std::string c1 = make("cc1"), c2 = make("cc2"), c3 = make("cc3");
    std::string ctlbin = env_path("LODGE_LODGECTL");
    int st = 0;
    std::string out =
        sh("(" + ctlbin + " launch " + remote + ":bbs " + c1 + " & p1=$!; " + ctlbin + " launch " +
               remote + ":bbs " + c2 + " & p2=$!; " + ctlbin + " create " + c3 + " " + remote +
               ":bbs & p3=$!; wait $p1; a=$?; wait $p2; b=$?; wait $p3; c=$?; "
               "exit $((a | b | c))) 2>&1",
           &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(requests("root.tar.xz"), "1\n");
    EXPECT_EQ(requests("lxd.tar.xz"), "1\n");
    EXPECT_EQ(fingerprints().size(), 1u);
    EXPECT_TRUE(contains(ctl("status " + c1), "State: running"));
    EXPECT_TRUE(contains(ctl("status " + c2), "State: running"));
}

// image copy --auto-update: the image follows its remote alias. RefreshImages is the refresh
// timer's work, run when the test says (no waiting on images.auto_update_interval): a newer
// version on the server replaces the image and takes its aliases; images copied without the
// flag stay as they are; a second refresh finds nothing to do and downloads nothing.
TEST_F(ImageRemote, AutoUpdateImagesFollowTheirRemote) {
    int st = 0;
    std::string alias = unique_name("follow");
    std::string out =
        ctl("image copy " + remote + ":bbs local: --alias " + alias + " --auto-update -q", &st);
    ASSERT_EQ(st, 0) << out;
    std::string old_fp = out.substr(0, out.find('\n'));
    std::string info_path = store() + "/" + old_fp + "/info.json";
    EXPECT_TRUE(contains(read_text(info_path), "\"auto_update\": true")) << read_text(info_path);
    out = ctl("image copy " + remote + ":bbu local: -q", &st);
    ASSERT_EQ(st, 0) << out;
    std::string kept = out.substr(0, out.find('\n'));
    EXPECT_TRUE(contains(read_text(store() + "/" + kept + "/info.json"), "\"auto_update\": false"));
    out = ctl("image copy " + remote + ":bbu local: --auto-update", &st);
    EXPECT_EQ(st, 0) << out; // marking one that is there already is fine
    ctl("image delete " + kept);
    out = ctl("image copy " + remote + ":bbu local: -q", &st);
    kept = out.substr(0, out.find('\n'));

    // Nothing new on the server: nothing happens.
    std::string refresh = "busctl call io.lodge1 /io/lodge1 io.lodge1.Manager RefreshImages";
    EXPECT_EQ(sh(refresh + " 2>&1"), "a(ss) 0\n");

    // A newer version of bb-split.
    std::string img = dir + "/img";
    out = sh("set -e; cd " + img +
                 " && cp -a rootfs rootfs2 && echo v2 > rootfs2/root/version && "
                 "tar -C rootfs2 -cJf root2.tar.xz . && python3 " +
                 env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root + " bb-split bbs " +
                 arch +
                 " --meta meta.tar.xz "
                 "--rootxz root2.tar.xz --version 29990101_0000 2>&1",
             &st);
    ASSERT_EQ(st, 0) << out;
    std::string new_fp = sh("cat " + img + "/meta.tar.xz " + img +
                            "/root2.tar.xz | sha256sum | cut -d' ' -f1 | "
                            "tr -d '\\n'");
    EXPECT_EQ(sh(refresh + " 2>&1"), "a(ss) 1 \"" + old_fp + "\" \"" + new_fp + "\"\n");
    auto fps = fingerprints();
    EXPECT_EQ(std::set<std::string>(fps.begin(), fps.end()), (std::set<std::string>{new_fp, kept}));
    EXPECT_EQ(sh("ls " + store() + " | grep -c " + old_fp + " || true"), "0\n");
    auto entry = nlohmann::json::parse(ctl("image info " + alias + " --json"), nullptr, false);
    ASSERT_TRUE(entry.is_object()) << ctl("image info " + alias);
    EXPECT_EQ(entry["fingerprint"], new_fp);
    EXPECT_TRUE(
        contains(read_text(store() + "/" + new_fp + "/info.json"), "\"auto_update\": true"));
    std::string c = make("upd");
    ASSERT_EQ(ctl("launch " + alias + " " + c, &st), "Launched container " + c + "\n");
    EXPECT_EQ(ctl("exec " + c + " -- cat /root/version"), "v2\n");

    // Up to date now: the catalog is read, nothing is downloaded.
    EXPECT_EQ(sh(refresh + " 2>&1"), "a(ss) 0\n");
    EXPECT_EQ(requests("29990101_0000/root.tar.xz"), "1\n");
    EXPECT_TRUE(wait_until([this] { return hidden().empty(); })) << hidden();

    // The timer's interval is LXD's server key.
    EXPECT_EQ(ctl("server get images.auto_update_interval"), "\n");
    EXPECT_EQ(ctl("server set images.auto_update_interval=12", &st), "");
    EXPECT_EQ(ctl("server get images.auto_update_interval"), "12\n");
    out = ctl("server set images.auto_update_interval=soon", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "hours")) << out;
    out = ctl("server set core.https_address=:8443", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Unknown server key")) << out;
    EXPECT_EQ(ctl("server unset images.auto_update_interval", &st), "");
    EXPECT_EQ(ctl("server show"), "");
}

// `lodgectl image refresh --due` (lodge-image-refresh.timer's call, RefreshDueImages) checks
// the auto-update images only when images.auto_update_interval has passed since the last
// refresh, which lodged records on disk (it exits when idle, so a timer in it alone would
// rarely fire); plain `image refresh` checks at once; an interval of 0 never refreshes.
TEST_F(ImageRemote, RefreshDueChecksOncePerInterval) {
    int st = 0;
    std::string out = ctl("image copy " + remote + ":bbs local: --auto-update -q", &st);
    ASSERT_EQ(st, 0) << out;
    std::string old_fp = out.substr(0, out.find('\n'));
    std::string stamp = TestRoot::get().dir + "/state/image-refresh.json";
    ::unlink(stamp.c_str());
    std::string before = requests("index.json");
    // Never refreshed: due. The remote is asked, nothing is new.
    EXPECT_EQ(ctl("image refresh --due", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(std::stoi(requests("index.json")), std::stoi(before) + 1);
    EXPECT_TRUE(exists(stamp));
    // Just refreshed: not due, the remote is not asked, even with a newer image there.
    std::string img = dir + "/img";
    out = sh("set -e; cd " + img +
                 " && cp -a rootfs rootfs3 && echo v3 > rootfs3/root/version && "
                 "tar -C rootfs3 -cJf root3.tar.xz . && python3 " +
                 env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root + " bb-split bbs " +
                 arch + " --meta meta.tar.xz --rootxz root3.tar.xz --version 29990202_0000 2>&1",
             &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("image refresh --due", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(std::stoi(requests("index.json")), std::stoi(before) + 1);
    EXPECT_EQ(fingerprints(), std::vector<std::string>{old_fp});
    // The last refresh long ago: due again, and the newer image replaces the old one.
    ASSERT_EQ(write_file_atomic(stamp, "{\"last_refresh_usec\": 1}\n"), 0);
    std::string new_fp = sh("cat " + img + "/meta.tar.xz " + img +
                            "/root3.tar.xz | sha256sum | cut -d' ' -f1 | tr -d '\\n'");
    EXPECT_EQ(ctl("image refresh --due", &st), "Image " + old_fp + " replaced by " + new_fp + "\n");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(fingerprints(), std::vector<std::string>{new_fp});
    // Interval 0: never due, however old the last refresh.
    ASSERT_EQ(ctl("server set images.auto_update_interval=0", &st), "");
    ASSERT_EQ(write_file_atomic(stamp, "{\"last_refresh_usec\": 1}\n"), 0);
    std::string now = requests("index.json");
    EXPECT_EQ(ctl("image refresh --due", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(requests("index.json"), now);
    // A forced refresh asks at once.
    EXPECT_EQ(ctl("image refresh", &st), "");
    EXPECT_EQ(st, 0);
    EXPECT_EQ(std::stoi(requests("index.json")), std::stoi(now) + 1);
    ctl("server unset images.auto_update_interval");
}

// Cached images (fetched for a launch) go once unused for LODGE_IMAGE_CACHE_EXPIRY; images
// copied on purpose stay.
TEST_F(ImageRemote, CachedImagesExpire) {
    int st = 0;
    std::string c = make("ex");
    std::string out = ctl("create " + c + " " + remote + ":bbu", &st);
    ASSERT_EQ(st, 0) << out;
    std::string cached = ctl("config get " + c + " volatile.base_image");
    cached.pop_back();
    std::string kept = ctl("image copy " + remote + ":bbs local: -q");
    kept.pop_back();
    ASSERT_EQ(kept.size(), 64u) << kept;
    // Both last used long ago.
    for (auto& fp : {cached, kept})
        sh("python3 -c 'import json,sys; p=sys.argv[1]; j=json.load(open(p)); "
           "j[\"uploaded_usec\"]=j[\"last_used_usec\"]=1; json.dump(j, open(p, \"w\"))' " +
           store() + "/" + fp + "/info.json");
    daemon.reset();
    setenv("LODGE_IMAGE_CACHE_EXPIRY", "86400", 1);
    daemon = std::make_unique<Lodged>();
    bool ready = daemon->wait_ready();
    unsetenv("LODGE_IMAGE_CACHE_EXPIRY");
    ASSERT_TRUE(ready);
    auto left = fingerprints();
    EXPECT_EQ(left, std::vector<std::string>{kept}) << ctl("image list");
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
    // The container made from it does not need it.
    EXPECT_EQ(ctl("start " + c, &st), "");
    EXPECT_EQ(st, 0);
}

// The Debian test rootfs served as a cloud image (cloud-init on, as in public images): a launch
// from the remote hands cloud-init the user-data of `-c cloud-init.user-data=...`, and its
// runcmd runs inside the container.
TEST_F(ImageRemote, CloudInitRunsUserDataOfADebianImageFromARemote) {
    const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
    if (!tarball || !exists(tarball))
        GTEST_SKIP() << "no Debian rootfs tarball (scripts/test.sh makes one; "
                        "it sets LODGE_DEBIAN_TARBALL)";
    std::string img = dir + "/deb";
    int st = 0;
    std::string out = sh("mkdir -p " + img + "/rootfs && tar --zstd --numeric-owner -xpf " +
                             tarball + " -C " + img + "/rootfs 2>&1",
                         &st);
    ASSERT_EQ(st, 0) << out;
    if (!exists(img + "/rootfs/usr/bin/cloud-init"))
        GTEST_SKIP() << "the Debian rootfs has no cloud-init (scripts/test.sh includes it)";
    // The test rootfs switches cloud-init off for the other tests; a cloud image has it on.
    ::unlink((img + "/rootfs/etc/cloud/cloud-init.disabled").c_str());
    out = sh("cd " + img +
                 " && printf 'architecture: x86_64\\ncreation_date: 1700000000\\nproperties:\\n  "
                 "os: Debian\\n  release: bookworm\\n  description: remote Debian test image\\n' "
                 "> metadata.yaml && tar --numeric-owner -I 'gzip -1' -cf unified.tar.gz "
                 "metadata.yaml rootfs && rm -rf rootfs && python3 " +
                 env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root + " debian debian " +
                 arch + " --unified " + img + "/unified.tar.gz 2>&1",
             &st);
    ASSERT_EQ(st, 0) << out;

    // locale: false, because minbase has no `locales` for cloud-init's locale module to use.
    std::string user_data = "#cloud-config\nlocale: false\nruncmd:\n"
                            "- [sh, -c, \"echo ran from remote user-data > /run/lodge-marker\"]\n";
    std::string c = make("deb");
    // (user_data has no single quote: it goes to the shell in single quotes.)
    out = ctl("launch " + remote + ":debian " + c + " -c cloud-init.user-data='" + user_data + "'",
              &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("config get " + c + " image.os"), "Debian\n");
    EXPECT_EQ(ctl("config get " + c + " cloud-init.user-data"), user_data + "\n");
    // cloud-init's final stage runs late in the guest's boot: poll for its effect, bounded only
    // against a hang.
    std::string marker;
    bool appeared = wait_until(
        [&] {
            marker = ctl("exec " + c + " -- cat /run/lodge-marker");
            return marker == "ran from remote user-data\n";
        },
        600);
    EXPECT_TRUE(appeared) << marker << ctl("exec " + c + " -- cloud-init status --long")
                          << ctl("exec " + c +
                                 " -- sh -c \"grep -i -E 'warn|error|trace' "
                                 "/var/log/cloud-init.log | head -40\"");
    // It came through the LXD datasource, from the config the launch set.
    EXPECT_EQ(ctl("exec " + c + " -- cloud-init query v1.platform"), "lxd\n");
    EXPECT_EQ(ctl("exec " + c + " -- cloud-init query userdata"), user_data + "\n");
}

} // namespace
