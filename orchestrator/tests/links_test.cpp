// The links against a fake transport and a fake router: the join on node 0
// and on node k, which connections are refused and which become lanes,
// heartbeats and the loss of a node, teardown. No agent, no sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/links/links.hpp"
#include "fake_router.hpp"
#include "fake_transport.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::agent {
namespace {

using namespace std::chrono_literals;

pg::NodeResources resources(std::uint32_t node) {
    auto topo = pg::Topology::synthetic("pack:1 core:2 pu:1");
    EXPECT_TRUE(topo) << topo.error().message();
    auto r = pg::NodeResources::from(*topo, node, "host" + std::to_string(node));
    EXPECT_TRUE(r) << r.error().message();
    return std::move(*r);
}

/// One node's links, with every hook recorded.
struct LinksFixture {
    LinksFixture(std::uint32_t nnodes, std::uint32_t self, std::uint32_t heartbeat_ms = 10000)
        : router(nnodes, self), nodes(kNodeRoutes, self == 0), own(resources(self)) {
        LinksHooks h;
        h.frame = [this](std::uint32_t from, wire::Frame&& f) {
            if (auto st = nodes.dispatch(from == 0 ? Sender::head : Sender::node, from, wire::Frame(f)); !st)
                frames.push_back({from, std::move(f)});  // not the links' own: the agent's
        };
        h.payload = [](std::uint32_t, wire::Frame&&, std::uint64_t) -> Result<transport::PayloadSink> {
            return transport::PayloadSink{};
        };
        h.lane = [this](std::shared_ptr<transport::Link> l) { lanes.push_back(std::move(l)); };
        h.drained = [this] { ++drained; };
        h.resources = [this]() -> Result<const pg::NodeResources*> {
            if (no_topology) return Error(Errc::internal, "no topology here");
            return &own;
        };
        h.node_joined = [this](std::uint32_t n, pg::NodeResources r) {
            EXPECT_EQ(r.node_id, n);
            joined_nodes.push_back(n);
        };
        h.joined = [this] { ++joined; };
        h.join_failed = [this](const char* why) { join_failures.emplace_back(why); };
        h.link_down = [this](std::uint32_t n, const std::string& why) { downs.push_back({n, why}); };
        h.node_lost = [this](std::uint32_t n, const std::string& why) { losses.push_back({n, why}); };
        h.node_finished = [this](std::uint32_t n) { finished.push_back(n); };
        links = std::make_unique<Links>(router, io,
                                        LinksOptions{"host" + std::to_string(self), {"10.0.0.100", 7000}, heartbeat_ms},
                                        std::move(h));
        links->bind(nodes);
        auto t = std::make_unique<FakeTransport>();
        transport = t.get();
        auto ep = links->listen(std::move(t), "10.0.0.1", -1);
        EXPECT_TRUE(ep) << ep.error().message();
    }

    /// Every route of the links' own has its handler; the rest are the agent's.
    void run_for(std::chrono::milliseconds d) {
        io.restart();
        io.run_for(d);
    }

    asio::io_context io;
    FakeRouter router;
    Dispatcher<std::uint32_t> nodes;
    pg::NodeResources own;
    bool no_topology = false;
    std::unique_ptr<Links> links;
    FakeTransport* transport = nullptr;

