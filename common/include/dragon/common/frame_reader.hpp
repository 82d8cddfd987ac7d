// The one blocking "read the next frame before a deadline" loop: poll and
// read on a socket, frames (and payload messages, where the protocol has
// them) through wire::PayloadDecoder, with bounded sizes and errors that name
// the connection.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/framing.hpp"
#include "dragon/common/payload.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::wire {

using Deadline = std::chrono::steady_clock::time_point;
/// Wait as long as it takes.
inline constexpr Deadline kNoDeadline = Deadline::max();

/// One message as FrameReader returns it. `body` views the reader's memory
/// until its next call: copy what must outlive that (frame()).
struct Received {
    std::uint16_t type = 0;   // the frame's type; for a payload message, its header message's type
    std::string_view body;    // the frame's (or header message's) encoded body
    std::optional<std::vector<std::byte>> payload;  // payload messages only: all of it
    [[nodiscard]] Frame frame() const { return Frame{type, std::string(body)}; }
};

/// Reads frames from a stream socket it does not own, blocking up to a
/// deadline. Partial input survives a timeout (the next call goes on where
/// this one stopped), so short deadlines can be used to look up now and then.
/// Errors name the connection (`name`, e.g. "the agent"):
///   Errc::timeout  "no answer from <name> within <N> ms" (the reader stays usable);
///   Errc::closed   "<name> closed the connection" (peer_closed() is then true;
///                  "... in the middle of a frame/payload" if it cut one), or
///                  "reading from <name>: <strerror>" (the errno is kept);
///   Errc::protocol / too_large  "from <name>: <what was wrong>" (drop the connection);
///   Errc::no_space "no memory for a payload of <N> bytes from <name>".
/// EINTR is retried. Not thread-safe: one reader at a time.
class FrameReader {
public:
    struct Options {
        /// Largest body of a frame (a payload message's header included).
        std::size_t max_frame_body = kDefaultMaxFrameBody;
        /// Accept payload messages up to this many bytes, read into memory in
        /// full; nullopt: the protocol has none (types 68/69 are plain frames).
        std::optional<std::uint64_t> max_payload = std::nullopt;
        /// Never read past the frame being read, so the socket can be handed
        /// on afterwards with nothing of what follows lost (handshakes). Costs
        /// two reads per frame; frames only.
        bool exact = false;
        /// Take descriptors sent with the bytes (SCM_RIGHTS): see take_fd(). Frames only.
        bool receive_fds = false;
        /// Buffer space offered per read.
        std::size_t read_size = 64U << 10;
    };

    FrameReader(int fd, std::string name, Options opts);

    /// The next message, waiting until `deadline`. A deadline already passed
    /// still takes what has arrived (one read that does not wait).
    Result<Received> next(Deadline deadline);
    /// As next(), for at most `timeout` from now.
    Result<Received> next(std::chrono::milliseconds timeout) {
        return next(std::chrono::steady_clock::now() + timeout);
    }
    /// The next message if it has already been read in full, without reading.
    Result<std::optional<Received>> next_buffered();

    /// The last descriptor that came with the bytes (receive_fds), if any.
    sys::UniqueFd take_fd() { return std::move(fd_received_); }
    /// The peer ended the stream (an Errc::closed from an EOF, not a read error).
    [[nodiscard]] bool peer_closed() const { return peer_closed_; }
    [[nodiscard]] const std::string& name() const { return name_; }
    [[nodiscard]] int fd() const { return fd_; }
    void set_max_frame_body(std::size_t n) { dec_.set_max_frame_body(n); }

private:
    /// Decodes what is buffered into a complete message, or nullopt.
    Result<std::optional<Received>> decode();
    /// One read (bytes, EOF or error); false: nothing was there.
    Result<bool> read_once();
    Error with_name(Error e) const;

    int fd_;
    std::string name_;
    Options opts_;
    PayloadDecoder dec_;
    bool peer_closed_ = false;
    bool last_read_full_ = false;  // more is likely waiting: read before polling
    // The payload message being read: its header and the memory it goes to.
    std::uint16_t payload_type_ = 0;
    std::string payload_header_;
    std::optional<std::vector<std::byte>> payload_;
    sys::UniqueFd fd_received_;
};

}  // namespace dragon::wire
