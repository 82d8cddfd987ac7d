// Path pattern expansion for per-process stdin/stdout/stderr files.
#include "dragon/procgroup/io.hpp"

#include <gtest/gtest.h>

namespace dragon::procgroup {
namespace {

PathContext ctx() { return PathContext{7, 4294967302ULL, 3, 12, "nid001"}; }

TEST(PathPattern, ExpandsEveryEscape) {
    auto r = expand_path("out.%r.%t.%p.%n.%g.%h.%%", ctx());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, "out.7.7.4294967302.3.12.nid001.%");
}

TEST(PathPattern, ZeroPadsWithAWidth) {
    auto r = expand_path("/tmp/log-%4r-n%2n", ctx());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, "/tmp/log-0007-n03");
}

TEST(PathPattern, PlainTextIsUnchanged) {
    auto r = expand_path("plain.txt", ctx());
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, "plain.txt");
}

TEST(PathPattern, UnknownEscapeIsNamed) {
    auto r = expand_path("out.%x", ctx());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_NE(r.error().message().find("'%x'"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("out.%x"), std::string::npos);
}

TEST(PathPattern, DanglingPercentAndHugeWidthAreRefused) {
    EXPECT_FALSE(expand_path("out.%", ctx()));
    EXPECT_FALSE(expand_path("out.%12", ctx()));
    EXPECT_FALSE(expand_path("out.%99r", ctx()));
    EXPECT_FALSE(expand_path("", ctx()));
    EXPECT_TRUE(check_path_pattern("a%r"));
    EXPECT_FALSE(check_path_pattern("a%q"));
}

TEST(PathPattern, KnowsWhetherProcessesShareTheFile) {
    EXPECT_TRUE(varies_by_process("out.%r"));
    EXPECT_TRUE(varies_by_process("out.%3t"));
    EXPECT_TRUE(varies_by_process("out.%p"));
    EXPECT_FALSE(varies_by_process("out.%n.%h.%g"));
    EXPECT_FALSE(varies_by_process("out.%%r"));
    EXPECT_TRUE(varies_by_node("out.%n"));
    EXPECT_TRUE(varies_by_node("out.%h.log"));
    EXPECT_FALSE(varies_by_node("out.%r.%g"));
    EXPECT_EQ(file_owner("out.%r.%n"), FileOwner::process);
    EXPECT_EQ(file_owner("out.%h.log"), FileOwner::node);
    EXPECT_EQ(file_owner("out.%g.log"), FileOwner::group);
    EXPECT_EQ(file_owner("out.%%r"), FileOwner::group);
}

}  // namespace
}  // namespace dragon::procgroup
