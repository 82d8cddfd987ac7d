// Process-shared counting semaphores with holder records, in a pool block.
#pragma once

#include <cstddef>
#include <atomic>
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
/// Fast path: the count is one atomic word of the block. An uncontended
/// acquire or release is one compare-and-swap on it (plus, for a counting
/// semaphore, one atomic add on the caller's holder slot): no mutex, no
/// system call. Waiters sleep on a futex word that release() bumps only when
/// someone sleeps.
///
/// Two kinds of block, by `maximum`:
/// - binary (maximum 1: Lock, RLock, BoundedSemaphore(1)): the word is 0 when
///   free, else the pid of the process that took it (kUnowned when nobody
///   recorded holds it: made at 0, or its taker exited normally). Taking and
///   recording the holder are the same CAS, so there is no instant at which
///   a killed taker holds the lock unrecorded.
/// - counting (any other maximum): the word is the count; each process that
///   takes counts claims a holder slot (pid, start time, count) once, under
///   the block's robust mutex, and from then on adds to and takes from its
///   slot's count with plain atomics. A release by a process that holds no
///   count (a signal, or a count handed over) takes one off another slot, so
///   slots track what is actually held.
///
/// Owner death: reap() gives back what dead processes (pid gone or reused,
/// by its start time) held: a binary word naming one is freed, a slot's
/// counts are added back (up to the maximum); waiters call it each time a
/// wait slice of `kReapSlice` passes without a wake-up, so a process killed
/// while holding a Lock or Semaphore counts delays the others by at most
/// that slice. drop_mine() (a normal exit) forgets the caller's records
/// without giving anything back. Limits: a counting block has kMaxHolders
/// slots; processes beyond them take and give counts unrecorded (theirs are
/// not given back if they die). A process killed between the count CAS and
/// its slot update (two adjacent atomics) loses that one count rather than
/// giving back one it did not hold.
class SyncBlock {
public:
    static constexpr int kMaxHolders = 16;
    /// A binary block's word when taken by nobody recorded.
    static constexpr std::int32_t kUnowned = -1;
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
    /// acquire(kTryOnce) without a deadline or an error path: the fast path.
    bool try_acquire() noexcept;
    /// Gives one count back; Errc::invalid_argument ("released too many
    /// times") when the count is at its maximum. Never blocks for long.
    Status release();
    /// Event use (a counting block nobody acquires): sets the count to `v`
    /// (0..maximum) and, when v > 0, wakes every waiter of wait_positive().
    Status store(std::int32_t v);
    /// Event use: waits until the count is above 0, taking nothing. True, or
    /// false when `timeout` passed first.
    Result<bool> wait_positive(Timeout timeout);
    /// Epoch use (a counting block nobody acquires, a Barrier's notify_all):
    /// adds 1 to the count (from the maximum back to 1) and wakes every
    /// waiter of wait_change(). Returns the new count.
    Result<std::int32_t> bump();
    /// Epoch use: waits until the count is no longer `seen`. True, or false
    /// when `timeout` passed first.
    Result<bool> wait_change(std::int32_t seen, Timeout timeout);
    /// Gives back the counts of recorded holders that have died; returns how
    /// many counts were given back.
    Result<int> reap();
    /// Forgets this process's holder record without giving its counts back:
    /// what a process does when it exits normally (counts it took are
    /// consumed, as a Semaphore used as a signal wants; a Lock it still holds
    /// stays locked, as the standard library's). Only a process that dies
    /// without this (killed, crashed, os._exit) has its counts given back.
    Status drop_mine();

    /// The count (a binary block: 1 when free, 0 when taken).
    [[nodiscard]] std::int32_t value() const noexcept;
    /// What this process holds: a binary block, 1 when its word names this
    /// process; a counting block, its slot's count (0 without a slot). What
    /// a home agent gives back for another host's process that went is
    /// capped by it (docs/multiprocessing.md, "Across hosts").
    [[nodiscard]] std::int32_t held_by_me() const noexcept;
    /// Whether this is a binary block (maximum 1, owner in the word).
    [[nodiscard]] bool binary() const noexcept;
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
    /// This process's holder slot of a counting block (claimed on first use,
    /// cached per handle and process), or -1 when all are taken.
    int my_slot() noexcept;
    std::shared_ptr<detail::PoolMapping> pool_;
    std::uint64_t offset_ = 0;
    /// my_slot()'s answer for one process (a forked child claims its own).
    /// Atomics: threads of a process share a handle, and a waiter runs
    /// without the GIL. Written slot then pid, read pid then slot.
    struct SlotCache {
        std::atomic<int> slot{-1};
        std::atomic<int> pid{0};
        SlotCache() = default;
        SlotCache(const SlotCache& o) noexcept
            : slot(o.slot.load(std::memory_order_relaxed)), pid(o.pid.load(std::memory_order_relaxed)) {}
        SlotCache& operator=(const SlotCache& o) noexcept {
            slot.store(o.slot.load(std::memory_order_relaxed), std::memory_order_relaxed);
            pid.store(o.pid.load(std::memory_order_relaxed), std::memory_order_relaxed);
            return *this;
        }
        /// The cached slot when cached by `self_pid`, else -2.
        [[nodiscard]] int get(int self_pid) const noexcept {
            return pid.load(std::memory_order_acquire) == self_pid ? slot.load(std::memory_order_relaxed) : -2;
        }
        void set(int s, int self_pid) noexcept {
            slot.store(s, std::memory_order_relaxed);
            pid.store(self_pid, std::memory_order_release);
        }
    };
    SlotCache cache_;
};

/// This process's start time in clock ticks since boot (/proc/self/stat),
/// which with the pid names a process unambiguously. 0 if unknown.
std::uint64_t process_start_time(int pid) noexcept;

}  // namespace dragon::channels
