// Shared-memory layouts of the pool and channel headers (internal, versioned by magic).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dragon::channels::detail {

inline constexpr std::uint64_t kPoolMagic = 0x4c4f4f504e475244ULL;     // "DRGNPOOL"
inline constexpr std::uint32_t kPoolVersion = 1;
inline constexpr std::uint64_t kChannelMagic = 0x4e414843474e5244ULL;  // "DRGNCHAN"
inline constexpr std::uint64_t kUnit = 256;          // smallest buddy block
inline constexpr unsigned kUnitShift = 8;
inline constexpr unsigned kMaxOrder = 40;            // 256 B << 40 = 256 TiB
inline constexpr std::uint64_t kNil = ~std::uint64_t{0};
inline constexpr std::size_t kCacheLine = 64;

// Order-map entries: one byte per unit. Only a block's first unit carries an
// entry; every other unit holds kNotStart. This map is the allocator's truth;
// the free lists are derived and rebuilt from it after a crash.
inline constexpr std::uint8_t kNotStart = 0xff;
inline constexpr std::uint8_t kFreeBit = 0x80;
inline constexpr std::uint8_t kOrderMask = 0x3f;

struct FreeNode {  // lives in the first bytes of a free block
    std::uint64_t next;
    std::uint64_t prev;
};

struct alignas(kCacheLine) PoolHeader {
    std::atomic<std::uint64_t> magic;  // stored last by create()
    std::uint32_t version;
    std::uint32_t node_id;
    std::uint64_t generation;
    std::uint64_t size;         // whole segment
    std::uint64_t map_offset;   // order map, `units` bytes
    std::uint64_t heap_offset;  // first unit
    std::uint64_t units;        // heap size in units
    char name[96];

    alignas(kCacheLine) pthread_mutex_t lock;  // robust, process-shared
    std::uint64_t free_head[kMaxOrder + 1];    // unit index or kNil
    std::uint64_t free_units;
    std::atomic<std::uint64_t> next_channel_id;

    alignas(kCacheLine) std::atomic<std::uint32_t> free_seq;  // futex: bumped on free when waited on
    std::atomic<std::uint32_t> alloc_waiters;
};

struct SlotHeader {
    std::uint64_t size;         // message bytes
    std::uint64_t pool_offset;  // 0: inline after this header; else a pool block
};

// Producers serialise on send_lock and publish by storing tail; consumers
// serialise on recv_lock and retire by storing head. Each side's commit is one
// store, so a process dying under either lock leaves a consistent ring.
struct ChannelHeader {
    std::atomic<std::uint64_t> magic;  // stored last by create(), cleared by destroy()
    std::uint64_t id;
    std::uint64_t pool_generation;
    std::uint32_t capacity;
    std::uint32_t block_size;
    std::uint32_t slot_size;
    std::uint32_t reserved;
    std::uint64_t slots_offset;      // from this header
    std::uint64_t max_queued_bytes;  // bound on queued large-message bytes, 0: none

    // Each side keeps, under its own lock, the last index it read from the
    // other side: a lower bound that spares a cache-line transfer per message.
    // Each side also keeps a private copy of its own index, so the hot path
    // never reads back the shared index line the other side keeps pulling.
    alignas(kCacheLine) pthread_mutex_t send_lock;
    std::uint64_t send_cached_head;
    std::uint64_t send_tail;  // == tail outside a send
    alignas(kCacheLine) std::atomic<std::uint64_t> tail;
    alignas(kCacheLine) pthread_mutex_t recv_lock;
    std::uint64_t recv_cached_tail;
    std::uint64_t recv_head;  // == head outside a recv
    alignas(kCacheLine) std::atomic<std::uint64_t> head;
    // Large-message bytes queued. Added before the tail commit, subtracted after
    // the head commit, so it never under-counts; a crash can only inflate it,
    // and an empty ring always admits a message, so inflation cannot wedge.
    alignas(kCacheLine) std::atomic<std::uint64_t> queued_bytes;
    // Futex words. Bit 0 is "someone sleeps here"; the rest a wake sequence.
    // A sleeper sets the bit; a notifier that finds it clears it and bumps the
    // sequence in one CAS, then wakes all. A sleeper that dies or times out
    // costs at most one spurious wake, so the flag heals itself.
    alignas(kCacheLine) std::atomic<std::uint32_t> data_seq;   // "something was sent"
    alignas(kCacheLine) std::atomic<std::uint32_t> space_seq;  // "something was received"
};

inline constexpr std::size_t kSlotHeader = sizeof(SlotHeader);

}  // namespace dragon::channels::detail
