// The channel gateway against a fake router and fake links, with a real
// pool and channels: serving other nodes' operations on this node's
// channels (at once, waiting, large messages, after teardown), a local
// client's operation on another node's channel and the loss of that node,
// sync-object operations for another host's processes (what they hold
// given back when they go), and a lane's greeting. No agent, no other process.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "../../channels/tests/test_util.hpp"
#include "dragon/channels/sync.hpp"
#include "agent/gateway/gateway.hpp"
#include "fake_router.hpp"
#include "fake_transport.hpp"

namespace dragon::agent {
namespace {

using namespace std::chrono_literals;
using channels::test::ScopedPool;

std::string descriptor_of(const channels::Channel& ch) {
    const auto d = ch.descriptor().encode();
    return {reinterpret_cast<const char*>(d.data()), d.size()};
}

/// Node 1 of two, linked to node 0, with a channel in its pool.
struct GatewayFixture : ::testing::Test {
    GatewayFixture()
        : router(2, 1),
          pool(4U << 20, 1),
          clients(kClientRoutes, false),
          nodes(kNodeRoutes, false),
          head(std::make_shared<FakeLink>(0)) {
        GatewayHooks h;
        h.link = [this](std::uint32_t n) -> transport::Link* { return n == 0 && head->open ? head.get() : nullptr; };
        h.endpoint = [](std::uint32_t) { return transport::Endpoint{"127.0.0.1", 1}; };
        h.transport_name = [] { return std::string_view("fake"); };
        h.client = [this](std::uint64_t id) -> std::shared_ptr<rt::UnixConnection> {
            auto it = conns.find(id);
            return it == conns.end() ? nullptr : it->second;
        };
        h.forget_client = [this](std::uint64_t id) { conns.erase(id); };
        gateway = std::make_unique<Gateway>(router, io, *pool, GatewayOptions{}, std::move(h));
        gateway->bind(clients, nodes);
        // As the links do: payloads from node 0 go to the gateway.
        head->start([](wire::Frame&&) {}, [](const Error*) {},
                    [this](wire::Frame&& header, std::uint64_t size) { return gateway->on_payload(0, std::move(header), size); });
        auto ch = channels::Channel::create(*pool);
        EXPECT_TRUE(ch) << ch.error().message();
        channel.emplace(std::move(*ch));
        desc = descriptor_of(*channel);
    }
    ~GatewayFixture() override { gateway->stop_waiting_all(); }

    template <class M>
    void from_head(const M& m) {
        auto st = nodes.dispatch(Sender::head, 0, wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)});
        ASSERT_TRUE(st) << st.error().message();
    }
    /// A local client `id` of the agent: returns the client's end of its socket.
    asio::local::stream_protocol::socket client(std::uint64_t id) {
        asio::local::stream_protocol::socket ours(io), theirs(io);
        asio::local::connect_pair(ours, theirs);
        auto conn = std::make_shared<rt::UnixConnection>(std::move(ours), "client " + std::to_string(id));
        conns[id] = conn;
        conn->start([](wire::Frame&&) {}, [](const Error*) {});
        return theirs;
    }
    /// The first chan_reply the client finds on its end of the socket.
    static std::optional<msg::ChanReply> reply_on(asio::local::stream_protocol::socket& theirs) {
        wire::FrameDecoder dec;
        char buf[4096];
        const auto n = ::recv(theirs.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) return std::nullopt;
        dec.feed({buf, static_cast<std::size_t>(n)});
        auto f = dec.next();
        if (!f || !*f) return std::nullopt;
        auto r = msg::decode_as<msg::ChanReply>(**f);
        if (!r) return std::nullopt;
        return std::move(*r);
    }
    /// Runs the loop for about `d` (a worker's result is posted from its thread).
    void run_for(std::chrono::milliseconds d) {
        const auto end = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < end) {
            io.restart();
            io.run_for(5ms);
            std::this_thread::sleep_for(1ms);
        }
    }

    asio::io_context io;
    FakeRouter router;
    ScopedPool pool;
    Dispatcher<std::uint64_t> clients;
    Dispatcher<std::uint32_t> nodes;
    std::shared_ptr<FakeLink> head;
    std::map<std::uint64_t, std::shared_ptr<rt::UnixConnection>> conns;
    std::unique_ptr<Gateway> gateway;
    std::optional<channels::Channel> channel;
    std::string desc;
};

