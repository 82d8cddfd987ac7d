// The wire codec and framing: round trips, truncation and hostile input.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "dragon/common/framing.hpp"
#include "dragon/common/messages.hpp"

namespace dragon {
namespace {

msg::GroupStart sample_group() {
    msg::GroupStart s;
    s.request_id = 42;
    s.spec.placement = "cyclic";
    s.spec.restart = true;
    s.spec.max_restarts = 7;
    msg::ProcSpec p;
    p.argv = {"/bin/echo", "hello", std::string("with\0nul", 8)};
    p.env = {"A=1", "B="};
    p.cwd = "/tmp";
    p.stdin_mode = msg::StdinMode::forward;
    p.stderr_mode = msg::OutputMode::discard;
    s.spec.entries = {{p, 3, -1, {}, {}}, {msg::ProcSpec{}, 0, 2, "host-b", {0, 5}}};
    return s;
}

TEST(Codec, RoundTripsEveryFieldKind) {
    auto s = sample_group();
    std::string body;
    wire::Writer w(body);
    wire::encode(w, s);
    auto back = wire::decode_exact<msg::GroupStart>(body);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->request_id, 42U);
    EXPECT_EQ(back->spec.placement, "cyclic");
    EXPECT_TRUE(back->spec.restart);
    EXPECT_EQ(back->spec.max_restarts, 7U);
    ASSERT_EQ(back->spec.entries.size(), 2U);
    const auto& p = back->spec.entries[0].proc;
    EXPECT_EQ(back->spec.entries[0].count, 3U);
    EXPECT_EQ(p.argv, s.spec.entries[0].proc.argv);
    EXPECT_EQ(p.env, s.spec.entries[0].proc.env);
    EXPECT_EQ(p.cwd, "/tmp");
    EXPECT_EQ(p.stdin_mode, msg::StdinMode::forward);
    EXPECT_EQ(p.stderr_mode, msg::OutputMode::discard);
    EXPECT_TRUE(back->spec.entries[1].proc.argv.empty());
    EXPECT_EQ(back->spec.entries[0].node, -1);
    EXPECT_TRUE(back->spec.entries[0].host.empty());
    EXPECT_TRUE(back->spec.entries[0].cpus.empty());
    EXPECT_EQ(back->spec.entries[1].node, 2);
    EXPECT_EQ(back->spec.entries[1].host, "host-b");
    EXPECT_EQ(back->spec.entries[1].cpus, (std::vector<std::uint32_t>{0, 5}));
}

TEST(Codec, ScalarsAreLittleEndianOnTheWire) {
    std::string body;
    wire::Writer w(body);
    w.scalar<std::uint32_t>(0x01020304);
    w.scalar<std::int16_t>(-2);
    EXPECT_EQ(body, std::string("\x04\x03\x02\x01\xfe\xff", 6));
}

TEST(Codec, EveryTruncationIsAnErrorNotACrash) {
    std::string body;
    wire::Writer w(body);
    wire::encode(w, sample_group());
    for (std::size_t len = 0; len < body.size(); ++len) {
        auto r = wire::decode_exact<msg::GroupStart>(std::string_view(body).substr(0, len));
        ASSERT_FALSE(r) << "prefix of " << len << " bytes decoded";
        EXPECT_EQ(r.error().code(), Errc::protocol);
    }
}

TEST(Codec, TrailingBytesAreRefused) {
    std::string body;
    wire::Writer w(body);
    wire::encode(w, msg::Shutdown{true, 10});
    body.push_back('x');
    auto r = wire::decode_exact<msg::Shutdown>(body);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("trailing"), std::string::npos);
}

TEST(Codec, HugeListCountIsRefusedBeforeAllocating) {
    std::string body;
    wire::Writer w(body);
    w.scalar<std::uint64_t>(1);            // request_id
    w.scalar<std::uint32_t>(0xFFFFFFFF);   // entries: four billion of them
    auto r = wire::decode_exact<msg::GroupStart>(body);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("does not fit"), std::string::npos);
}

TEST(Codec, HugeStringLengthIsRefused) {
    std::string body;
    wire::Writer w(body);
    w.scalar<std::uint32_t>(0xFFFFFFF0);  // a string claiming 4 GiB
    auto r = wire::decode_exact<msg::ErrorReply>(std::string("\x01\x00", 2) + body);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("truncated"), std::string::npos);
}

TEST(Codec, InvalidEnumAndBoolValuesAreRefused) {
    msg::Output o{7, msg::Stream::err, "x"};
    std::string body;
    wire::Writer w(body);
    wire::encode(w, o);
    body[8] = 9;  // stream
    EXPECT_FALSE(wire::decode_exact<msg::Output>(body));
    std::string sd;
    wire::Writer w2(sd);
    wire::encode(w2, msg::Shutdown{true, 1});
    sd[0] = 2;  // bool holding 2
    EXPECT_FALSE(wire::decode_exact<msg::Shutdown>(sd));
}

