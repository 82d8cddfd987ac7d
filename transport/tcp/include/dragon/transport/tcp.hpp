// The TCP transport between node agents: a listener and a connect that both
// authenticate the other side (run secret, HMAC challenge-response), and the
// authenticated Peer that carries framed messages and streamed payloads with
// bounded queues. Specified in docs/transport.md.
//
// Threading: everything runs on the caller's io_context (one thread); the
// transport starts no threads. Every callback runs on that io_context and is
// never called from inside the function that registered it.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <asio.hpp>

#include "dragon/common/framing.hpp"
#include "dragon/common/payload.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"
#include "dragon/transport/handshake.hpp"
#include "dragon/transport/link.hpp"
#include "dragon/transport/run_secret.hpp"

namespace dragon::transport::tcp {

struct Options {
    /// From TCP connect (or accept) to an authenticated peer; a peer that
    /// takes longer is dropped.
    std::chrono::milliseconds handshake_timeout{5000};
    /// Largest body of an ordinary frame a Peer accepts (payloads are not
    /// bounded by this: they arrive in chunks).
    std::size_t max_frame_body = wire::kDefaultMaxFrameBody;
    /// send() reports above_high_water once more than high_water bytes wait
    /// to be written; the drained callback fires when they fall to low_water.
    std::size_t high_water = 8U << 20;
    std::size_t low_water = 2U << 20;
    /// Listener: connections still in their handshake beyond this are closed
    /// at once (a flood of silent clients cannot exhaust fds).
    std::size_t max_pending_handshakes = 128;
    /// Listener: allow a wildcard address (0.0.0.0 or ::). Off: agents
    /// listen on their own node's address only.
    bool allow_wildcard_address = false;
    /// connect(): the local address to connect from (empty: the kernel's choice).
    std::string bind_address;
};

using transport::PayloadSink;
using transport::SendState;

/// An authenticated TCP connection to another node's agent: the TCP
/// transport's Link (link.hpp has the contract of each call). Create with
/// Listener or connect().
class Peer final : public Link, public std::enable_shared_from_this<Peer> {
public:
    /// Starts reading. Without a payload handler, a payload message is a
    /// protocol error that closes the connection. Call once.
    void start(FrameHandler on_frame, CloseHandler on_close, PayloadHandler on_payload = nullptr) override;

    using Link::send;  // frames are coalesced in the send queue, encoded in place (send_encoded)
    /// Queues a frame of `type` with an already-encoded body.
    SendState send_frame(std::uint16_t type, std::string_view body) override;

    SendState send_payload(std::uint16_t type, std::string_view header, std::span<const std::byte> payload,
                           DoneHandler done) override;

    /// Bytes read from the socket so far (payload chunks included): a peer
    /// in the middle of a long payload sends no frame, but this still grows.
    [[nodiscard]] std::uint64_t bytes_read() const override { return bytes_read_; }

    /// Bytes queued (frames and referenced payload bytes) not yet written to the socket.
    [[nodiscard]] std::size_t queued_bytes() const override { return queued_bytes_; }
    /// Fires each time the queue falls to low water after send() reported above_high_water.
    void set_on_drained(std::function<void()> fn) override { on_drained_ = std::move(fn); }

    /// Stops delivering frames and reading from the socket (at most one read
    /// already in flight completes into the buffer); the peer's sends then
    /// stall in TCP flow control. Safe to call from a handler.
    void pause_reading() override;
    /// Delivers what is buffered and reads again.
    void resume_reading() override;
    [[nodiscard]] bool reading_paused() const override { return paused_; }

    /// Refuses further sends, writes what is queued, then closes and calls `done`.
    void close_after_flush(std::function<void()> done = nullptr) override;
    /// Closes now; queued payloads' done handlers get Errc::closed.
    void close() override;
    [[nodiscard]] bool is_open() const override { return !closed_; }
    /// Takes the authenticated socket out of a Peer that was never started
    /// and has sent nothing, to hand it to another process (a lane,
    /// docs/channels.md); the Peer is closed afterwards. The descriptor is
    /// close-on-exec and still non-blocking.
    Result<sys::UniqueFd> release_socket();

    [[nodiscard]] std::uint32_t remote_node_id() const override { return remote_node_id_; }
    [[nodiscard]] const asio::ip::tcp::endpoint& remote_endpoint() const { return remote_; }
    /// "node 3 (127.0.0.4:40123)", for log lines.
    [[nodiscard]] const std::string& name() const override { return name_; }

    // Made by the transport only (after a handshake); public for make_shared.
    struct Private;
    Peer(const Private&, asio::ip::tcp::socket socket, std::uint32_t remote_node_id, Options opts);
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;
    Peer(Peer&&) = delete;
    Peer& operator=(Peer&&) = delete;
    ~Peer();

private:
    struct Segment {
        std::string owned;                  // encoded frames (payload == nullptr)
        const std::byte* payload = nullptr;  // borrowed payload bytes, sent as chunk frames
        std::uint64_t payload_size = 0;
        std::uint64_t scheduled = 0;  // payload bytes handed to a write so far
        DoneHandler done;
    };

