// The image store's pieces without lodged: names, fingerprints, aliases, the atomic commit,
// ingest's hashing and metadata checks, and the simplestreams catalog parser.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "image/lxd-remote.hpp"
#include "image/simplestreams.hpp"
#include "image/store.hpp"

#include <cstdlib>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::image;

namespace {

std::string sh(const std::string& cmd) {
    std::string out;
    if (FILE* p = popen(cmd.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, p)) > 0)
            out.append(buf, n);
        pclose(p);
    }
    return out;
}

// A fresh directory under /tmp for each test, removed after it.
class TempDirTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lodge-image-unit-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
    }
    void TearDown() override { sh("rm -rf " + dir); }
    std::string dir;
};

class StoreTest : public TempDirTest {
protected:
    void SetUp() override {
        TempDirTest::SetUp();
        setenv("LODGE_STATE_DIR", (dir + "/state").c_str(), 1);
        std::string e;
        ASSERT_EQ(store.ensure(e), 0) << e;
        sh("cd " + dir +
           " && mkdir -p rootfs/bin && echo hi > rootfs/bin/hello && printf "
           "'architecture: x86_64\\nproperties:\\n  os: Test\\n  description: unit\\n' > "
           "metadata.yaml && tar -czf unified.tar.gz metadata.yaml rootfs && tar -C rootfs -czf "
           "plain.tar.gz .");
    }
    // An image in the store from `file` (and `rootfs`), as lodged's import does it.
    std::string add(const std::string& file, const std::string& rootfs = "") {
        std::string work, e;
        EXPECT_EQ(store.prepare(work, e), 0) << e;
        Fd in(::open((dir + "/" + file).c_str(), O_RDONLY | O_CLOEXEC));
        Fd in2;
        if (!rootfs.empty())
            in2.reset(::open((dir + "/" + rootfs).c_str(), O_RDONLY | O_CLOEXEC));
        ImageInfo info;
        EXPECT_EQ(ingest(in.get(), rootfs.empty() ? -1 : in2.get(), work, info, nullptr, e), 0)
            << e;
        EXPECT_EQ(store.commit(work, info, e), 0) << e;
        return info.fingerprint;
    }
    Store store;
};

TEST(ImageNames, AliasesAndFingerprints) {
    EXPECT_EQ(check_alias_name("debian/12"), "");
    EXPECT_EQ(check_alias_name("bb-1.36_x"), "");
    EXPECT_NE(check_alias_name(""), "");
    EXPECT_NE(check_alias_name("a b"), "");
    EXPECT_NE(check_alias_name("remote:x"), "");
    EXPECT_NE(check_alias_name("-x"), "");
    EXPECT_NE(check_alias_name(std::string(256, 'a')), "");
    EXPECT_TRUE(is_fingerprint(std::string(64, 'a')));
    EXPECT_FALSE(is_fingerprint(std::string(64, 'A')));
    EXPECT_FALSE(is_fingerprint(std::string(63, 'a')));
    EXPECT_FALSE(is_fingerprint("../" + std::string(61, 'a')));
}

TEST_F(StoreTest, IngestHashesCommitsAndResolves) {
    std::string fp = add("unified.tar.gz");
    EXPECT_EQ(fp + "\n", sh("sha256sum " + dir + "/unified.tar.gz | cut -d' ' -f1"));
    ImageInfo info;
    ASSERT_EQ(store.get(fp, info), 0);
    EXPECT_EQ(info.type, "unified");
    EXPECT_EQ(info.architecture, "x86_64");
    EXPECT_EQ(info.properties["os"], "Test");
    std::string e, out;
    EXPECT_EQ(store.resolve(fp.substr(0, 8), out, e), 0) << e;
    EXPECT_EQ(out, fp);
    EXPECT_EQ(store.resolve("nosuch", out, e), -ENOENT);
    ASSERT_EQ(store.set_alias("x", fp, false, e), 0) << e;
    EXPECT_EQ(store.resolve("x", out, e), 0);
    EXPECT_EQ(out, fp);

    // The same image again: the second commit is refused, the first stays whole.
    std::string work;
    ASSERT_EQ(store.prepare(work, e), 0);
    Fd in(::open((dir + "/unified.tar.gz").c_str(), O_RDONLY | O_CLOEXEC));
    ImageInfo again;
    ASSERT_EQ(ingest(in.get(), -1, work, again, nullptr, e), 0) << e;
    EXPECT_EQ(store.commit(work, again, e), -EEXIST);
    remove_tree(work);

    // A split image: metadata + rootfs, LXD's combined fingerprint; another alias may not steal
    // "x" without replace.
    std::string split = add("unified.tar.gz", "plain.tar.gz");
    EXPECT_EQ(split + "\n", sh("cat " + dir + "/unified.tar.gz " + dir +
                               "/plain.tar.gz | sha256sum | cut -d' ' -f1"));
    EXPECT_EQ(store.set_alias("x", split, false, e), -EEXIST);
    EXPECT_EQ(store.aliases()["x"], fp);

    std::string trash;
    ASSERT_EQ(store.retire(fp, trash, e), 0) << e;
    EXPECT_EQ(store.get(fp, info), -ENOENT);
    EXPECT_EQ(store.aliases().count("x"), 0u);
    EXPECT_EQ(store.leftovers().size(), 1u);
    remove_tree(trash);
    EXPECT_TRUE(store.leftovers().empty());
}

