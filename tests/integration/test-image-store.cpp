// The local image store (lodge-images(7)) through lodged on a private bus: import, list,
// aliases, export, delete, create and launch from the store; a lodged killed mid-import leaves
// no visible image, and the bus answers while an import runs.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

class ImageStore : public LodgedFixture {
protected:
    void SetUp() override {
        LodgedFixture::SetUp();
        if (!set_up())
            return;
        src = TestRoot::get().dir + "/" + unique_name("imgsrc");
        int st = 0;
        sh("mkdir -p " + src + " && bash " + env_path("LODGE_FIXTURES") +
               "/make-busybox-rootfs.sh " + src + "/rootfs",
           &st);
        ASSERT_EQ(st, 0);
        sh("printf 'architecture: x86_64\\ncreation_date: 1700000000\\nproperties:\\n  os: "
           "BusyBox\\n  release: \"" +
               unique_name("r") + "\"\\n  description: test image\\n' > " + src +
               "/metadata.yaml && tar -C " + src + " -cJf " + src +
               "/unified.tar.xz metadata.yaml rootfs && tar -C " + src + " -cf " + src +
               "/meta.tar metadata.yaml && tar -C " + src + "/rootfs -czf " + src +
               "/rootfs.tar.gz .",
           &st);
        ASSERT_EQ(st, 0);
    }
    void TearDown() override {
        delete_created();
        for (auto& fp : images)
            ctl("image delete " + fp);
        LodgedFixture::TearDown();
        if (!src.empty())
            sh("rm -rf " + src);
    }
    std::string make(const std::string& base) { return name_container(base); }
    std::string import(const std::string& args) {
        int st = 0;
        std::string out = ctl("image import " + args + " -q", &st);
        EXPECT_EQ(st, 0) << out;
        std::string fp = out.substr(0, out.find('\n'));
        if (st == 0)
            images.push_back(fp);
        return fp;
    }
    static std::string store() { return TestRoot::get().dir + "/state/images"; }
    // The hidden work and trash directories of the store: none once nothing runs.
    static std::string hidden() { return sh("ls -A " + store() + " | grep '^\\.' || true"); }
    std::vector<std::string> images;
    std::string src;
};

nlohmann::json find_image(const std::string& fp) {
    auto j = nlohmann::json::parse(ctl("image list --json"), nullptr, false);
    if (j.is_array())
        for (auto& i : j)
            if (i["fingerprint"] == fp)
                return i;
    return nullptr;
}

