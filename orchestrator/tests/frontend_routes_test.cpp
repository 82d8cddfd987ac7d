// The front end's routing rules (cli/routes.hpp): it takes from node 0's
// agent exactly what the agent sends it, and refuses everything else in the
// dispatcher, before a handler runs.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "agent/global/global.hpp"
#include "cli/routes.hpp"
#include "fake_router.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::cli {
namespace {

namespace pg = dragon::procgroup;
using agent::Sender;
using msg::Type;

std::set<Type> routed() {
    std::set<Type> out;
    for (const auto& r : kFrontEndInRoutes) out.insert(r.type);
    return out;
}

TEST(FrontEndRoutes, TheFrontEndTakesTheAgentsRepliesEventsAndEndFromNodeZeroOnly) {
    EXPECT_EQ(routed(), (std::set<Type>{Type::agent_hello, Type::group_started, Type::group_done, Type::output,
                                        Type::proc_exit, Type::stdin_ack, Type::shutdown_done}));
    FrontEndDispatcher d(kFrontEndInRoutes, false);
    for (const auto& r : kFrontEndInRoutes) {
        EXPECT_TRUE(d.allows(static_cast<std::uint16_t>(r.type), Sender::head)) << msg::type_name(static_cast<std::uint16_t>(r.type));
        for (Sender s : {Sender::front_end, Sender::client, Sender::self, Sender::node, Sender::lane})
            EXPECT_FALSE(d.allows(static_cast<std::uint16_t>(r.type), s));
    }
    // What a front end sends, or a client asks, never comes back to it.
    for (Type t : {Type::group_start, Type::stdin_data, Type::shutdown, Type::client_hello, Type::error_reply,
                   Type::node_hello, Type::exec_members})
        EXPECT_FALSE(d.allows(static_cast<std::uint16_t>(t), Sender::head)) << msg::type_name(static_cast<std::uint16_t>(t));
}

TEST(FrontEndRoutes, TheDispatcherRunsTheHandlerOfARoutedFrameAndRefusesTheRest) {
    FrontEndDispatcher d(kFrontEndInRoutes, false);
    std::string got;
    d.on<msg::Output>([&](FromAgent, msg::Output&& m) { got = m.data; });
    EXPECT_FALSE(d.unhandled().empty()) << "the front end checks every route has a handler before it runs";
    ASSERT_TRUE(d.dispatch(Sender::head, {}, wire::Frame{static_cast<std::uint16_t>(Type::output),
                                                          wire::body_of(msg::Output{7, msg::Stream::out, "hi\n", 1, 0})}));
    EXPECT_EQ(got, "hi\n");
    auto bad = d.dispatch(Sender::head, {}, wire::Frame{static_cast<std::uint16_t>(Type::output), "\x01"});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), Errc::protocol);
    auto unrouted = d.dispatch(Sender::head, {}, wire::Frame{static_cast<std::uint16_t>(Type::group_start), ""});
    ASSERT_FALSE(unrouted);
    EXPECT_NE(unrouted.error().message().find("unexpected message 'group_start'"), std::string::npos);
}

pg::NodeResources resources() {
    auto topo = pg::Topology::synthetic("pack:1 core:2 pu:1");
    EXPECT_TRUE(topo);
    auto r = pg::NodeResources::from(*topo, 0, "host0");
    EXPECT_TRUE(r);
    return std::move(*r);
}

// The other side of the table: what node 0's global services send the front
// end over a group's life (refusal, start, output, stdin, exit) is all routed.
TEST(FrontEndRoutes, EverythingTheGlobalServicesSendTheFrontEndIsRouted) {
    asio::io_context io;
    agent::FakeRouter router(1);
    pg::NodeResources own = resources();
    agent::GlobalServices global(router, io,
                                 agent::GlobalOptions{1, "host0", 50, [&]() -> Result<const pg::NodeResources*> { return &own; }});
    agent::Dispatcher<agent::Owner> front_end(agent::kFrontEndRoutes, true), owners(agent::kOwnerRoutes, true);
    agent::Dispatcher<std::uint32_t> nodes(agent::kNodeRoutes, true);
    global.bind(front_end, owners, nodes);
    auto from_front_end = [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        ASSERT_TRUE(front_end.dispatch(Sender::front_end, agent::kFrontEnd,
                                       wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)}));
    };
    auto from_node = [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        ASSERT_TRUE(nodes.dispatch(Sender::self, 0, wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)}));
    };
    msg::GroupStart bad;
    bad.request_id = 1;
    from_front_end(bad);  // no entries: refused
    msg::GroupStart start;
    start.request_id = 2;
    msg::GroupEntry e;
    e.count = 1;
    e.proc.argv = {"cat"};
    e.proc.stdin_mode = msg::StdinMode::forward;
    start.spec.entries.push_back(e);
    from_front_end(start);
    auto execs = router.take<msg::ExecMembers>();
    ASSERT_EQ(execs.size(), 1U);
    const auto id = execs[0].second.group_id;
    from_node(msg::MembersStarted{id, {{0, 1000, 2000, 0, {}}}, true});
    from_front_end(msg::StdinData{1000, "x", false});
    from_node(msg::StdinAck{1000, 1});
    from_node(msg::Output{1000, msg::Stream::out, "x", id, 0});
    from_node(msg::MembersExited{id, {{0, 1000, 2000, {0, 0}, {}}}});
    router.run_posted();

    FrontEndDispatcher d(kFrontEndInRoutes, false);
    std::set<std::uint16_t> seen;
    for (const auto& s : router.sent) {
        if (!s.to_owner || s.owner != agent::kFrontEnd) continue;
        seen.insert(s.frame.type);
        EXPECT_TRUE(d.allows(s.frame.type, Sender::head)) << msg::type_name(s.frame.type);
    }
    for (Type t : {Type::group_started, Type::output, Type::stdin_ack, Type::proc_exit, Type::group_done})
        EXPECT_TRUE(seen.contains(static_cast<std::uint16_t>(t))) << msg::type_name(static_cast<std::uint16_t>(t));
}

}  // namespace
}  // namespace dragon::cli
