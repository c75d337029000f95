#include "common/config.hpp"
#include "common/fileio.hpp"

#include <cstdlib>
#include <gtest/gtest.h>
#include <unistd.h>

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