TEST(Framing, SplitsAStreamFedOneByteAtATime) {
    std::string stream;
    wire::append_frame(stream, msg::Output{1, msg::Stream::out, "abc"});
    wire::append_frame(stream, msg::ProcExit{{{1, 100, {3, 0}}}});
    wire::FrameDecoder dec;
    std::vector<wire::Frame> frames;
    for (char c : stream) {
        dec.feed(std::string_view(&c, 1));
        for (;;) {
            auto f = dec.next();
            ASSERT_TRUE(f);
            if (!*f) break;
            frames.push_back(std::move(**f));
        }
    }
    ASSERT_EQ(frames.size(), 2U);
    auto out = msg::decode_as<msg::Output>(frames[0]);
    ASSERT_TRUE(out);
    EXPECT_EQ(out->data, "abc");
    auto ex = msg::decode_as<msg::ProcExit>(frames[1]);
    ASSERT_TRUE(ex);
    EXPECT_EQ(ex->exits.at(0).status.exit_code, 3);
    EXPECT_FALSE(msg::decode_as<msg::Output>(frames[1]));  // wrong type is refused
    EXPECT_EQ(dec.buffered(), 0U);
}

TEST(RecvBuffer, ConsumedSpaceIsReclaimedOnlyWhenRoomIsNeeded) {
    wire::RecvBuffer b;
    EXPECT_TRUE(b.empty());
    b.append("abcdef");
    char* tail = b.reserve(4);
    std::memcpy(tail, "ghij", 4);
    b.commit(4);
    ASSERT_EQ(b.size(), 10U);
    EXPECT_EQ(std::string_view(b.data(), b.size()), "abcdefghij");
    // Taking bytes never moves the rest: a read in flight into reserved space stays valid.
    const char* rest = b.data() + 4;
    b.consume(4);
    EXPECT_EQ(b.data(), rest);
    EXPECT_EQ(std::string_view(b.data(), b.size()), "efghij");
    // Asking for more room than is left moves what is unconsumed to the front (or grows).
    char* more = b.reserve(1U << 16);
    std::memset(more, 'x', 2);
    b.commit(2);
    EXPECT_EQ(std::string_view(b.data(), b.size()), "efghijxx");
    b.consume(b.size());
    EXPECT_TRUE(b.empty());
    b.append("z");
    EXPECT_EQ(std::string_view(b.data(), b.size()), "z");
    b.clear();
    EXPECT_EQ(b.size(), 0U);
    b.append({});  // nothing, and no copy from a null pointer
    EXPECT_TRUE(b.empty());
}

TEST(Framing, BadMagicVersionAndLengthAreErrors) {
    wire::FrameDecoder dec(1024);
    dec.feed(std::string("\x00\x01\x05\x00\x00\x00\x00\x00", 8));
    EXPECT_FALSE(dec.next());
    wire::FrameDecoder dec2(1024);
    dec2.feed(std::string("\xd6\x09\x05\x00\x00\x00\x00\x00", 8));
    auto v = dec2.next();
    ASSERT_FALSE(v);
    EXPECT_NE(v.error().message().find("version 9"), std::string::npos);
    wire::FrameDecoder dec3(1024);
    dec3.feed(std::string("\xd6\x01\x05\x00\x01\x04\x00\x00", 8));  // 1025-byte body
    auto big = dec3.next();
    ASSERT_FALSE(big);
    EXPECT_EQ(big.error().code(), Errc::too_large);
}

TEST(Framing, RandomBytesNeverCrashTheDecoderOrValidator) {
    std::mt19937_64 rng(12345);
    for (int round = 0; round < 2000; ++round) {
        std::string junk(rng() % 256, '\0');
        for (auto& c : junk) c = static_cast<char>(rng());
        if (round % 2 == 0 && junk.size() >= 8) {  // make half of them pass the header check
            junk[0] = static_cast<char>(wire::kFrameMagic);
            junk[1] = static_cast<char>(wire::kFrameVersion);
            junk[2] = static_cast<char>(rng() % 40);
            junk[3] = 0;
            auto len = static_cast<std::uint32_t>(junk.size() - 8);
            for (std::size_t i = 0; i < 4; ++i) junk[4 + i] = static_cast<char>((len >> (8 * i)) & 0xff);
        }
        wire::FrameDecoder dec(1 << 16);
        dec.feed(junk);
        for (;;) {
            auto f = dec.next();
            if (!f || !*f) break;
            (void)msg::validate(**f);  // must return, valid or not
        }
    }
    SUCCEED();  // the property is "no crash, no sanitizer report"; ASan/UBSan builds check it
}

TEST(Messages, ValidateKnowsEveryType) {
    std::string s;
    wire::append_frame(s, msg::ClientHello{});
    wire::FrameDecoder dec;
    dec.feed(s);
    auto f = dec.next();
    ASSERT_TRUE(f && *f);
    EXPECT_TRUE(msg::validate(**f));
    EXPECT_EQ(msg::type_name((*f)->type), "client_hello");
    wire::Frame unknown{999, ""};
    auto st = msg::validate(unknown);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("unknown message type 999"), std::string::npos);
}

TEST(Messages, ExitStatusFollowsTheShellConvention) {
    EXPECT_EQ((msg::ExitStatus{3, 0}.shell_code()), 3);
    EXPECT_EQ((msg::ExitStatus{0, 9}.shell_code()), 137);
    EXPECT_EQ(msg::ExitStatus::from_wait_status(3 << 8).exit_code, 3);
    EXPECT_EQ(msg::ExitStatus::from_wait_status(9).signal, 9);
}

}  // namespace
}  // namespace dragon