TEST_F(GatewayFixture, ServesAnotherNodesSendAndReceiveOnItsChannels) {
    from_head(msg::RemoteSend{5, desc, 0, "hello"});
    auto replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].op_id, 5U);
    EXPECT_EQ(replies[0].code, 0U) << replies[0].message;
    from_head(msg::RemoteRecv{6, desc, 0});
    replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].op_id, 6U);
    EXPECT_EQ(replies[0].data, "hello");
    from_head(msg::RemoteRecv{7, desc, 0});
    replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].code, static_cast<std::uint16_t>(Errc::would_block)) << "empty, and no waiting asked for";
    EXPECT_GT(gateway->last_busy().time_since_epoch().count(), 0) << "the loop spins after gateway traffic";
}

TEST_F(GatewayFixture, CountsTheMessagesOfItsChannelForAnotherNode) {
    from_head(msg::RemoteCount{20, desc});
    auto replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].op_id, 20U);
    EXPECT_EQ(replies[0].code, 0U) << replies[0].message;
    EXPECT_EQ(replies[0].data, "0");
    for (const char* m : {"a", "b", "c"})
        ASSERT_TRUE(channel->send({reinterpret_cast<const std::byte*>(m), 1}, channels::kTryOnce));
    from_head(msg::RemoteCount{21, desc});
    replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].data, "3") << "counted, not taken";
    EXPECT_EQ(channel->queued(), 3U);
    from_head(msg::RemoteCount{22, "not a descriptor"});
    replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_NE(replies[0].code, 0U) << "a bad descriptor is an error reply, not a crash";
    EXPECT_FALSE(replies[0].message.empty());
}

TEST_F(GatewayFixture, AReceiveThatMayWaitWaitsInAWorkerUntilItsTimeout) {
    from_head(msg::RemoteRecv{8, desc, std::chrono::nanoseconds(50ms).count()});
    EXPECT_TRUE(head->take<msg::RemoteReply>().empty()) << "it waits";
    for (int i = 0; i < 40 && head->sent.empty(); ++i) run_for(50ms);
    auto replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].code, static_cast<std::uint16_t>(Errc::timeout)) << replies[0].message;
}

TEST_F(GatewayFixture, ALargeMessageGoesStraightIntoAPoolBlockAndBackAsAPayload) {
    const std::string big(100U << 10, 'x');
    ASSERT_TRUE(head->deliver_payload(msg::RemoteSend{9, desc, 0, {}}, big));
    auto replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].code, 0U) << replies[0].message;
    std::vector<std::byte> got;
    ASSERT_TRUE(channel->recv(got, channels::kTryOnce));
    EXPECT_EQ(got.size(), big.size());
    ASSERT_TRUE(channel->send({reinterpret_cast<const std::byte*>(big.data()), big.size()}, channels::kTryOnce));
    from_head(msg::RemoteRecv{10, desc, 0});
    replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U) << "the header of a payload message";
    EXPECT_TRUE(replies[0].data.empty()) << "the bytes follow as a payload, not inside the frame";
}

TEST_F(GatewayFixture, NothingIsServedOnceTheNodesTeardownBegan) {
    gateway->finish();
    from_head(msg::RemoteSend{11, desc, 0, "late"});
    auto replies = head->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].code, static_cast<std::uint16_t>(Errc::closed));
    EXPECT_NE(replies[0].message.find("shutting down"), std::string::npos);
}

TEST_F(GatewayFixture, AClientsOperationGoesToTheChannelsNodeAndFailsWhenThatNodeIsLost) {
    ScopedPool remote(1U << 20, 0);
    auto rch = channels::Channel::create(*remote);
    ASSERT_TRUE(rch);
    auto theirs = client(3);
    ASSERT_TRUE(clients.dispatch(Sender::client, 3,
                                 wire::Frame{static_cast<std::uint16_t>(msg::Type::chan_recv),
                                             wire::body_of(msg::ChanRecv{77, descriptor_of(*rch), -1})}));
    auto recvs = head->take<msg::RemoteRecv>();
    ASSERT_EQ(recvs.size(), 1U) << "straight to the channel's node";
    gateway->link_down(0, "connection reset");
    run_for(100ms);
    auto reply = reply_on(theirs);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->request_id, 77U);
    EXPECT_EQ(reply->code, static_cast<std::uint16_t>(Errc::closed));
    EXPECT_NE(reply->message.find("node 0 was lost"), std::string::npos) << reply->message;
}

