// Node 0's global services against a fake router: what they send to the
// nodes and to the owners for a group's start, exits, failure, refusal and a
// lost node. No agent, no processes, no sockets.
#include <gtest/gtest.h>

#include <signal.h>

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "agent/global/global.hpp"
#include "fake_router.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::agent {
namespace {

pg::NodeResources resources(std::uint32_t node) {
    auto topo = pg::Topology::synthetic("pack:1 core:4 pu:1");
    EXPECT_TRUE(topo) << topo.error().message();
    auto r = pg::NodeResources::from(*topo, node, "host" + std::to_string(node));
    EXPECT_TRUE(r) << r.error().message();
    return std::move(*r);
}

struct Fixture : ::testing::Test {
    explicit Fixture(std::uint32_t nnodes = 1)
        : router(nnodes),
          own(resources(0)),
          global(router, io, GlobalOptions{nnodes, "host0", 50, [this]() -> Result<const pg::NodeResources*> { return &own; }}),
          front_end(kFrontEndRoutes, true),
          owners(kOwnerRoutes, true),
          nodes(kNodeRoutes, true) {
        global.bind(front_end, owners, nodes);
        for (std::uint32_t k = 1; k < nnodes; ++k) global.node_joined(k, resources(k));
    }

    template <class M>
    void from_node(std::uint32_t node, const M& m) {
        auto st = nodes.dispatch(node == 0 ? Sender::self : Sender::node, node,
                                 wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)});
        ASSERT_TRUE(st) << st.error().message();
    }
    template <class M>
    void from_owner(Owner who, const M& m) {
        auto& table = who == kFrontEnd ? front_end : owners;
        auto st = table.dispatch(who == kFrontEnd ? Sender::front_end : Sender::client, who,
                                 wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)});
        ASSERT_TRUE(st) << st.error().message();
    }

    static msg::GroupStart start_of(std::uint32_t count, std::uint64_t request = 7) {
        msg::GroupStart s;
        s.request_id = request;
        msg::GroupEntry e;
        e.count = count;
        e.proc.argv = {"true"};
        s.spec.entries.push_back(e);
        return s;
    }

    /// Starts a group and has its nodes report every member started; returns its id.
    std::uint64_t started_group(std::uint32_t count, Owner owner = kFrontEnd, const std::string& placement = "block") {
        auto start = start_of(count);
        start.spec.placement = placement;
        from_owner(owner, start);
        auto execs = router.take<msg::ExecMembers>();
        EXPECT_FALSE(execs.empty());
        std::uint64_t id = 0;
        for (auto& [where, ex] : execs) {
            id = ex.group_id;
            msg::MembersStarted ms{ex.group_id, {}, true};
            for (const auto& p : ex.members) ms.members.push_back({p.rank, 1000 + p.rank, static_cast<std::int32_t>(2000 + p.rank), 0, {}, 0});
            from_node(where.node, ms);
        }
        return id;
    }

    asio::io_context io;
    FakeRouter router;
    pg::NodeResources own;
    GlobalServices global;
    Dispatcher<Owner> front_end, owners;
    Dispatcher<std::uint32_t> nodes;
};

struct TwoNodes : Fixture {
    TwoNodes() : Fixture(2) {}
};

