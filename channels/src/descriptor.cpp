// ChannelDescriptor wire encoding: fixed 128-byte little-endian record with CRC-32.
#include "dragon/channels/descriptor.hpp"

#include <cstring>

#include "dragon/channels/pool.hpp"

namespace dragon::channels {

namespace {

constexpr std::uint32_t kMagic = 0x48435244;  // "DRCH" little-endian
constexpr std::uint16_t kVersion = 1;
// Field offsets in the record.
constexpr std::size_t kOffMagic = 0, kOffVersion = 4, kOffNameLen = 6, kOffNode = 8, kOffFlags = 12,
                      kOffGen = 16, kOffChanOff = 24, kOffChanId = 32, kOffName = 40, kOffReserved = 120,
                      kOffCrc = 124;
static_assert(kOffName + ChannelDescriptor::kMaxPoolName == kOffReserved);

std::uint32_t crc32(const std::byte* p, std::size_t n) {
    std::uint32_t c = 0xffffffffU;
    for (std::size_t i = 0; i < n; ++i) {
        c ^= static_cast<std::uint32_t>(p[i]);
        for (int b = 0; b < 8; ++b) c = (c >> 1) ^ (0xedb88320U & (0U - (c & 1U)));
    }
    return ~c;
}

template <class T>
void put(std::byte* out, std::size_t off, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) out[off + i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

template <class T>
T get(const std::byte* in, std::size_t off) {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | (static_cast<T>(in[off + i]) << (8 * i)));
    return v;
}

}  // namespace

std::array<std::byte, ChannelDescriptor::kEncodedSize> ChannelDescriptor::encode() const {
    std::array<std::byte, kEncodedSize> out{};
    std::size_t len = pool_name.size() < kMaxPoolName ? pool_name.size() : kMaxPoolName;
    put<std::uint32_t>(out.data(), kOffMagic, kMagic);
    put<std::uint16_t>(out.data(), kOffVersion, kVersion);
    put<std::uint16_t>(out.data(), kOffNameLen, static_cast<std::uint16_t>(len));
    put<std::uint32_t>(out.data(), kOffNode, node_id);
    put<std::uint32_t>(out.data(), kOffFlags, 0);
    put<std::uint64_t>(out.data(), kOffGen, pool_generation);
    put<std::uint64_t>(out.data(), kOffChanOff, channel_offset);
    put<std::uint64_t>(out.data(), kOffChanId, channel_id);
    std::memcpy(out.data() + kOffName, pool_name.data(), len);
    put<std::uint32_t>(out.data(), kOffCrc, crc32(out.data(), kOffCrc));
    return out;
}

Result<ChannelDescriptor> ChannelDescriptor::decode(std::span<const std::byte> bytes) {
    if (bytes.size() != kEncodedSize)
        return make_error(Errc::protocol, "channel descriptor: {} bytes, expected {}", bytes.size(), kEncodedSize);
    const std::byte* in = bytes.data();
    if (get<std::uint32_t>(in, kOffMagic) != kMagic)
        return make_error(Errc::protocol, "channel descriptor: bad magic (not a Dragon channel descriptor)");
    if (get<std::uint16_t>(in, kOffVersion) != kVersion)
        return make_error(Errc::protocol, "channel descriptor: unsupported version {}", get<std::uint16_t>(in, kOffVersion));
    if (get<std::uint32_t>(in, kOffCrc) != crc32(in, kOffCrc))
        return make_error(Errc::protocol, "channel descriptor: checksum mismatch (corrupted)");
    if (get<std::uint32_t>(in, kOffFlags) != 0 || get<std::uint32_t>(in, kOffReserved) != 0)
        return make_error(Errc::protocol, "channel descriptor: reserved fields set");
    std::size_t len = get<std::uint16_t>(in, kOffNameLen);
    if (len == 0 || len > kMaxPoolName) return make_error(Errc::protocol, "channel descriptor: bad pool name length");
    for (std::size_t i = len; i < kMaxPoolName; ++i)
        if (in[kOffName + i] != std::byte{0}) return make_error(Errc::protocol, "channel descriptor: name padding set");

    ChannelDescriptor d;
    d.node_id = get<std::uint32_t>(in, kOffNode);
    d.pool_name.assign(reinterpret_cast<const char*>(in + kOffName), len);
    d.pool_generation = get<std::uint64_t>(in, kOffGen);
    d.channel_offset = get<std::uint64_t>(in, kOffChanOff);
    d.channel_id = get<std::uint64_t>(in, kOffChanId);
    auto parts = parse_pool_name(d.pool_name);
    if (!parts) return Error(Errc::protocol, fmt::format("channel descriptor: {}", parts.error().message()));
    if (parts->node_id != d.node_id)
        return make_error(Errc::protocol, "channel descriptor: node {} does not match pool name {}", d.node_id,
                          d.pool_name);
    if (d.pool_generation == 0 || d.channel_id == 0)
        return make_error(Errc::protocol, "channel descriptor: zero generation or channel id");
    return d;
}

std::string ChannelDescriptor::to_hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    auto rec = encode();
    std::string s;
    s.reserve(rec.size() * 2);
    for (std::byte b : rec) {
        auto v = static_cast<unsigned>(b);
        s.push_back(kDigits[v >> 4]);
        s.push_back(kDigits[v & 15]);
    }
    return s;
}

Result<ChannelDescriptor> ChannelDescriptor::from_hex(std::string_view hex) {
    if (hex.size() != kEncodedSize * 2)
        return make_error(Errc::protocol, "channel descriptor: {} hex chars, expected {}", hex.size(), kEncodedSize * 2);
    std::array<std::byte, kEncodedSize> rec{};
    auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < kEncodedSize; ++i) {
        int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return make_error(Errc::protocol, "channel descriptor: not hex");
        rec[i] = static_cast<std::byte>((hi << 4) | lo);
    }
    return decode(rec);
}

}  // namespace dragon::channels
