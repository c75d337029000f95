// Remotes added with --protocol lxd: image-remote-fixture.hpp's server answering as an LXD
// server's REST API for public images (tests/fixtures/simplestreams.py add-lxd).
#include "image-remote-fixture.hpp"

using namespace lodge;
using namespace lodge::test;

namespace {

// The same server answering as an LXD server's REST API (remote add --protocol lxd): public
// images are listed (a private one is not), a unified image launches and runs, a split one
// (a multipart export) is copied with the fingerprint sha256(metadata || rootfs).
class LxdRemote : public ImageRemote {
protected:
    void SetUp() override {
        ImageRemote::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        std::string img = dir + "/img", add = "python3 " + env_path("LODGE_FIXTURES") +
                                              "/simplestreams.py add-lxd " + root + " ";
        std::string machine = sh("uname -m | tr -d '\\n'");
        int st = 0;
        unified_fp =
            sh(add + "busybox,bbu " + machine + " --unified " + img + "/unified.tar.gz", &st);
        ASSERT_EQ(st, 0) << unified_fp;
        split_fp = sh(add + "bbsplit " + machine + " --meta " + img + "/meta.tar.xz --rootfs " +
                          img + "/root.tar.xz",
                      &st);
        ASSERT_EQ(st, 0) << split_fp;
        // Another image, private: made from the split files in the other order.
        private_fp = sh(add + "secret " + machine + " --meta " + img + "/root.tar.xz --rootfs " +
                            img + "/meta.tar.xz --private yes",
                        &st);
        ASSERT_EQ(st, 0) << private_fp;
        for (auto* fp : {&unified_fp, &split_fp, &private_fp})
            fp->pop_back();
        lxd = unique_name("t2");
        std::string out =
            ctl("remote add " + lxd + " " + url + " --protocol lxd --ca " + dir + "/ca.crt", &st);
        ASSERT_EQ(st, 0) << out;
    }
    std::string lxd, unified_fp, split_fp, private_fp;
};

TEST_F(LxdRemote, ListLaunchAndCopyFromAnLxdServer) {
    std::string out = ctl("image list " + lxd + ": --json");
    auto j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_array()) << out;
    EXPECT_EQ(j.size(), 2u) << out;
    EXPECT_TRUE(contains(out, unified_fp)) << out;
    EXPECT_TRUE(contains(out, "\"bbsplit\"")) << out;
    EXPECT_FALSE(contains(out, private_fp)) << out;
    EXPECT_FALSE(contains(out, "secret")) << out;

    int st = 0;
    std::string c1 = make("l1");
    out = ctl("launch " + lxd + ":busybox " + c1, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + c1 + " -- echo answered"), "answered\n");
    EXPECT_EQ(ctl("config get " + c1 + " volatile.base_image"), unified_fp + "\n");
    EXPECT_EQ(ctl("config get " + c1 + " image.os"), "BusyBox\n");
    EXPECT_EQ(requests("1.0/images/" + unified_fp + "/export"), "1\n");

    std::string alias = unique_name("fromlxd");
    out = ctl("image copy " + lxd + ":bbsplit local: --alias " + alias + " -q", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, split_fp + "\n");
    EXPECT_EQ(split_fp + "\n", sh("cat " + dir + "/img/meta.tar.xz " + dir +
                                  "/img/root.tar.xz | sha256sum | cut -d' ' -f1"));
    auto info = nlohmann::json::parse(ctl("image info " + alias + " --json"), nullptr, false);
    ASSERT_TRUE(info.is_object()) << ctl("image info " + alias);
    EXPECT_EQ(info["type"], "split") << info.dump();
    EXPECT_EQ(info["source"], lxd + ":bbsplit") << info.dump();
    // By fingerprint prefix too (already here: nothing is downloaded again).
    std::string c2 = make("l2");
    out = ctl("launch " + lxd + ":" + split_fp.substr(0, 12) + " " + c2, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + c2 + " -- echo split"), "split\n");
    EXPECT_TRUE(wait_until([this] { return hidden().empty(); })) << hidden();
}

