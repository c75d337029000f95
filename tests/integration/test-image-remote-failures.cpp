// Downloads from a simplestreams remote that go wrong (image-remote-fixture.hpp's server): a
// sha256 mismatch, a truncation, a stall, a 404 and a certificate of another CA fail cleanly;
// a cut download is resumed or started over; a lodged killed mid-download leaves no half image.
#include "image-remote-fixture.hpp"

using namespace lodge;
using namespace lodge::test;

namespace {

TEST_F(ImageRemote, FailedDownloadsLeaveNothing) {
    int st = 0;
    // A tampered item: same size, one byte changed.
    std::string bad = sh("ls " + root + "/images/bb-bad/*/root.tar.xz | tr -d '\\n'");
    sh("printf 'X' | dd of=" + bad + " bs=1 seek=200 conv=notrunc 2>/dev/null");
    std::string c = make("bad");
    expect_launch_fails(remote + ":bad", c, "sha256 mismatch");

    std::string rootxz =
        sh("ls " + root + "/images/bb-split/*/root.tar.xz | sed 's|" + root + "/||' | tr -d '\\n'");
    for (auto [how, why] : {std::pair{"truncate", "Cannot fetch"}, std::pair{"missing", "404"},
                            std::pair{"stall", "Cannot fetch"}}) {
        control(std::string("{\"") + how + "\": [\"" + rootxz + "\"]}");
        expect_launch_fails(remote + ":bbs", c, why);
    }
    control("{}");

    // A server whose certificate another CA signed.
    std::string other = unique_name("other");
    ASSERT_EQ(ctl("remote add " + other + " " + url + " --ca " + dir + "/other.crt", &st), "");
    std::string out = ctl("launch " + other + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "certificate") || contains(out, "SSL")) << out;
    expect_nothing_left(c);

    expect_launch_fails(remote + ":nosuch", c, "no image \"nosuch\"");
    expect_launch_fails(unique_name("noremote") + ":bbs", c, "No remote");

    // The remote still serves good images afterwards.
    out = ctl("launch " + remote + ":bbs " + c, &st);
    EXPECT_EQ(st, 0) << out;
}

// A download cut short is resumed from where it stopped (a Range request), or fetched whole
// again from a server that serves no ranges; either way the image is whole and checked.
TEST_F(ImageRemote, CutDownloadsResumeOrStartOver) {
    std::string rootxz =
        sh("ls " + root + "/images/bb-split/*/root.tar.xz | sed 's|" + root + "/||' | tr -d '\\n'");
    control("{\"truncate_once\": [\"" + rootxz + "\"]}");
    std::string c1 = make("res");
    int st = 0;
    std::string out = ctl("launch " + remote + ":bbs " + c1, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(requests("root.tar.xz"), "2\n");
    std::string size = sh("stat -c %s " + root + "/" + rootxz + " | tr -d '\\n'");
    std::string ranged = sh("grep 'root.tar.xz range=bytes=' " + dir + "/requests.log || true");
    EXPECT_TRUE(contains(ranged, "range=bytes=" + std::to_string(std::stoull(size) / 2) + "-"))
        << ranged;
    auto fps = fingerprints();
    ASSERT_EQ(fps.size(), 1u);
    EXPECT_EQ(fps[0] + "\n", sh("cat " + dir + "/img/meta.tar.xz " + dir +
                                "/img/root.tar.xz | sha256sum | cut -d' ' -f1"));
    EXPECT_TRUE(contains(ctl("status " + c1), "State: running"));

    // A server without ranges: the half file goes, the whole one comes.
    ASSERT_EQ(ctl("image delete " + fps[0], &st), "");
    sh("sed -i '/root.tar.xz/d' " + dir + "/requests.log");
    ASSERT_EQ(write_file_atomic(root + "/control.json", "{\"truncate_once\": [\"" + rootxz +
                                                            "\"], \"no_range\": [\"" + rootxz +
                                                            "\"]}"),
              0);
    // The server remembers what it cut once: a fresh one cuts again.
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    server = -1;
    start_server();
    ctl("remote remove " + remote);
    ASSERT_EQ(ctl("remote add " + remote + " " + url + " --ca " + dir + "/ca.crt", &st), "");
    std::string c2 = make("res2");
    out = ctl("launch " + remote + ":bbs " + c2, &st);
    ASSERT_EQ(st, 0) << out;
    // Cut, refused range (the whole file again, not used), then whole.
    EXPECT_EQ(requests("root.tar.xz"), "3\n") << sh("cat " + dir + "/requests.log");
    fps = fingerprints();
    ASSERT_EQ(fps.size(), 1u);
    EXPECT_EQ(fps[0] + "\n", sh("cat " + dir + "/img/meta.tar.xz " + dir +
                                "/img/root.tar.xz | sha256sum | cut -d' ' -f1"));
    EXPECT_TRUE(wait_until([this] { return hidden().empty(); })) << hidden();
}

// lodged killed with a download half done: no image appears, the next lodged clears the work
// directory; while the download hangs, lodged answers on the bus and shows it in Downloads.
TEST_F(ImageRemote, KillNineMidDownloadLeavesNoHalfImage) {
    daemon->kill9();
    setenv("LODGE_DOWNLOAD_STALL_TIMEOUT", "600", 1);
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    std::string rootxz =
        sh("ls " + root + "/images/bb-split/*/root.tar.xz | sed 's|" + root + "/||' | tr -d '\\n'");
    control("{\"stall\": [\"" + rootxz + "\"]}");
    std::string c = make("k9");
    pid_t launcher = fork();
    if (launcher == 0) {
        execl(env_path("LODGE_LODGECTL").c_str(), "lodgectl", "launch", (remote + ":bbs").c_str(),
              c.c_str(), nullptr);
        _exit(127);
    }
    ASSERT_TRUE(wait_until_sh("test -s \"$(ls -d " + store() + "/.tmp-*/rootfs | head -1)\""))
        << sh("ls -laR " + store());
    int st = 0;
    // lodged answers while the worker hangs, and shows the download at its rootfs stage.
    std::string property = "busctl --system --json=short get-property io.lodge1 /io/lodge1 "
                           "io.lodge1.Manager Downloads";
    EXPECT_TRUE(wait_until_sh(property + " | grep -q '\"" + remote + ":bbs\",\"rootfs\"'"))
        << sh(property);
    EXPECT_EQ(ctl("image list --json"), "[]\n");

    // Anyone may list a remote's images, but only a few catalog reads run at once: a fifth
    // while four hang is refused instead of queued.
    control("{\"stall\": [\"" + rootxz + "\", \"streams/v1/index.json\"]}");
    std::string before = requests("index.json");
    std::string ctlbin = env_path("LODGE_LODGECTL");
    sh("for i in 1 2 3 4; do setpriv --reuid=65534 --regid=65534 --clear-groups " + ctlbin +
       " image list " + remote + ": >/dev/null 2>&1 & done");
    int expected = std::stoi(before) + 4;
    ASSERT_TRUE(wait_until([&] { return std::stoi(requests("index.json")) >= expected; }))
        << requests("index.json");
    std::string out = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + ctlbin +
                             " image list " + remote + ": 2>&1",
                         &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Too many remote catalogs")) << out;

    daemon->kill9();
    waitpid(launcher, &st, 0);
    EXPECT_NE(st, 0);
    EXPECT_EQ(sh("ls " + store() + " | grep -cE '^[0-9a-f]{64}$' || true"), "0\n");
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_EQ(ctl("image list --json"), "[]\n");
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
    EXPECT_FALSE(contains(ctl("list -q"), c));
}

} // namespace
