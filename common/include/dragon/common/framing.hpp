// Frames on a byte stream: an 8-byte header (magic, version, type, length)
// and a body. Specified in docs/protocol.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <memory>

#include "dragon/common/codec.hpp"
#include "dragon/common/result.hpp"

namespace dragon::wire {

inline constexpr std::uint8_t kFrameMagic = 0xD6;
inline constexpr std::uint8_t kFrameVersion = 1;
inline constexpr std::size_t kFrameHeaderSize = 8;
/// Default bound on a frame body; larger frames are refused before buffering.
inline constexpr std::size_t kDefaultMaxFrameBody = 64U << 20;

/// One decoded frame: its type number and its (still encoded) body.
struct Frame {
    std::uint16_t type = 0;
    std::string body;
};

/// A validated frame header.
struct FrameHeader {
    std::uint16_t type = 0;
    std::uint32_t length = 0;
};

/// Checks the kFrameHeaderSize bytes at `h`: magic, frame version, body
/// length at most `max_body` (Errc::protocol, Errc::too_large).
Result<FrameHeader> parse_frame_header(const char* h, std::size_t max_body);

/// Appends a frame header for a body of `body_len` bytes to `out`.
void append_frame_header(std::string& out, std::uint16_t type, std::size_t body_len);

/// Appends `msg` as one complete frame to `out` (message types carry `kType`).
template <class M>
void append_frame(std::string& out, const M& msg) {
    const std::size_t start = out.size();
    append_frame_header(out, static_cast<std::uint16_t>(M::kType), 0);
    Writer w(out);
    encode(w, msg);
    const std::size_t len = out.size() - start - kFrameHeaderSize;
    for (std::size_t i = 0; i < 4; ++i) out[start + 4 + i] = static_cast<char>((len >> (8 * i)) & 0xffU);
}

/// `msg`'s encoded body alone (no header), e.g. to relay it inside another message.
template <class M>
std::string body_of(const M& msg) {
    std::string body;
    Writer w(body);
    encode(w, msg);
    return body;
}

template <class M>
std::string frame_of(const M& msg) {
    std::string out;
    append_frame(out, msg);
    return out;
}

/// The receive buffer of a stream decoder (FrameDecoder, PayloadDecoder):
/// bytes are read into reserve()d space at its end and commit()ted, and
/// consume()d from its front. Consumed space is reclaimed only by reserve(),
/// never by consume(), so a read in flight into reserved space (an
/// asynchronous one) finds its place unmoved while earlier bytes are taken.
class RecvBuffer {
public:
    /// Room for at least `n` more bytes at the end, valid until the next
    /// reserve(): moves the unconsumed bytes to the front (or to a larger
    /// buffer) when they need the room, so views into them end here.
    char* reserve(std::size_t n);
    /// `n` bytes were written into the last reserve()d space.
    void commit(std::size_t n) { end_ += n; }
    /// Copies `bytes` in at the end.
    void append(std::string_view bytes);
    /// The unconsumed bytes.
    [[nodiscard]] const char* data() const { return buf_.get() + begin_; }
    [[nodiscard]] std::size_t size() const { return end_ - begin_; }
    [[nodiscard]] bool empty() const { return end_ == begin_; }
    /// The first `n` unconsumed bytes are done with (n <= size()).
    void consume(std::size_t n) { begin_ += n; }
    /// Forgets every byte (the next reserve() starts at the front).
    void clear() { begin_ = end_ = 0; }

private:
    std::unique_ptr<char[]> buf_;  // not zero-filled: every byte is written before it is read
    std::size_t cap_ = 0;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
};

/// Splits a byte stream into frames. Feed it bytes as they arrive; take frames
/// with next(). A bad header (magic, version, over-long body) is an Error and
/// the stream is unusable afterwards: drop the connection.
class FrameDecoder {
public:
    explicit FrameDecoder(std::size_t max_body = kDefaultMaxFrameBody) : max_body_(max_body) {}

    /// Space for at least `n` more bytes; write into it, then commit().
    char* prepare(std::size_t n) { return buf_.reserve(n); }
    void commit(std::size_t n) { buf_.commit(n); }
    void feed(std::string_view bytes) { buf_.append(bytes); }

    /// The next complete frame, std::nullopt when more bytes are needed.
    Result<std::optional<Frame>> next();

    /// Bytes received but not yet returned as frames.
    [[nodiscard]] std::size_t buffered() const { return buf_.size(); }

private:
    RecvBuffer buf_;
    std::size_t max_body_;
};

}  // namespace dragon::wire
