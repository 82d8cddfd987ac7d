// Run ids, puid allocation and resource names.
#include <gtest/gtest.h>

#include <set>

#include "dragon/common/ids.hpp"
#include "dragon/common/names.hpp"

namespace dragon {
namespace {

TEST(RunId, GeneratedIdsAreHexAndDistinct) {
    std::set<std::string> seen;
    for (int i = 0; i < 100; ++i) {
        auto id = RunId::generate();
        ASSERT_TRUE(id);
        EXPECT_EQ(id->str().size(), 16U);
        EXPECT_TRUE(RunId::parse(id->str()));
        seen.insert(id->str());
    }
    EXPECT_EQ(seen.size(), 100U);
}

TEST(RunId, ParseRefusesAnythingButLowerHex) {
    EXPECT_TRUE(RunId::parse("0123abcdef"));
    EXPECT_FALSE(RunId::parse(""));
    EXPECT_FALSE(RunId::parse("ABC"));
    EXPECT_FALSE(RunId::parse("12-34"));
    EXPECT_FALSE(RunId::parse("../etc"));
    EXPECT_FALSE(RunId::parse(std::string(33, 'a')));
}

TEST(IdAllocator, IncreasingNeverReusedAndBounded) {
    IdAllocator a(10, 14);
    EXPECT_EQ(*a.next(), 10U);
    EXPECT_EQ(*a.next_block(3), 11U);
    EXPECT_EQ(*a.next(), 14U);
    auto r = a.next();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::no_space);
    EXPECT_EQ(a.remaining(), 0U);
}

TEST(IdAllocator, BlockIsAllOrNothing) {
    IdAllocator a(1, 4);
    EXPECT_FALSE(a.next_block(5));
    EXPECT_FALSE(a.next_block(0));
    EXPECT_EQ(a.remaining(), 4U);
    EXPECT_EQ(*a.next_block(4), 1U);
}

TEST(IdAllocator, NodeRangesAreDisjointAndTellTheNode) {
    auto a0 = puid_allocator(0);
    auto a7 = puid_allocator(7);
    auto p0 = *a0.next();
    auto p7 = *a7.next();
    EXPECT_EQ(p0, 1U);  // 0 is never a puid
    EXPECT_NE(p0, p7);
    EXPECT_EQ(puid_node(p0), 0U);
    EXPECT_EQ(puid_node(p7), 7U);
    EXPECT_EQ(a0.remaining(), 0xFFFF'FFFEULL);
}

TEST(Names, ShmNamesRoundTrip) {
    auto run = *RunId::parse("00ff");
    auto n = names::shm_name(run, 12, "pool");
    EXPECT_EQ(n, "dragon-00ff-n12-pool");
    auto p = names::parse_shm_name(n);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->run_id, "00ff");
    EXPECT_EQ(p->node, 12U);
    EXPECT_EQ(p->what, "pool");
}

TEST(Names, ForeignNamesAreNotOurs) {
    for (const char* s : {"dragon-", "dragon-xyz-n0-pool", "dragon-00-n-pool", "dragon-00-n0-", "dragon-00-n0",
                          "dragon-00-nx-pool", "dragon-00-n01-pool", "dragon-00-n4294967296-pool", "sem.dragon-00-n0-pool", "dragon-00-n0-Pool", "dragon-00-p0-pool"}) {
        EXPECT_FALSE(names::parse_shm_name(s)) << s;
    }
}

}  // namespace
}  // namespace dragon
