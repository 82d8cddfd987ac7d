// The transport between node agents, as the agent sees it whatever carries
// it: a Link to another node's agent (authenticated, ordered frames and
// streamed payloads, bounded queues, back-pressure) and a Transport that
// listens for links and dials them. TCP stands behind it today
// (transport/tcp/, docs/transport.md); an `ofi` transport stands beside it
// by implementing these two classes and a name in create_transport().
//
// Threading: everything runs on the caller's io_context (one thread); every
// callback runs there and never from inside the call that registered it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "dragon/common/framing.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/payload.hpp"  // wire::is_transport_type

namespace asio {
class io_context;
}

namespace dragon::transport {

class RunSecret;

/// What a send says about the queue after queueing.
enum class SendState : std::uint8_t {
    ok,                // queued; keep sending
    above_high_water,  // queued, but stop until the drained callback fires
    closed,            // not queued: the link is closed or closing
};

/// Where an incoming payload goes; returned by the payload handler.
struct PayloadSink {
    /// If non-empty, the payload is read straight into it (its size must be at
    /// least the payload's); it must stay valid until on_complete or on_close.
    std::span<std::byte> destination;
    /// Otherwise each piece is passed here as it arrives (a view into the
    /// transport's buffer, valid during the call). May be empty to discard.
    std::function<void(std::span<const std::byte>)> on_bytes;
    /// After the last byte (not called if the connection ends first).
    std::function<void()> on_complete;
};

/// An authenticated connection to another node's agent. Messages (and
/// payload messages) are delivered in the order they were sent, exactly once,
/// until the link ends.
class Link {
public:
    /// An ordinary frame: an application type (not 64-79) and its body.
    using FrameHandler = std::function<void(wire::Frame&&)>;
    /// A payload message began: its header frame and payload size. Return
    /// where the bytes go, or an Error to close the link with it.
    using PayloadHandler = std::function<Result<PayloadSink>(wire::Frame&& header, std::uint64_t size)>;
    /// The link ended other than by close()/close_after_flush(): nullptr for a
    /// clean end from the other side, else why. Called at most once.
    using CloseHandler = std::function<void(const Error*)>;
    /// A payload's memory may be reused: ok once it is all handed on, an
    /// Error if the link closed first.
    using DoneHandler = std::function<void(Status)>;

    virtual ~Link() = default;

    /// Starts reading. Without a payload handler, a payload message is a
    /// protocol error that closes the link. Call once.
    virtual void start(FrameHandler on_frame, CloseHandler on_close, PayloadHandler on_payload = nullptr) = 0;

    /// Queues one message as a frame, encoded straight into the send queue.
    /// Never blocks; see SendState.
    template <class M>
    SendState send(const M& msg) {
        static_assert(!wire::is_transport_type(static_cast<std::uint16_t>(M::kType)), "types 64-79 are the transport's");
        return send_encoded([](const void* m, std::string& out) { wire::append_frame(out, *static_cast<const M*>(m)); },
                            &msg);
    }
    /// Queues a frame of `type` with an already-encoded body.
    virtual SendState send_frame(std::uint16_t type, std::string_view body) = 0;
    /// Queues `header` (a frame of `type`) followed by `payload`, which is not
    /// copied and must stay valid and unchanged until `done` runs (exactly
    /// once, even if the link closes first). Its bytes count in queued_bytes().
    virtual SendState send_payload(std::uint16_t type, std::string_view header, std::span<const std::byte> payload,
                                   DoneHandler done) = 0;
    template <class M>
    SendState send_with_payload(const M& msg, std::span<const std::byte> payload, DoneHandler done) {
        static_assert(!wire::is_transport_type(static_cast<std::uint16_t>(M::kType)), "types 64-79 are the transport's");
        return send_payload(static_cast<std::uint16_t>(M::kType), wire::body_of(msg), payload, std::move(done));
    }

    /// Bytes received so far (payloads included): a link in the middle of a
    /// long payload delivers no frame, but this still grows.
    [[nodiscard]] virtual std::uint64_t bytes_read() const = 0;
    /// Bytes queued (frames and referenced payload bytes) not yet handed on.
    [[nodiscard]] virtual std::size_t queued_bytes() const = 0;
    /// Fires each time the queue falls to low water after a send reported above_high_water.
    virtual void set_on_drained(std::function<void()> fn) = 0;

    /// Stops delivering frames; the other side's sends then stall in flow
    /// control. Safe to call from a handler.
    virtual void pause_reading() = 0;
    /// Delivers what is buffered and reads again.
    virtual void resume_reading() = 0;
    [[nodiscard]] virtual bool reading_paused() const = 0;

    /// Refuses further sends, hands on what is queued, then closes and calls `done`.
    virtual void close_after_flush(std::function<void()> done = nullptr) = 0;
    /// Closes now; queued payloads' done handlers get Errc::closed.
    virtual void close() = 0;
    [[nodiscard]] virtual bool is_open() const = 0;

    /// The node at the other end (authenticated).
    [[nodiscard]] virtual std::uint32_t remote_node_id() const = 0;
    /// "node 3 (127.0.0.4:40123)", for log lines.
    [[nodiscard]] virtual const std::string& name() const = 0;

protected:
    /// Appends one frame, encoded by `encode(msg, out)`, to the send queue.
    using Encoder = void (*)(const void* msg, std::string& out);
    virtual SendState send_encoded(Encoder encode, const void* msg) = 0;
};

/// Where a node's agent takes links: an address and a port for TCP (an
/// address string of its own for another transport).
struct Endpoint {
    std::string address;
    std::uint16_t port = 0;
};

/// Listens for links from other nodes and dials them; each link is
/// authenticated (the run's secret) before anyone sees it.
class Transport {
public:
    using LinkHandler = std::function<void(std::shared_ptr<Link>)>;
    using ConnectHandler = std::function<void(Result<std::shared_ptr<Link>>)>;

    virtual ~Transport() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;

    /// Takes links on `address` (or on `listen_fd`, already bound by a
    /// launcher, when it is >= 0; the transport owns it from now on).
    virtual Status listen(std::string_view address, int listen_fd, LinkHandler on_link) = 0;
    /// Where other nodes reach this one, once listening.
    [[nodiscard]] virtual Endpoint local_endpoint() const = 0;
    /// Stops taking links (links made stay). Idempotent.
    virtual void stop_listening() = 0;
    /// Dials node `node` at `at`; `done` runs once, later, with the link (not
    /// yet started) or why not. No retries.
    virtual void connect(const Endpoint& at, std::uint32_t node, ConnectHandler done) = 0;
};

/// The transport named `name` ("tcp"), for node `node_id` of a run with
/// `secret` (which must outlive it); links are dialled from `bind_address`
/// (empty: from the address it listens on, once it does). Errc::invalid_argument naming the transports there are.
Result<std::unique_ptr<Transport>> create_transport(std::string_view name, asio::io_context& io,
                                                    const RunSecret& secret, std::uint32_t node_id,
                                                    std::string bind_address);

}  // namespace dragon::transport
