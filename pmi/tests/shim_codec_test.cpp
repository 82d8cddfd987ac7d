// Unit tests of the PMI shim's value helpers: hex, process mapping, ints (its wire codec is in wire_test.cpp).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "codec.hpp"

namespace s = dragon::pmi::shim;

TEST(ShimHex, RoundTripsAllByteValues) {
    std::string bytes;
    for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
    std::string hex = s::hex_encode(bytes.data(), bytes.size());
    EXPECT_EQ(hex.size(), 512u);
    EXPECT_EQ(hex.substr(0, 6), "000102");
    EXPECT_EQ(hex.substr(hex.size() - 2), "ff");
    std::string back(bytes.size(), '\0');
    ASSERT_TRUE(s::hex_decode(hex, back.data()));
    EXPECT_EQ(back, bytes);
}

TEST(ShimHex, AcceptsUpperCaseAndRejectsJunk) {
    unsigned char out[2] = {};
    EXPECT_TRUE(s::hex_decode("ABcd", out));
    EXPECT_EQ(out[0], 0xab);
    EXPECT_EQ(out[1], 0xcd);
    EXPECT_FALSE(s::hex_decode("abc", out));   // odd length
    EXPECT_FALSE(s::hex_decode("zz", out));    // not hex
    EXPECT_TRUE(s::hex_decode("", out));
}

TEST(ShimMapping, BlockLayout) {
    auto m = s::parse_process_mapping("(vector,(0,4,2))", 8);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
}

TEST(ShimMapping, CyclicRepeatsTheBlockList) {
    auto m = s::parse_process_mapping("(vector,(0,2,1))", 5);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (std::vector<int>{0, 1, 0, 1, 0}));
}

TEST(ShimMapping, SeveralBlocksAndWhitespace) {
    auto m = s::parse_process_mapping(" ( vector, (0,1,3), (1, 2, 1) )\n", 5);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (std::vector<int>{0, 0, 0, 1, 2}));
}

TEST(ShimMapping, PartialLastNode) {
    auto m = s::parse_process_mapping("(vector,(0,2,4))", 6);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (std::vector<int>{0, 0, 0, 0, 1, 1}));
}

TEST(ShimMapping, RejectsMalformedValues) {
    for (const char* bad : {"", "(vector)x", "(vector,(0,2))", "(vector,(0,2,1)", "vector,(0,1,1)", "(vector,(a,1,1))",
                            "(vector,(0,-1,1))", "(vector,(0,1,99999999999))", "(vector,(0,1,1),)", "(vector,(0,1,0))"}) {
        EXPECT_FALSE(s::parse_process_mapping(bad, 4)) << bad;
    }
    EXPECT_FALSE(s::parse_process_mapping("(vector)", 2));  // assigns nobody
    auto empty = s::parse_process_mapping("(vector)", 0);
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
}

TEST(ShimInts, ListsAndScalars) {
    EXPECT_EQ(*s::parse_int_list("1, 2,3"), (std::vector<int>{1, 2, 3}));
    EXPECT_TRUE(s::parse_int_list("")->empty());
    EXPECT_FALSE(s::parse_int_list("1,,2"));
    EXPECT_FALSE(s::parse_int_list("1,x"));
    EXPECT_EQ(*s::parse_int("  42 "), 42);
    EXPECT_EQ(*s::parse_int("-3"), -3);
    EXPECT_FALSE(s::parse_int("99999999999999999999"));
    EXPECT_FALSE(s::parse_int("4x"));
}
