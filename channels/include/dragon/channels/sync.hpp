// Process-shared counting semaphores with holder records, in a pool block.
#pragma once

#include <cstddef>
#include <climits>
#include <cstdint>
#include <memory>

#include "dragon/channels/pool.hpp"
#include "dragon/common/result.hpp"

namespace dragon::channels {

namespace detail {
class PoolMapping;
struct SyncHeader;
}  // namespace detail

/// A counting semaphore living in one pool block, followed by `data_size()`
/// bytes of zeroed shared memory (Value/Array storage). The building block of
/// the `dragon` multiprocessing context's Lock, Semaphore, Condition, Event,
/// Barrier, Value and Array (docs/multiprocessing.md).
///
/// State (count, maximum, holder records) is under a robust process-shared
/// mutex; waiters sleep on a futex word that release() bumps only when
/// someone sleeps. So an uncontended acquire+release is two mutex
/// lock/unlocks and no system call.
///
/// Holders: acquire() records (pid, start time) of the caller with its count
/// in a table of kMaxHolders entries; release() takes one count from the
/// caller's record, or when it holds none (a Lock released by another
/// process), from the oldest record. reap() gives the counts of holders that
/// no longer exist and did not call drop_mine() (at their normal exit) back
/// to the semaphore and wakes waiters; waiters call it
/// each time a wait slice of `kReapSlice` passes without a wake-up, so a
/// process killed while holding a Lock or Semaphore counts delays the others
/// by at most that slice. More than kMaxHolders distinct holders at once:
/// the extra ones are not recorded (their counts are not given back if they
/// die).
class SyncBlock {
public:
    static constexpr int kMaxHolders = 16;
    static constexpr std::int32_t kUnbounded = INT32_MAX;  // SEM_VALUE_MAX
    static constexpr Timeout kReapSlice = std::chrono::milliseconds(100);

    /// Allocates and initialises a block in `pool`: count `value` (>= 0),
    /// `maximum` (>= value; kUnbounded for a plain semaphore), then
    /// `data_bytes` zero bytes.
    static Result<SyncBlock> create(const Pool& pool, std::int32_t value, std::int32_t maximum,
                                    std::size_t data_bytes);
    /// The block at `offset` of `pool` made by create() with this id;
    /// invalid_argument / protocol when it is not (stale or foreign).
    static Result<SyncBlock> attach(const Pool& pool, std::uint64_t offset, std::uint64_t id);

    SyncBlock(const SyncBlock&) = default;  // another handle of the same block
    SyncBlock& operator=(const SyncBlock&) = default;
    SyncBlock(SyncBlock&&) noexcept = default;
    SyncBlock& operator=(SyncBlock&&) noexcept = default;

    /// Takes one count. Returns true when taken, false when `timeout` passed
    /// first (kTryOnce: not available now). Blocks up to `timeout`.
    Result<bool> acquire(Timeout timeout);
    /// Gives one count back; Errc::invalid_argument ("released too many
    /// times") when the count is at its maximum. Never blocks for long.
    Status release();
    /// Gives back the counts of recorded holders that have died; returns how
    /// many counts were given back.
    Result<int> reap();
    /// Forgets this process's holder record without giving its counts back:
    /// what a process does when it exits normally (counts it took are
    /// consumed, as a Semaphore used as a signal wants; a Lock it still holds
    /// stays locked, as the standard library's). Only a process that dies
    /// without this (killed, crashed, os._exit) has its counts given back.
    Status drop_mine();

    [[nodiscard]] std::int32_t value() const noexcept;
    [[nodiscard]] std::int32_t maximum() const noexcept;
    [[nodiscard]] std::byte* data() const noexcept;
    [[nodiscard]] std::size_t data_size() const noexcept;
    [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }
    [[nodiscard]] std::uint64_t id() const noexcept;
    [[nodiscard]] std::uint64_t pool_generation() const noexcept;
    [[nodiscard]] const std::string& pool_name() const noexcept;

private:
    SyncBlock(std::shared_ptr<detail::PoolMapping> pool, std::uint64_t offset) noexcept;
    [[nodiscard]] detail::SyncHeader* hdr() const noexcept;
    std::shared_ptr<detail::PoolMapping> pool_;
    std::uint64_t offset_ = 0;
};

/// This process's start time in clock ticks since boot (/proc/self/stat),
/// which with the pid names a process unambiguously. 0 if unknown.
std::uint64_t process_start_time(int pid) noexcept;

}  // namespace dragon::channels