    std::vector<std::pair<std::uint32_t, wire::Frame>> frames;
    std::vector<std::shared_ptr<transport::Link>> lanes;
    int drained = 0;
    std::vector<std::uint32_t> joined_nodes;
    int joined = 0;
    std::vector<std::string> join_failures;
    std::vector<std::pair<std::uint32_t, std::string>> downs, losses;
    std::vector<std::uint32_t> finished;
};

msg::NodeHello hello_of(std::uint32_t node) {
    return msg::NodeHello{msg::kProtocolVersion, node, 1000 + static_cast<std::int32_t>(node), "host" + std::to_string(node),
                          "10.0.0." + std::to_string(node + 1), static_cast<std::uint16_t>(5000 + node),
                          wire::body_of(resources(node))};
}

/// Node 0 of three, with nodes 1 and 2 linked and greeted.
struct Head3 : ::testing::Test {
    Head3() {
        f.links->start(20s);
        one = f.transport->accept(1);
        two = f.transport->accept(2);
        one->deliver(hello_of(1));
        two->deliver(hello_of(2));
    }
    LinksFixture f{3, 0};
    std::shared_ptr<FakeLink> one, two;
};

TEST_F(Head3, NodeZeroHandsOutTheTableOnceEveryNodeSaidHelloAndIsJoinedWhenAllAreReady) {
    EXPECT_TRUE(one->started);
    EXPECT_EQ(f.transport->listening_on, "10.0.0.1");
    EXPECT_EQ(f.joined_nodes, (std::vector<std::uint32_t>{1, 2, 0})) << "node 0's own resources last";
    for (auto* l : {one.get(), two.get()}) {
        auto tables = l->take<msg::NodeTable>();
        ASSERT_EQ(tables.size(), 1U);
        ASSERT_EQ(tables[0].nodes.size(), 3U);
        EXPECT_EQ(tables[0].nodes[0].address, "10.0.0.1");
        EXPECT_EQ(tables[0].nodes[0].port, 4000);
        EXPECT_EQ(tables[0].nodes[2].hostname, "host2");
        EXPECT_EQ(tables[0].nodes[2].port, 5002);
    }
    EXPECT_EQ(f.links->hostname(1), "host1");
    EXPECT_EQ(f.links->endpoint(2).address, "10.0.0.3");
    one->deliver(msg::NodeReady{1});
    EXPECT_EQ(f.joined, 0) << "node 2 is not ready yet";
    EXPECT_EQ(f.links->state(), Links::State::joining);
    two->deliver(msg::NodeReady{2});
    EXPECT_EQ(f.joined, 1);
    EXPECT_EQ(f.links->state(), Links::State::up);
}

TEST_F(Head3, ASecondConnectionFromALinkedNodeIsALaneOnceUpAndRefusedWhileJoining) {
    auto early = f.transport->accept(1);
    EXPECT_FALSE(early->is_open()) << "while joining a node links once";
    EXPECT_TRUE(f.lanes.empty());
    one->deliver(msg::NodeReady{1});
    two->deliver(msg::NodeReady{2});
    auto lane = f.transport->accept(1);
    ASSERT_EQ(f.lanes.size(), 1U);
    EXPECT_EQ(f.lanes[0].get(), lane.get());
    EXPECT_TRUE(lane->is_open());
    EXPECT_FALSE(lane->started) << "the gateway starts it, not the links";
    f.links->begin_finish();
    auto late = f.transport->accept(2);
    EXPECT_FALSE(late->is_open()) << "no lanes during teardown";
    EXPECT_EQ(f.lanes.size(), 1U);
}

TEST(LinksService, ConnectionsFromStrangersAreRefused) {
    LinksFixture f(3, 0);
    f.links->start(20s);
    auto self = f.transport->accept(0);
    auto outsider = f.transport->accept(7);
    EXPECT_FALSE(self->is_open());
    EXPECT_FALSE(outsider->is_open());
    EXPECT_EQ(f.links->link(0), nullptr);
}

TEST(LinksService, NodeKRefusesLowerIdsAndNewNodesOnceUp) {
    LinksFixture f(3, 2);
    f.links->start(20s);
    auto from_one = f.transport->accept(1);
    EXPECT_FALSE(from_one->is_open()) << "node 2 dials node 1, it does not accept it";
}

TEST(LinksService, NodeKDialsNodeZeroSaysHelloThenDialsLowerIdsFromTheTableAndSaysReady) {
    LinksFixture f(3, 2);
    f.links->start(20s);
    ASSERT_EQ(f.transport->dials.size(), 1U);
    EXPECT_EQ(f.transport->dials[0].node, 0U);
    EXPECT_EQ(f.transport->dials[0].at.address, "10.0.0.100");
    EXPECT_EQ(f.transport->dials[0].at.port, 7000);
    auto head = f.transport->answer_dial();
    ASSERT_TRUE(head);
    EXPECT_TRUE(head->started);
    auto hellos = head->take<msg::NodeHello>();
    ASSERT_EQ(hellos.size(), 1U);
    EXPECT_EQ(hellos[0].node_id, 2U);
    EXPECT_EQ(hellos[0].hostname, "host2");
    EXPECT_EQ(hellos[0].address, "10.0.0.1");
    EXPECT_EQ(hellos[0].port, 4000);
    auto res = wire::decode_exact<pg::NodeResources>(hellos[0].resources);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->node_id, 2U);

