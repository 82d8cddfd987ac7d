// Channel: a bounded many-to-many message queue living in a shared-memory pool.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "dragon/channels/descriptor.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/result.hpp"

namespace dragon::channels {

namespace detail {
struct ChannelHeader;
class Deadline;
}
struct PollItem;

/// Shape of a channel, fixed at creation.
struct ChannelAttrs {
    /// Messages the channel holds before send() blocks.
    std::uint32_t capacity = 256;
    /// Messages up to this many bytes are copied inline into a ring slot; larger
    /// ones go to a separate pool block referenced from the slot.
    std::uint32_t block_size = 496;
    /// Bound on the bytes of large messages queued (0: none beyond the pool).
    /// A large send waits while the channel is non-empty and the message would
    /// exceed it. A few MiB keeps the pool blocks in flight cache-resident.
    std::uint64_t max_queued_bytes = 0;
};

/// A received message. Move-only. Large messages are not copied: data() points
/// into the pool block, which this object owns and frees on destruction.
class Message {
public:
    Message() = default;
    Message(Message&&) noexcept;
    Message& operator=(Message&&) noexcept;
    Message(const Message&) = delete;
    Message& operator=(const Message&) = delete;
    ~Message();

    [[nodiscard]] std::span<const std::byte> data() const noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Takes over the block at `offset` of `pool` holding `size` bytes (a
    /// block handed over by the agent): freed when the Message goes.
    static Message adopt(const Pool& pool, std::uint64_t offset, std::size_t size);
    /// A message held in process memory.
    static Message of(std::vector<std::byte> bytes);

private:
    friend class Channel;
    void release() noexcept;
    std::shared_ptr<detail::PoolMapping> pool_;
    std::uint64_t offset_ = 0;  // pool block, 0 when inline
    std::size_t size_ = 0;
    std::vector<std::byte> inline_;
};

/// A handle to a channel in a pool. Move-only; the destructor detaches only.
/// Many processes may send and receive concurrently; messages from one sender
/// are received in the order sent. All methods are safe to call from several
/// threads on one handle.
///
/// Blocking: send/recv first spin briefly (adaptive), then sleep on a futex in
/// the pool; a sender only makes a wake syscall when a receiver is asleep.
class Channel {
public:
    /// Allocates and initialises a channel in `pool` (blocking up to `timeout`
    /// for pool space). The caller is responsible for destroy() when done.
    static Result<Channel> create(const Pool& pool, const ChannelAttrs& attrs = {},
                                  Timeout timeout = kTryOnce);

    /// Attaches to the channel `d` names in `pool`. Rejects with
    /// Errc::invalid_argument a descriptor for another pool, a stale generation,
    /// an offset that is not a live channel, or a header that fails validation.
    static Result<Channel> attach(const Pool& pool, const ChannelDescriptor& d);

    /// Attaches the pool named in `d` (Pool::attach) and then the channel.
    static Result<Channel> attach(const ChannelDescriptor& d);

    Channel(Channel&&) noexcept;
    Channel& operator=(Channel&&) noexcept;
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;
    ~Channel();

    /// Frees the channel and any large messages still queued in it. The caller
    /// must know no other process still uses the channel; later attaches fail.
    Status destroy();

    [[nodiscard]] ChannelDescriptor descriptor() const;

    /// Sends a copy of `msg` (any size; 0 bytes is a valid message). Blocks up to
    /// `timeout` for ring space and, for large messages, for pool space.
    /// Errc::would_block / Errc::timeout when it could not; nothing is sent then.
    Status send(std::span<const std::byte> msg, Timeout timeout = kForever);

    /// Sends the `size` bytes already written at the start of `block`, a block
    /// of this channel's pool (Pool::allocate) that the caller owns. On
    /// success the channel owns it (a large message is linked, not copied; a
    /// small one is copied into its slot and the block freed). On failure the
    /// caller still owns it. Errc::invalid_argument if `block` is not an
    /// allocated block of at least `size` bytes. Blocks as send() does.
    Status send_block(std::uint64_t block, std::size_t size, Timeout timeout = kForever);

    /// Receives into `buffer`; returns the message size. Errc::too_large if the
    /// next message does not fit (it stays queued). Blocks up to `timeout`.
    Result<std::size_t> recv(std::span<std::byte> buffer, Timeout timeout = kForever);

    /// Receives into `out`, resized to the message size. Blocks up to `timeout`.
    Status recv(std::vector<std::byte>& out, Timeout timeout = kForever);

    /// Receives without copying large messages (see Message). Blocks up to `timeout`.
    Result<Message> recv_message(Timeout timeout = kForever);

    /// Non-blocking snapshots (may be stale as soon as they return).
    [[nodiscard]] bool readable() const noexcept;
    [[nodiscard]] bool writable() const noexcept;
    [[nodiscard]] std::size_t queued() const noexcept;
    [[nodiscard]] std::uint32_t capacity() const noexcept;
    [[nodiscard]] std::uint32_t block_size() const noexcept;

private:
    friend Result<std::size_t> poll(std::span<PollItem> items, Timeout timeout);
    Channel(std::shared_ptr<detail::PoolMapping> pool, std::uint64_t offset) noexcept;

    template <class Sink>
    Status recv_impl(Timeout timeout, Sink&& sink);
    // Puts one message into the ring: `size` bytes inline from `data`, or the
    // pool block `block` (non-zero) by reference. Nothing is freed here.
    Status enqueue(const std::byte* data, std::size_t size, std::uint64_t block, const detail::Deadline& dl);

    std::shared_ptr<detail::PoolMapping> pool_;
    std::uint64_t offset_ = 0;
    detail::ChannelHeader* h_ = nullptr;
    std::byte* slots_ = nullptr;
    std::unique_ptr<std::atomic<std::uint32_t>> spin_;  // adaptive spin budget (per handle)
    std::uint64_t id_ = 0;  // the channel's id when this handle attached
};

/// Poll events.
enum PollEvents : std::uint8_t { kReadable = 1, kWritable = 2 };

/// One channel to watch: `events` in, `revents` out.
struct PollItem {
    Channel* channel = nullptr;
    std::uint8_t events = kReadable;
    std::uint8_t revents = 0;
};

/// Waits until at least one item is ready; returns how many are (their revents
/// set). Errc::would_block (kTryOnce) or Errc::timeout if none became ready;
/// Errc::invalid_argument for more than 64 items or a null channel. Sleeps on
/// all the channels' futexes at once (futex_waitv), so it does not busy-loop.
/// "Writable" means there is a free slot; a large send may still wait for pool space.
Result<std::size_t> poll(std::span<PollItem> items, Timeout timeout = kForever);

}  // namespace dragon::channels
