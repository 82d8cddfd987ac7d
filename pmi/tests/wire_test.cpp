// The PMI wire codec (dragon::pmi_wire) both ends use: round trips, malformed bytes, and the agent and shim agreeing.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "dragon/pmi/server.hpp"
#include "dragon/pmi/wire.hpp"
#include "dragon/pmi_wire/codec.hpp"

namespace w = dragon::pmi_wire;
using w::Message;
using w::Sender;

namespace {

// Every message a decoder gives for `bytes` fed `step` bytes at a time; stops
// at the first refusal, whose text goes to `error`.
std::vector<Message> decode_all(w::Decoder& d, std::string_view bytes, std::size_t step, std::string* error = nullptr) {
    std::vector<Message> out;
    for (std::size_t i = 0; i < bytes.size(); i += step) {
        d.feed(bytes.substr(i, step));
        for (;;) {
            auto next = d.next();
            if (!next) {
                if (error != nullptr) *error = next.error();
                return out;
            }
            if (!*next) break;
            out.push_back(std::move(**next));
        }
    }
    return out;
}

std::string all_bytes() {
    std::string s;
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
    return s;
}

// ---------------------------------------------------------------- PMI-1

TEST(WireV1, RoundTripsThroughBothReaders) {
    const Message m{"put", {{"kvsname", "kvs_5"}, {"key", "a.b-c"}, {"value", "x=y=z"}, {"empty", ""}}};
    const std::string line = w::format_v1(m);
    EXPECT_EQ(line, "cmd=put kvsname=kvs_5 key=a.b-c value=x=y=z empty=\n");
    EXPECT_EQ(w::format_v1("put", {{"kvsname", "kvs_5"}, {"key", "a.b-c"}, {"value", "x=y=z"}, {"empty", ""}}), line);
    for (Sender from : {Sender::client, Sender::server}) {
        auto back = w::parse_v1(line, from);
        ASSERT_TRUE(back) << back.error();
        EXPECT_EQ(*back, m);
    }
    EXPECT_EQ(w::format_v1("barrier_in"), "cmd=barrier_in\n");
}

TEST(WireV1, ParsesRequestsStrictly) {
    auto c = w::parse_v1("cmd=put kvsname=k key=a value=b=c", Sender::client);
    ASSERT_TRUE(c) << c.error();
    EXPECT_EQ(c->cmd, "put");
    ASSERT_NE(c->get("value"), nullptr);
    EXPECT_EQ(*c->get("value"), "b=c");
    EXPECT_EQ(c->get("nothing"), nullptr);
    // Blanks: spaces, tabs and CRs separate words of a request.
    auto t = w::parse_v1("\tcmd=get\tkvsname=k \r key=a\r", Sender::client);
    ASSERT_TRUE(t) << t.error();
    EXPECT_EQ(*t, (Message{"get", {{"kvsname", "k"}, {"key", "a"}}}));
    // The refusals and their texts (the agent's log and the job's failure show them).
    const std::map<std::string, std::string> bad = {
        {"key=a cmd=put", "PMI: a request starts with cmd=, not 'key=a cmd=put'"},
        {"cmd=put junk", "PMI: 'junk' is not key=value in 'cmd=put junk'"},
        {"cmd=put =v", "PMI: '=v' is not key=value in 'cmd=put =v'"},
        {"", "PMI: empty request line"},
        {"  \t ", "PMI: empty request line"},
        {"cmd=", "PMI: empty command in 'cmd='"},
        {"cmd", "PMI: 'cmd' is not key=value in 'cmd'"},
    };
    for (const auto& [line, why] : bad) {
        auto r = w::parse_v1(line, Sender::client);
        ASSERT_FALSE(r) << line;
        EXPECT_EQ(r.error(), why);
    }
    // Bytes in messages are escaped and cut at 60.
    auto r = w::parse_v1(std::string("x=\x01") + std::string(100, 'y'), Sender::client);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), "PMI: a request starts with cmd=, not 'x=\\x01" + std::string(57, 'y') + "...'");
}