TEST_F(StoreTest, APlainTarballIsNoImage) {
    std::string work, e;
    ASSERT_EQ(store.prepare(work, e), 0);
    Fd in(::open((dir + "/plain.tar.gz").c_str(), O_RDONLY | O_CLOEXEC));
    ImageInfo info;
    EXPECT_EQ(ingest(in.get(), -1, work, info, nullptr, e), -EINVAL);
    EXPECT_NE(e.find("metadata.yaml"), std::string::npos) << e;
    EXPECT_TRUE(store.list().empty());
}

const char* catalog = R"({
 "format": "products:1.0", "datatype": "image-downloads",
 "products": {
  "bb:amd64": {"aliases": "bb, busybox", "arch": "amd64", "os": "BusyBox", "release": "1",
   "versions": {
    "20240101_0000": {"items": {"c": {"ftype": "lxd_combined.tar.gz", "path": "old.tar.gz",
      "size": 10, "sha256": "1111111111111111111111111111111111111111111111111111111111111111"}}},
    "20250101_0000": {"items": {"c": {"ftype": "lxd_combined.tar.gz", "path": "new.tar.gz",
      "size": 10, "sha256": "2222222222222222222222222222222222222222222222222222222222222222"}}}}},
  "bb:arm64": {"aliases": "bb", "arch": "arm64", "versions": {
    "1": {"items": {"m": {"ftype": "lxd.tar.xz", "path": "m", "size": 1,
       "sha256": "3333333333333333333333333333333333333333333333333333333333333333",
       "combined_rootxz_sha256": "4444444444444444444444444444444444444444444444444444444444444444"},
     "r": {"ftype": "root.tar.xz", "path": "r", "size": 2,
       "sha256": "5555555555555555555555555555555555555555555555555555555555555555"}}}}},
  "sq:amd64": {"aliases": "sq", "arch": "amd64", "versions": {
    "1": {"items": {"m": {"ftype": "lxd.tar.xz", "path": "m", "size": 1,
       "sha256": "3333333333333333333333333333333333333333333333333333333333333333",
       "combined_squashfs_sha256": "6666666666666666666666666666666666666666666666666666666666666666"},
     "s": {"ftype": "squashfs", "path": "s", "size": 2,
       "sha256": "7777777777777777777777777777777777777777777777777777777777777777"}}}}},
  "sqx:amd64": {"aliases": "sqx", "arch": "amd64", "versions": {
    "1": {"items": {"m": {"ftype": "lxd.tar.xz", "path": "m", "size": 1,
       "sha256": "3333333333333333333333333333333333333333333333333333333333333333",
       "combined_squashfs_sha256": "6666666666666666666666666666666666666666666666666666666666666666",
       "combined_rootxz_sha256": "9999999999999999999999999999999999999999999999999999999999999999"},
     "s": {"ftype": "squashfs", "path": "s", "size": 2,
       "sha256": "7777777777777777777777777777777777777777777777777777777777777777"},
     "r": {"ftype": "root.tar.xz", "path": "r", "size": 2,
       "sha256": "5555555555555555555555555555555555555555555555555555555555555555"}}}}},
  "vm:amd64": {"aliases": "vm", "arch": "amd64", "versions": {
    "1": {"items": {"d": {"ftype": "disk-kvm.img", "path": "d", "size": 1,
       "sha256": "8888888888888888888888888888888888888888888888888888888888888888"}}}}}
 }})";