TEST_F(GatewayFixture, AClientsCountGoesToTheChannelsNodeAndItsAnswerComesBack) {
    ScopedPool remote(1U << 20, 0);
    auto rch = channels::Channel::create(*remote);
    ASSERT_TRUE(rch);
    auto theirs = client(4);
    ASSERT_TRUE(clients.dispatch(Sender::client, 4,
                                 wire::Frame{static_cast<std::uint16_t>(msg::Type::chan_count),
                                             wire::body_of(msg::ChanCount{78, descriptor_of(*rch)})}));
    auto asks = head->take<msg::RemoteCount>();
    ASSERT_EQ(asks.size(), 1U) << "straight to the channel's node";
    ASSERT_TRUE(nodes.dispatch(Sender::head, 0,
                               wire::Frame{static_cast<std::uint16_t>(msg::Type::remote_reply),
                                           wire::body_of(msg::RemoteReply{asks[0].op_id, 0, {}, "12"})}));
    run_for(50ms);
    auto reply = reply_on(theirs);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->request_id, 78U);
    EXPECT_EQ(reply->code, 0U) << reply->message;
    EXPECT_EQ(reply->data, "12");
}

/// Sync operations of node 0 (another host) on node 1's blocks.
struct SyncFixture : GatewayFixture {
    msg::RemoteReply sync(const channels::SyncBlock& b, msg::SyncOp op, std::int64_t arg = 0, std::uint64_t length = 0,
                          std::int64_t timeout_ns = 0, std::string data = {}) {
        const std::uint64_t id = next++;
        from_head(msg::RemoteSync{id, b.pool_name(), b.pool_generation(), b.offset(), b.id(),
                                  static_cast<std::uint8_t>(op), arg, length, timeout_ns, std::move(data)});
        auto replies = head->take<msg::RemoteReply>();
        EXPECT_EQ(replies.size(), 1U) << "answered at once";
        if (replies.empty()) return {};
        EXPECT_EQ(replies[0].op_id, id);
        return replies[0];
    }
    static constexpr auto kBad = static_cast<std::uint16_t>(Errc::invalid_argument);
    std::uint64_t next = 100;
};