TEST(WireV1, ParsesAnswersAsMpichsClientDoes) {
    auto m = w::parse_v1("cmd=get_result rc=0 msg=success value=a=b\n", Sender::server);
    ASSERT_TRUE(m) << m.error();
    EXPECT_EQ(m->cmd, "get_result");
    ASSERT_NE(m->get("value"), nullptr);
    EXPECT_EQ(*m->get("value"), "a=b");
    EXPECT_EQ(*m->get("rc"), "0");
    EXPECT_EQ(m->get("nope"), nullptr);
    EXPECT_FALSE(w::parse_v1("rc=0 cmd=x", Sender::server));
    EXPECT_FALSE(w::parse_v1("", Sender::server));
    EXPECT_FALSE(w::parse_v1("cmd=", Sender::server));
    EXPECT_FALSE(w::parse_v1("cmd", Sender::server));
    auto spaced = w::parse_v1("  cmd=barrier_out   \r\n", Sender::server);
    ASSERT_TRUE(spaced);
    EXPECT_EQ(spaced->cmd, "barrier_out");
    EXPECT_TRUE(spaced->args.empty());
    // A word without '=' is kept; a tab is part of a value, as in MPICH.
    auto loose = w::parse_v1("cmd=put_result rc=1 msg=duplicate key =x v=a\tb", Sender::server);
    ASSERT_TRUE(loose) << loose.error();
    EXPECT_EQ(*loose, (Message{"put_result", {{"rc", "1"}, {"msg", "duplicate"}, {"key", ""}, {"", "x"}, {"v", "a\tb"}}}));
}

TEST(WireV1, McmdAndEmbeddedBytes) {
    auto m = w::parse_v1("mcmd=spawn", Sender::client);
    ASSERT_TRUE(m);
    EXPECT_EQ(*m, (Message{"spawn", {{"mcmd", "spawn"}}}));
    // NUL is data (a C client cannot send it; it must not cut or crash anything).
    auto nul = w::parse_v1(std::string("cmd=put key=a\0b value=c", 23), Sender::client);
    ASSERT_TRUE(nul) << nul.error();
    EXPECT_EQ(*nul->get("key"), std::string("a\0b", 3));
    // A newline inside what a caller hands over is data too; only trailing ones go.
    auto nl = w::parse_v1("cmd=get key=a\nb\n\n", Sender::server);
    ASSERT_TRUE(nl);
    EXPECT_EQ(*nl->get("key"), "a\nb");
}

TEST(WireV1, WhatAWordMayHold) {
    EXPECT_TRUE(w::v1_value_ok("a=b,c;d"));
    EXPECT_TRUE(w::v1_value_ok(""));
    for (const char* bad : {"a b", "a\tb", "a\rb", "a\nb"}) EXPECT_FALSE(w::v1_value_ok(bad)) << bad;
    EXPECT_TRUE(w::v1_key_ok("PMI_process_mapping"));
    EXPECT_FALSE(w::v1_key_ok(""));
    EXPECT_FALSE(w::v1_key_ok("a=b"));
    EXPECT_FALSE(w::v1_key_ok("a b"));
    EXPECT_TRUE(w::v2_key_ok("a b"));
    for (const char* bad : {"", "a;b", "a=b", "a\nb"}) EXPECT_FALSE(w::v2_key_ok(bad)) << bad;
}

// ---------------------------------------------------------------- PMI-2

TEST(WireV2, FramesRoundTripEveryByte) {
    const Message m{"kvs-put", {{"key", "a;b"}, {"value", "x;;y;" + all_bytes()}, {"empty", ""}, {"k;", ";;"}}};
    auto f = w::format_v2(m);
    ASSERT_TRUE(f);
    const std::size_t body = f->size() - w::kLengthDigits;
    // Left-aligned and space padded, as MPICH writes it.
    std::string len = std::to_string(body);
    len.resize(6, ' ');
    EXPECT_EQ(f->substr(0, 6), len);
    for (Sender from : {Sender::client, Sender::server}) {
        auto n = w::parse_v2_length(f->substr(0, 6), w::kMaxFrame);
        ASSERT_TRUE(n) << n.error();
        EXPECT_EQ(*n, body);
        auto back = w::parse_v2(f->substr(6), from);
        ASSERT_TRUE(back) << back.error();
        EXPECT_EQ(*back, m);
    }
    EXPECT_EQ(*w::format_v2("kvs-fence"), "14    cmd=kvs-fence;");
    EXPECT_EQ(w::format_v2("kvs-get", {{"key", "k"}}), w::format_v2(Message{"kvs-get", {{"key", "k"}}}));
}

