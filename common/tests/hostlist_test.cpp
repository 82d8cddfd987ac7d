// Hostlist expressions: expansion, compression, and every refusal.
//
// The expected expansions of valid expressions were checked against Slurm
// 22.05's `scontrol show hostnames '<expr>'` and the compressions against
// `scontrol show hostlist '<names>'` (both work without a running cluster:
// any slurm.conf in SLURM_CONF will do), except where a test says otherwise.
#include "dragon/common/hostlist.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace dragon {
namespace {

using Names = std::vector<std::string>;

Names expand(std::string_view expr) {
    auto r = expand_hostlist(expr);
    EXPECT_TRUE(r) << expr << ": " << r.error().message();
    return r ? *r : Names{};
}

// The message of the refusal of `expr` ("" if it was accepted).
std::string refusal(std::string_view expr, std::size_t max_hosts = kHostlistMaxHosts) {
    auto r = expand_hostlist(expr, max_hosts);
    if (r) return "";
    EXPECT_EQ(r.error().code(), Errc::invalid_argument) << expr;
    return r.error().message();
}

TEST(ExpandHostlist, PlainNamesAndGroups) {
    EXPECT_EQ(expand("n1"), (Names{"n1"}));
    EXPECT_EQ(expand("a,b,c"), (Names{"a", "b", "c"}));
    EXPECT_EQ(expand("n1,n1"), (Names{"n1", "n1"}));  // duplicates kept, as Slurm does
    EXPECT_EQ(expand("login-1.cluster_x"), (Names{"login-1.cluster_x"}));
    EXPECT_EQ(expand("n1-4"), (Names{"n1-4"}));  // a '-' outside brackets is part of the name
}

TEST(ExpandHostlist, Ranges) {
    EXPECT_EQ(expand("n[1-4]"), (Names{"n1", "n2", "n3", "n4"}));
    EXPECT_EQ(expand("n[1-4,7]"), (Names{"n1", "n2", "n3", "n4", "n7"}));
    EXPECT_EQ(expand("n[3]"), (Names{"n3"}));
    EXPECT_EQ(expand("n[0-0]"), (Names{"n0"}));
    EXPECT_EQ(expand("n[9-11]"), (Names{"n9", "n10", "n11"}));
    EXPECT_EQ(expand("n[1-3,2]"), (Names{"n1", "n2", "n3", "n2"}));  // order and duplicates kept
    EXPECT_EQ(expand("[1-2]"), (Names{"1", "2"}));
    EXPECT_EQ(expand("n[4294967295-4294967296]"), (Names{"n4294967295", "n4294967296"}));
}

TEST(ExpandHostlist, ZeroPaddingFollowsEachLowerBound) {
    EXPECT_EQ(expand("n[001-003]"), (Names{"n001", "n002", "n003"}));
    EXPECT_EQ(expand("n[08-10]"), (Names{"n08", "n09", "n10"}));
    EXPECT_EQ(expand("n[099-101]"), (Names{"n099", "n100", "n101"}));
    EXPECT_EQ(expand("n[01-3]"), (Names{"n01", "n02", "n03"}));
    EXPECT_EQ(expand("n[1-010]").size(), 10U);  // width 1: n1 .. n10
    EXPECT_EQ(expand("n[1-010]").back(), "n10");
    EXPECT_EQ(expand("n[0-0001]"), (Names{"n0", "n1"}));
    EXPECT_EQ(expand("n[007]"), (Names{"n007"}));
    EXPECT_EQ(expand("n[1,01,001]"), (Names{"n1", "n01", "n001"}));
}

TEST(ExpandHostlist, SeveralGroups) {
    EXPECT_EQ(expand("n[1-2],m[3-4]"), (Names{"n1", "n2", "m3", "m4"}));
    EXPECT_EQ(expand("login,n[1-2],gpu[01-02]"), (Names{"login", "n1", "n2", "gpu01", "gpu02"}));
}

TEST(ExpandHostlist, CartesianProductFirstBracketSlowest) {
    EXPECT_EQ(expand("rack[1-2]-n[1-2]"), (Names{"rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"}));
    EXPECT_EQ(expand("n[1-2][3-4]"), (Names{"n13", "n14", "n23", "n24"}));
    EXPECT_EQ(expand("a[1-2]-[3-4]"), (Names{"a1-3", "a1-4", "a2-3", "a2-4"}));
}

// From three brackets on, Slurm's order is not an odometer's: the last
// bracket varies fastest, then the first, ..., the last but one slowest.
TEST(ExpandHostlist, CartesianProductOfThreeOrMoreInSlurmsOrder) {
    EXPECT_EQ(expand("r[1,3]c[0-1]n[5]"), (Names{"r1c0n5", "r3c0n5", "r1c1n5", "r3c1n5"}));
    EXPECT_EQ(expand("a[1-2]b[1-2]c[1-2]"),
              (Names{"a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2"}));
    Names four = expand("a[1-3]b[1-3]c[1-3]d[1-3]");
    ASSERT_EQ(four.size(), 81U);
    EXPECT_EQ((Names(four.begin(), four.begin() + 4)),
              (Names{"a1b1c1d1", "a1b1c1d2", "a1b1c1d3", "a2b1c1d1"}));
    EXPECT_EQ(four[9], "a1b2c1d1");
    EXPECT_EQ(four[27], "a1b1c2d1");
    EXPECT_EQ(four[80], "a3b3c3d3");
    // Several ranges in a bracket are one sequence of values.
    EXPECT_EQ(expand("a[1,5]b[7-8]c[0]"), (Names{"a1b7c0", "a5b7c0", "a1b8c0", "a5b8c0"}));
}

// Slurm 22.05's scontrol refuses text after the last bracket; later versions
// (and this parser) read it as a suffix.
TEST(ExpandHostlist, TextAfterABracket) {
    EXPECT_EQ(expand("n[1-2]-ib"), (Names{"n1-ib", "n2-ib"}));
    EXPECT_EQ(expand("x[1-2]y[3-4]z"), (Names{"x1y3z", "x1y4z", "x2y3z", "x2y4z"}));
    EXPECT_EQ(expand("x[1-2]y[3]z[5-6]w"), (Names{"x1y3z5w", "x1y3z6w", "x2y3z5w", "x2y3z6w"}));
}

TEST(ExpandHostlist, RefusesEmptyNames) {
    EXPECT_EQ(refusal(""), "hostlist \"\": empty hostlist at position 0");
    EXPECT_EQ(refusal(",n1"), "hostlist \",n1\": empty name at position 0");
    EXPECT_EQ(refusal("n1,,n2"), "hostlist \"n1,,n2\": empty name at position 3");
    EXPECT_EQ(refusal("n1,"), "hostlist \"n1,\": empty name at position 3");
}

TEST(ExpandHostlist, RefusesUnbalancedBrackets) {
    EXPECT_EQ(refusal("n[1-2"), "hostlist \"n[1-2\": '[' without ']' at position 1");
    EXPECT_EQ(refusal("n["), "hostlist \"n[\": '[' without ']' at position 1");
    EXPECT_EQ(refusal("n]"), "hostlist \"n]\": ']' without '[' at position 1");
    EXPECT_EQ(refusal("n[1-2]]"), "hostlist \"n[1-2]]\": ']' without '[' at position 6");
    EXPECT_EQ(refusal("n[[1-2]]"), "hostlist \"n[[1-2]]\": nested '[' at position 2");
    EXPECT_EQ(refusal("n[1,m[2]]"), "hostlist \"n[1,m[2]]\": nested '[' at position 5");
}

TEST(ExpandHostlist, RefusesEmptyRanges) {
    EXPECT_EQ(refusal("n[]"), "hostlist \"n[]\": empty range at position 2");
    EXPECT_EQ(refusal("n[1,,2]"), "hostlist \"n[1,,2]\": empty range at position 4");
    EXPECT_EQ(refusal("n[1,]"), "hostlist \"n[1,]\": empty range at position 4");
    EXPECT_EQ(refusal("n[1-]"), "hostlist \"n[1-]\": incomplete range '1-' at position 2");  // Slurm: n1
    EXPECT_EQ(refusal("n[-1]"), "hostlist \"n[-1]\": incomplete range '-1' at position 2");
}

TEST(ExpandHostlist, RefusesDescendingRanges) {
    EXPECT_EQ(refusal("n[2-1]"), "hostlist \"n[2-1]\": descending range '2-1' at position 2");
    EXPECT_EQ(refusal("n[1,010-9]"), "hostlist \"n[1,010-9]\": descending range '010-9' at position 4");
}

TEST(ExpandHostlist, RefusesNonNumericRanges) {
    EXPECT_EQ(refusal("n[a-b]"), "hostlist \"n[a-b]\": non-numeric range 'a-b' at position 2");
    EXPECT_EQ(refusal("n[x]"), "hostlist \"n[x]\": non-numeric range 'x' at position 2");
    EXPECT_EQ(refusal("n[1-4x]"), "hostlist \"n[1-4x]\": non-numeric range '1-4x' at position 2");
    EXPECT_EQ(refusal("n[1-2-3]"), "hostlist \"n[1-2-3]\": non-numeric range '1-2-3' at position 2");
    EXPECT_EQ(refusal("n[+1]"), "hostlist \"n[+1]\": non-numeric range '+1' at position 2");
    EXPECT_EQ(refusal("n[1234567890123456789]"),
              "hostlist \"n[1234567890123456789]\": range '1234567890123456789' has a bound of "
              "more than 18 digits at position 2");
}

TEST(ExpandHostlist, RefusesWhitespaceAndControlCharacters) {
    EXPECT_EQ(refusal("n1 n2"),
              "hostlist \"n1 n2\": unexpected character 0x20 at position 2");  // Slurm: n1 n2
    EXPECT_EQ(refusal("n[ 1-2]"), "hostlist \"n[ 1-2]\": unexpected character 0x20 at position 2");
    EXPECT_EQ(refusal(std::string_view("n\0", 2)),
              std::string("hostlist \"n") + '\0' + "\": unexpected character 0x00 at position 1");
    EXPECT_EQ(refusal("n1\n"), "hostlist \"n1\n\": unexpected character 0x0a at position 2");
}

TEST(ExpandHostlist, RefusesAbsurdSizes) {
    EXPECT_EQ(refusal("n[0-1048575]").find("expands to"), std::string::npos);  // exactly the cap
    EXPECT_EQ(refusal("n[0-1048576]"),
              "hostlist \"n[0-1048576]\": expands to more than 1048576 hosts at position 0");
    EXPECT_EQ(refusal("a,n[0-999999999999999999]"),
              "hostlist \"a,n[0-999999999999999999]\": expands to more than 1048576 hosts at position 2");
    // Products and sums are checked before they can overflow or allocate.
    EXPECT_NE(refusal("n[0-999999999999999999][0-999999999999999999]").find("expands to more than"),
              std::string::npos);
    EXPECT_NE(refusal("n[0-1023][0-1023][0-1]").find("expands to more than"), std::string::npos);
    EXPECT_NE(refusal("n[0-524287],m[0-524288]").find("expands to more than"), std::string::npos);
    EXPECT_EQ(refusal("n[1-10]", 9), "hostlist \"n[1-10]\": expands to more than 9 hosts at position 0");
    EXPECT_EQ(refusal("n[1-9]", 9), "");
    // Long names.
    EXPECT_EQ(refusal(std::string(255, 'a')), "");
    EXPECT_NE(refusal(std::string(256, 'a')).find("...\": names longer than 255 characters at position 0"),
              std::string::npos);
    EXPECT_NE(refusal(std::string(250, 'a') + "[1][1][1][1][1][1]").find("names longer than 255"),
              std::string::npos);
    // A long expression is quoted only in part.
    auto msg = refusal(std::string(100, 'a') + "]");
    EXPECT_EQ(msg, "hostlist \"" + std::string(64, 'a') + "...\": ']' without '[' at position 100");
}

TEST(CompressHostlist, MergesNeighboursInOrder) {
    EXPECT_EQ(*compress_hostlist({}), "");
    EXPECT_EQ(*compress_hostlist({"a"}), "a");
    EXPECT_EQ(*compress_hostlist({"n1", "n2", "n3", "n4"}), "n[1-4]");
    EXPECT_EQ(*compress_hostlist({"n1", "n2", "n3", "n5"}), "n[1-3,5]");
    EXPECT_EQ(*compress_hostlist({"n3", "n1", "n2"}), "n[3,1-2]");
    EXPECT_EQ(*compress_hostlist({"n1", "m1", "n2"}), "n1,m1,n2");
    EXPECT_EQ(*compress_hostlist({"n9", "n10"}), "n[9-10]");
    EXPECT_EQ(*compress_hostlist({"n09", "n10"}), "n[09-10]");
    EXPECT_EQ(*compress_hostlist({"n1", "n01"}), "n[1,01]");
    EXPECT_EQ(*compress_hostlist({"rack1-n1", "rack1-n2"}), "rack1-n[1-2]");
    // Not checked against scontrol:
    EXPECT_EQ(*compress_hostlist({"n", "n", "x1"}), "n,n,x1");
    EXPECT_EQ(*compress_hostlist({"n1", "n1"}), "n[1,1]");
    EXPECT_EQ(*compress_hostlist({"1", "2"}), "[1-2]");
}

TEST(CompressHostlist, RoundTrips) {
    for (const char* expr : {"n[1-4,7]", "n[001-010],login", "rack[1-2]-n[1-2]", "n[9-11],n[099-101]",
                             "n[1,01,001]", "a,b,n[1-3,2]", "x[1-2]y[3-4]z", "[1-20]"}) {
        Names names = expand(expr);
        auto packed = compress_hostlist(names);
        ASSERT_TRUE(packed) << expr;
        EXPECT_EQ(expand(*packed), names) << expr << " -> " << *packed;
    }
}

TEST(CompressHostlist, RefusesNamesItCannotWrite) {
    for (const Names& bad : {Names{""}, Names{"n1", ""}, Names{"n[1]"}, Names{"a,b"}, Names{"a b"},
                             Names{"n]"}, Names{std::string(256, 'a')}}) {
        auto r = compress_hostlist(bad);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    }
    EXPECT_EQ(compress_hostlist({"n1", "n[2]"}).error().message(),
              "host 1 (\"n[2]\") has a character a hostlist cannot hold");
}

}  // namespace
}  // namespace dragon