TEST_F(ImageStore, ImportListAliasExportDeleteRoundTrip) {
    std::string alias = unique_name("bb");
    std::string fp = import(src + "/unified.tar.xz --alias " + alias);
    // LXD's fingerprint: the sha256 of the unified tarball.
    EXPECT_EQ(fp + "\n", sh("sha256sum " + src + "/unified.tar.xz | cut -d' ' -f1"));
    auto entry = find_image(fp);
    ASSERT_TRUE(entry.is_object()) << ctl("image list --json");
    EXPECT_EQ(entry["type"], "unified");
    EXPECT_EQ(entry["architecture"], "x86_64");
    EXPECT_EQ(entry["properties"]["os"], "BusyBox");
    EXPECT_EQ(entry["aliases"], nlohmann::json::array({alias}));
    EXPECT_TRUE(contains(ctl("image list " + alias), fp.substr(0, 12)));
    EXPECT_FALSE(contains(ctl("image list os=Other"), fp.substr(0, 12)));
    EXPECT_TRUE(contains(ctl("image info " + alias), "Fingerprint: " + fp));
    EXPECT_TRUE(contains(ctl("image info " + fp.substr(0, 10)), "os: BusyBox"));

    // Stored once, root-only.
    struct stat st {};
    ASSERT_EQ(stat(store().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(sh("cmp " + src + "/unified.tar.xz " + store() + "/" + fp + "/image && echo same"),
              "same\n");
    EXPECT_EQ(import(src + "/unified.tar.xz"), fp);
    EXPECT_EQ(sh("ls " + store() + " | grep -c " + fp), "1\n");

    // Aliases.
    int status = 0;
    std::string alias2 = unique_name("bb2");
    EXPECT_EQ(ctl("image alias create " + alias2 + " " + alias, &status), "");
    EXPECT_EQ(status, 0);
    std::string out = ctl("image alias create " + alias2 + " " + alias, &status);
    EXPECT_EQ(status, 0) << out; // the same target again is no conflict
    auto aliases = nlohmann::json::parse(ctl("image alias list --json"), nullptr, false);
    ASSERT_TRUE(aliases.is_array());
    EXPECT_TRUE(contains(aliases.dump(), "\"name\":\"" + alias2 + "\",\"target\":\"" + fp))
        << aliases.dump();
    out = ctl("image alias create 'bad alias' " + fp, &status);
    EXPECT_NE(status, 0);
    EXPECT_TRUE(contains(out, "bad alias")) << out;
    EXPECT_EQ(ctl("image alias delete " + alias2, &status), "");
    EXPECT_EQ(status, 0);
    out = ctl("image alias delete " + alias2, &status);
    EXPECT_NE(status, 0);
    EXPECT_TRUE(contains(out, "No image alias")) << out;

    // A split image: LXD's fingerprint over both files.
    std::string split = import(src + "/meta.tar " + src + "/rootfs.tar.gz");
    EXPECT_EQ(split + "\n",
              sh("cat " + src + "/meta.tar " + src + "/rootfs.tar.gz | sha256sum | cut -d' ' -f1"));
    EXPECT_EQ(find_image(split)["type"], "split");

    // Export gives back the very files, under LXD's names.
    std::string out_dir = src + "/export";
    sh("mkdir -p " + out_dir);
    out = ctl("image export " + alias + " " + out_dir, &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_EQ(sh("cmp " + src + "/unified.tar.xz " + out_dir + "/" + fp + ".tar.xz && echo same"),
              "same\n");
    out = ctl("image export " + split + " " + out_dir, &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_EQ(sh("cmp " + src + "/meta.tar " + out_dir + "/meta-" + split + ".tar && cmp " + src +
                 "/rootfs.tar.gz " + out_dir + "/" + split + ".tar.gz && echo same"),
              "same\n");

    // Delete: gone at once with its aliases, its files once the worker is done.
    EXPECT_EQ(ctl("image delete " + alias, &status), "");
    EXPECT_EQ(status, 0);
    EXPECT_TRUE(find_image(fp).is_null());
    EXPECT_FALSE(contains(ctl("image alias list"), alias));
    out = ctl("image info " + fp, &status);
    EXPECT_NE(status, 0);
    EXPECT_TRUE(contains(out, "No image")) << out;
    EXPECT_FALSE(exists(store() + "/" + fp));
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
}

TEST_F(ImageStore, BadImagesAreRefusedAndLeaveNothing) {
    int st = 0;
    std::string plain = src + "/rootfs.tar.gz";
    std::string out = ctl("image import " + plain, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "metadata.yaml")) << out;
    sh("head -c 1000 " + src + "/unified.tar.xz > " + src + "/cut.tar.xz");
    out = ctl("image import " + src + "/cut.tar.xz", &st);
    EXPECT_NE(st, 0) << out;
    // Whole metadata, a rootfs cut short: refused too, the image is read to its end.
    sh("f=" + src + "/unified.tar.xz; head -c $(( $(stat -c %s $f) * 8 / 10 )) $f > " + src +
       "/cut80.tar.xz");
    out = ctl("image import " + src + "/cut80.tar.xz", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "damaged")) << out;
    out = ctl("image import " + src + " ", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "directory")) << out;
    EXPECT_EQ(sh("ls " + store() + " | grep -cE '^[0-9a-f]{64}$' || true"), "0\n");
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
    out = ctl("launch " + unique_name("nosuch") + " " + make("c"), &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "No image")) << out;
}

