#include "common/config.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"

#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace lodge;

TEST(Config, RoundTrip) {
    ContainerConfig c;
    c.name = "c1";
    c.config["security.privileged"] = "true";
    c.config["environment.FOO"] = "bar baz";
    c.devices["data"] = {{"type", "disk"}, {"source", "/srv"}, {"path", "/mnt/srv"}};
    ContainerConfig back;
    ASSERT_EQ(parse_container_config(serialize_container_config(c), back), "");
    EXPECT_EQ(back.name, "c1");
    EXPECT_EQ(back.config, c.config);
    EXPECT_EQ(back.devices, c.devices);
    EXPECT_TRUE(back.privileged());
    EXPECT_EQ(check_container_config(back), "");
}

TEST(Config, Defaults) {
    ContainerConfig c;
    c.name = "c1";
    EXPECT_FALSE(c.privileged());
    EXPECT_EQ(c.idmap_base(), 1000000u);
    EXPECT_EQ(c.idmap_size(), 65536u);
    EXPECT_EQ(c.shutdown_timeout(), 30u);
    EXPECT_FALSE(c.stop_signal().has_value());
    EXPECT_EQ(c.reboot_signal(), SIGINT);
}

TEST(Config, IsolatedContainersRunOnTheRecordedRange) {
    ContainerConfig c;
    c.name = "c1";
    c.config["volatile.idmap.base"] = "1131072";
    EXPECT_EQ(c.idmap_base(), 1000000u); // recorded, but not isolated (any more)
    c.config["security.idmap.isolated"] = "true";
    EXPECT_EQ(c.idmap_base(), 1131072u);
    c.config["security.idmap.base"] = "2000000"; // an explicit base wins
    EXPECT_EQ(c.idmap_base(), 2000000u);
}

TEST(Config, RejectsMalformed) {
    ContainerConfig c;
    EXPECT_NE(parse_container_config("not json", c), "");
    EXPECT_NE(parse_container_config("[]", c), "");
    EXPECT_NE(parse_container_config(R"({"config":{}})", c), "");
    EXPECT_NE(parse_container_config(R"({"name":"a","config":{"x":1}})", c), "");
    ASSERT_EQ(parse_container_config(R"({"name":"a","config":{"limits.memory":"lots"}})", c), "");
    EXPECT_NE(check_container_config(c).find("limits.memory"), std::string::npos);
    ASSERT_EQ(
        parse_container_config(R"({"name":"a","devices":{"d":{"type":"disk","path":"rel"}}})", c),
        "");
    EXPECT_NE(check_container_config(c).find("absolute"), std::string::npos);
}

// Device names become file names (proxy records, written as root) and nft comments: a name
// from UpdateContainer or a backup's backup.yaml must not climb out of a directory or end a
// quoted string.
TEST(Config, DeviceNamesArePlain) {
    for (std::string ok : std::vector<std::string>{"eth0", "root", "data", "net-1", "my_disk.2",
                                                   "A", std::string(64, 'x')})
        EXPECT_EQ(check_device_name(ok), "") << ok;
    for (std::string bad :
         std::vector<std::string>{std::string(), std::string(65, 'x'), std::string("."),
                                  std::string(".."), std::string(".hidden"), std::string("../../x"),
                                  std::string("a/b"), std::string("a\"b"), std::string("a\nb"),
                                  std::string("a b"), std::string("a;b"), std::string("a\0b", 3)})
        EXPECT_NE(check_device_name(bad), "") << bad;
    // The whole-config check refuses them too: add, update, backup import and load use it.
    ContainerConfig c;
    c.name = "c1";
    c.devices["../../../../etc/x"] = {{"type", "proxy"},
                                      {"listen", "tcp:127.0.0.1:8080"},
                                      {"connect", "tcp:127.0.0.1:80"},
                                      {"nat", "false"}};
    EXPECT_NE(check_container_config(c).find("Device name"), std::string::npos);
    c.devices.clear();
    c.devices["web\" accept\n"] = {{"type", "disk"}, {"source", "/srv"}, {"path", "/srv"}};
    std::string e = check_container_config(c);
    EXPECT_NE(e.find("Device name"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

// A runtime file (durable false) replaces the old one: readers holding the old one keep it
// whole, the path shows the new one with its mode, and nothing else is left in the directory.
TEST(FileIo, RuntimeWriteReplacesAndLeavesNothing) {
    char dir[] = "/tmp/lodge-test-fileio-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/state.json";
    ASSERT_EQ(write_file_atomic(path, "first\n", 0600, false), 0); // nothing to replace yet
    Fd old(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(old);
    ASSERT_EQ(write_file_atomic(path, "second\n", 0644, false), 0);
    std::string out;
    ASSERT_EQ(read_file(path, out), 0);
    EXPECT_EQ(out, "second\n");
    struct stat now {
    }, before{};
    ASSERT_EQ(::stat(path.c_str(), &now), 0);
    EXPECT_EQ(now.st_mode & 07777, 0644u);
    ASSERT_EQ(::fstat(old.get(), &before), 0);
    EXPECT_EQ(before.st_nlink, 0u) << "the old file is still linked somewhere";
    char buf[16] = {};
    EXPECT_EQ(::pread(old.get(), buf, sizeof buf - 1, 0), 6);
    EXPECT_STREQ(buf, "first\n");
    int entries = 0;
    DIR* d = ::opendir(dir);
    ASSERT_NE(d, nullptr);
    while (dirent* e = ::readdir(d))
        entries += e->d_name[0] != '.';
    ::closedir(d);
    EXPECT_EQ(entries, 1) << "a temporary file was left in " << dir;
    EXPECT_EQ(remove_tree(dir), 0);
}

TEST(FileIo, AtomicWriteReplacesWhole) {
    char dir[] = "/tmp/lodge-test-fileio-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/f";
    ASSERT_EQ(write_file_atomic(path, "first"), 0);
    ASSERT_EQ(write_file_atomic(path, "second"), 0);
    std::string out;
    ASSERT_EQ(read_file(path, out), 0);
    EXPECT_EQ(out, "second");
    EXPECT_EQ(remove_tree(dir), 0);
    EXPECT_NE(access(dir, F_OK), 0);
}