TEST(WireV2, RefusesWhatNoFrameCanSay) {
    EXPECT_FALSE(w::format_v2(""));
    for (const char* key : {"", "a=b", ";k", ";"}) EXPECT_FALSE(w::format_v2("x", {{key, "v"}})) << key;
    EXPECT_TRUE(w::format_v2("x", {{"k;", "v"}}));
    const std::string big(w::kMaxReplyFrame, 'v');
    EXPECT_FALSE(w::format_v2("kvs-put", {{"value", big}}));
    // The largest that fits: 999999 bytes of body.
    const std::string fits(w::kMaxReplyFrame - std::string_view("cmd=x;v=;").size(), 'v');
    auto f = w::format_v2("x", {{"v", fits}});
    ASSERT_TRUE(f);
    EXPECT_EQ(f->substr(0, 6), "999999");
}

TEST(WireV2, PaddingAfterTheLastSemicolonIsIgnored) {
    for (Sender from : {Sender::client, Sender::server}) {
        auto c = w::parse_v2(std::string("cmd=finalize;\0\0pad=x", 20), from);
        ASSERT_TRUE(c) << c.error();
        EXPECT_EQ(c->cmd, "finalize");
        EXPECT_TRUE(c->args.empty());
        auto r = w::parse_v2(std::string("cmd=kvs-fence-response;rc=0;\0\0junk", 34), from);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->cmd, "kvs-fence-response");
        EXPECT_EQ(*r->get("rc"), "0");
    }
}

TEST(WireV2, MalformedBodies) {
    const std::map<std::string, std::string> both = {
        {"rc=0;cmd=x;", "PMI: a {} starts with cmd=, not 'rc=0;cmd=x;'"},
        {"mcmd=spawn;", "PMI: a {} starts with cmd=, not 'mcmd=spawn;'"},  // multi-line requests are PMI-1's
        {"cmd=unterminated", "PMI-2: frame without cmd: 'cmd=unterminated'"},
        {"", "PMI-2: frame without cmd: ''"},
        {"cmd=;", "PMI: empty command in 'cmd=;'"},
        {"cmd=x;;", "PMI-2: frame without cmd: 'cmd=x;;'"},  // ";;" is a ';' in the command: unterminated
    };
    for (const auto& [body, why] : both) {
        for (Sender from : {Sender::client, Sender::server}) {
            auto r = w::parse_v2(body, from);
            ASSERT_FALSE(r) << body;
            std::string want = why;
            if (auto at = want.find("{}"); at != std::string::npos)
                want.replace(at, 2, from == Sender::client ? "request" : "answer");
            EXPECT_EQ(r.error(), want);
        }
    }
    // Requests are strict where answers are forgiving.
    auto e = w::parse_v2(";cmd=x;", Sender::client);
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error(), "PMI-2: empty field in ';cmd=x;'");
    auto j = w::parse_v2("cmd=x;junk;", Sender::client);
    ASSERT_FALSE(j);
    EXPECT_EQ(j.error(), "PMI: 'junk' is not key=value in 'cmd=x;junk;'");
    EXPECT_FALSE(w::parse_v2("cmd=x;=v;", Sender::client));
    auto loose = w::parse_v2(";cmd=x;junk;=v;", Sender::server);
    ASSERT_TRUE(loose) << loose.error();
    EXPECT_EQ(*loose, (Message{"x", {{"junk", ""}, {"", "v"}}}));
    // A newline or NUL inside a frame is data.
    auto nl = w::parse_v2(std::string("cmd=x;v=a\nb\0c;", 14), Sender::client);
    ASSERT_TRUE(nl) << nl.error();
    EXPECT_EQ(*nl->get("v"), std::string("a\nb\0c", 5));
}

TEST(WireV2, LengthPrefix) {
    for (const char* good : {"12    ", "    12", "  12  ", "000012"}) {
        auto n = w::parse_v2_length(good, w::kMaxFrame);
        ASSERT_TRUE(n) << good;
        EXPECT_EQ(*n, 12U);
    }
    EXPECT_EQ(*w::parse_v2_length("0     ", w::kMaxFrame), 0U);
    EXPECT_EQ(*w::parse_v2_length("999999", w::kMaxReplyFrame), 999999U);
    for (const std::string& bad : std::vector<std::string>{"12a   ", "      ", "", "12", "1234567", "-1    ", "+1    ",
                                                            "1 2   ", "\t12   ", std::string("12\0   ", 6)}) {
        auto n = w::parse_v2_length(bad, w::kMaxFrame);
        ASSERT_FALSE(n) << bad;
        EXPECT_TRUE(n.error().starts_with("PMI-2: bad frame length '")) << n.error();
    }
    auto over = w::parse_v2_length("65537 ", w::kMaxFrame);
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error(), "PMI-2: a frame of 65537 bytes (at most 65536)");
}