TEST_F(SyncFixture, DoesAnotherHostsOperationsOnItsBlocks) {
    auto lock = channels::SyncBlock::create(*pool, 1, 1, 0);
    auto data = channels::SyncBlock::create(*pool, 0, 5, 16);
    ASSERT_TRUE(lock && data);
    EXPECT_EQ(sync(*lock, msg::SyncOp::info).data, "1 0");
    EXPECT_EQ(sync(*data, msg::SyncOp::info).data, "5 16");
    EXPECT_EQ(sync(*lock, msg::SyncOp::acquire).data, "1");
    EXPECT_EQ(lock->value(), 0) << "taken in the block itself, as a local process would";
    EXPECT_EQ(sync(*lock, msg::SyncOp::acquire).data, "0") << "held: not within a zero timeout";
    EXPECT_EQ(sync(*lock, msg::SyncOp::release).code, 0U);
    auto twice = sync(*lock, msg::SyncOp::release);
    EXPECT_EQ(twice.code, kBad) << "released too many times";
    EXPECT_EQ(sync(*lock, msg::SyncOp::value).data, "1");
    // Event and epoch words, and the data area
    EXPECT_EQ(sync(*data, msg::SyncOp::store, 1).code, 0U);
    EXPECT_EQ(sync(*data, msg::SyncOp::wait_positive).data, "1");
    EXPECT_EQ(sync(*data, msg::SyncOp::bump).data, "2");
    EXPECT_EQ(sync(*data, msg::SyncOp::wait_change, 2).data, "0") << "still 2";
    EXPECT_EQ(sync(*data, msg::SyncOp::wait_change, 1).data, "1");
    EXPECT_EQ(sync(*data, msg::SyncOp::store, 6).code, kBad) << "above the maximum";
    EXPECT_EQ(sync(*data, msg::SyncOp::write, 12, 0, 0, "wxyz").code, 0U);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(data->data()) + 12, 4), "wxyz");
    EXPECT_EQ(sync(*data, msg::SyncOp::read, 12, 4).data, "wxyz");
    EXPECT_EQ(sync(*data, msg::SyncOp::read, 0, 16).data.size(), 16U);
    // Bad requests are answered, never served
    EXPECT_EQ(sync(*data, msg::SyncOp::read, 13, 4).code, kBad) << "past the end";
    EXPECT_EQ(sync(*data, msg::SyncOp::read, -1, 1).code, kBad);
    EXPECT_EQ(sync(*data, msg::SyncOp::write, 15, 0, 0, "ab").code, kBad);
    EXPECT_EQ(sync(*data, msg::SyncOp::read, 0, msg::kSyncMaxBytes + 1).code, kBad) << "more than one piece";
    EXPECT_EQ(sync(*data, static_cast<msg::SyncOp>(99)).code, static_cast<std::uint16_t>(Errc::protocol));
    from_head(msg::RemoteSync{7, data->pool_name(), data->pool_generation(), data->offset(), data->id() + 1, 4, 0, 0, 0, {}});
    auto stale = head->take<msg::RemoteReply>();
    ASSERT_EQ(stale.size(), 1U);
    EXPECT_NE(stale[0].message.find("not the sync object"), std::string::npos) << stale[0].message;
    from_head(msg::RemoteSync{8, "/dragon-0123abcd-n1-pool", 1, data->offset(), data->id(), 4, 0, 0, 0, {}});
    stale = head->take<msg::RemoteReply>();
    ASSERT_EQ(stale.size(), 1U);
    EXPECT_EQ(stale[0].code, static_cast<std::uint16_t>(Errc::not_found)) << stale[0].message;
    from_head(msg::RemoteSync{9, lock->pool_name(), lock->pool_generation(), 3, 1, 4, 0, 0, 0, {}});
    stale = head->take<msg::RemoteReply>();
    ASSERT_EQ(stale.size(), 1U) << "an offset that is no block: an error, not a crash";
    EXPECT_NE(stale[0].code, 0U);
}

