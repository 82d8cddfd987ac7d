// PoolMapping: one process's mapping of a pool and the buddy allocator over it (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dragon/channels/pool.hpp"
#include "futex.hpp"
#include "layout.hpp"

namespace dragon::channels::detail {

class PoolMapping {
public:
    PoolMapping(std::byte* base, std::size_t size, std::string name) noexcept
        : base_(base), size_(size), name_(std::move(name)), hdr_(reinterpret_cast<PoolHeader*>(base)) {}
    PoolMapping(const PoolMapping&) = delete;
    PoolMapping& operator=(const PoolMapping&) = delete;
    ~PoolMapping();

    Result<std::uint64_t> allocate(std::size_t bytes, const Deadline& deadline);
    Status free(std::uint64_t offset);
    [[nodiscard]] Result<std::size_t> block_size(std::uint64_t offset) const;
    [[nodiscard]] PoolStats stats() const;

    [[nodiscard]] std::byte* at(std::uint64_t off) const noexcept { return base_ + off; }
    [[nodiscard]] PoolHeader* header() const noexcept { return hdr_; }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Lays out a fresh pool in [base, base+size) (create() only).
    Status format(std::uint32_t node_id, std::uint64_t generation);
    /// Checks a mapped segment is a complete pool of this size and name.
    Status validate() const;

private:
    [[nodiscard]] std::uint8_t* map() const noexcept { return reinterpret_cast<std::uint8_t*>(base_ + hdr_->map_offset); }
    [[nodiscard]] FreeNode* node(std::uint64_t unit) const noexcept {
        return reinterpret_cast<FreeNode*>(base_ + hdr_->heap_offset + (unit << kUnitShift));
    }
    void push(std::uint64_t u, unsigned k) noexcept;
    void remove(std::uint64_t u, unsigned k) noexcept;
    void insert_free(std::uint64_t u, unsigned k) noexcept;  // marks free, merges buddies, pushes
    bool try_allocate(unsigned k, std::uint64_t& unit) noexcept;
    Status rebuild() noexcept;
    [[nodiscard]] unsigned max_order() const noexcept;

    std::byte* base_;
    std::size_t size_;
    std::string name_;
    PoolHeader* hdr_;
};

}  // namespace dragon::channels::detail
