// The agent's routing rules (who may send what, routes.hpp) and the
// dispatcher that enforces them (dispatch.hpp).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

#include "agent/dispatch.hpp"
#include "agent/routes.hpp"

namespace dragon::agent {
namespace {

using msg::Type;

template <std::size_t N>
std::span<const Route> span_of(const Route (&t)[N]) {
    return {t, N};
}

struct Table {
    const char* name;
    std::span<const Route> routes;
};

const Table kTables[] = {{"front end", span_of(kFrontEndRoutes)},
                         {"client", span_of(kClientRoutes)},
                         {"owner", span_of(kOwnerRoutes)},
                         {"node", span_of(kNodeRoutes)},
                         {"lane", span_of(kLaneRoutes)}};

bool allowed(std::span<const Route> t, Type type, Sender s, bool head) {
    const Route* r = find_route(t, static_cast<std::uint16_t>(type), head);
    return r != nullptr && r->senders.contains(s);
}

TEST(Routes, EveryRouteIsAKnownMessageWithSendersAndAtMostOnePerRole) {
    for (const auto& [name, table] : kTables) {
        std::set<std::pair<std::uint16_t, bool>> seen;
        for (const Route& r : table) {
            const auto t = static_cast<std::uint16_t>(r.type);
            EXPECT_NE(msg::type_name(t), "unknown") << name << ": type " << t;
            EXPECT_FALSE(r.senders.empty()) << name << ": " << msg::type_name(t);
            for (bool head : {false, true}) {
                if (!takes(r.role, head)) continue;
                EXPECT_TRUE(seen.emplace(t, head).second)
                    << name << ": '" << msg::type_name(t) << "' routed twice for " << (head ? "node 0" : "node k");
            }
        }
    }
}

TEST(Routes, ExecutorsTakeOrdersFromNodeZeroOnly) {
    const auto nodes = span_of(kNodeRoutes);
    for (Type t : {Type::exec_members, Type::signal_members, Type::respawn_member, Type::forget_group, Type::stdin_data}) {
        for (bool head : {false, true}) {
            EXPECT_TRUE(allowed(nodes, t, Sender::self, head)) << msg::type_name(static_cast<std::uint16_t>(t));
            EXPECT_FALSE(allowed(nodes, t, Sender::node, head)) << msg::type_name(static_cast<std::uint16_t>(t));
            EXPECT_FALSE(allowed(nodes, t, Sender::lane, head));
            EXPECT_FALSE(allowed(nodes, t, Sender::client, head));
        }
        EXPECT_TRUE(allowed(nodes, t, Sender::head, false));
    }
}

TEST(Routes, GlobalServicesLiveOnNodeZeroOnly) {
    const auto nodes = span_of(kNodeRoutes);
    for (Type t : {Type::members_started, Type::members_exited, Type::pmi_abort, Type::stdin_ack, Type::output}) {
        EXPECT_TRUE(allowed(nodes, t, Sender::node, true));
        EXPECT_TRUE(allowed(nodes, t, Sender::self, true));  // node 0's own executor
        EXPECT_FALSE(allowed(nodes, t, Sender::head, false)) << "node k has no global services";
        EXPECT_FALSE(allowed(nodes, t, Sender::node, false));
    }
    // Joining and teardown are node 0's to judge; nobody else takes them.
    for (Type t : {Type::node_hello, Type::node_ready, Type::shutdown_done, Type::client_gone}) {
        EXPECT_TRUE(allowed(nodes, t, Sender::node, true));
        EXPECT_FALSE(allowed(nodes, t, Sender::self, true));
        EXPECT_EQ(find_route(nodes, static_cast<std::uint16_t>(t), false), nullptr);
    }
    // What only node 0 says to the others.
    for (Type t : {Type::node_table, Type::shutdown}) {
        EXPECT_TRUE(allowed(nodes, t, Sender::head, false));
        EXPECT_FALSE(allowed(nodes, t, Sender::node, false)) << "another node may not stop this one";
        EXPECT_EQ(find_route(nodes, static_cast<std::uint16_t>(t), true), nullptr);
    }
}

TEST(Routes, ClientRelayMeansARequestAtNodeZeroAndAReplyElsewhere) {
    const auto nodes = span_of(kNodeRoutes);
    EXPECT_TRUE(allowed(nodes, Type::client_relay, Sender::node, true));
    EXPECT_FALSE(allowed(nodes, Type::client_relay, Sender::self, true));
    EXPECT_TRUE(allowed(nodes, Type::client_relay, Sender::head, false));
    EXPECT_FALSE(allowed(nodes, Type::client_relay, Sender::node, false)) << "replies come from node 0 only";
}

TEST(Routes, LanesCarryChannelAndSyncOperationsOnly) {
    const auto lanes = span_of(kLaneRoutes);
    for (Type t : {Type::remote_send, Type::remote_recv, Type::remote_count, Type::remote_cancel, Type::remote_sync})
        for (bool head : {false, true}) EXPECT_TRUE(allowed(lanes, t, Sender::lane, head));
    for (Type t : {Type::remote_reply, Type::exec_members, Type::shutdown, Type::node_hello, Type::client_relay})
        EXPECT_EQ(find_route(lanes, static_cast<std::uint16_t>(t), false), nullptr);
    // ...and a lane is never mistaken for a node.
    for (const Route& r : kNodeRoutes) EXPECT_FALSE(r.senders.contains(Sender::lane));
}

TEST(Routes, OnlyTheFrontEndStopsTheRunAndClientsCannot) {
    EXPECT_TRUE(allowed(span_of(kFrontEndRoutes), Type::shutdown, Sender::front_end, true));
    EXPECT_EQ(find_route(span_of(kFrontEndRoutes), static_cast<std::uint16_t>(Type::shutdown), false), nullptr);
    EXPECT_EQ(find_route(span_of(kClientRoutes), static_cast<std::uint16_t>(Type::shutdown), false), nullptr);
    EXPECT_EQ(find_route(span_of(kClientRoutes), static_cast<std::uint16_t>(Type::exec_members), false), nullptr);
    EXPECT_EQ(find_route(span_of(kOwnerRoutes), static_cast<std::uint16_t>(Type::chan_send), true), nullptr);
}

// ---- the dispatcher ----

TEST(Dispatcher, RunsTheHandlerWithTheDecodedMessage) {
    Dispatcher<std::uint32_t> d(span_of(kNodeRoutes), false);
    std::uint32_t seen_from = 0;
    std::uint64_t seen_group = 0;
    d.on<msg::ForgetGroup>([&](std::uint32_t from, msg::ForgetGroup&& m) {
        seen_from = from;
        seen_group = m.group_id;
    });
    auto f = wire::Frame{static_cast<std::uint16_t>(Type::forget_group), wire::body_of(msg::ForgetGroup{42})};
    ASSERT_TRUE(d.dispatch(Sender::head, 0, std::move(f)));
    EXPECT_EQ(seen_from, 0U);
    EXPECT_EQ(seen_group, 42U);
}

TEST(Dispatcher, RefusesASenderThatMayNotSendItBeforeTheHandlerRuns) {
    Dispatcher<std::uint32_t> d(span_of(kNodeRoutes), false);
    int runs = 0;
    d.on<msg::ForgetGroup>([&](std::uint32_t, msg::ForgetGroup&&) { ++runs; });
    auto st = d.dispatch(Sender::node, 3,
                         wire::Frame{static_cast<std::uint16_t>(Type::forget_group), wire::body_of(msg::ForgetGroup{1})});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code(), Errc::protocol);
    EXPECT_NE(st.error().message().find("'forget_group'"), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find("may not come from another node"), std::string::npos) << st.error().message();
    EXPECT_EQ(runs, 0);
}

TEST(Dispatcher, RefusesABadBodyAndAnUnroutedOrUnhandledType) {
    Dispatcher<std::uint32_t> d(span_of(kNodeRoutes), true);
    int runs = 0;
    d.on<msg::MembersExited>([&](std::uint32_t, msg::MembersExited&&) { ++runs; });
    auto bad = d.dispatch(Sender::node, 1, wire::Frame{static_cast<std::uint16_t>(Type::members_exited), "\x01\x02"});
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("bad 'members_exited' frame"), std::string::npos) << bad.error().message();
    // Routed for node 0 but not bound here.
    auto unbound = d.dispatch(Sender::node, 1, wire::Frame{static_cast<std::uint16_t>(Type::node_ready), ""});
    ASSERT_FALSE(unbound);
    EXPECT_NE(unbound.error().message().find("unexpected message 'node_ready'"), std::string::npos);
    // Not a message of this table at all, and a type number beyond any.
    EXPECT_FALSE(d.dispatch(Sender::node, 1, wire::Frame{static_cast<std::uint16_t>(Type::client_hello), ""}));
    EXPECT_FALSE(d.dispatch(Sender::node, 1, wire::Frame{60000, ""}));
    EXPECT_EQ(runs, 0);
}