    msg::NodeTable table;
    table.nodes = {{0, "host0", "10.0.0.100", 7000}, {1, "host1", "10.0.0.2", 5001}, {2, "host2", "10.0.0.1", 4000}};
    head->deliver(table);
    ASSERT_EQ(f.transport->dials.size(), 1U);
    EXPECT_EQ(f.transport->dials[0].node, 1U);
    EXPECT_EQ(f.transport->dials[0].at.address, "10.0.0.2");
    EXPECT_EQ(f.transport->dials[0].at.port, 5001);
    EXPECT_TRUE(head->take<msg::NodeReady>().empty());
    auto one = f.transport->answer_dial();
    ASSERT_TRUE(one);
    EXPECT_TRUE(one->take<msg::NodeHello>().empty()) << "only node 0 hears a hello";
    auto ready = head->take<msg::NodeReady>();
    ASSERT_EQ(ready.size(), 1U);
    EXPECT_EQ(ready[0].node_id, 2U);
    EXPECT_EQ(f.joined, 1);
    EXPECT_EQ(f.links->state(), Links::State::up);
    EXPECT_EQ(f.links->hostname(1), "host1");
}

TEST(LinksService, AFailedDialIsRetriedUntilItSucceeds) {
    LinksFixture f(2, 1);
    f.links->start(20s);
    f.transport->answer_dial("connection refused");
    EXPECT_TRUE(f.transport->dials.empty());
    f.run_for(300ms);
    ASSERT_FALSE(f.transport->dials.empty()) << "dialled again after a pause";
    EXPECT_EQ(f.transport->dials[0].node, 0U);
    EXPECT_TRUE(f.transport->answer_dial());
    EXPECT_TRUE(f.join_failures.empty());
}

TEST(LinksService, AJoinThatDoesNotCompleteInTimeFailsNamingTheMissingNodes) {
    LinksFixture f(3, 0);
    f.links->start(50ms);
    auto one = f.transport->accept(1);
    one->deliver(hello_of(1));
    f.run_for(200ms);
    ASSERT_EQ(f.join_failures.size(), 1U);
    EXPECT_EQ(f.join_failures[0], "join timeout");
    EXPECT_EQ(f.joined, 0);
}

TEST(LinksService, EndingTheJoinStopsTheDeadlineAndTheDialling) {
    LinksFixture f(2, 1);
    f.links->start(50ms);
    f.links->end_join();
    EXPECT_EQ(f.links->state(), Links::State::up);
    auto late = f.transport->answer_dial();
    ASSERT_TRUE(late);
    EXPECT_FALSE(late->started) << "a dial that comes back after the join ended is not used";
    f.run_for(150ms);
    EXPECT_TRUE(f.join_failures.empty());
}

TEST(LinksService, NodeZeroWithoutATopologyFailsTheJoin) {
    LinksFixture f(2, 0);
    f.no_topology = true;
    f.links->start(20s);
    auto one = f.transport->accept(1);
    one->deliver(hello_of(1));
    ASSERT_EQ(f.join_failures.size(), 1U);
    EXPECT_EQ(f.join_failures[0], "no topology");
    EXPECT_TRUE(one->take<msg::NodeTable>().empty());
}

TEST(LinksService, ABadHelloDropsTheNode) {
    LinksFixture f(2, 0);
    f.links->start(20s);
    auto one = f.transport->accept(1);
    auto h = hello_of(1);
    h.node_id = 5;
    one->deliver(h);
    EXPECT_FALSE(one->is_open());
    ASSERT_EQ(f.downs.size(), 1U);
    EXPECT_EQ(f.downs[0].second, "bad hello");
    EXPECT_EQ(f.join_failures.size(), 1U) << "a node lost while joining fails the run";
    EXPECT_TRUE(f.links->lost(1));
}

