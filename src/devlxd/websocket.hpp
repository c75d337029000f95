// RFC 6455 server side, as much as an event feed needs: the handshake key, server frames, and
// a decoder for what a client may send back (pings, pongs, close, ignored data).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lodge::daemon::ws {

enum class Opcode : uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key.
std::string accept_key(std::string_view client_key);

// One unmasked, unfragmented server frame.
std::string frame(Opcode op, std::string_view payload);

struct Frame {
    Opcode op;
    bool fin;
    std::string payload;
};

// Incremental decoder of client frames. Client frames must be masked (RFC 6455 §5.1); control
// frames are at most 125 bytes and never fragmented; anything else beyond `max_payload` is
// refused rather than buffered.
class Decoder {
public:
    explicit Decoder(size_t max_payload = 65536) : max_payload_(max_payload) {}
    // Appends bytes; returns false (with error()) on a protocol violation.
    bool feed(std::string_view data, std::vector<Frame>& out);
    const std::string& error() const { return error_; }

private:
    size_t max_payload_;
    std::string buffer_;
    std::string error_;
};

} // namespace lodge::daemon::ws