TEST_F(ImageStore, CreateAndLaunchFromTheStore) {
    std::string alias = unique_name("bb");
    std::string fp = import(src + "/unified.tar.xz --alias " + alias);
    std::string split = import(src + "/meta.tar " + src + "/rootfs.tar.gz");
    int status = 0;
    std::string c1 = make("l1");
    std::string out = ctl("launch " + alias + " " + c1 + " -c user.x=1", &status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_EQ(out, "Launched container " + c1 + "\n");
    EXPECT_TRUE(contains(ctl("status " + c1), "State: running"));
    EXPECT_EQ(ctl("exec " + c1 + " -- cat /etc/inittab >/dev/null; echo $?"), "0\n");
    EXPECT_EQ(ctl("config get " + c1 + " image.os"), "BusyBox\n");
    EXPECT_EQ(ctl("config get " + c1 + " volatile.base_image"), fp + "\n");
    EXPECT_EQ(ctl("config get " + c1 + " user.x"), "1\n");
    EXPECT_NE(find_image(fp)["last_used_at"].get<uint64_t>(), 0u);

    // create NAME IMAGE, from a split image by fingerprint prefix, and `local:`.
    std::string c2 = make("l2");
    out = ctl("create " + c2 + " local:" + split.substr(0, 16), &status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_EQ(ctl("config get " + c2 + " volatile.base_image"), split + "\n");
    EXPECT_EQ(ctl("start " + c2, &status), "");
    EXPECT_EQ(status, 0);

    // The store's copy is untouched by what the containers do.
    EXPECT_EQ(sh("cmp " + src + "/unified.tar.xz " + store() + "/" + fp + "/image && echo same"),
              "same\n");
    out = ctl("launch " + alias + " " + c1, &status);
    EXPECT_NE(status, 0);
    EXPECT_TRUE(contains(out, "exists")) << out;
}

// publish: a stopped container's rootfs becomes an image (ids as the container sees them, its
// image.* keys as properties); a container launched from it has the original's files.
TEST_F(ImageStore, PublishAndLaunchThePublishedImage) {
    std::string fp = import(src + "/unified.tar.xz");
    int st = 0;
    std::string c1 = make("pub");
    ASSERT_EQ(ctl("launch " + fp + " " + c1, &st), "Launched container " + c1 + "\n");
    ASSERT_EQ(st, 0);
    std::string out = ctl("exec " + c1 +
                              " -- sh -c 'echo published > /root/marker && chown "
                              "1000:1000 /root/marker && ln /root/marker /root/marker-link'",
                          &st);
    ASSERT_EQ(st, 0) << out;
    out = ctl("publish " + c1, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "running")) << out;
    ASSERT_EQ(ctl("stop --force " + c1, &st), "");
    std::string alias = unique_name("pubimg");
    out = ctl("publish " + c1 + " --alias " + alias + " --compression xz -q", &st);
    ASSERT_EQ(st, 0) << out;
    std::string pub = out.substr(0, out.find('\n'));
    images.push_back(pub);
    auto entry = find_image(pub);
    ASSERT_TRUE(entry.is_object());
    EXPECT_EQ(entry["properties"]["os"], "BusyBox");
    EXPECT_EQ(entry["aliases"], nlohmann::json::array({alias}));
    std::string file = store() + "/" + pub + "/image";
    EXPECT_EQ(pub + "\n", sh("sha256sum " + file + " | cut -d' ' -f1"));
    EXPECT_EQ(sh("xz -t " + file + " && echo xz"), "xz\n");
    // Numeric ids as in the container: root's files 0, the chowned marker 1000.
    EXPECT_TRUE(contains(sh("tar -tvJf " + file + " --numeric-owner rootfs/bin/busybox"), " 0/0 "))
        << sh("tar -tvJf " + file + " --numeric-owner rootfs/bin/busybox");
    EXPECT_TRUE(
        contains(sh("tar -tvJf " + file + " --numeric-owner rootfs/root/marker"), " 1000/1000 "));

    std::string c2 = make("pub2");
    ASSERT_EQ(ctl("launch " + alias + " " + c2, &st), "Launched container " + c2 + "\n");
    EXPECT_EQ(ctl("exec " + c2 + " -- cat /root/marker"), "published\n");
    EXPECT_EQ(ctl("exec " + c2 + " -- stat -c %u /root/marker"), "1000\n");
    // Hard links stay links (archive_read_disk alone would store two copies).
    EXPECT_EQ(ctl("exec " + c2 + " -- stat -c %h /root/marker-link"), "2\n");
    out = ctl("publish " + c1 + " --compression lz4", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "compression")) << out;
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
}

TEST_F(ImageStore, OthersMayListButNotChange) {
    std::string fp = import(src + "/unified.tar.xz");
    std::string as_nobody =
        "setpriv --reuid=65534 --regid=65534 --clear-groups " + env_path("LODGE_LODGECTL") + " ";
    int st = 0;
    std::string out = sh(as_nobody + "image list -q 2>&1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, fp)) << out;
    out = sh(as_nobody + "image delete " + fp + " 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "polkit")) << out;
    out = sh(as_nobody + "image alias create x " + fp + " 2>&1", &st);
    EXPECT_NE(st, 0);
    out = sh(as_nobody + "remote add x https://127.0.0.1:1 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "polkit")) << out;
    out = sh(as_nobody + "launch " + fp + " " + unique_name("nb") + " 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "polkit")) << out;
    out = sh(as_nobody + "image export " + fp + " /tmp 2>&1", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "polkit")) << out;
    EXPECT_TRUE(find_image(fp).is_object());
}

// An import fed through a pipe that stalls: the bus answers meanwhile, and a lodged killed
// with the image half copied leaves nothing visible; the next lodged clears the work dir.
TEST_F(ImageStore, KillNineMidImportLeavesNoHalfImage) {
    std::string fifo = src + "/fifo";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    pid_t importer = fork();
    if (importer == 0) {
        execl(env_path("LODGE_LODGECTL").c_str(), "lodgectl", "image", "import", fifo.c_str(),
              nullptr);
        _exit(127);
    }
    // Blocks until lodgectl opened the fifo for reading.
    Fd writer(::open(fifo.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(writer.valid());
    std::string half;
    ASSERT_EQ(read_file(src + "/unified.tar.xz", half), 0);
    half.resize(half.size() / 2);
    ASSERT_EQ(write(writer.get(), half.data(), half.size()), static_cast<ssize_t>(half.size()));
    ASSERT_TRUE(wait_until_sh("test -s \"$(ls -d " + store() + "/.tmp-*/image | head -1)\""))
        << sh("ls -la " + store());
    // The worker waits for more data; lodged answers the bus meanwhile.
    int status = 0;
    std::string out = ctl("image list --json", &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_EQ(out, "[]\n");

    daemon->kill9();
    writer.reset();
    waitpid(importer, &status, 0);
    EXPECT_NE(status, 0);
    EXPECT_EQ(sh("ls " + store() + " | grep -cE '^[0-9a-f]{64}$' || true"), "0\n");
    daemon = std::make_unique<Lodged>();
    ASSERT_TRUE(daemon->wait_ready());
    EXPECT_EQ(ctl("image list --json"), "[]\n");
    EXPECT_TRUE(wait_until([] { return hidden().empty(); })) << hidden();
}

} // namespace