TEST_F(Fixture, AGroupStartsOnItsNodeAndSucceedsWhenEveryMemberExitsZero) {
    from_owner(kFrontEnd, start_of(3));
    auto execs = router.take<msg::ExecMembers>();
    ASSERT_EQ(execs.size(), 1U);
    EXPECT_EQ(execs[0].first.node, 0U);
    const auto& ex = execs[0].second;
    EXPECT_EQ(ex.nranks, 3U);
    ASSERT_EQ(ex.members.size(), 3U);
    EXPECT_TRUE(router.take<msg::GroupStarted>().empty()) << "answered only once the node has started them";

    msg::MembersStarted ms{ex.group_id, {}, true};
    for (std::uint32_t r = 0; r < 3; ++r) ms.members.push_back({r, 100 + r, static_cast<std::int32_t>(200 + r), 0, {}, 0});
    from_node(0, ms);
    auto started = router.take<msg::GroupStarted>();
    ASSERT_EQ(started.size(), 1U);
    EXPECT_EQ(started[0].first.owner, kFrontEnd);
    EXPECT_EQ(started[0].second.request_id, 7U);
    EXPECT_TRUE(started[0].second.error.empty());
    ASSERT_EQ(started[0].second.members.size(), 3U);
    EXPECT_EQ(started[0].second.members[2].puid, 102U);

    msg::MembersExited me{ex.group_id, {}};
    for (std::uint32_t r = 0; r < 3; ++r) me.members.push_back({r, 100 + r, static_cast<std::int32_t>(200 + r), {0, 0}, {}, 0});
    from_node(0, me);
    auto done = router.take<msg::GroupDone>();
    ASSERT_EQ(done.size(), 1U);
    EXPECT_EQ(done[0].second.outcome, msg::GroupOutcome::succeeded);
    EXPECT_EQ(router.take<msg::ProcExit>().size(), 1U) << "the front end hears each exit";
}

TEST_F(Fixture, AFailingMemberStopsTheOthersAndFailsTheGroupNamingIt) {
    const auto id = started_group(3);
    router.take<msg::GroupStarted>();
    from_node(0, msg::MembersExited{id, {{1, 1001, 2001, {3, 0}, {}}}});
    auto sig = router.take<msg::SignalMembers>();
    ASSERT_EQ(sig.size(), 1U);
    EXPECT_EQ(sig[0].second.signal, SIGINT);
    EXPECT_TRUE(router.take<msg::GroupDone>().empty()) << "two members still run";
    from_node(0, msg::MembersExited{id, {{0, 1000, 2000, {0, SIGINT}, {}}, {2, 1002, 2002, {0, SIGINT}, {}}}});
    auto done = router.take<msg::GroupDone>();
    ASSERT_EQ(done.size(), 1U);
    EXPECT_EQ(done[0].second.outcome, msg::GroupOutcome::failed);
    EXPECT_EQ(done[0].second.fail_rank, 1U);
    EXPECT_EQ(done[0].second.fail_status.exit_code, 3);
}

TEST_F(Fixture, BadGroupsAreRefusedWithTheReasonAndNothingStarts) {
    auto pmi_restart = start_of(2);
    pmi_restart.spec.pmi = msg::PmiMode::simple;
    pmi_restart.spec.restart = true;
    from_owner(kFrontEnd, pmi_restart);
    from_owner(kFrontEnd, start_of(0));
    auto refused = router.take<msg::GroupStarted>();
    ASSERT_EQ(refused.size(), 2U);
    EXPECT_NE(refused[0].second.error.find("restart cannot be combined with PMI"), std::string::npos);
    EXPECT_NE(refused[1].second.error.find("at least one process"), std::string::npos);
    router.accepting = false;
    from_owner(kFrontEnd, start_of(1));
    auto late = router.take<msg::GroupStarted>();
    ASSERT_EQ(late.size(), 1U);
    EXPECT_NE(late[0].second.error.find("shutting down"), std::string::npos);
    EXPECT_TRUE(router.take<msg::ExecMembers>().empty());
    EXPECT_EQ(global.group_count(), 0U);
}

TEST_F(Fixture, OnlyItsOwnerMayStopOrCloseAGroup) {
    const Owner client{0, 5}, other{0, 6};
    const auto id = started_group(1, client);
    router.take<msg::GroupStarted>();
    from_owner(other, msg::GroupStop{id, false, 100});
    auto err = router.take<msg::ErrorReply>();
    ASSERT_EQ(err.size(), 1U);
    EXPECT_EQ(err[0].first.owner, other);
    EXPECT_EQ(err[0].second.code, static_cast<std::uint16_t>(Errc::permission_denied));
    EXPECT_TRUE(router.take<msg::SignalMembers>().empty());
    from_owner(client, msg::GroupClose{id});
    err = router.take<msg::ErrorReply>();
    ASSERT_EQ(err.size(), 1U) << "still running: not closed";
    EXPECT_EQ(err[0].second.code, static_cast<std::uint16_t>(Errc::would_block));
    from_owner(client, msg::GroupStop{id, false, 100});
    EXPECT_EQ(router.take<msg::OkReply>().size(), 1U);
    EXPECT_EQ(router.take<msg::SignalMembers>().size(), 1U);
}

