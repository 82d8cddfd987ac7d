// A read mirror of a key-value table in a shared-memory pool: one writer
// process keeps it, readers in other processes of the same host look keys
// up with no lock and no message (docs/ddict.md, "The read mirror").
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "dragon/channels/pool.hpp"
#include "dragon/common/result.hpp"

namespace dragon::channels {

/// What a reader learned from the mirror.
enum class MirrorLookup : std::uint8_t {
    hit,      // the key's value at the asked checkpoint (copied out)
    absent,   // the key has no value at that checkpoint (the mirror is complete)
    unknown,  // the mirror cannot say (another checkpoint, a key it does not hold, a rebuild): ask the writer
};

/// An open-addressing table of (key, value) byte strings whose bucket array
/// and entries are blocks of a Pool. The writer (one thread of one process)
/// changes it; readers copy an entry out and check the bucket's sequence
/// number before and after (a seqlock), so a reader never returns a value
/// that was being replaced or freed under it. The table mirrors one
/// checkpoint of the writer's data; `complete` says whether every key of
/// that checkpoint is in it (then a miss is an answer; else a miss is
/// `unknown`). The writer's thread makes it and must also destroy it (or let
/// the object go): that thread holds a robust lock in it meanwhile.
class KvMirror {
public:
    /// Entries larger than this (key + value) are not mirrored.
    static constexpr std::size_t kMaxEntry = 1U << 20;

    /// Makes an empty table of `buckets` slots (rounded up to a power of two,
    /// at least 16) in `pool`; it mirrors nothing (checkpoint -1) until reset().
    static Result<KvMirror> create(Pool pool, std::uint32_t buckets);
    /// Opens the table at `offset` (another process's create()); checks its header.
    static Result<KvMirror> attach(Pool pool, std::uint64_t offset);

    KvMirror(KvMirror&&) noexcept;
    KvMirror& operator=(KvMirror&&) noexcept;
    KvMirror(const KvMirror&) = delete;
    KvMirror& operator=(const KvMirror&) = delete;
    ~KvMirror();

    [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }
    [[nodiscard]] const Pool& pool() const noexcept { return pool_; }

    // ---- the writer -----------------------------------------------------------------
    /// Sets key's value. When it cannot be mirrored (too large, the pool or
    /// the table full) the key is taken out, the mirror is marked incomplete
    /// and Errc::no_space is returned: readers then ask the writer.
    Status put(std::span<const std::byte> key, std::span<const std::byte> value);
    /// Takes key out (a miss afterwards is an answer only if the mirror is complete).
    void remove(std::span<const std::byte> key);
    /// Empties the table (freeing every entry) and makes it mirror `checkpoint`
    /// (-1: nothing), complete or not. Readers in the middle of a lookup get `unknown`.
    void reset(std::int64_t checkpoint, bool complete);
    /// Marks the mirror incomplete (a key it does not hold exists) or complete again.
    void set_complete(bool complete) noexcept;
    /// Frees the bucket array and every entry (the writer's end; readers must be gone).
    void destroy();

    // ---- readers --------------------------------------------------------------------
    /// key's value at `checkpoint` into `out`.
    [[nodiscard]] MirrorLookup lookup(std::span<const std::byte> key, std::int64_t checkpoint, std::string& out) const;

    /// Whether the thread that created the table lives (a dead writer's
    /// mirror answers `unknown`: its clients then learn from the writer's
    /// absence, as they would without a mirror).
    [[nodiscard]] bool writer_alive() const noexcept;

    /// Entries held (not counting removed ones).
    [[nodiscard]] std::uint32_t size() const noexcept;

private:
    struct Header;
    KvMirror(Pool pool, std::uint64_t offset) noexcept;
    Header* hdr() const noexcept;
    void free_entry(std::uint64_t e);
    void let_go() noexcept;

    Pool pool_;
    std::uint64_t offset_ = 0;
    bool writer_ = false;  // made by this object: its thread holds the liveness lock
};

/// The hash the mirror uses (FNV-1a, 64 bits): the same in every process.
std::uint64_t mirror_hash(std::span<const std::byte> key) noexcept;

}  // namespace dragon::channels