// ---------------------------------------------------------------- streams

TEST(WireDecoder, SplitsStreamsFedAByteAtATime) {
    const std::string v1 = w::format_v1("init", {{"pmi_version", "2"}, {"pmi_subversion", "0"}});
    const Message put{"kvs-put", {{"key", "k"}, {"value", "a;b\nc"}}};
    const std::string frames = *w::format_v2(put) + *w::format_v2("kvs-fence");
    for (std::size_t step : {std::size_t{1}, std::size_t{7}, std::size_t{4096}}) {
        w::Decoder d(Sender::client);
        auto first = decode_all(d, v1, step);
        ASSERT_EQ(first.size(), 1U);
        EXPECT_EQ(first[0].cmd, "init");
        d.use_v2();
        auto rest = decode_all(d, frames, step);
        ASSERT_EQ(rest.size(), 2U);
        EXPECT_EQ(rest[0], put);
        EXPECT_EQ(rest[1].cmd, "kvs-fence");
        EXPECT_EQ(d.buffered(), 0U);
    }
    // Nothing is parsed ahead: a frame right behind the init line waits for the switch.
    w::Decoder d(Sender::server);
    d.feed("cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0\n" + *w::format_v2("fullinit-response", {{"rc", "0"}}));
    auto a = d.next();
    ASSERT_TRUE(a && *a);
    EXPECT_EQ((*a)->cmd, "response_to_init");
    d.use_v2();
    auto b = d.next();
    ASSERT_TRUE(b && *b) << (b ? "" : b.error());
    EXPECT_EQ((*b)->cmd, "fullinit-response");
}

TEST(WireDecoder, TruncatedInputWaits) {
    w::Decoder d(Sender::client);
    d.feed("cmd=get_maxes");
    auto n = d.next();
    ASSERT_TRUE(n);
    EXPECT_FALSE(*n);
    w::Decoder d2(Sender::client);
    d2.use_v2();
    d2.feed("12   ");  // part of the length
    auto p1 = d2.next();
    ASSERT_TRUE(p1);
    EXPECT_FALSE(*p1);
    d2.feed(" cmd=x;");  // 6 of 12 bytes
    auto p2 = d2.next();
    ASSERT_TRUE(p2);
    EXPECT_FALSE(*p2);
    d2.feed("a=b;;;");
    auto m = d2.next();
    ASSERT_TRUE(m && *m);
    EXPECT_EQ(**m, (Message{"x", {{"a", "b;"}}}));
}

TEST(WireDecoder, LimitsDependOnWhoWrites) {
    // A request line may be 1024 bytes with its newline, an answer 4096.
    const auto line_of = [](std::size_t total) { return "cmd=x v=" + std::string(total - 9, 'a') + "\n"; };
    for (auto [from, max] : {std::pair{Sender::client, w::kMaxLine}, std::pair{Sender::server, w::kMaxReplyLine}}) {
        w::Decoder ok(from);
        std::string err;
        EXPECT_EQ(decode_all(ok, line_of(max), 100, &err).size(), 1U) << err;
        w::Decoder over(from);
        EXPECT_TRUE(decode_all(over, line_of(max + 1), 100, &err).empty());
        EXPECT_TRUE(err.starts_with("PMI: a line longer than " + std::to_string(max) + " bytes: 'cmd=x v=aaa")) << err;
        // No newline at all: refused as soon as the limit is reached, not when memory runs out.
        w::Decoder endless(from);
        endless.feed(std::string(max, 'a'));
        EXPECT_FALSE(endless.next());
    }
    // Frames: 64 KiB for requests, what 6 digits say for answers.
    w::Decoder req(Sender::client);
    req.use_v2();
    req.feed("999999cmd=x;");
    auto r = req.next();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), "PMI-2: a frame of 999999 bytes (at most 65536)");
    w::Decoder ans(Sender::server);
    ans.use_v2();
    ans.feed("999999cmd=x;");
    auto a = ans.next();
    ASSERT_TRUE(a);
    EXPECT_FALSE(*a);  // waits for the rest
    w::Decoder bad(Sender::client);
    bad.use_v2();
    bad.feed("12a   cmd=x;");
    auto b = bad.next();
    ASSERT_FALSE(b);
    EXPECT_EQ(b.error(), "PMI-2: bad frame length '12a   '");
}

