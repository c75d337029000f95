// RFC 6455 pieces: the handshake key, server frames, and the client frame decoder's rules.
#include "devlxd/websocket.hpp"

#include <gtest/gtest.h>

using namespace lodge::daemon::ws;

namespace {

std::string masked(uint8_t first, const std::string& payload) {
    std::string f;
    f += static_cast<char>(first);
    f += static_cast<char>(0x80 | payload.size());
    const char mask[4] = {0x11, 0x22, 0x33, 0x44};
    f.append(mask, 4);
    for (size_t i = 0; i < payload.size(); i++)
        f += static_cast<char>(payload[i] ^ mask[i % 4]);
    return f;
}

TEST(WebSocket, AcceptKeyIsRfc6455Example) {
    EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocket, ServerFramesUseTheRightLengthForm) {
    EXPECT_EQ(frame(Opcode::text, "hi"), std::string("\x81\x02hi", 4));
    EXPECT_EQ(frame(Opcode::text, std::string(200, 'a')).substr(0, 4), std::string("\x81\x7e\x00\xc8", 4));
    EXPECT_EQ(frame(Opcode::text, std::string(70000, 'a')).substr(0, 10),
              std::string("\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70", 10));
}

TEST(WebSocket, DecoderReassemblesSplitFrames) {
    Decoder d;
    std::vector<Frame> out;
    std::string bytes = masked(0x89, "ping!") + masked(0x8a, "") + masked(0x88, "\x03\xe8");
    for (char c : bytes)
        ASSERT_TRUE(d.feed(std::string_view(&c, 1), out));
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].op, Opcode::ping);
    EXPECT_EQ(out[0].payload, "ping!");
    EXPECT_EQ(out[1].op, Opcode::pong);
    EXPECT_EQ(out[2].op, Opcode::close);
}

TEST(WebSocket, DecoderRefusesWhatClientsMustNotSend) {
    std::vector<Frame> out;
    Decoder unmasked;
    EXPECT_FALSE(unmasked.feed(std::string("\x81\x01x", 3), out));
    Decoder reserved;
    EXPECT_FALSE(reserved.feed(masked(0xc1, "x"), out));
    Decoder opcode;
    EXPECT_FALSE(opcode.feed(masked(0x83, "x"), out));
    Decoder fragmented_control;
    EXPECT_FALSE(fragmented_control.feed(masked(0x09, "x"), out));
    Decoder small(16);
    EXPECT_FALSE(small.feed(masked(0x81, std::string(17, 'a')), out));
    EXPECT_FALSE(small.error().empty());
}

} // namespace
