// Channel descriptor: the serialisable address of a channel (node, pool, offset, generation).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon::channels {

/// Everything another process (or, via the transport, another node) needs to
/// attach to a channel. The wire format is a fixed 128-byte little-endian
/// record with a magic, a version and a CRC-32 (see docs/channels.md).
struct ChannelDescriptor {
    static constexpr std::size_t kEncodedSize = 128;
    static constexpr std::size_t kMaxPoolName = 80;

    std::uint32_t node_id = 0;            // node owning the pool (also in the pool name)
    std::string pool_name;                // `/dragon-<runid>-n<nodeid>-pool`
    std::uint64_t pool_generation = 0;    // Pool::generation() of that pool incarnation
    std::uint64_t channel_offset = 0;     // offset of the channel header in the pool
    std::uint64_t channel_id = 0;         // unique per pool, checked against the header

    /// Encodes to the fixed wire record. Never fails for a descriptor that came
    /// from Channel::descriptor() or decode().
    [[nodiscard]] std::array<std::byte, kEncodedSize> encode() const;

    /// Decodes untrusted bytes: Errc::protocol on wrong length, magic, version,
    /// checksum, reserved bits or an invalid pool name; never reads out of bounds.
    static Result<ChannelDescriptor> decode(std::span<const std::byte> bytes);

    /// Hex text of encode() (256 chars), e.g. for an environment variable.
    [[nodiscard]] std::string to_hex() const;
    /// Inverse of to_hex(); Errc::protocol on bad hex or a bad record.
    static Result<ChannelDescriptor> from_hex(std::string_view hex);

    friend bool operator==(const ChannelDescriptor&, const ChannelDescriptor&) = default;
};

}  // namespace dragon::channels