TEST_F(Fixture, AnOwnerThatGoesAwayHasItsGroupsStoppedThenForgotten) {
    const Owner client{0, 9};
    const auto id = started_group(2, client);
    router.take<msg::GroupStarted>();
    global.owner_gone(client);
    EXPECT_EQ(router.take<msg::SignalMembers>().size(), 1U);
    from_node(0, msg::MembersExited{id, {{0, 1000, 2000, {0, SIGINT}, {}}, {1, 1001, 2001, {0, SIGINT}, {}}}});
    router.run_posted();
    auto forget = router.take<msg::ForgetGroup>();
    ASSERT_EQ(forget.size(), 1U);
    EXPECT_EQ(forget[0].second.group_id, id);
    EXPECT_EQ(global.group_count(), 0U);
}

TEST_F(Fixture, OutputGoesToItsReaderAndAReportFromTheWrongNodeIsIgnored) {
    const auto id = started_group(1);
    router.take<msg::GroupStarted>();
    from_node(0, msg::Output{1000, msg::Stream::out, "hello\n", id, 0});
    auto out = router.take<msg::Output>();
    ASSERT_EQ(out.size(), 1U);
    EXPECT_TRUE(out[0].first.to_owner);
    EXPECT_EQ(out[0].second.data, "hello\n");
    EXPECT_TRUE(router.held.empty());
    // Its reader is full: the node that sent it is held back (its output still goes).
    router.owners_full = true;
    from_node(0, msg::Output{1000, msg::Stream::err, "more\n", id, 0});
    EXPECT_EQ(router.take<msg::Output>().size(), 1U);
    EXPECT_EQ(router.held, std::vector<std::uint32_t>{0});
    // A closed group's output has no reader and holds nobody back.
    from_node(0, msg::Output{1000, msg::Stream::out, "late\n", id + 100, 0});
    EXPECT_TRUE(router.take<msg::Output>().empty());
    EXPECT_EQ(router.held.size(), 1U);
}

TEST_F(TwoNodes, MembersOfALostNodeFailAsLostAndItGetsNoNewWork) {
    const auto id = started_group(4, kFrontEnd, "cyclic");
    auto started = router.take<msg::GroupStarted>();
    ASSERT_EQ(started.size(), 1U);
    std::size_t on_one = 0;
    for (const auto& m : started[0].second.members) on_one += m.node_id == 1 ? 1 : 0;
    ASSERT_EQ(on_one, 2U) << "cyclic over two nodes";
    router.lose(1);
    global.node_lost(1, "no word for 1.0 s");
    // The survivors are stopped; once they end, the group fails as lost.
    EXPECT_FALSE(router.take<msg::SignalMembers>().empty());
    from_node(0, msg::MembersExited{id, {{0, 1000, 2000, {0, SIGINT}, {}}, {2, 1002, 2002, {0, SIGINT}, {}}}});
    auto done = router.take<msg::GroupDone>();
    ASSERT_EQ(done.size(), 1U);
    EXPECT_EQ(done[0].second.outcome, msg::GroupOutcome::failed);
    EXPECT_EQ(done[0].second.fail_kind, msg::FailKind::lost);
    EXPECT_NE(done[0].second.fail_error.find("node 1 (host1) was lost"), std::string::npos) << done[0].second.fail_error;
    // A new group is placed on node 0 alone.
    from_owner(kFrontEnd, start_of(2, 8));
    auto execs = router.take<msg::ExecMembers>();
    ASSERT_EQ(execs.size(), 1U);
    EXPECT_EQ(execs[0].first.node, 0U);
}

}  // namespace
}  // namespace dragon::agent