TEST(WireDecoder, GathersMultiLineRequestsOnly) {
    w::Decoder d(Sender::client);
    auto got = decode_all(d, "mcmd=spawn\nnprocs=2\nargv=a b \r\nendcmd \r\ncmd=get_maxes\n", 3);
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(got[0], (Message{"spawn", {{"mcmd", "spawn"}, {"nprocs", "2"}, {"argv", "a b"}}}));
    EXPECT_EQ(got[1].cmd, "get_maxes");
    std::string err;
    w::Decoder junk(Sender::client);
    EXPECT_TRUE(decode_all(junk, "mcmd=spawn\nnprocs\n", 64, &err).empty());
    EXPECT_EQ(err, "PMI: 'nprocs' in an mcmd=spawn request is not key=value");
    std::string many = "mcmd=spawn\n";
    for (std::size_t i = 0; i <= w::kMaxSpawnLines; ++i) many += "k=v\n";
    w::Decoder big(Sender::client);
    EXPECT_TRUE(decode_all(big, many, 4096, &err).empty());
    EXPECT_EQ(err, "PMI: an mcmd=spawn request of more than 1024 lines");
    // An answer is one line, whatever it says.
    w::Decoder ans(Sender::server);
    auto one = decode_all(ans, "mcmd=x\n", 64, &err);
    ASSERT_EQ(one.size(), 1U) << err;
    EXPECT_EQ(one[0].cmd, "x");
}

TEST(WireDecoder, LinesSplitAtNewlinesAndKeepNul) {
    w::Decoder d(Sender::client);
    auto got = decode_all(d, std::string("cmd=put key=a\0 value=b\ncmd=x\n", 29), 5);
    ASSERT_EQ(got.size(), 2U);
    EXPECT_EQ(*got[0].get("key"), std::string("a\0", 2));
    std::string err;
    w::Decoder e(Sender::client);
    EXPECT_TRUE(decode_all(e, "cmd=put key=a\nvalue=b\n", 64, &err).size() == 1U);
    EXPECT_EQ(err, "PMI: a request starts with cmd=, not 'value=b'");
}

// ---------------------------------------------------------------- both ends

TEST(WireAdapter, TheAgentsResultsAreTheCodecsRefusals) {
    for (const std::string line : {"cmd=put kvsname=k key=a value=b", "cmd=put junk", "", "mcmd=spawn"}) {
        auto mine = dragon::pmi::parse_v1(line);
        auto codec = w::parse_v1(line, Sender::client);
        ASSERT_EQ(static_cast<bool>(mine), static_cast<bool>(codec)) << line;
        if (mine) EXPECT_EQ(*mine, *codec);
        else {
            EXPECT_EQ(mine.error().code(), dragon::Errc::protocol);
            EXPECT_EQ(mine.error().message(), codec.error());
        }
    }
    EXPECT_EQ(dragon::pmi::format_v2("kvs-fence-response", {{"rc", "0"}}),
              *w::format_v2("kvs-fence-response", {{"rc", "0"}}));
    // An answer no length can announce becomes a refusal the client can read.
    const std::string big(w::kMaxReplyFrame, 'v');
    EXPECT_EQ(dragon::pmi::format_v2("kvs-get-response", {{"value", big}}),
              *w::format_v2("kvs-get-response", {{"rc", "-1"}, {"errmsg", "answer_too_large"}}));
}

// A host that records what the agent's server sends.
struct Recorder : dragon::pmi::JobHost {
    std::map<dragon::pmi::ConnId, std::string> sent;
    std::vector<dragon::pmi::ConnId> closed;
    void send(dragon::pmi::ConnId c, std::string b) override { sent[c] += b; }
    void close(dragon::pmi::ConnId c) override { closed.push_back(c); }
    void fence_out(std::uint64_t, std::string) override {}
    void abort(std::uint32_t, int, std::string) override {}
    void rank_error(std::optional<std::uint32_t>, std::string, bool) override {}
    std::string take(dragon::pmi::ConnId c) { return std::exchange(sent[c], {}); }
};

dragon::pmi::JobLayout one_node() {
    dragon::pmi::JobLayout l;
    l.job_id = 5;
    l.kvsname = "kvs_5";
    l.rank_node = {0, 0};
    return l;
}

