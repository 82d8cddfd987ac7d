// Payload messages on a frame stream (payload_begin, then payload_chunk frames;
// docs/transport.md) and the one incremental decoder of such a stream, shared
// by the transport's asynchronous Peer and the client's blocking lanes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "dragon/common/codec.hpp"
#include "dragon/common/framing.hpp"
#include "dragon/common/result.hpp"

namespace dragon::wire {

/// Frame types of the payload framing (inside the transport's range 64-79).
inline constexpr std::uint16_t kPayloadBeginType = 68;
inline constexpr std::uint16_t kPayloadChunkType = 69;  // body: raw payload bytes, no codec
/// Payloads travel in chunk frames of 1 to this many bytes.
inline constexpr std::size_t kPayloadChunkSize = 256U << 10;

/// Frame types 64-79 belong to the transport: never an application message's type.
[[nodiscard]] constexpr bool is_transport_type(std::uint16_t t) { return t >= 64 && t <= 79; }

/// Starts a payload message: the application's header frame (its type and
/// encoded body) and the payload size; `size` bytes of payload_chunk frames follow.
struct PayloadBegin {
    static constexpr std::uint16_t kType = kPayloadBeginType;
    std::uint16_t type = 0;
    std::uint64_t size = 0;
    std::string header;
    DRAGON_WIRE_FIELDS(type, size, header)
};

/// Appends a payload_begin frame for a payload of `size` bytes whose header
/// message has type `type` and the encoded body `header`.
void append_payload_begin(std::string& out, std::uint16_t type, std::uint64_t size, std::string_view header);

/// The header of a payload_chunk frame carrying `n` bytes (1..kPayloadChunkSize).
std::array<char, kFrameHeaderSize> payload_chunk_header(std::size_t n);

/// Number of chunk frames a payload of `size` bytes is sent in.
[[nodiscard]] constexpr std::uint64_t payload_chunks(std::uint64_t size) {
    return (size + kPayloadChunkSize - 1) / kPayloadChunkSize;
}

/// Decodes a byte stream of frames and, if enabled, payload messages. It owns
/// the receive buffer; the caller reads its socket into read_space() and
/// commit()s, then takes events with next() until need_more. Payload bytes
/// go into the destination the caller names after payload_begin (read
/// straight into it when nothing else is buffered: only 8-byte chunk headers
/// pass through the buffer) or, without one, come out as payload_bytes
/// events. Not thread-safe; never blocks; every size is checked before use.
class PayloadDecoder {
public:
    struct Options {
        /// Largest body of an ordinary frame (payload_begin included); a larger
        /// one is Errc::too_large before it is buffered.
        std::size_t max_frame_body = kDefaultMaxFrameBody;
        /// Off: types 68 and 69 are ordinary frames (protocols without payloads).
        bool payloads = true;
        /// Buffer space offered per read.
        std::size_t read_size = 256U << 10;
    };

    PayloadDecoder() : PayloadDecoder(Options{}) {}
    explicit PayloadDecoder(Options opts) : opts_(opts) {}

    /// Where the next read puts its bytes, in this order: `direct` (the rest of
    /// the current chunk, straight into the payload's destination; empty
    /// unless mid-chunk with nothing buffered), then `buffer` (read_size
    /// bytes, or room for all of a larger frame whose header is buffered;
    /// after `direct`, just the next chunk header while chunks remain). The
    /// space stays valid until commit(). Moves buffered bytes: views from
    /// earlier events end here.
    struct ReadSpace {
        std::span<std::byte> direct;
        std::span<char> buffer;
    };
    ReadSpace read_space();
    /// `n` bytes were read into the last read_space() (direct part first).
    void commit(std::size_t n);
    /// Copies `bytes` in (tests, or bytes that arrived some other way).
    void feed(std::string_view bytes);

    enum class Kind : std::uint8_t { need_more, frame, payload_begin, payload_bytes, payload_end };
    /// What next() found. `body` views the decoder's memory until the next
    /// read_space() or feed(): a frame's body, a payload's header body, or
    /// payload bytes (a piece of at most one chunk, without a destination).
    struct Event {
        Kind kind = Kind::need_more;
        std::uint16_t type = 0;  // frame: its type; payload_begin: the header message's type
        std::string_view body = {};
        std::uint64_t size = 0;  // payload_begin: payload bytes to come
    };
    /// The next event from what is buffered. An error (bad header, an
    /// over-long frame, a misplaced or over-long chunk, a payload header of a
    /// transport type) leaves the stream unusable: drop the connection.
    Result<Event> next();
    /// After payload_begin, before the next next(): read the payload into
    /// `dest` (at least its size: else Errc::invalid_argument). Without a call
    /// (or with an empty span) its bytes come as payload_bytes events. `dest`
    /// must stay valid until payload_end or the decoder is dropped.
    Status set_destination(std::span<std::byte> dest);

    /// Inside a payload message (payload_begin seen, payload_end not yet).
    [[nodiscard]] bool in_payload() const { return in_payload_; }
    /// Part of a frame or payload has arrived and is not yet delivered: an
    /// end of the stream now cuts a message.
    [[nodiscard]] bool mid_message() const { return in_payload_ || !buf_.empty(); }
    /// Bytes received into the buffer and not yet consumed.
    [[nodiscard]] std::size_t buffered() const { return buf_.size(); }
    /// Bytes still missing to complete the frame that is buffered in part (at
    /// least its header): what a reader that must not read past it may read.
    [[nodiscard]] std::size_t frame_bytes_missing() const;
    void set_max_frame_body(std::size_t n) { opts_.max_frame_body = n; }

private:
    Options opts_;
    RecvBuffer buf_;  // compacted only in read_space() and feed(), never while events are taken
    std::size_t direct_len_ = 0;  // of the last read_space(): bytes going to the destination first
    bool in_payload_ = false;
    std::uint64_t payload_left_ = 0;  // payload bytes not yet announced by a chunk header
    std::size_t chunk_left_ = 0;      // bytes of the current chunk still to come
    std::span<std::byte> dest_;
    std::uint64_t dest_off_ = 0;
    std::string header_;  // the current payload's header body (payload_begin's view)
};

}  // namespace dragon::wire