TEST_F(SyncFixture, AnAcquireThatMayWaitWaitsInAWorkerUntilTheHolderReleases) {
    auto lock = channels::SyncBlock::create(*pool, 1, 1, 0);
    ASSERT_TRUE(lock);
    ASSERT_TRUE(*lock->acquire(channels::kTryOnce)) << "held here (a local process)";
    from_head(msg::RemoteSync{40, lock->pool_name(), lock->pool_generation(), lock->offset(), lock->id(),
                              static_cast<std::uint8_t>(msg::SyncOp::acquire), 0, 0, 5'000'000'000, {}});
    run_for(150ms);
    EXPECT_TRUE(head->take<msg::RemoteReply>().empty()) << "waiting";
    ASSERT_TRUE(lock->release());
    run_for(300ms);
    auto got = head->take<msg::RemoteReply>();
    ASSERT_EQ(got.size(), 1U);
    EXPECT_EQ(got[0].data, "1");
    // A finite timeout ends with "0", not an error.
    from_head(msg::RemoteSync{41, lock->pool_name(), lock->pool_generation(), lock->offset(), lock->id(),
                              static_cast<std::uint8_t>(msg::SyncOp::acquire), 0, 0, 200'000'000, {}});
    run_for(400ms);
    got = head->take<msg::RemoteReply>();
    ASSERT_EQ(got.size(), 1U);
    EXPECT_EQ(got[0].code, 0U) << got[0].message;
    EXPECT_EQ(got[0].data, "0");
}

TEST_F(SyncFixture, WhatALostSourceHeldIsGivenBackAndNothingMore) {
    auto lock = channels::SyncBlock::create(*pool, 1, 1, 0);
    auto sem = channels::SyncBlock::create(*pool, 3, channels::SyncBlock::kUnbounded, 0);
    ASSERT_TRUE(lock && sem);
    EXPECT_EQ(sync(*lock, msg::SyncOp::acquire).data, "1");
    EXPECT_EQ(sync(*sem, msg::SyncOp::acquire).data, "1");
    EXPECT_EQ(sync(*sem, msg::SyncOp::acquire).data, "1");
    EXPECT_EQ(sync(*sem, msg::SyncOp::release).code, 0U);
    EXPECT_EQ(sem->value(), 2);
    gateway->link_down(0, "connection reset");
    EXPECT_EQ(lock->value(), 1) << "the lock node 0's process held is free again";
    EXPECT_EQ(sem->value(), 3) << "its one count still held came back, no more";
}

TEST_F(GatewayFixture, AClientsSyncOperationGoesToTheBlocksHomeAndItsAnswerComesBack) {
    auto theirs = client(5);
    msg::ChanSync req;
    req.request_id = 79;
    req.pool_name = "/dragon-0123abcd-n0-pool";  // node 0's: the home
    req.offset = 4096;
    req.id = 9;
    req.op = static_cast<std::uint8_t>(msg::SyncOp::acquire);
    req.timeout_ns = -1;
    ASSERT_TRUE(clients.dispatch(Sender::client, 5,
                                 wire::Frame{static_cast<std::uint16_t>(msg::Type::chan_sync), wire::body_of(req)}));
    auto asks = head->take<msg::RemoteSync>();
    ASSERT_EQ(asks.size(), 1U) << "straight to the home node";
    EXPECT_EQ(asks[0].offset, 4096U);
    EXPECT_EQ(asks[0].timeout_ns, -1);
    ASSERT_TRUE(nodes.dispatch(Sender::head, 0,
                               wire::Frame{static_cast<std::uint16_t>(msg::Type::remote_reply),
                                           wire::body_of(msg::RemoteReply{asks[0].op_id, 0, {}, "1"})}));
    run_for(50ms);
    auto reply = reply_on(theirs);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->request_id, 79U);
    EXPECT_EQ(reply->data, "1");
    // Its own node's block, and a name that is no pool: refused with a reason.
    req.pool_name = pool->name();
    ASSERT_TRUE(clients.dispatch(Sender::client, 5,
                                 wire::Frame{static_cast<std::uint16_t>(msg::Type::chan_sync), wire::body_of(req)}));
    req.pool_name = "not a pool";
    ASSERT_TRUE(clients.dispatch(Sender::client, 5,
                                 wire::Frame{static_cast<std::uint16_t>(msg::Type::chan_sync), wire::body_of(req)}));
    run_for(50ms);
    EXPECT_TRUE(head->take<msg::RemoteSync>().empty());
    wire::FrameDecoder dec;
    char buf[4096];
    const auto n = ::recv(theirs.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
    ASSERT_GT(n, 0);
    dec.feed({buf, static_cast<std::size_t>(n)});
    std::vector<std::string> why;
    while (auto f = dec.next()) {
        if (!*f) break;
        auto r = msg::decode_as<msg::ChanReply>(**f);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->code, static_cast<std::uint16_t>(Errc::invalid_argument));
        why.push_back(r->message);
    }
    ASSERT_EQ(why.size(), 2U);
    EXPECT_NE(why[0].find("on this node"), std::string::npos) << why[0];
    EXPECT_NE(why[1].find("not a pool"), std::string::npos) << why[1];
}

TEST_F(GatewayFixture, ALaneIsServedOnceItSaidHelloAndClosedWhenItSaysAnythingElseFirst) {
    auto lane = std::make_shared<FakeLink>(0);
    gateway->accept_lane(lane);
    ASSERT_TRUE(lane->started);
    lane->deliver(msg::LaneHello{msg::kProtocolVersion, 0, 42});
    auto welcome = lane->take<msg::LaneWelcome>();
    ASSERT_EQ(welcome.size(), 1U);
    EXPECT_EQ(welcome[0].code, 0U);
    lane->deliver(msg::RemoteSend{12, desc, 0, "via lane"});
    auto replies = lane->take<msg::RemoteReply>();
    ASSERT_EQ(replies.size(), 1U) << "answered on the lane, not on the node's link";
    EXPECT_EQ(replies[0].code, 0U);
    EXPECT_TRUE(head->take<msg::RemoteReply>().empty());

    auto rude = std::make_shared<FakeLink>(0);
    gateway->accept_lane(rude);
    rude->deliver(msg::RemoteSend{13, desc, 0, "no hello"});
    EXPECT_FALSE(rude->is_open());
}

}  // namespace
}  // namespace dragon::agent
