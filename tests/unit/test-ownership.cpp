// The ownership record (common/ownership.hpp): written in place under the lock, readable by a
// prober, and a longer record left from before is cut to the new one.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/ownership.hpp"
#include "common/paths.hpp"

#include <cstdlib>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace lodge;

namespace {

class OwnershipTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/lodge-ownership.XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        ::setenv("LODGE_STATE_DIR", dir_.c_str(), 1);
        ASSERT_EQ(mkdir_p(paths::container_dir("c1"), 0700), 0);
    }
    void TearDown() override {
        ::unsetenv("LODGE_STATE_DIR");
        std::string cmd = "rm -rf '" + dir_ + "'";
        EXPECT_EQ(std::system(cmd.c_str()), 0);
    }
    std::string record() {
        std::string text;
        EXPECT_EQ(read_file(paths::container_dir("c1") + "/owner.json", text), 0);
        return text;
    }
    std::string dir_;
};

TEST_F(OwnershipTest, RecordNamesTheHolderAndIsReplacedInPlace) {
    // A record from before, longer than the new one and naming someone else.
    std::string old = nlohmann::json{
        {"hostname", std::string(3000, 'h')},
        {"machine_id", "old"},
        {"boot_id", "old"},
        {"supervisor_pid",
         1}}.dump();
    ASSERT_EQ(write_file_atomic(paths::container_dir("c1") + "/owner.json", old, 0600, false), 0);
    struct stat before {};
    ASSERT_EQ(::stat((paths::container_dir("c1") + "/owner.json").c_str(), &before), 0);

    Fd lock;
    std::string error;
    ASSERT_EQ(ownership::acquire("c1", lock, error), 0) << error;
    ASSERT_TRUE(lock);
    std::string text = record();
    auto j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(j.is_object()) << text;
    EXPECT_EQ(j.value("supervisor_pid", 0), ::getpid());
    EXPECT_EQ(j.value("machine_id", ""), ownership::this_node().machine_id);
    EXPECT_LT(text.size(), old.size()); // cut, not left with the old tail
    struct stat after {};
    ASSERT_EQ(::stat((paths::container_dir("c1") + "/owner.json").c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino); // the same file: written over, not renamed over
    EXPECT_EQ(after.st_mode & 07777, 0600u);

    // Another open file description sees the lock held and believes the record.
    ownership::Owner owner;
    EXPECT_EQ(ownership::probe("c1", owner), 1);
    EXPECT_EQ(owner.supervisor_pid, ::getpid());

    // Held: a second acquire is refused with the holder named.
    Fd second;
    EXPECT_EQ(ownership::acquire("c1", second, error), -EBUSY);
    EXPECT_NE(error.find("is running on"), std::string::npos) << error;
    lock.reset();
    EXPECT_EQ(ownership::probe("c1", owner), 0);
}

TEST_F(OwnershipTest, FirstRecordIsMadeRootOnly) {
    Fd lock;
    std::string error;
    ASSERT_EQ(ownership::acquire("c1", lock, error), 0) << error;
    struct stat st {};
    ASSERT_EQ(::stat((paths::container_dir("c1") + "/owner.json").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    auto j = nlohmann::json::parse(record(), nullptr, false);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j.value("supervisor_pid", 0), ::getpid());
}

} // namespace
