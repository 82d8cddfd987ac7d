// The PMI wire parsers and the JobServer state machine, with a recording host
// (the proof with real MPICH, Slurm and shim clients is orchestrator/tests/test_mpi.py).
#include <gtest/gtest.h>

#include <map>

#include "dragon/pmi/server.hpp"
#include "dragon/pmi/wire.hpp"

namespace dragon::pmi {
namespace {

TEST(Wire, ParsesV1Lines) {
    auto c = parse_v1("cmd=put kvsname=k key=a value=b=c");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->cmd, "put");
    ASSERT_NE(c->get("value"), nullptr);
    EXPECT_EQ(*c->get("value"), "b=c");
    EXPECT_EQ(c->get("nothing"), nullptr);
    EXPECT_FALSE(parse_v1("key=a cmd=put"));
    EXPECT_FALSE(parse_v1("cmd=put junk"));
    EXPECT_FALSE(parse_v1(""));
    EXPECT_FALSE(parse_v1("cmd="));
}

TEST(Wire, V2FramesRoundTripWithSemicolons) {
    const auto f = format_v2("kvs-put", {{"key", "a;b"}, {"value", "x;;y;"}});
    EXPECT_EQ(f.substr(0, 6), fmt::format("{:<6}", f.size() - 6));
    StreamDecoder d;
    d.use_v2();
    d.feed(f + "junk");  // the next frame is incomplete ("junk" is not a length)
    auto c = d.next();
    ASSERT_TRUE(c) << c.error().message();
    ASSERT_TRUE(*c);
    EXPECT_EQ((*c)->cmd, "kvs-put");
    EXPECT_EQ(*(*c)->get("key"), "a;b");
    EXPECT_EQ(*(*c)->get("value"), "x;;y;");
}

TEST(Wire, V2IgnoresPaddingAfterTheLastSemicolon) {
    auto c = parse_v2(std::string("cmd=finalize;\0\0pad", 18));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->cmd, "finalize");
    EXPECT_TRUE(c->args.empty());
}

TEST(Wire, DecoderRefusesOverlongLinesAndFrames) {
    StreamDecoder d;
    d.feed(std::string(kMaxLine, 'a'));
    EXPECT_FALSE(d.next());
    StreamDecoder d2;
    d2.use_v2();
    d2.feed("999999cmd=x;");
    EXPECT_FALSE(d2.next());
    StreamDecoder d3;
    d3.use_v2();
    d3.feed("12a   cmd=x;");
    EXPECT_FALSE(d3.next());
}

TEST(Wire, DecoderGathersMultiLineSpawn) {
    StreamDecoder d;
    d.feed("mcmd=spawn\nnprocs=2\nexecname=x\nendcmd\ncmd=get_maxes\n");
    auto c = d.next();
    ASSERT_TRUE(c && *c);
    EXPECT_EQ((*c)->cmd, "spawn");
    EXPECT_EQ(*(*c)->get("nprocs"), "2");
    auto c2 = d.next();
    ASSERT_TRUE(c2 && *c2);
    EXPECT_EQ((*c2)->cmd, "get_maxes");
}

TEST(Mapping, CompressesBlockCyclicAndIrregular) {
    EXPECT_EQ(process_mapping({0, 0, 0, 0, 1, 1, 1, 1}, 1000), "(vector,(0,2,4))");
    EXPECT_EQ(process_mapping({0, 1, 2, 3, 0, 1, 2, 3}, 1000), "(vector,(0,4,1))");
    EXPECT_EQ(process_mapping({0, 1, 2, 0, 1}, 1000), "(vector,(0,3,1))");  // the list repeats, truncated
    EXPECT_EQ(process_mapping({0, 0, 0, 1}, 1000), "(vector,(0,1,3),(1,1,1))");
    EXPECT_EQ(process_mapping({}, 1000), std::nullopt);
    std::vector<std::uint32_t> wild;
    std::uint32_t x = 12345;
    for (std::uint32_t r = 0; r < 2000; ++r) wild.push_back((x = x * 1103515245U + 12345U) >> 28);
    EXPECT_EQ(process_mapping(wild, 1000), std::nullopt);  // too long for a PMI-1 line
    for (const auto& layout : {std::vector<std::uint32_t>{0, 0, 1, 2, 2, 2, 0}, std::vector<std::uint32_t>{3, 3, 4, 4, 3}}) {
        auto m = process_mapping(layout, 1000);
        ASSERT_TRUE(m);
        auto back = expand_process_mapping(*m, static_cast<std::uint32_t>(layout.size()));
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(*back, layout) << *m;
    }
    EXPECT_FALSE(expand_process_mapping("(vector,(0,0,0))", 4));
    EXPECT_FALSE(expand_process_mapping("(vector,(0,1))", 4));
}