TEST(Dispatcher, RawHandlersGetTheFrameAsItCame) {
    Dispatcher<std::uint64_t> d(span_of(kClientRoutes), false);
    std::string body;
    d.on_frame(Type::chan_send, [&](std::uint64_t, wire::Frame&& f) { body = f.body; });
    ASSERT_TRUE(d.dispatch(Sender::client, 7, wire::Frame{static_cast<std::uint16_t>(Type::chan_send), "not decoded"}));
    EXPECT_EQ(body, "not decoded");
}

TEST(Dispatcher, BindingWithoutARouteOrTwiceIsAProgrammingError) {
    Dispatcher<std::uint32_t> k(span_of(kNodeRoutes), false);
    EXPECT_THROW(k.on<msg::MembersStarted>([](std::uint32_t, msg::MembersStarted&&) {}), std::logic_error)
        << "node k has no global services";
    k.on<msg::Heartbeat>([](std::uint32_t, msg::Heartbeat&&) {});
    EXPECT_THROW(k.on<msg::Heartbeat>([](std::uint32_t, msg::Heartbeat&&) {}), std::logic_error);
}

TEST(Dispatcher, ListsTheRoutesOfItsRoleWithoutAHandler) {
    Dispatcher<std::uint32_t> d(span_of(kLaneRoutes), false);
    EXPECT_EQ(d.unhandled().size(), 5U);
    d.on<msg::RemoteSend>([](std::uint32_t, msg::RemoteSend&&) {});
    d.on<msg::RemoteRecv>([](std::uint32_t, msg::RemoteRecv&&) {});
    d.on<msg::RemoteCount>([](std::uint32_t, msg::RemoteCount&&) {});
    d.on<msg::RemoteSync>([](std::uint32_t, msg::RemoteSync&&) {});
    ASSERT_EQ(d.unhandled().size(), 1U);
    EXPECT_EQ(d.unhandled()[0], Type::remote_cancel);
    EXPECT_TRUE(d.allows(static_cast<std::uint16_t>(Type::remote_send), Sender::lane));
    EXPECT_FALSE(d.allows(static_cast<std::uint16_t>(Type::remote_send), Sender::node));
}

}  // namespace
}  // namespace dragon::agent