TEST(Simplestreams, CatalogNewestVersionAliasesAndArchitectures) {
    std::vector<RemoteImage> images;
    std::string e;
    ASSERT_EQ(parse_stream_products(catalog, images, e), 0) << e;
    EXPECT_EQ(images.size(), 4u); // the VM-only product is no container image
    const RemoteImage* bb = find_remote_image(images, "busybox", "amd64", e);
    ASSERT_NE(bb, nullptr) << e;
    EXPECT_EQ(bb->metadata.path, "new.tar.gz");
    EXPECT_EQ(bb->fingerprint, std::string(64, '2'));
    const RemoteImage* arm = find_remote_image(images, "bb/arm64", "amd64", e);
    ASSERT_NE(arm, nullptr) << e;
    EXPECT_EQ(arm->fingerprint, std::string(64, '4'));
    EXPECT_EQ(arm->rootfs.ftype, "root.tar.xz");
    const RemoteImage* sq = find_remote_image(images, "sq", "amd64", e);
    ASSERT_NE(sq, nullptr);
    // A squashfs rootfs is used when it is the only one (unsquashfs unpacks it)...
    EXPECT_EQ(sq->unusable, "");
    EXPECT_EQ(sq->rootfs.ftype, "squashfs");
    EXPECT_EQ(sq->fingerprint, std::string(64, '6'));
    // ...and the tarball when both are offered.
    const RemoteImage* sqx = find_remote_image(images, "sqx", "amd64", e);
    ASSERT_NE(sqx, nullptr) << e;
    EXPECT_EQ(sqx->rootfs.ftype, "root.tar.xz");
    EXPECT_EQ(sqx->fingerprint, std::string(64, '9'));
    EXPECT_EQ(find_remote_image(images, "bb", "riscv64", e), nullptr);
    EXPECT_EQ(find_remote_image(images, "444444", "amd64", e), arm);
    EXPECT_EQ(stream_arch("x86_64"), "amd64");
    EXPECT_EQ(stream_arch("aarch64"), "arm64");

    std::vector<std::string> paths;
    EXPECT_EQ(parse_stream_index(R"({"index": {"i": {"datatype": "image-downloads",
              "path": "streams/v1/images.json"}, "x": {"datatype": "other", "path": "y"}}})",
                                 paths, e),
              0);
    EXPECT_EQ(paths, std::vector<std::string>{"streams/v1/images.json"});
    EXPECT_EQ(parse_stream_index("[]", paths, e), -EINVAL);
    // A hostile server's index or catalog past any real one's: refused, not read on.
    nlohmann::json many_catalogs, many_products;
    for (int i = 0; i <= 16; i++)
        many_catalogs["index"][std::to_string(i)] = {{"datatype", "image-downloads"},
                                                     {"path", "c" + std::to_string(i)}};
    paths.clear();
    EXPECT_EQ(parse_stream_index(many_catalogs.dump(), paths, e), -EINVAL);
    EXPECT_NE(e.find("more than 16 catalogs"), std::string::npos) << e;
    for (int i = 0; i <= 10000; i++)
        many_products["products"]["p" + std::to_string(i)] = nlohmann::json::object();
    images.clear();
    EXPECT_EQ(parse_stream_products(many_products.dump(), images, e), -EINVAL);
    EXPECT_NE(e.find("more than 10000 products"), std::string::npos) << e;
    EXPECT_EQ(parse_stream_products("{\"products\": 1}", images, e), -EINVAL);
    EXPECT_EQ(url_join("https://h/a/", "/streams/v1/x"), "https://h/a/streams/v1/x");
}

