// Identifiers: run ids (name a whole run: shared memory, sockets) and puids
// (Dragon's own process ids, never reused within a run).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon {

/// A run id: 16 lowercase hex digits from the kernel's random source.
class RunId {
public:
    static Result<RunId> generate();
    /// Accepts 1 to 32 characters of [0-9a-f]; anything else is an error.
    static Result<RunId> parse(std::string_view s);
    [[nodiscard]] const std::string& str() const { return id_; }
    friend bool operator==(const RunId&, const RunId&) = default;

private:
    explicit RunId(std::string id) : id_(std::move(id)) {}
    std::string id_;
};

using Puid = std::uint64_t;

/// The puid range of node `node_id`: node k allocates from k * 2^32 + 1, so
/// agents allocate without asking anyone and a puid tells its birth node.
inline constexpr Puid puid_base(std::uint32_t node_id) { return (Puid{node_id} << 32) + 1; }
inline constexpr std::uint32_t puid_node(Puid p) { return static_cast<std::uint32_t>(p >> 32); }

/// Hands out ids from [first, last] in increasing order, never twice.
class IdAllocator {
public:
    IdAllocator(std::uint64_t first, std::uint64_t last) : next_(first), last_(last) {}
    /// The next id; Errc::no_space once the range is used up.
    Result<std::uint64_t> next();
    /// `n` consecutive ids, the first returned; all or nothing.
    Result<std::uint64_t> next_block(std::uint64_t n);
    [[nodiscard]] std::uint64_t remaining() const { return next_ > last_ ? 0 : last_ - next_ + 1; }

private:
    std::uint64_t next_;
    std::uint64_t last_;
};

/// The allocator for puids born on `node_id`.
inline IdAllocator puid_allocator(std::uint32_t node_id) {
    return {puid_base(node_id), puid_base(node_id) + 0xFFFF'FFFEULL};
}

}  // namespace dragon
