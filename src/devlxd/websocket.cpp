#include "devlxd/websocket.hpp"

#include <nettle/base64.h>
#include <nettle/sha1.h>

namespace lodge::daemon::ws {

std::string accept_key(std::string_view client_key) {
    static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    sha1_ctx ctx;
    sha1_init(&ctx);
    sha1_update(&ctx, client_key.size(), reinterpret_cast<const uint8_t*>(client_key.data()));
    sha1_update(&ctx, guid.size(), reinterpret_cast<const uint8_t*>(guid.data()));
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_digest(&ctx, sizeof digest, digest);
    char out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)];
    base64_encode_raw(out, sizeof digest, digest);
    return std::string(out, sizeof out);
}

std::string frame(Opcode op, std::string_view payload) {
    std::string out;
    out.reserve(payload.size() + 10);
    out += static_cast<char>(0x80 | static_cast<uint8_t>(op));
    uint64_t n = payload.size();
    if (n < 126) {
        out += static_cast<char>(n);
    } else if (n <= 0xffff) {
        out += static_cast<char>(126);
        out += static_cast<char>(n >> 8);
        out += static_cast<char>(n & 0xff);
    } else {
        out += static_cast<char>(127);
        for (int shift = 56; shift >= 0; shift -= 8)
            out += static_cast<char>((n >> shift) & 0xff);
    }
    out.append(payload);
    return out;
}

bool Decoder::feed(std::string_view data, std::vector<Frame>& out) {
    if (!error_.empty())
        return false;
    buffer_.append(data);
    for (;;) {
        auto b = [&](size_t i) { return static_cast<uint8_t>(buffer_[i]); };
        if (buffer_.size() < 2)
            return true;
        uint8_t op = b(0) & 0x0f;
        bool fin = b(0) & 0x80;
        if (b(0) & 0x70) {
            error_ = "reserved bits set";
            return false;
        }
        if (!(b(1) & 0x80)) {
            error_ = "unmasked client frame";
            return false;
        }
        bool control = op & 0x08;
        if (op != 0 && op != 1 && op != 2 && op != 8 && op != 9 && op != 10) {
            error_ = "unknown opcode";
            return false;
        }
        uint64_t len = b(1) & 0x7f;
        size_t header = 2;
        if (len == 126) {
            if (buffer_.size() < 4)
                return true;
            len = (uint64_t{b(2)} << 8) | b(3);
            header = 4;
        } else if (len == 127) {
            if (buffer_.size() < 10)
                return true;
            len = 0;
            for (size_t i = 2; i < 10; i++)
                len = (len << 8) | b(i);
            header = 10;
        }
        if (control && (len > 125 || !fin)) {
            error_ = "bad control frame";
            return false;
        }
        if (len > max_payload_) {
            error_ = "frame too large";
            return false;
        }
        if (buffer_.size() < header + 4 + len)
            return true;
        uint8_t mask[4] = {b(header), b(header + 1), b(header + 2), b(header + 3)};
        std::string payload = buffer_.substr(header + 4, static_cast<size_t>(len));
        for (size_t i = 0; i < payload.size(); i++)
            payload[i] = static_cast<char>(static_cast<uint8_t>(payload[i]) ^ mask[i % 4]);
        buffer_.erase(0, header + 4 + static_cast<size_t>(len));
        out.push_back(Frame{static_cast<Opcode>(op), fin, std::move(payload)});
    }
}

} // namespace lodge::daemon::ws
