// The handshake state machines talking to each other in memory (no sockets).
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dragon/common/framing.hpp"
#include "dragon/transport/handshake.hpp"

namespace dragon::transport {
namespace {

std::vector<wire::Frame> frames_of(const std::string& bytes) {
    wire::FrameDecoder dec(kHandshakeMaxBody);
    dec.feed(bytes);
    std::vector<wire::Frame> out;
    for (;;) {
        auto f = dec.next();
        EXPECT_TRUE(f);
        if (!f || !*f) break;
        out.push_back(std::move(**f));
    }
    return out;
}

struct Outcome {
    std::optional<Error> initiator_error, acceptor_error;
    bool initiator_done = false, acceptor_done = false;
};

// Runs both sides to completion, delivering every frame in order.
Outcome run(Handshake& ini, Handshake& acc) {
    Outcome o;
    std::vector<wire::Frame> to_acc = frames_of(ini.initial_output()), to_ini;
    for (int round = 0; round < 10 && (!to_acc.empty() || !to_ini.empty()); ++round) {
        for (auto& f : to_acc) {
            if (o.acceptor_error) break;
            auto step = acc.on_frame(f);
            if (!step) {
                o.acceptor_error = step.error();
                if (step.error().code() != Errc::protocol) to_ini.push_back(frames_of(Handshake::reject_frame(step.error()))[0]);
                break;
            }
            for (auto& g : frames_of(step->out)) to_ini.push_back(std::move(g));
            o.acceptor_done = step->done;
        }
        to_acc.clear();
        for (auto& f : to_ini) {
            if (o.initiator_error) break;
            auto step = ini.on_frame(f);
            if (!step) {
                o.initiator_error = step.error();
                if (step.error().code() != Errc::protocol && f.type != static_cast<std::uint16_t>(MsgType::peer_reject))
                    to_acc.push_back(frames_of(Handshake::reject_frame(step.error()))[0]);
                break;
            }
            for (auto& g : frames_of(step->out)) to_acc.push_back(std::move(g));
            o.initiator_done = step->done;
        }
        to_ini.clear();
    }
    return o;
}

RunSecret secret() { return std::move(RunSecret::generate()).value(); }

TEST(Handshake, SucceedsAndLearnsNodeIds) {
    auto s = secret();
    auto ini = Handshake::initiator(s, 7, 3);
    auto acc = Handshake::acceptor(s, 3);
    ASSERT_TRUE(ini && acc);
    auto o = run(*ini, *acc);
    EXPECT_FALSE(o.initiator_error) << o.initiator_error->message();
    EXPECT_FALSE(o.acceptor_error) << o.acceptor_error->message();
    EXPECT_TRUE(o.initiator_done && o.acceptor_done);
    EXPECT_TRUE(ini->done() && acc->done());
    EXPECT_EQ(ini->peer_node_id(), 3U);
    EXPECT_EQ(acc->peer_node_id(), 7U);
}

TEST(Handshake, WrongSecretIsRefusedByBothSides) {
    auto ini = Handshake::initiator(secret(), 1, 2);
    auto acc = Handshake::acceptor(secret(), 2);
    ASSERT_TRUE(ini && acc);
    auto o = run(*ini, *acc);
    ASSERT_TRUE(o.initiator_error);
    EXPECT_EQ(o.initiator_error->code(), Errc::permission_denied);
    EXPECT_NE(o.initiator_error->message().find("authentication failed"), std::string::npos);
    ASSERT_TRUE(o.acceptor_error);  // told by the initiator's peer_reject
    EXPECT_EQ(o.acceptor_error->code(), Errc::permission_denied);
    EXPECT_NE(o.acceptor_error->message().find("refused by the peer"), std::string::npos);
    EXPECT_FALSE(ini->done() || acc->done());
}

TEST(Handshake, WrongNodeIsRefused) {
    auto s = secret();
    auto ini = Handshake::initiator(s, 1, 5);  // wants node 5
    auto acc = Handshake::acceptor(s, 2);      // is node 2
    ASSERT_TRUE(ini && acc);
    auto o = run(*ini, *acc);
    ASSERT_TRUE(o.acceptor_error);
    EXPECT_EQ(o.acceptor_error->code(), Errc::invalid_argument);
    EXPECT_NE(o.acceptor_error->message().find("expected node 5"), std::string::npos);
    ASSERT_TRUE(o.initiator_error);
    EXPECT_NE(o.initiator_error->message().find("refused by the peer"), std::string::npos);
}

TEST(Handshake, OtherVersionIsRefused) {
    auto acc = Handshake::acceptor(secret(), 2);
    ASSERT_TRUE(acc);
    PeerChallenge c{.version = 99, .node_id = 1, .expected_node_id = 2, .nonce = std::string(kNonceSize, 'x')};
    auto f = frames_of(transport_frame(c));
    auto r = acc->on_frame(f.at(0));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::unsupported);
}

TEST(Handshake, MalformedFramesAreProtocolErrors) {
    auto s = secret();
    const std::vector<wire::Frame> bad = {
        {static_cast<std::uint16_t>(MsgType::peer_response), std::string(36, '\0')},  // response before challenge
        {static_cast<std::uint16_t>(MsgType::peer_challenge), "short"},
        {static_cast<std::uint16_t>(MsgType::peer_challenge), std::string(200, '\xff')},
        {1, ""},
    };
    for (const auto& f : bad) {
        auto acc = Handshake::acceptor(s, 2);
        ASSERT_TRUE(acc);
        auto r = acc->on_frame(f);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code(), Errc::protocol) << r.error().message();
        EXPECT_FALSE(acc->on_frame(f)) << "a failed handshake stays failed";
    }
    // A nonce of the wrong size.
    auto acc = Handshake::acceptor(s, 2);
    PeerChallenge c{.version = kTransportVersion, .node_id = 1, .expected_node_id = 2, .nonce = "tiny"};
    EXPECT_EQ(acc->on_frame(frames_of(transport_frame(c)).at(0)).error().code(), Errc::protocol);
}

TEST(Handshake, MacsAreDomainSeparatedByRole) {
    auto s = secret();
    Nonce a{}, b{};
    a[0] = std::byte{1};
    b[0] = std::byte{2};
    const Mac mi = handshake_mac(s, Role::initiator, 1, 2, a, b);
    const Mac ma = handshake_mac(s, Role::acceptor, 1, 2, a, b);
    EXPECT_NE(mi, ma);
    EXPECT_NE(mi, handshake_mac(s, Role::initiator, 2, 1, a, b));
    EXPECT_NE(mi, handshake_mac(s, Role::initiator, 1, 2, b, a));
    EXPECT_EQ(mi, handshake_mac(s, Role::initiator, 1, 2, a, b));
}

TEST(Handshake, ReflectedProofIsRefused) {
    // An initiator that echoes the acceptor's own proof back does not get in.
    auto s = secret();
    auto acc = Handshake::acceptor(s, 2);
    ASSERT_TRUE(acc);
    PeerChallenge c{.version = kTransportVersion, .node_id = 1, .expected_node_id = 2,
                    .nonce = std::string(kNonceSize, 'n')};
    auto step = acc->on_frame(frames_of(transport_frame(c)).at(0));
    ASSERT_TRUE(step);
    auto out = frames_of(step->out);
    ASSERT_EQ(out.size(), 2U);
    ASSERT_EQ(out[1].type, static_cast<std::uint16_t>(MsgType::peer_response));
    auto r = acc->on_frame(out[1]);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::permission_denied);
}

}  // namespace
}  // namespace dragon::transport
