// GroupTracker: restart policy, failure and stop decisions.
#include <gtest/gtest.h>

#include <cerrno>

#include "dragon/procgroup/group.hpp"

namespace dragon::procgroup {
namespace {

constexpr msg::ExitStatus kOk{0, 0};
constexpr msg::ExitStatus kCode3{3, 0};
constexpr msg::ExitStatus kKilled{0, 9};

GroupTracker started_group(std::uint32_t n, RestartPolicy p) {
    GroupTracker g(1, n, p);
    for (std::uint32_t r = 0; r < n; ++r) g.started(r, 100 + r, 1000 + static_cast<std::int32_t>(r));
    return g;
}

TEST(GroupTracker, AllExitZeroSucceeds) {
    auto g = started_group(3, {});
    EXPECT_EQ(g.exited(100, kOk).kind, Action::none);
    EXPECT_EQ(g.exited(101, kOk).kind, Action::none);
    EXPECT_EQ(g.exited(102, kOk).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::succeeded);
    EXPECT_FALSE(g.first_failure());
}

TEST(GroupTracker, WithoutRestartOneFailureStopsTheRest) {
    auto g = started_group(3, {});
    auto a = g.exited(101, kCode3);
    EXPECT_EQ(a.kind, Action::stop_all);
    EXPECT_EQ(g.state(), GroupState::stopping);
    ASSERT_TRUE(g.first_failure());
    EXPECT_EQ(g.first_failure()->rank, 1U);
    EXPECT_EQ(g.first_failure()->status.exit_code, 3);
    // The others die of the stop signal; the first failure stays the one reported.
    EXPECT_EQ(g.exited(100, kKilled).kind, Action::stop_all);
    EXPECT_EQ(g.exited(102, kKilled).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
    EXPECT_EQ(g.first_failure()->rank, 1U);
}

TEST(GroupTracker, AnAbortFailsTheGroupWithTheRanksCodeOnce) {
    auto g = started_group(3, {});
    EXPECT_EQ(g.aborted(2, 7, "bye").kind, Action::stop_all);
    ASSERT_TRUE(g.first_failure());
    EXPECT_EQ(g.first_failure()->kind, msg::FailKind::aborted);
    EXPECT_EQ(g.first_failure()->rank, 2U);
    EXPECT_EQ(g.first_failure()->status.exit_code, 7);
    // The aborting rank's own exit and the others' deaths do not replace it.
    g.exited(102, msg::ExitStatus{7, 0});
    g.exited(100, kKilled);
    EXPECT_EQ(g.exited(101, kKilled).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
    EXPECT_EQ(g.first_failure()->kind, msg::FailKind::aborted);
    // A late abort of a finished group changes nothing (no second done).
    EXPECT_EQ(g.aborted(0, 9, "late").kind, Action::none);
    EXPECT_EQ(g.first_failure()->rank, 2U);
}

TEST(GroupTracker, AnExitWithARuntimeReasonIsAFailureEvenWithCodeZero) {
    auto g = started_group(2, {});
    EXPECT_EQ(g.exited(1, 101, kOk, "exited after PMI init without PMI finalize").kind, Action::stop_all);
    ASSERT_TRUE(g.first_failure());
    EXPECT_EQ(g.first_failure()->kind, msg::FailKind::runtime);
    EXPECT_EQ(g.first_failure()->error, "exited after PMI init without PMI finalize");
    EXPECT_EQ(g.exited(0, 100, kKilled).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
}

TEST(GroupTracker, DeathBySignalIsAFailure) {
    auto g = started_group(1, {});
    EXPECT_EQ(g.exited(100, kKilled).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
    EXPECT_EQ(g.first_failure()->status.signal, 9);
}

TEST(GroupTracker, RestartReplacesAFailedMemberAndKeepsHistory) {
    auto g = started_group(2, {true, 2});
    auto a = g.exited(100, kCode3);
    ASSERT_EQ(a.kind, Action::respawn);
    EXPECT_EQ(a.rank, 0U);
    g.started(0, 200, 2000);
    EXPECT_EQ(g.members()[0].history, (std::vector<Puid>{100, 200}));
    EXPECT_EQ(g.state(), GroupState::running);
    EXPECT_EQ(g.find(200)->rank, 0U);
    EXPECT_EQ(g.find(100), nullptr);  // no longer the rank's puid
    EXPECT_EQ(g.exited(100, kOk).kind, Action::none);  // a stale puid is ignored
    EXPECT_EQ(g.exited(200, kOk).kind, Action::none);
    EXPECT_EQ(g.exited(101, kOk).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::succeeded);
    EXPECT_EQ(g.restarts(), 1U);
}

TEST(GroupTracker, RestartsRunOutThenTheGroupFailsWhenTheRestEnd) {
    auto g = started_group(2, {true, 1});
    ASSERT_EQ(g.exited(100, kCode3).kind, Action::respawn);
    g.started(0, 200, 2000);
    EXPECT_EQ(g.exited(200, kCode3).kind, Action::none);  // out of restarts; rank 1 may finish
    EXPECT_EQ(g.state(), GroupState::running);
    EXPECT_EQ(g.exited(101, kOk).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
    EXPECT_EQ(g.first_failure()->puid, 200U);
}

TEST(GroupTracker, ExitZeroIsNeverRestarted) {
    auto g = started_group(1, {true, 5});
    EXPECT_EQ(g.exited(100, kOk).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::succeeded);
    EXPECT_EQ(g.restarts(), 0U);
}

TEST(GroupTracker, StopFromOutsideEndsStopped) {
    auto g = started_group(2, {});
    EXPECT_EQ(g.stop().kind, Action::stop_all);
    EXPECT_EQ(g.exited(100, {0, 2}).kind, Action::stop_all);
    EXPECT_EQ(g.exited(101, {0, 2}).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::stopped);
    EXPECT_FALSE(g.first_failure());  // deaths from our own stop are not failures
}

TEST(GroupTracker, AStartFailureFailsTheGroup) {
    GroupTracker g(1, 3, {});
    g.started(0, 100, 1000);
    auto a = g.start_failed(1, "program 'x' not found in PATH", ENOENT);
    EXPECT_EQ(a.kind, Action::stop_all);
    ASSERT_TRUE(g.first_failure());
    EXPECT_EQ(g.first_failure()->error, "program 'x' not found in PATH");
    EXPECT_EQ(g.first_failure()->sys_errno, ENOENT);
    EXPECT_EQ(g.start_failed(2, "also").kind, Action::stop_all);
    EXPECT_EQ(g.first_failure()->rank, 1U);
    EXPECT_EQ(g.exited(100, {0, 2}).kind, Action::done);
    EXPECT_EQ(g.state(), GroupState::failed);
}

}  // namespace
}  // namespace dragon::procgroup

namespace dragon::procgroup {
namespace {

TEST(GroupTrackerLost, ALostMemberFailsTheGroupEvenWithRestarts) {
    GroupTracker t(7, 3, RestartPolicy{true, 10});
    t.started(0, 100, 1000);
    t.started(1, 101, 1001);
    t.started(2, 102, 1002);
    auto a = t.lost(1, "node 1 (h1) was lost: no word for 6 s");
    EXPECT_EQ(a.kind, Action::stop_all);
    EXPECT_EQ(t.state(), GroupState::stopping);
    ASSERT_TRUE(t.first_failure());
    EXPECT_EQ(t.first_failure()->rank, 1U);
    EXPECT_EQ(t.first_failure()->error, "node 1 (h1) was lost: no word for 6 s");
    EXPECT_EQ(t.members()[1].status.signal, 9);
    EXPECT_EQ(t.lost(1, "again").kind, Action::none);  // once only
    EXPECT_EQ(t.exited(0, 100, msg::ExitStatus{0, 2}).kind, Action::stop_all);
    auto done = t.exited(2, 102, msg::ExitStatus{0, 2});
    EXPECT_EQ(done.kind, Action::done);
    EXPECT_EQ(t.state(), GroupState::failed);
    EXPECT_EQ(t.restarts(), 0U);
}

TEST(GroupTrackerLost, ExitedByRankIgnoresAStalePuid) {
    GroupTracker t(1, 1, RestartPolicy{true, 1});
    t.started(0, 5, 50);
    EXPECT_EQ(t.exited(0, 5, msg::ExitStatus{1, 0}).kind, Action::respawn);
    t.started(0, 6, 60);
    EXPECT_EQ(t.exited(0, 5, msg::ExitStatus{1, 0}).kind, Action::none);  // the old run again: ignored
    EXPECT_EQ(t.exited(0, 6, msg::ExitStatus{0, 0}).kind, Action::done);
    EXPECT_EQ(t.state(), GroupState::succeeded);
}

}  // namespace
}  // namespace dragon::procgroup
