// Remotes and simplestreams downloads against a local HTTPS image server the test makes
// (tests/fixtures/simplestreams.py on 127.0.0.1, a CA made here with openssl): launch from a
// remote, a second launch served from the store, concurrent launches that download once,
// downloads that fail cleanly (sha256 mismatch, truncation, a stall, a 404, a certificate of
// another CA), and a lodged killed mid-download.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

class ImageRemote : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        if (sh("command -v openssl python3 >/dev/null && echo yes") != "yes\n")
            GTEST_SKIP() << "needs openssl and python3";
        dir = TestRoot::get().dir + "/" + unique_name("ss");
        root = dir + "/www";
        int st = 0;
        sh("mkdir -p " + root + " " + dir + "/img && bash " + env_path("LODGE_FIXTURES") +
               "/make-busybox-rootfs.sh " + dir + "/img/rootfs",
           &st);
        ASSERT_EQ(st, 0);
        arch = sh("dpkg --print-architecture | tr -d '\\n'");
        std::string img = dir + "/img";
        sh("cd " + img +
               " && printf 'architecture: x86_64\\ncreation_date: 1700000000\\nproperties:\\n  "
               "os: BusyBox\\n  description: remote test image\\n' > metadata.yaml"
               " && tar -czf unified.tar.gz metadata.yaml rootfs && tar -cJf meta.tar.xz "
               "metadata.yaml && tar -C rootfs -cJf root.tar.xz .",
           &st);
        ASSERT_EQ(st, 0);
        std::string py = "python3 " + env_path("LODGE_FIXTURES") + "/simplestreams.py add " + root;
        sh(py + " bb-unified bbu,busybox " + arch + " --unified " + img + "/unified.tar.gz && " +
               py + " bb-split bbs " + arch + " --meta " + img + "/meta.tar.xz --rootxz " + img +
               "/root.tar.xz && " + py + " bb-bad bad " + arch + " --meta " + img +
               "/meta.tar.xz --rootxz " + img + "/root.tar.xz",
           &st);
        ASSERT_EQ(st, 0);
        // A test CA, a server certificate for 127.0.0.1 signed by it, and another CA.
        sh("cd " + dir +
               " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 "
               "-subj /CN=lodge-test-ca 2>/dev/null"
               " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt "
               "-days 2 -subj /CN=lodge-other-ca 2>/dev/null"
               " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
               "-subj /CN=127.0.0.1 2>/dev/null"
               " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
               " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
               "-out server.crt -days 2 -extfile san.ext 2>/dev/null",
           &st);
        ASSERT_EQ(st, 0);
        start_server();
        setenv("LODGE_DOWNLOAD_STALL_TIMEOUT", "3", 1);
        bus = std::make_unique<PrivateBus>();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
        remote = unique_name("test");
        std::string out = ctl("remote add " + remote + " " + url + " --ca " + dir + "/ca.crt", &st);
        ASSERT_EQ(st, 0) << out;
    }
    void TearDown() override {
        for (auto& n : created)
            ctl("delete --force " + n);
        for (auto& fp : fingerprints())
            ctl("image delete " + fp);
        daemon.reset();
        bus.reset();
        unsetenv("LODGE_DOWNLOAD_STALL_TIMEOUT");
        if (server > 0) {
            kill(server, SIGKILL);
            waitpid(server, nullptr, 0);
        }
        if (!dir.empty())
            sh("rm -rf " + dir + " " + TestRoot::get().dir + "/state/remotes.json");
    }
    void start_server() {
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        server = fork();
        if (server == 0) {
            dup2(p[1], 1);
            execlp("python3", "python3", (env_path("LODGE_FIXTURES") + "/simplestreams.py").c_str(),
                   "serve", root.c_str(), (dir + "/server.crt").c_str(),
                   (dir + "/server.key").c_str(), (dir + "/requests.log").c_str(), nullptr);
            _exit(127);
        }
        close(p[1]);
        // The server prints its port once it listens.
        std::string port;
        char c;
        while (read(p[0], &c, 1) == 1 && c != '\n')
            port += c;
        close(p[0]);
        ASSERT_FALSE(port.empty()) << "the test image server did not start";
        url = "https://127.0.0.1:" + port;
    }
    std::string make(const std::string& base) {
        std::string n = unique_name(base);
        created.push_back(n);
        return n;
    }
    // How often the server was asked for `path_part`.
    std::string requests(const std::string& path_part) {
        return sh("grep -c '" + path_part + "' " + dir + "/requests.log || true");
    }
    void control(const std::string& json) {
        ASSERT_EQ(write_file_atomic(root + "/control.json", json), 0);
    }
    static std::string store() { return TestRoot::get().dir + "/state/images"; }
    static std::string hidden() { return sh("ls -A " + store() + " | grep '^\\.' || true"); }
    static std::vector<std::string> fingerprints() {
        std::vector<std::string> out;
        auto j = nlohmann::json::parse(ctl("image list --json"), nullptr, false);
        if (j.is_array())
            for (auto& i : j)
                out.push_back(i["fingerprint"]);
        return out;
    }
    // Nothing of a failed download: no image, no work dir, no container.
    void expect_nothing_left(const std::string& container) {
        EXPECT_TRUE(fingerprints().empty()) << ctl("image list");
        EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
        EXPECT_FALSE(contains(ctl("list -q"), container));
        EXPECT_FALSE(exists(TestRoot::get().dir + "/state/containers/" + container));
    }

    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> created;
    std::string dir, root, url, remote, arch;
    pid_t server = -1;
};

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

TEST_F(ImageRemote, FailedDownloadsLeaveNothing) {
    int st = 0;
    // A tampered item: same size, one byte changed.
    std::string bad = sh("ls " + root + "/images/bb-bad/*/root.tar.xz | tr -d '\\n'");
    sh("printf 'X' | dd of=" + bad + " bs=1 seek=200 conv=notrunc 2>/dev/null");
    std::string c = make("bad");
    std::string out = ctl("launch " + remote + ":bad " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "sha256 mismatch")) << out;
    expect_nothing_left(c);

    std::string rootxz =
        sh("ls " + root + "/images/bb-split/*/root.tar.xz | sed 's|" + root + "/||' | tr -d '\\n'");
    control("{\"truncate\": [\"" + rootxz + "\"]}");
    out = ctl("launch " + remote + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Cannot fetch")) << out;
    expect_nothing_left(c);

    control("{\"missing\": [\"" + rootxz + "\"]}");
    out = ctl("launch " + remote + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "404")) << out;
    expect_nothing_left(c);

    control("{\"stall\": [\"" + rootxz + "\"]}");
    out = ctl("launch " + remote + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "Cannot fetch")) << out;
    expect_nothing_left(c);
    control("{}");

    // A server whose certificate another CA signed.
    std::string other = unique_name("other");
    ASSERT_EQ(ctl("remote add " + other + " " + url + " --ca " + dir + "/other.crt", &st), "");
    out = ctl("launch " + other + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "certificate") || contains(out, "SSL")) << out;
    expect_nothing_left(c);

    out = ctl("launch " + remote + ":nosuch " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "no image \"nosuch\"")) << out;
    expect_nothing_left(c);
    out = ctl("launch " + unique_name("noremote") + ":bbs " + c, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "No remote")) << out;

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