// LXD's /1.0/images entries: public container images only; LXD's architecture names compared
// as simplestreams' ones.
TEST(LxdRemote, ImageEntries) {
    auto entry = nlohmann::json::parse(R"({"fingerprint": ")" + std::string(64, 'a') +
                                       R"(", "public": true, "type": "container", "size": 42,
        "architecture": "x86_64", "aliases": [{"name": "busybox", "description": ""}],
        "properties": {"os": "BusyBox", "description": "bb"}})");
    RemoteImage img;
    std::string why;
    ASSERT_TRUE(parse_lxd_image(entry, img, why)) << why;
    EXPECT_EQ(img.architecture, "amd64");
    EXPECT_EQ(img.aliases, std::vector<std::string>{"busybox"});
    EXPECT_EQ(img.metadata.path, "1.0/images/" + std::string(64, 'a') + "/export");
    EXPECT_EQ(img.metadata.size, 42u);
    EXPECT_EQ(img.description, "bb");
    auto priv = entry;
    priv["public"] = false;
    EXPECT_FALSE(parse_lxd_image(priv, img, why));
    EXPECT_NE(why.find("not public"), std::string::npos) << why;
    priv.erase("public");
    EXPECT_FALSE(parse_lxd_image(priv, img, why));
    auto vm = entry;
    vm["type"] = "virtual-machine";
    EXPECT_FALSE(parse_lxd_image(vm, img, why));
    auto bad = entry;
    bad["fingerprint"] = "../../etc";
    EXPECT_FALSE(parse_lxd_image(bad, img, why));
    auto nosize = entry;
    nosize.erase("size");
    EXPECT_FALSE(parse_lxd_image(nosize, img, why));
}

// A hostile server's entries: a size that would wrap the download bound, terminal escapes in
// the text lodgectl prints, aliases no one could type, lists past any real server's.
TEST(LxdRemote, HostileEntriesAreBoundedAndPrintable) {
    auto entry =
        nlohmann::json::parse(R"({"fingerprint": ")" + std::string(64, 'a') +
                              R"(", "public": true, "size": 42, "architecture": "x86_64"})");
    entry["properties"]["description"] = "bb\x1b]0;owned\x07 \xc2\x9b"
                                         "2J" +
                                         std::string(5000, 'd');
    entry["aliases"] = nlohmann::json::array({{{"name", "evil\x1b[2J"}}, {{"name", "../x"}}});
    for (int i = 0; i < 40; i++)
        entry["aliases"].push_back({{"name", "a" + std::to_string(i)}});
    RemoteImage img;
    std::string why;
    ASSERT_TRUE(parse_lxd_image(entry, img, why)) << why;
    EXPECT_EQ(img.description.substr(0, 18), "bb?]0;owned? ?2Jdd");
    EXPECT_LE(img.description.size(), 1024u);
    ASSERT_EQ(img.aliases.size(), max_remote_aliases);
    EXPECT_EQ(img.aliases.front(), "a0"); // the escape and "../x" dropped
    EXPECT_EQ(img.aliases.back(), "a31");
    auto huge = entry;
    huge["size"] = UINT64_MAX; // + the multipart allowance would wrap to 64 KiB
    EXPECT_FALSE(parse_lxd_image(huge, img, why));
    EXPECT_NE(why.find("size"), std::string::npos) << why;

    std::vector<RemoteImage> out;
    std::string error;
    nlohmann::json list = nlohmann::json::array({entry});
    EXPECT_EQ(parse_lxd_image_list(list, "r", out, error), 0) << error;
    EXPECT_EQ(out.size(), 1u);
    for (int i = 0; i < 10000; i++)
        list.push_back(nlohmann::json::object());
    out.clear();
    EXPECT_EQ(parse_lxd_image_list(list, "r", out, error), -EPROTO);
    EXPECT_NE(error.find("more than"), std::string::npos) << error;
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(remote_text("\xe2\x82\xac"
                          "1\x7f\xff",
                          64),
              "\xe2\x82\xac"
              "1??");
    EXPECT_EQ(remote_text("ab\xe2\x82\xac", 4), "ab"); // never half a character
}

TEST(LxdRemote, MultipartBoundary) {
    const std::string type = "multipart/form-data; ";
    // {Content-Type, its boundary ("" for none)}
    const std::vector<std::pair<std::string, std::string>> cases = {
        {type + "boundary=abc123", "abc123"},
        {"Multipart/Form-Data; boundary=\"a b\"; x=y", "a b"},
        {type + "boundary=abc; charset=x", "abc"},
        {"application/octet-stream", ""},
        {"multipart/form-data", ""},
        {type + "boundary=" + std::string(71, 'x'), ""},
        {type + "boundary=abc;", "abc"},
        // The parameter named boundary, not one whose name ends so; one of it.
        {type + "xboundary=evil; boundary=good", "good"},
        {type + "boundary=a; boundary=b", ""},
        {"multipart/form-dataX; boundary=abc", ""},
        // RFC 2046's characters only, no closing space.
        {type + "boundary=\"a\x1b\"", ""},
        {type + "boundary=a\\b", ""},
        {type + "boundary=\"ab \"", ""},
        {type + "boundary=\"ab\"junk", ""},
        {type + "boundary=\"'()+_,-./:=?\"", "'()+_,-./:=?"},
    };
    for (auto& [content_type, boundary] : cases)
        EXPECT_EQ(multipart_boundary(content_type), boundary) << content_type;
}