// The shim's requests, built as the shim builds them, through the agent's
// server; its answers read back as the shim reads them.
TEST(WireBothEnds, Pmi1ShimRequestsAndServerAnswersAgree) {
    Recorder h;
    dragon::pmi::JobServer s(one_node(), h);
    const auto id = s.connect(0);
    w::Decoder shim(Sender::server);
    const auto call = [&](const Message& req) {
        s.received(id, w::format_v1(req));
        std::string err;
        auto answers = decode_all(shim, h.take(id), 1, &err);
        EXPECT_EQ(err, "");
        EXPECT_EQ(answers.size(), 1U) << req.cmd;
        return answers.empty() ? Message{} : answers[0];
    };
    EXPECT_EQ(call({"init", {{"pmi_version", "1"}, {"pmi_subversion", "1"}}}),
              (Message{"response_to_init", {{"pmi_version", "1"}, {"pmi_subversion", "1"}, {"rc", "0"}}}));
    EXPECT_EQ(call({"get_maxes", {}}),
              (Message{"maxes", {{"kvsname_max", "256"}, {"keylen_max", "64"}, {"vallen_max", "1024"}}}));
    EXPECT_EQ(*call({"get_my_kvsname", {}}).get("kvsname"), "kvs_5");
    const std::string value = "450:" + std::string(900, 'f');  // a blob chunk, as the shim's allgather puts it
    EXPECT_EQ(*call({"put", {{"kvsname", "kvs_5"}, {"key", "dragon.shim.ag.1.0"}, {"value", value}}}).get("rc"), "0");
    EXPECT_EQ(*call({"get", {{"kvsname", "kvs_5"}, {"key", "PMI_process_mapping"}}}).get("value"), "(vector,(0,1,2))");
    EXPECT_EQ(call({"finalize", {}}).cmd, "finalize_ack");
    EXPECT_TRUE(h.closed.empty());
}

TEST(WireBothEnds, Pmi2ShimFramesAndServerFramesAgree) {
    Recorder h;
    dragon::pmi::JobServer s(one_node(), h);
    const auto a = s.connect(0), b = s.connect(1);
    w::Decoder shim_a(Sender::server), shim_b(Sender::server);
    const auto call = [&](dragon::pmi::ConnId id, w::Decoder& d, const Message& req, std::size_t answers) {
        auto f = w::format_v2(req);
        EXPECT_TRUE(f);
        s.received(id, *f);
        std::string err;
        auto got = decode_all(d, h.take(id), 3, &err);
        EXPECT_EQ(err, "");
        EXPECT_EQ(got.size(), answers) << req.cmd;
        return got;
    };
    for (auto [id, d] : {std::pair{a, &shim_a}, std::pair{b, &shim_b}}) {
        s.received(id, w::format_v1("init", {{"pmi_version", "2"}, {"pmi_subversion", "0"}}));
        auto init = decode_all(*d, h.take(id), 5);
        ASSERT_EQ(init.size(), 1U);
        EXPECT_EQ(*init[0].get("pmi_version"), "2");
        d->use_v2();
    }
    auto full = call(a, shim_a, {"fullinit", {{"pmirank", "0"}, {"threaded", "FALSE"}}}, 1);
    ASSERT_EQ(full.size(), 1U);
    EXPECT_EQ(full[0].cmd, "fullinit-response");
    EXPECT_EQ(*full[0].get("size"), "2");
    call(b, shim_b, {"fullinit", {{"pmirank", "1"}}}, 1);
    // Values with ';' and every byte but none of the line's own: what ';;' is for.
    const std::string value = "a;b;;c;" + all_bytes();
    call(a, shim_a, {"kvs-put", {{"key", "k"}, {"value", value}}}, 1);
    call(a, shim_a, {"kvs-fence", {}}, 0);
    call(b, shim_b, {"kvs-fence", {}}, 1);
    auto done = decode_all(shim_a, h.take(a), 1);  // a's fence ended with b's entry
    ASSERT_EQ(done.size(), 1U);
    EXPECT_EQ(done[0], (Message{"kvs-fence-response", {{"rc", "0"}}}));
    auto got = call(b, shim_b, {"kvs-get", {{"srcid", "-1"}, {"key", "k"}}}, 1);
    ASSERT_EQ(got.size(), 1U);
    EXPECT_EQ(*got[0].get("found"), "TRUE");
    EXPECT_EQ(*got[0].get("value"), value);
    auto attr = call(b, shim_b, {"info-getjobattr", {{"key", "PMI_process_mapping"}}}, 1);
    ASSERT_EQ(attr.size(), 1U);
    EXPECT_EQ(*attr[0].get("value"), "(vector,(0,1,2))");
    EXPECT_TRUE(h.closed.empty());
}

}  // namespace
