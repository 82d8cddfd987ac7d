// Shared-memory pool: a POSIX shm segment with a buddy allocator, shared by processes by offset.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon::channels {

/// Timeouts for every blocking call in this component. Zero means "try once"
/// (Errc::would_block if nothing can be done now), kForever means no deadline;
/// anything else is a relative timeout after which Errc::timeout is returned.
using Timeout = std::chrono::nanoseconds;
inline constexpr Timeout kTryOnce{0};
inline constexpr Timeout kForever = Timeout::max();

/// The parts of a pool name `/dragon-<runid>-n<nodeid>-pool[.<tag>]`.
struct PoolNameParts {
    std::string run_id;  // 1-32 chars of [0-9a-f]
    std::uint32_t node_id = 0;
};

/// Builds `/dragon-<runid>-n<nodeid>-pool`; Errc::invalid_argument if run_id is
/// not 1-32 chars of [0-9a-f].
Result<std::string> make_pool_name(std::string_view run_id, std::uint32_t node_id);
/// Builds `/dragon-<runid>-n<nodeid>-pool.<tag>`: a pool of its own beside the
/// node's (a distributed dictionary's mirror), removed with the node's segments.
/// `tag` is 1 or more of [a-z0-9_.].
Result<std::string> make_pool_name(std::string_view run_id, std::uint32_t node_id, std::string_view tag);

/// Parses and validates a pool name; Errc::invalid_argument on any deviation.
Result<PoolNameParts> parse_pool_name(std::string_view name);

/// A snapshot of a pool's allocator (taken under the pool lock).
struct PoolStats {
    std::size_t heap_bytes = 0;     // bytes managed by the allocator
    std::size_t free_bytes = 0;     // sum of free blocks
    std::size_t largest_free = 0;   // largest single allocation that would succeed now
};

namespace detail {
class PoolMapping;
}

/// A mapping of a shared-memory pool. Move-only; the destructor unmaps only
/// (the segment stays until the creator calls unlink). Channels created in or
/// attached to the pool keep the mapping alive on their own.
///
/// Memory is referred to by offsets from the start of the segment, because
/// every process maps it at a different address. The allocator is a buddy
/// allocator (256-byte minimum block, power-of-two sizes) under a robust
/// process-shared mutex; see docs/channels.md.
class Pool {
public:
    /// Creates the segment `name` (see make_pool_name) of `size` bytes,
    /// exclusively (Errc::already_exists if it exists), reserves its pages with
    /// posix_fallocate and initialises the allocator. Checks /dev/shm's free
    /// space first: Errc::no_space with a message naming /dev/shm when it is too
    /// small, instead of a SIGBUS later. On failure nothing is left in /dev/shm.
    /// Does not block beyond the page reservation.
    static Result<Pool> create(std::string_view name, std::size_t size);

    /// As create(), but only checks that /dev/shm has room and does not
    /// reserve the pages: the caller reserves them with reserve(), in steps
    /// off its critical path (a 256 MiB reservation takes ~140 ms).
    static Result<Pool> create_unreserved(std::string_view name, std::size_t size);

    /// Makes the pages of [offset, offset + len) exist now, so that touching
    /// them later can never raise SIGBUS; Errc::no_space if /dev/shm cannot
    /// hold them. Blocks for the time it takes to zero-fill them.
    Status reserve(std::size_t offset, std::size_t len) const;

    /// Maps an existing pool made by create(). Errc::not_found if absent,
    /// Errc::protocol if the segment is not an initialised Dragon pool.
    static Result<Pool> attach(std::string_view name);

    /// Removes the segment name from /dev/shm (mappings stay valid until
    /// unmapped). Errc::not_found if it does not exist. Called by the creator.
    static Status unlink(std::string_view name);

    Pool(Pool&&) noexcept;
    Pool& operator=(Pool&&) noexcept;
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    ~Pool();

    /// Allocates a block of at least `bytes` (rounded up to a power of two, at
    /// least 256) and returns its offset. When the pool has no block large
    /// enough, waits (futex, no spinning) up to `timeout` for frees:
    /// Errc::would_block (kTryOnce) or Errc::timeout. Errc::too_large if the
    /// request can never fit this pool. The caller owns the block until free().
    Result<std::uint64_t> allocate(std::size_t bytes, Timeout timeout = kTryOnce);

    /// Returns a block to the pool and wakes allocators waiting for space.
    /// Errc::invalid_argument if `offset` is not the start of an allocated block
    /// (double frees and stray offsets are caught, not corrupting the pool).
    Status free(std::uint64_t offset);

    /// The usable size of the allocated block at `offset`, or invalid_argument.
    [[nodiscard]] Result<std::size_t> block_size(std::uint64_t offset) const;

    /// The address of `offset` in this process. No check: use offsets returned
    /// by allocate() or validated by block_size().
    [[nodiscard]] std::byte* at(std::uint64_t offset) const noexcept;

    [[nodiscard]] PoolStats stats() const;
    [[nodiscard]] const std::string& name() const noexcept;
    [[nodiscard]] std::size_t size() const noexcept;
    /// Random 64-bit value chosen at create(): tells two incarnations of a name apart.
    [[nodiscard]] std::uint64_t generation() const noexcept;
    [[nodiscard]] std::uint32_t node_id() const noexcept;

    /// For Channel: the shared mapping. Not for general use.
    [[nodiscard]] const std::shared_ptr<detail::PoolMapping>& mapping() const noexcept { return m_; }

private:
    static Result<Pool> create_impl(std::string_view name, std::size_t size, bool reserve_now);
    explicit Pool(std::shared_ptr<detail::PoolMapping> m) noexcept;
    std::shared_ptr<detail::PoolMapping> m_;
};

}  // namespace dragon::channels