class Multipart : public TempDirTest {
protected:
    static std::string part(const std::string& name, const std::string& data) {
        return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name +
               "\"; filename=\"x.tar.xz\"\r\nContent-Type: application/octet-stream\r\n\r\n" +
               data + "\r\n";
    }
    // Splits `body`; 0 or the error (with `error` set).
    int split(const std::string& body, std::string& combined) {
        sh("rm -f " + dir + "/meta " + dir + "/rootfs");
        EXPECT_EQ(write_file_atomic(dir + "/export", body), 0);
        return split_lxd_multipart(dir + "/export", boundary, dir + "/meta", dir + "/rootfs",
                                   combined, error);
    }
    std::string error;
    static inline const std::string boundary = "0123456789abcdef";
};

TEST_F(Multipart, TwoPartsAcrossReadsWithBoundaryLookalikes) {
    // Parts over the reader's 1 MiB chunks, holding what looks like a delimiter but is not
    // one (not followed by CRLF or "--"), one of them across a chunk's end.
    std::string meta = "metadata.yaml bytes\r\n--" + boundary + "X\r\n";
    std::string rootfs(3u << 20, 'r');
    for (size_t at : {size_t{100}, (size_t{1} << 20) - 10, (size_t{2} << 20) - 3})
        rootfs.replace(at, boundary.size() + 5, "\r\n--" + boundary + "Y");
    std::string body = part("metadata", meta) + part("rootfs", rootfs);
    body.erase(body.size() - 2); // the last CRLF belongs to the closing delimiter
    body += "\r\n--" + boundary + "--\r\n";
    std::string combined;
    ASSERT_EQ(split(body, combined), 0) << error;
    std::string got_meta, got_rootfs;
    ASSERT_EQ(read_file(dir + "/meta", got_meta), 0);
    ASSERT_EQ(read_file(dir + "/rootfs", got_rootfs), 0);
    EXPECT_EQ(got_meta, meta);
    EXPECT_TRUE(got_rootfs == rootfs) << got_rootfs.size() << " bytes, not " << rootfs.size();
    Sha256 both;
    both.update(meta.data(), meta.size());
    both.update(rootfs.data(), rootfs.size());
    EXPECT_EQ(combined, both.hex());
}

TEST_F(Multipart, MalformedBodiesAreRefused) {
    std::string end = "--" + boundary + "--\r\n";
    std::string good = part("metadata", "m") + part("rootfs", "r");
    std::string combined;
    // (part() ends every part with the CRLF that starts the next delimiter.)
    ASSERT_EQ(split(good + end, combined), 0) << error;
    std::vector<std::pair<std::string, std::string>> cases = {
        {"preamble\r\n" + good + end, "does not start"},
        {part("rootfs", "r") + part("metadata", "m") + end, "not \"metadata\""},
        {good + part("rootfs", "again") + end, "more than two parts"},
        {part("metadata", "m") + end, "no rootfs part"},
        {good, "ends inside"},
        {part("metadata", std::string(1000, 'm')), "ends inside"},
        {"--" + boundary + "\r\n" + std::string(20000, 'h'), "part headers"},
        // Over the bound even when their end is in the same read.
        {"--" + boundary + "\r\nX-Pad: " + std::string(20000, 'h') + "\r\n" +
             part("metadata", "m").substr(boundary.size() + 4) + part("rootfs", "r") + end,
         "part headers"},
        {"--" + boundary + "\r\nContent-Type: x\r\n\r\nm\r\n" + end, "is \"\""},
        // A delimiter followed by neither CRLF nor "--" is data: this one never ends.
        {part("metadata", "m") + "--" + boundary + "??", "ends inside metadata"},
        {"", "ends inside"},
    };
    for (auto& [body, why] : cases) {
        error.clear();
        EXPECT_EQ(split(body, combined), -EPROTO) << why;
        EXPECT_NE(error.find("Malformed multipart"), std::string::npos) << error;
        EXPECT_NE(error.find(why), std::string::npos) << error;
    }
}

} // namespace
