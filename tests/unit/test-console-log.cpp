#include "common/fileio.hpp"
#include "runtime/console.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

using namespace lodge;
using namespace lodge::runtime;

TEST(ConsoleLog, KeepsTheNewestOutputWithinTheCap) {
    char tmpl[] = "/tmp/lodge-test-console-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string path = std::string(tmpl) + "/sub/console.log";
    ConsoleLog log;
    ASSERT_TRUE(log.open(path, 4096).ok());
    std::string line(100, 'a');
    line += '\n';
    for (int i = 0; i < 200; i++)
        log.append(line.data(), line.size());
    log.append("last line\n", 10);
    std::string text;
    ASSERT_EQ(read_file(path, text), 0);
    EXPECT_LE(text.size(), 4096u);
    EXPECT_GE(text.size(), 1024u);
    EXPECT_EQ(text.substr(text.size() - 10), "last line\n");
    EXPECT_EQ(log.ring().substr(log.ring().size() - 10), "last line\n");
    remove_tree(tmpl);
}

TEST(ConsoleLog, RingHoldsAtMost128KiB) {
    ConsoleLog log; // not opened: only the ring
    std::string chunk(4096, 'x');
    for (int i = 0; i < 100; i++)
        log.append(chunk.data(), chunk.size());
    EXPECT_EQ(log.ring().size(), console_ring_size);
}