// A tampered export, an unknown alias, a private image and a malformed multipart export each
// fail with a clear error and leave no image, container or work directory behind.
TEST_F(LxdRemote, FailedLxdDownloadsLeaveNothing) {
    int st = 0;
    std::string c = make("lbad");
    // One byte of the served unified export changed: its sha256 is no longer the fingerprint.
    sh("printf 'X' | dd of=" + root + "/lxd/" + unified_fp +
       "/unified bs=1 seek=200 conv=notrunc 2>/dev/null");
    expect_launch_fails(lxd + ":busybox", c, "Fingerprint mismatch");

    std::string out = expect_launch_fails(lxd + ":nosuch", c, "no image \"nosuch\"");
    EXPECT_TRUE(contains(out, "Image alias not found")) << out; // the server's own words
    EXPECT_TRUE(contains(out, lxd)) << out;

    expect_launch_fails(lxd + ":secret", c, "not public");
    EXPECT_EQ(requests(private_fp + "/export"), "0\n");
    out = ctl("image copy " + lxd + ":" + private_fp + " local:", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "not public")) << out;
    expect_nothing_left(c);

    control("{\"malformed_multipart\": [\"" + split_fp + "\"]}");
    expect_launch_fails(lxd + ":bbsplit", c, "Malformed multipart");

    // The same split image, well formed, launches.
    control("{}");
    out = ctl("launch " + lxd + ":bbsplit " + c, &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("exec " + c + " -- echo ok"), "ok\n");
}

// A hostile server's words reach the terminal of whoever lists or launches: lodge passes on
// no control characters (terminal escapes) and no megabytes of error message.
TEST_F(LxdRemote, ServerTextReachesNoTerminalRaw) {
    control("{\"hostile_text\": true}");
    int st = 0;
    std::string out = ctl("image list " + lxd + ":", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "?]0;owned??[2Jlxd test image")) << out;
    EXPECT_FALSE(contains(out, "\x1b")) << out;
    std::string c = make("esc");
    out = expect_launch_fails(lxd + ":nosuch", c, "Image alias not found?]0;owned");
    EXPECT_FALSE(contains(out, "\x1b")) << out;
    EXPECT_LT(out.size(), 2000u) << out.size() << " bytes";
}

// A cut export is resumed by a Range request; an image copied with --auto-update from an LXD
// server follows its alias there (RefreshImages, the refresh timer's work).
TEST_F(LxdRemote, ResumedExportAndAutoUpdate) {
    std::string export_path = "1.0/images/" + unified_fp + "/export";
    control("{\"truncate_once\": [\"" + export_path + "\"]}");
    int st = 0;
    std::string alias = unique_name("follow");
    std::string out =
        ctl("image copy " + lxd + ":busybox local: --alias " + alias + " --auto-update -q", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, unified_fp + "\n");
    EXPECT_EQ(requests(export_path), "2\n") << sh("cat " + dir + "/requests.log");
    EXPECT_EQ(requests(export_path + " range=bytes="), "1\n");
    control("{}");

    std::string refresh = "busctl call io.lodge1 /io/lodge1 io.lodge1.Manager RefreshImages";
    EXPECT_EQ(sh(refresh + " 2>&1"), "a(ss) 0\n");
    // A newer image takes the alias on the server.
    std::string img = dir + "/img";
    out = sh("set -e; cd " + img +
                 " && cp -a rootfs rootfs2 && echo v2 > rootfs2/root/version && mkdir u2 && "
                 "mv rootfs2 u2/rootfs && cp metadata.yaml u2/ && tar -C u2 -czf unified2.tar.gz "
                 "metadata.yaml rootfs && python3 " +
                 env_path("LODGE_FIXTURES") + "/simplestreams.py add-lxd " + root +
                 " busybox $(uname -m) --unified unified2.tar.gz",
             &st);
    ASSERT_EQ(st, 0) << out;
    std::string new_fp = out.substr(0, out.find('\n'));
    EXPECT_EQ(sh(refresh + " 2>&1"), "a(ss) 1 \"" + unified_fp + "\" \"" + new_fp + "\"\n");
    auto entry = nlohmann::json::parse(ctl("image info " + alias + " --json"), nullptr, false);
    ASSERT_TRUE(entry.is_object()) << ctl("image info " + alias);
    EXPECT_EQ(entry["fingerprint"], new_fp);
    EXPECT_EQ(fingerprints(), std::vector<std::string>{new_fp});
    std::string c = make("upd");
    ASSERT_EQ(ctl("launch " + alias + " " + c, &st), "Launched container " + c + "\n");
    EXPECT_EQ(ctl("exec " + c + " -- cat /root/version"), "v2\n");
    EXPECT_TRUE(wait_until([this] { return hidden().empty(); })) << hidden();
}

} // namespace