TEST_F(Head3, ALostNodeIsReportedOnceAfterItsLinkWentDownAndIsNeverBack) {
    one->deliver(msg::NodeReady{1});
    two->deliver(msg::NodeReady{2});
    two->drop("connection reset");
    ASSERT_EQ(f.downs.size(), 1U);
    EXPECT_EQ(f.downs[0].first, 2U);
    ASSERT_EQ(f.losses.size(), 1U);
    EXPECT_EQ(f.losses[0].first, 2U);
    EXPECT_EQ(f.losses[0].second, "connection reset");
    EXPECT_TRUE(f.links->lost(2));
    EXPECT_EQ(f.links->link(2), nullptr);
    EXPECT_EQ(f.links->send_frame(2, static_cast<std::uint16_t>(msg::Type::heartbeat), "x"), Delivery::dropped);
    auto back = f.transport->accept(2);
    EXPECT_FALSE(back->is_open()) << "a lost node is never back";
    EXPECT_TRUE(f.join_failures.empty());
}

TEST(LinksService, NodeKStopsOnlyForTheLossOfNodeZero) {
    LinksFixture f(3, 2);
    f.links->start(20s);
    auto head = f.transport->answer_dial();
    msg::NodeTable table;
    table.nodes = {{0, "host0", "10.0.0.100", 7000}, {1, "host1", "10.0.0.2", 5001}, {2, "host2", "10.0.0.1", 4000}};
    head->deliver(table);
    auto one = f.transport->answer_dial();
    one->drop("reset");
    EXPECT_EQ(f.downs.size(), 1U);
    EXPECT_TRUE(f.losses.empty()) << "node 0 judges the loss of other nodes";
    head->drop("reset");
    ASSERT_EQ(f.losses.size(), 1U);
    EXPECT_EQ(f.losses[0].first, 0U);
}

TEST(LinksService, ASilentNodeIsLostAfterTheHeartbeatTimeoutUnlessItsLinkIsHeldBack) {
    LinksFixture g(3, 0, 60);
    g.links->start(20s);
    auto a = g.transport->accept(1);
    auto b = g.transport->accept(2);
    g.links->hold_back(2);
    EXPECT_TRUE(b->paused);
    g.run_for(250ms);
    EXPECT_FALSE(a->take<msg::Heartbeat>().empty()) << "heartbeats go out";
    ASSERT_EQ(g.downs.size(), 1U);
    EXPECT_EQ(g.downs[0].first, 1U);
    EXPECT_NE(g.downs[0].second.find("no word for"), std::string::npos);
    EXPECT_FALSE(g.links->lost(2)) << "silent by our choice: not judged";
    g.links->resume_held();
    EXPECT_FALSE(b->paused);
}

TEST_F(Head3, TeardownWaitsForEveryNodeToFinishOrGivesUpOnIt) {
    one->deliver(msg::NodeReady{1});
    two->deliver(msg::NodeReady{2});
    f.links->begin_finish();
    EXPECT_EQ(f.links->unfinished(), 2U);
    one->deliver(msg::ShutdownDone{0, 0});
    EXPECT_EQ(f.finished, (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(f.links->unfinished(), 1U);
    one->drop("closed");
    EXPECT_EQ(f.finished, (std::vector<std::uint32_t>{1, 1})) << "its link closing after its teardown is no loss";
    EXPECT_TRUE(f.losses.empty());
    EXPECT_EQ(f.links->give_up_unfinished(), 1U);
    EXPECT_FALSE(two->is_open());
    EXPECT_EQ(f.links->unfinished(), 0U);
    f.links->close();
    EXPECT_FALSE(f.transport->listening);
    EXPECT_EQ(f.links->state(), Links::State::closed);
}

TEST_F(Head3, RouterSendsGoOverTheLinkAndADrainedLinkIsReported) {
    EXPECT_EQ(f.links->send_frame(1, static_cast<std::uint16_t>(msg::Type::shutdown), wire::body_of(msg::Shutdown{true, 0})),
              Delivery::ok);
    EXPECT_EQ(one->take<msg::Shutdown>().size(), 1U);
    one->on_drained();
    EXPECT_EQ(f.drained, 1);
    one->deliver(msg::ClientGone{5});
    ASSERT_EQ(f.frames.size(), 1U) << "frames that are not the links' go to the agent's dispatcher";
    EXPECT_EQ(f.frames[0].first, 1U);
}

}  // namespace
}  // namespace dragon::agent