// A host that records what the server asks for.
struct Recorder : JobHost {
    std::map<ConnId, std::string> sent;
    std::vector<ConnId> closed;
    std::vector<std::pair<std::uint64_t, std::string>> fences;
    std::vector<std::pair<std::uint32_t, int>> aborts;
    std::vector<std::string> errors;
    void send(ConnId c, std::string b) override { sent[c] += b; }
    void close(ConnId c) override { closed.push_back(c); }
    void fence_out(std::uint64_t seq, std::string batch) override { fences.emplace_back(seq, std::move(batch)); }
    void abort(std::uint32_t rank, int code, std::string) override { aborts.emplace_back(rank, code); }
    void rank_error(std::optional<std::uint32_t>, std::string m, bool) override { errors.push_back(std::move(m)); }
    std::string take(ConnId c) { return std::exchange(sent[c], {}); }
};

JobLayout two_nodes(std::uint32_t node) {
    JobLayout l;
    l.job_id = 5;
    l.kvsname = "kvs_5";
    l.node = node;
    l.rank_node = {0, 0, 1, 1};
    return l;
}

TEST(JobServer, AnswersPmi1AndFencesAcrossNodes) {
    Recorder h0, h1;
    JobServer s0(two_nodes(0), h0), s1(two_nodes(1), h1);
    const ConnId a = s0.connect(0), b = s0.connect(1), c = s1.connect(2), d = s1.connect(3);
    s0.received(a, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=get_maxes\ncmd=get_my_kvsname\n");
    EXPECT_EQ(h0.take(a),
              "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n"
              "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n"
              "cmd=my_kvsname kvsname=kvs_5\n");
    s0.received(a, "cmd=get kvsname=kvs_5 key=PMI_process_mapping\n");
    EXPECT_EQ(h0.take(a), "cmd=get_result rc=0 msg=success value=(vector,(0,2,2))\n");
    // Puts, then every rank enters the barrier; node 0 sends its batch when its two are in.
    s0.received(a, "cmd=put kvsname=kvs_5 key=k0 value=v0\ncmd=barrier_in\n");
    EXPECT_EQ(h0.take(a), "cmd=put_result rc=0 msg=success\n");
    EXPECT_TRUE(h0.fences.empty());
    s0.received(b, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=barrier_in\n");
    ASSERT_EQ(h0.fences.size(), 1U);
    EXPECT_EQ(h0.take(b), "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n");  // no barrier_out yet
    // Node 1's batch arrives before its own ranks are in: held.
    s1.received(c, "cmd=put kvsname=kvs_5 key=k2 value=v2\n");
    ASSERT_TRUE(s1.remote_fence(0, 0, h0.fences[0].second));
    s1.received(c, "cmd=barrier_in\n");
    EXPECT_TRUE(h1.fences.empty());
    s1.received(d, "cmd=barrier_in\n");
    ASSERT_EQ(h1.fences.size(), 1U);
    EXPECT_EQ(h1.take(d), "cmd=barrier_out\n");  // node 1 had everything
    ASSERT_TRUE(s0.remote_fence(1, 0, h1.fences[0].second));
    EXPECT_EQ(h0.take(a), "cmd=barrier_out\n");
    EXPECT_EQ(h0.take(b), "cmd=barrier_out\n");
    EXPECT_EQ(s0.fences_done(), 1U);
    s0.received(b, "cmd=get kvsname=kvs_5 key=k2\ncmd=get kvsname=kvs_5 key=nope\n");
    EXPECT_EQ(h0.take(b), "cmd=get_result rc=0 msg=success value=v2\ncmd=get_result rc=-1 msg=key_not_found value=unknown\n");
    // A duplicate or out-of-step batch is refused and changes nothing.
    EXPECT_FALSE(s0.remote_fence(1, 0, h1.fences[0].second));
    EXPECT_FALSE(s0.remote_fence(1, 7, h1.fences[0].second));
    EXPECT_FALSE(s0.remote_fence(3, 1, h1.fences[0].second));
    EXPECT_FALSE(s0.remote_fence(1, 1, "garbage"));
    s0.received(a, "cmd=finalize\n");
    EXPECT_EQ(h0.take(a), "cmd=finalize_ack\n");
    EXPECT_EQ(s0.rank_exited(0), "");
    EXPECT_NE(s0.rank_exited(1), "");  // initialized, never finalized
}

TEST(JobServer, Pmi2FullinitKvsAndNodeAttributes) {
    Recorder h;
    JobLayout l = two_nodes(0);
    l.rank_node = {0, 0};
    JobServer s(l, h);
    const ConnId a = s.connect(0), b = s.connect(1);
    s.received(a, "cmd=init pmi_version=2 pmi_subversion=0\n" + format_v2("fullinit", {{"pmirank", "0"}}));
    EXPECT_EQ(h.take(a), "cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0\n" +
                             format_v2("fullinit-response", {{"rc", "0"}, {"pmi-version", "2"}, {"pmi-subversion", "0"},
                                                             {"rank", "0"}, {"size", "2"}, {"appnum", "0"},
                                                             {"debugged", "FALSE"}, {"pmiverbose", "FALSE"}}));
    s.received(b, "cmd=init pmi_version=2 pmi_subversion=0\n");
    s.received(b, format_v2("fullinit", {{"pmirank", "1"}}));
    h.take(b);
    // A waiting node-attribute get is answered by the put.
    s.received(b, format_v2("info-getnodeattr", {{"key", "shm"}, {"wait", "TRUE"}}));
    EXPECT_EQ(h.take(b), "");
    s.received(a, format_v2("info-putnodeattr", {{"key", "shm"}, {"value", "seg;1"}}));
    EXPECT_EQ(h.take(b), format_v2("info-getnodeattr-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", "seg;1"}}));
    EXPECT_EQ(h.take(a), format_v2("info-putnodeattr-response", {{"rc", "0"}}));
    s.received(a, format_v2("kvs-put", {{"key", "x"}, {"value", "1"}}) + format_v2("kvs-fence"));
    s.received(b, format_v2("kvs-fence"));
    EXPECT_EQ(h.take(a), format_v2("kvs-put-response", {{"rc", "0"}}) + format_v2("kvs-fence-response", {{"rc", "0"}}));
    s.received(b, format_v2("kvs-get", {{"key", "x"}}) + format_v2("info-getjobattr", {{"key", "universeSize"}}));
    EXPECT_EQ(h.take(b), format_v2("kvs-fence-response", {{"rc", "0"}}) +
                             format_v2("kvs-get-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", "1"}}) +
                             format_v2("info-getjobattr-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", "2"}}));
    s.received(a, format_v2("abort", {{"isworld", "TRUE"}, {"msg", "bye"}}));
    ASSERT_EQ(h.aborts.size(), 1U);
    EXPECT_EQ(h.aborts[0], std::make_pair(0U, 1));
}