    SendState send_encoded(Encoder encode, const void* msg) override;
    [[nodiscard]] bool can_send() const { return !closed_ && !flushing_; }
    std::string& append_target();
    SendState after_append(std::size_t bytes);
    void write_more();
    void on_written(const asio::error_code& ec);
    void read_more();
    void on_read(const asio::error_code& ec, std::size_t n);
    void dispatch();
    Status dispatch_one(bool& need_more);
    void fail(Error e, bool clean);
    void finish_flush();
    void drop_queue(const Error& why);

    asio::ip::tcp::socket socket_;
    asio::ip::tcp::endpoint remote_;
    std::uint32_t remote_node_id_;
    std::string name_;
    Options opts_;
    FrameHandler on_frame_;
    PayloadHandler on_payload_;
    CloseHandler on_close_;
    std::function<void()> on_drained_;
    std::function<void()> flush_then_;
    bool started_ = false;
    bool closed_ = false;
    bool flushing_ = false;

    // Write side: queue_ in order; one gathered write in flight.
    std::deque<Segment> queue_;
    std::vector<asio::const_buffer> iov_;
    std::vector<std::array<char, wire::kFrameHeaderSize>> chunk_headers_;
    std::vector<std::string> inflight_owned_;
    std::vector<DoneHandler> inflight_done_;
    std::size_t inflight_bytes_ = 0;
    std::size_t queued_bytes_ = 0;
    std::uint64_t bytes_read_ = 0;
    bool writing_ = false;
    bool above_high_ = false;

    // Read side: the decoder holds received, undelivered bytes and the
    // payload's progress (payload bytes are read straight into sink_'s destination).
    wire::PayloadDecoder dec_;
    bool reading_ = false;
    bool dispatching_ = false;
    bool paused_ = false;
    bool eof_ = false;  // the peer's FIN was read; what is buffered is still delivered
    PayloadSink sink_;
};

/// Accepts peers on one address and port: each connection is authenticated
/// (handshake bounded by Options::handshake_timeout) and then handed to
/// on_peer; failures are logged with the peer's address and dropped, and the
/// listener keeps serving. Move-only; destroying it stops listening and
/// abandons handshakes in progress (established Peers live on).
class Listener {
public:
    using PeerHandler = std::function<void(std::shared_ptr<Peer>)>;

    /// Binds and listens on address:port (port 0: an ephemeral port, see
    /// port()). The address must be a literal IP; a wildcard is refused unless
    /// opts.allow_wildcard_address. `io` must outlive the Listener.
    static Result<Listener> create(asio::io_context& io, std::string_view address, std::uint16_t port,
                                   const RunSecret& secret, std::uint32_t node_id, PeerHandler on_peer,
                                   Options opts = {});

    /// Serves an already bound and listening socket (see
    /// bind_listening_socket): a launcher binds before it starts the agent,
    /// so it knows the port without asking.
    static Result<Listener> adopt(asio::io_context& io, sys::UniqueFd fd, const RunSecret& secret,
                                  std::uint32_t node_id, PeerHandler on_peer, Options opts = {});

    [[nodiscard]] asio::ip::tcp::endpoint local_endpoint() const;
    [[nodiscard]] std::uint16_t port() const { return local_endpoint().port(); }
    /// Stops listening; handshakes in progress are abandoned. Idempotent.
    void close();

    Listener(Listener&&) noexcept;
    Listener& operator=(Listener&&) noexcept;
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    ~Listener();

    struct Core;

private:
    explicit Listener(std::shared_ptr<Core> core);
    void close_quietly() noexcept;
    std::shared_ptr<Core> core_;
};

/// A bound, listening TCP socket on address:port (port 0: ephemeral),
/// close-on-exec, for Listener::adopt. The same wildcard rule as create().
Result<sys::UniqueFd> bind_listening_socket(std::string_view address, std::uint16_t port, bool allow_wildcard = false);

using ConnectHandler = std::function<void(Result<std::shared_ptr<Peer>>)>;

/// Connects to the agent of node `expected_peer_node_id` at address:port and
/// authenticates both ways. `on_done` runs exactly once, later, on `io`: with
/// the Peer (not yet started) or the Error (connection refused, timeout after
/// opts.handshake_timeout, wrong secret, node id mismatch...), which is also
/// logged. No retries: a caller that starts before its peer listens retries.
void connect(asio::io_context& io, std::string_view address, std::uint16_t port, const RunSecret& secret,
             std::uint32_t my_node_id, std::uint32_t expected_peer_node_id, ConnectHandler on_done,
             Options opts = {});

}  // namespace dragon::transport::tcp
