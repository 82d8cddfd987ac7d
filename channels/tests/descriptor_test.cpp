// Descriptor tests: round trips, and corrupt, foreign or stale descriptors rejected without crashing.
#include <random>

#include "test_util.hpp"

namespace dragon::channels {
namespace {

using test::ScopedPool;

TEST(Descriptor, RoundTripsThroughBytesAndHex) {
    ScopedPool sp(2 << 20, 5);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp);
    ASSERT_TRUE(ch);
    auto d = ch->descriptor();
    EXPECT_EQ(d.node_id, 5U);
    EXPECT_EQ(d.pool_name, sp.name());
    auto rec = d.encode();
    auto back = ChannelDescriptor::decode(rec);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, d);
    auto hex = ChannelDescriptor::from_hex(d.to_hex());
    ASSERT_TRUE(hex);
    EXPECT_EQ(*hex, d);
    ASSERT_TRUE(ch->destroy());
}

TEST(Descriptor, EverySingleByteCorruptionIsRejected) {
    ChannelDescriptor d{.node_id = 1, .pool_name = "/dragon-ab-n1-pool", .pool_generation = 99,
                        .channel_offset = 4096, .channel_id = 3};
    auto rec = d.encode();
    ASSERT_TRUE(ChannelDescriptor::decode(rec));
    for (std::size_t i = 0; i < rec.size(); ++i) {
        for (unsigned bit = 0; bit < 8; ++bit) {
            auto bad = rec;
            bad[i] ^= static_cast<std::byte>(1U << bit);
            auto r = ChannelDescriptor::decode(bad);
            ASSERT_FALSE(r) << "byte " << i << " bit " << bit;
            EXPECT_EQ(r.error().code(), Errc::protocol);
        }
    }
    EXPECT_FALSE(ChannelDescriptor::decode(std::span(rec).first(127)));
    EXPECT_FALSE(ChannelDescriptor::decode({}));
    EXPECT_FALSE(ChannelDescriptor::from_hex("zz"));
    EXPECT_FALSE(ChannelDescriptor::from_hex(std::string(256, 'g')));
    std::mt19937_64 rng(7);
    for (int i = 0; i < 10000; ++i) {
        std::array<std::byte, ChannelDescriptor::kEncodedSize> junk;
        for (auto& b : junk) b = static_cast<std::byte>(rng());
        EXPECT_FALSE(ChannelDescriptor::decode(junk));
    }
}

TEST(Descriptor, ForeignAndStaleDescriptorsAreRejectedByAttach) {
    ScopedPool sp(2 << 20);
    ScopedPool other(2 << 20);
    ASSERT_TRUE(sp.ok() && other.ok());
    auto ch = Channel::create(*sp);
    ASSERT_TRUE(ch);
    const auto good = ch->descriptor();
    ASSERT_TRUE(Channel::attach(*sp, good));

    auto expect_rejected = [&](const ChannelDescriptor& d, Pool& pool, const char* what) {
        auto r = Channel::attach(pool, d);
        ASSERT_FALSE(r) << what;
        EXPECT_EQ(r.error().code(), Errc::invalid_argument) << what << ": " << r.error().message();
    };
    auto d = good;
    d.pool_generation ^= 1;
    expect_rejected(d, *sp, "generation");
    d = good;
    d.channel_id += 1;
    expect_rejected(d, *sp, "channel id");
    for (std::uint64_t off : {good.channel_offset + 256, good.channel_offset + 8, std::uint64_t{0}, std::uint64_t{64},
                              sp->size() - 1, sp->size() + 4096, ~std::uint64_t{0}}) {
        d = good;
        d.channel_offset = off;
        expect_rejected(d, *sp, "offset");
    }
    expect_rejected(good, *other, "other pool");
    d = good;
    d.pool_name = other.name();
    d.pool_generation = other->generation();
    expect_rejected(d, *other, "offset in a pool with no channel");

    // An allocated block that is not a channel.
    auto blk = sp->allocate(4096);
    ASSERT_TRUE(blk);
    std::memset(sp->at(*blk), 0x77, 4096);
    d = good;
    d.channel_offset = *blk;
    expect_rejected(d, *sp, "non-channel block");

    // A destroyed channel, and a channel re-created at the same offset.
    ASSERT_TRUE(ch->destroy());
    expect_rejected(good, *sp, "destroyed");
    auto again = Channel::create(*sp);
    ASSERT_TRUE(again);
    if (again->descriptor().channel_offset == good.channel_offset) expect_rejected(good, *sp, "re-created");
    ASSERT_TRUE(again->destroy());

    // Attach by descriptor alone to a pool that does not exist.
    d = good;
    d.pool_name = *make_pool_name("dead", 0);
    auto r = Channel::attach(d);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::not_found);
}

}  // namespace
}  // namespace dragon::channels
