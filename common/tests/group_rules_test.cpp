// The group rules every front door shares (group_rules.hpp).
#include <gtest/gtest.h>

#include "dragon/common/group_rules.hpp"

namespace dragon::msg {
namespace {

GroupSpec spec_of(std::vector<std::uint32_t> counts) {
    GroupSpec s;
    for (auto c : counts) {
        GroupEntry e;
        e.count = c;
        e.proc.argv = {"true"};
        s.entries.push_back(e);
    }
    return s;
}

std::string refusal(const Status& st) { return st ? "" : st.error().message(); }

TEST(GroupRules, RestartAndPmiExcludeEachOther) {
    EXPECT_TRUE(check_group_options(true, PmiMode::none, false));
    EXPECT_TRUE(check_group_options(false, PmiMode::pmix, false));
    for (auto pmi : {PmiMode::simple, PmiMode::cray, PmiMode::pmix})
        EXPECT_EQ(refusal(check_group_options(true, pmi, false)),
                  "restart cannot be combined with PMI: an MPI job cannot take a replacement rank");
}

TEST(GroupRules, APmiPortServesSimpleOrCrayPmiOnly) {
    EXPECT_TRUE(check_group_options(false, PmiMode::simple, true));
    EXPECT_TRUE(check_group_options(false, PmiMode::cray, true));
    EXPECT_EQ(refusal(check_group_options(false, PmiMode::pmix, true)), "a PMI port needs simple or cray PMI, not pmix");
    EXPECT_EQ(refusal(check_group_options(false, PmiMode::none, true)), "a PMI port needs simple or cray PMI, not none");
}

TEST(GroupRules, AGroupHasBetweenOneAndTheCapProcessesEachWithAProgram) {
    EXPECT_TRUE(check_group_spec(spec_of({1})));
    EXPECT_TRUE(check_group_spec(spec_of({500'000, 500'000})));
    EXPECT_EQ(refusal(check_group_spec(spec_of({}))), "a group needs at least one process");
    EXPECT_EQ(refusal(check_group_spec(spec_of({0, 0}))), "a group needs at least one process");
    EXPECT_EQ(refusal(check_group_spec(spec_of({500'000, 500'001}))),
              "a group of 1000001 processes is too large (at most 1000000)");
    auto s = spec_of({2, 1});
    s.entries[1].proc.argv.clear();
    EXPECT_EQ(refusal(check_group_spec(s)), "a group entry has an empty argv");
    s = spec_of({2});
    s.restart = true;
    s.pmi = PmiMode::cray;
    EXPECT_FALSE(check_group_spec(s)) << "the options' rules are part of the spec's";
}

TEST(GroupRules, PmiModesByName) {
    for (auto m : {PmiMode::none, PmiMode::simple, PmiMode::cray, PmiMode::pmix}) EXPECT_EQ(*pmi_mode_from(name_of(m)), m);
    EXPECT_EQ(*pmi_mode_from(""), PmiMode::none);
    EXPECT_EQ(refusal(pmi_mode_from("mpich").error()), "pmi: unknown 'mpich' (none, simple, cray, pmix)");
}

}  // namespace
}  // namespace dragon::msg