TEST(JobServer, BadInputFailsOnlyThatRank) {
    Recorder h;
    JobLayout l = two_nodes(0);
    l.rank_node = {0, 0};
    JobServer s(l, h);
    const ConnId a = s.connect(0), b = s.connect(1);
    s.received(a, "cmd=init pmi_version=1 pmi_subversion=1\n");
    s.received(a, std::string(2000, 'x'));
    ASSERT_EQ(h.closed.size(), 1U);
    EXPECT_EQ(h.closed[0], a);
    EXPECT_NE(s.rank_exited(0).find("PMI protocol error"), std::string::npos);
    s.received(a, "cmd=get_maxes\n");  // nothing: the connection is gone
    // The other rank is unaffected; a rank that never spoke PMI does not hold up fences.
    s.received(b, "cmd=put key=a\n");
    EXPECT_EQ(h.closed.size(), 2U);  // put without value=
    Recorder h2;
    JobServer s2(l, h2);
    const ConnId c = s2.connect(0);
    s2.connect(1);
    s2.received(c, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=barrier_in\n");
    EXPECT_EQ(s2.rank_exited(1), "");
    EXPECT_NE(h2.take(c).find("cmd=barrier_out"), std::string::npos);
    // Closing the connection after init, without finalize, is an error for that rank.
    Recorder h3;
    JobServer s3(l, h3);
    const ConnId e = s3.connect(0);
    s3.received(e, "cmd=init pmi_version=1 pmi_subversion=1\n");
    s3.disconnected(e);
    ASSERT_EQ(h3.errors.size(), 1U);
    EXPECT_NE(s3.rank_exited(0), "");
    // ... unless the process died of something else, which then speaks for itself.
    Recorder h4;
    JobServer s4(l, h4);
    const ConnId f = s4.connect(0);
    s4.received(f, "cmd=init pmi_version=1 pmi_subversion=1\n");
    s4.disconnected(f);
    EXPECT_EQ(s4.rank_exited(0, false), "");
}

TEST(JobServer, PortConnectionsProveWhoTheyAreOnce) {
    Recorder h;
    JobLayout l = two_nodes(1);  // ranks 2 and 3 are here
    JobServer s(l, h);
    EXPECT_EQ(s.port_id(0), 0U);  // not here
    ASSERT_NE(s.port_id(3), 0U);
    EXPECT_NE(s.port_id(2), s.port_id(3));
    const ConnId a = s.connect(std::nullopt);
    s.received(a, "cmd=get kvsname=kvs_5 key=PMI_process_mapping\n");  // who is asking?
    EXPECT_EQ(h.closed, std::vector<ConnId>{a});
    const ConnId b = s.connect(std::nullopt);
    s.received(b, fmt::format("cmd=initack pmiid={}\n", s.port_id(3)));
    EXPECT_EQ(h.take(b), "cmd=initack\ncmd=set size=4\ncmd=set rank=3\ncmd=set debug=0\n");
    const ConnId c = s.connect(std::nullopt);
    s.received(c, "cmd=initack pmiid=3\n");  // the rank number is not its PMI_ID
    EXPECT_EQ(h.closed.size(), 2U);
    const ConnId d = s.connect(std::nullopt);
    s.received(d, fmt::format("cmd=initack pmiid={}\n", s.port_id(3)));  // already spoken for
    EXPECT_EQ(h.closed.size(), 3U);
    // PMI-2 on a port: fullinit must carry the PMI_ID.
    const ConnId e = s.connect(std::nullopt);
    s.received(e, "cmd=init pmi_version=2 pmi_subversion=0\n" + format_v2("fullinit", {{"pmirank", "2"}}));
    EXPECT_EQ(h.closed.size(), 4U);
    const ConnId f = s.connect(std::nullopt);
    s.received(f, "cmd=init pmi_version=2 pmi_subversion=0\n" +
                      format_v2("fullinit", {{"pmiid", std::to_string(s.port_id(2))}, {"pmirank", "2"}}));
    EXPECT_NE(h.take(f).find("rank=2;size=4;"), std::string::npos);
}

TEST(JobServer, PutsAreBoundedAndSpawnAnswersOnce) {
    Recorder h;
    JobLayout l = two_nodes(0);
    l.rank_node = {0};
    JobServer s(l, h);
    const ConnId a = s.connect(0);
    const std::string value(900, 'v');
    std::size_t refused = 0;
    for (int i = 0; i < 20000 && refused == 0; ++i) {
        s.received(a, fmt::format("cmd=put kvsname=kvs_5 key=k{} value={}\n", i, value));
        if (h.take(a).find("rc=-1 msg=too_many_keys") != std::string::npos) ++refused;
    }
    EXPECT_EQ(refused, 1U);  // 16 MiB per fence
    // Two spawn blocks of one MPI_Comm_spawn_multiple: one answer; a value may hold spaces.
    s.received(a, "mcmd=spawn\nnprocs=1\nexecname=x\ntotspawns=2\nspawnssofar=1\narg1=a b\nendcmd\n");
    EXPECT_EQ(h.take(a), "");
    s.received(a, "mcmd=spawn\nnprocs=1\nexecname=y\ntotspawns=2\nspawnssofar=2\nendcmd\n");
    EXPECT_EQ(h.take(a), "cmd=spawn_result rc=-1 msg=spawn_not_supported\n");
    EXPECT_TRUE(h.closed.empty());
}

}  // namespace
}  // namespace dragon::pmi
