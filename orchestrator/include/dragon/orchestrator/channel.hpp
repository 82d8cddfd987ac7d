// Channels anywhere in the runtime. A channel lives in one node's pool; its
// descriptor names that node. On the caller's own node a ChannelRef uses the
// channel directly through shared memory; on another node every operation goes
// over a lane (the process's own connection to that node's agent, opened by
// its local agent) or, without one, through the local agent's gateway, the
// transport and the remote agent, with the same blocking, timeout and
// ordering rules (docs/channels.md).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dragon/channels/channel.hpp"
#include "dragon/channels/descriptor.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/frame_reader.hpp"
#include "dragon/common/framing.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::client {

/// A process's connection to its node agent's channel gateway, and its view
/// of the node's pool. Share one per process (std::shared_ptr): every
/// ChannelRef keeps its gateway alive. Thread-safe: operations of several
/// threads are in flight at once, each answered on its own.
class Gateway {
public:
    /// Connects to the agent named by DRAGON_AGENT_SOCKET as DRAGON_PUID.
    /// Errc::not_found when the process does not run under Dragon.
    static Result<std::shared_ptr<Gateway>> connect_from_env();
    /// Connects to the agent at an abstract socket name ("@name" or "name").
    static Result<std::shared_ptr<Gateway>> connect(const std::string& socket_name, Puid self);

    Gateway(const Gateway&) = delete;
    Gateway& operator=(const Gateway&) = delete;
    ~Gateway();

    [[nodiscard]] std::uint32_t node_id() const { return welcome_.node_id; }
    [[nodiscard]] const std::string& run_id() const { return welcome_.run_id; }
    /// This node's pool: create local channels in it.
    [[nodiscard]] const channels::Pool& pool() const { return pool_; }

    /// Sends `msg` to the channel `d` of another node.
    /// With a timeout (kTryOnce included) it returns once the message is in
    /// that channel, or with Errc::would_block / Errc::timeout (nothing was
    /// sent), Errc::closed when the node or the agent went away (the message
    /// may or may not have arrived), or the remote channel's error.
    /// Without one (kForever) it returns as soon as the message is on its
    /// way: in order after this process's earlier sends to that channel, at
    /// most kMaxBuffered messages and kMaxBufferedBytes on their way at once
    /// (then it waits). Should such a
    /// send fail (a stale descriptor, a lost node), the next send to that
    /// channel returns the error instead of sending, and so does flush().
    Status send(const channels::ChannelDescriptor& d, std::span<const std::byte> msg, channels::Timeout timeout);
    /// Waits up to `timeout` until every send without a timeout has arrived
    /// (or failed); returns the first failure not yet reported, and forgets it.
    Status flush(channels::Timeout timeout = channels::kForever);
    /// Sends without a timeout on their way at once, per connection (the
    /// agent's, and each lane): at most this many, and this many bytes (one
    /// larger message goes alone).
    static constexpr std::size_t kMaxBuffered = 64;
    static constexpr std::size_t kMaxBufferedBytes = 8U << 20;
    /// Receives the next message of the channel `d` of another node.
    Status recv(const channels::ChannelDescriptor& d, std::vector<std::byte>& out, channels::Timeout timeout);
    /// As recv, without copying out: a large message stays in the pool block
    /// the agent received it into, which the Message frees when it goes.
    Result<channels::Message> recv_message(const channels::ChannelDescriptor& d, channels::Timeout timeout);
    /// How many messages the channel (on another node) holds now, asked of
    /// its node over the lane (or through the agent). Sends of this process
    /// still on their way are not counted: flush first to count them.
    Result<std::size_t> queued(const channels::ChannelDescriptor& d);

    /// An operation on a sync block (Lock, Semaphore, Event, Barrier, Value)
    /// whose home is another node, done by that node's agent (msg::SyncOp):
    /// asked over the lane to it, or through the local agent. Returns the
    /// reply's data; `request.request_id` is set here. A blocking operation
    /// waits at the home up to `request.timeout_ns`, this call until its reply.
    Result<std::string> sync(msg::ChanSync request);

    /// Messages up to this size travel inline on the agent socket; larger ones
    /// in a block of the node's pool (no copy through the socket).
    static constexpr std::size_t kInlineMax = 32U << 10;

    /// Whether operations on another node's channels use lanes (a TCP
    /// connection of this process's own to that node's agent, opened on first
    /// use) rather than the local agent. On unless DRAGON_CHANNEL_LANES=0.
    [[nodiscard]] bool lanes_enabled() const { return lanes_enabled_; }
    /// Nodes this gateway has a working lane to (for tests and diagnostics).
    [[nodiscard]] std::vector<std::uint32_t> lane_nodes();

    /// Each of the two steps of opening a lane (the local agent's answer, then
    /// the remote agent's welcome) waits at most this long.
    static constexpr std::chrono::seconds kLaneOpenTimeout{10};

private:
    /// A reply, from the agent (chan_reply: data inline or in a pool block) or
    /// from a lane (remote_reply: data inline or a payload read into memory).
    struct Reply {
        std::uint16_t code = 0;
        std::string message;
        std::string data;
        std::uint64_t block = 0;
        std::uint64_t size = 0;
        std::optional<std::vector<std::byte>> payload;
    };
    /// One connection replies come on: the agent's socket, or a lane.
    struct Conn;

    Gateway(sys::UniqueFd fd, wire::FrameReader reader, msg::ClientWelcome w, channels::Pool pool,
            std::string socket_name, Puid self);
    static Result<std::shared_ptr<Gateway>> greet(sys::UniqueFd fd, Puid self);
    /// The lane to `node` (opened on first use), or null: use the agent.
    std::shared_ptr<Conn> lane_for(std::uint32_t node);
    Result<std::shared_ptr<Conn>> open_lane(std::uint32_t node);
    Status post_request(Conn& c, std::span<const std::string_view> parts);
    void forget_buffered(Conn& c, std::uint64_t id);
    Result<Reply> wait_reply(Conn& c, std::uint64_t id);
    /// Sends a receive request and waits for its successful reply (a named block checked).
    Result<Reply> recv_reply(const channels::ChannelDescriptor& d, channels::Timeout timeout);
    /// With mu_ held: waits until done(), reading c's socket when no other thread does.
    template <class Pred>
    Status wait_for(std::unique_lock<std::mutex>& lk, Conn& c, Pred done);
    /// Reads what c's socket has (for up to 100 ms) and files the replies; mu_ not held.
    Status read_some(Conn& c, std::vector<std::pair<std::uint64_t, Reply>>& got);
    /// One message read from c, as the reply it carries (or the error that breaks c).
    static Status file_reply(const Conn& c, wire::Received& m, std::vector<std::pair<std::uint64_t, Reply>>& got);
    /// What a reading error on c tells the caller.
    static Error conn_error(const Conn& c, Error e);

    msg::ClientWelcome welcome_;
    channels::Pool pool_;
    std::string socket_name_;
    Puid self_ = 0;
    bool lanes_enabled_ = true;
    std::shared_ptr<Conn> agent_;
    std::mutex mu_;  // guards what follows and every Conn's shared state
    std::condition_variable cv_;
    std::uint64_t next_id_ = 1;
    std::map<std::uint32_t, std::shared_ptr<Conn>> lanes_;  // by node; null: none (opening it failed)
    std::map<std::uint32_t, std::shared_ptr<std::mutex>> lane_opening_;  // by node: held while its lane opens
    std::map<std::uint64_t, Reply> replies_;
    std::map<std::string, Error> deferred_;  // by descriptor: a failed send not yet reported
};

/// A channel on any node, by descriptor. Does not own the channel (the
/// creator destroys it). Move-only; methods are safe from several threads.
class ChannelRef {
public:
    /// On this node: attaches the channel (Errc::invalid_argument for a stale
    /// or foreign descriptor). On another node: checks nothing yet; the first
    /// operation does.
    static Result<ChannelRef> open(std::shared_ptr<Gateway> gateway, const channels::ChannelDescriptor& d);

    [[nodiscard]] bool is_local() const { return local_.has_value(); }
    /// The attached channel when it is on this node (poll, zero-copy
    /// receive), else nullptr.
    [[nodiscard]] channels::Channel* local_channel() { return local_ ? &*local_ : nullptr; }
    [[nodiscard]] const channels::ChannelDescriptor& descriptor() const { return d_; }

    /// Sends a copy of `msg`; blocks up to `timeout` for room in the channel.
    /// Messages of one sender arrive in the order sent. On another node,
    /// kForever returns once the message is on its way (Gateway::send).
    Status send(std::span<const std::byte> msg, channels::Timeout timeout = channels::kForever);
    /// Receives the next message into `out`; blocks up to `timeout`.
    Status recv(std::vector<std::byte>& out, channels::Timeout timeout = channels::kForever);
    /// Receives the next message without copying it out of the pool (large
    /// messages; a small one is held inline): on this node the block it was
    /// sent in, on another node the block the local agent received it into.
    Result<channels::Message> recv_message(channels::Timeout timeout = channels::kForever);
    /// Messages in the channel now, on any node (Gateway::queued for another node's).
    Result<std::size_t> queued();

private:
    ChannelRef(std::shared_ptr<Gateway> gw, channels::ChannelDescriptor d, std::optional<channels::Channel> local)
        : gw_(std::move(gw)), d_(std::move(d)), local_(std::move(local)) {}
    std::shared_ptr<Gateway> gw_;
    channels::ChannelDescriptor d_;
    std::optional<channels::Channel> local_;
};

}  // namespace dragon::client
