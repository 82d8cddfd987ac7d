// The executor against a fake router: real processes, pipes and files, no
// agent and no sockets between nodes. Node 0's orders come in through the
// node table (routes.hpp) as from the head; what the executor reports to
// node 0 is read off the router in the order it was sent.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "agent/executor/executor.hpp"
#include "fake_router.hpp"

namespace dragon::agent {
namespace {
namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct ExecutorTest : ::testing::Test {
    ExecutorTest()
        : router(2, 1),
          executor(router, io,
                   ExecutorOptions{*RunId::parse("abc123"), 1, "host1", {"PATH=/usr/bin:/bin", "KEEP=me"}, "/usr/bin:/bin",
                                   [this] { ++first_groups; }, [this] { ++exits_changed; }}),
          nodes(kNodeRoutes, false) {
        executor.bind(nodes);
        dir = fs::temp_directory_path() / fmt::format("dragon-executor-test-{}", ::getpid());
        fs::create_directories(dir);
    }
    ~ExecutorTest() override {
        // Nothing of a test outlives it.
        executor.signal_running(SIGKILL);
        run_until([&] { return executor.running() == 0; });
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    template <class M>
    void from_head(const M& m) {
        auto st = nodes.dispatch(Sender::head, 0, wire::Frame{static_cast<std::uint16_t>(M::kType), wire::body_of(m)});
        ASSERT_TRUE(st) << st.error().message();
    }

    /// Runs the loop, reaping as the shell does on SIGCHLD, until `done` or
    /// 20 s (a bound against hanging, not a timing check).
    template <class P>
    bool run_until(P done) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            io.poll();
            io.restart();
            executor.reap();
            router.run_posted();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    /// Everything of type M sent to node 0 so far, in order.
    template <class M>
    std::vector<M> sent() const {
        std::vector<M> out;
        for (const auto& s : router.sent) {
            if (s.frame.type != static_cast<std::uint16_t>(M::kType)) continue;
            EXPECT_EQ(s.node, 0U);
            auto m = msg::decode_as<M>(s.frame);
            EXPECT_TRUE(m) << m.error().message();
            if (m) out.push_back(std::move(*m));
        }
        return out;
    }
    std::size_t exits_reported() const {
        std::size_t n = 0;
        for (const auto& b : sent<msg::MembersExited>()) n += b.members.size();
        return n;
    }
    /// Everything a rank wrote on one stream, concatenated.
    std::string output_of(std::uint32_t rank, msg::Stream stream) const {
        std::string all;
        for (const auto& o : sent<msg::Output>())
            if (o.rank == rank && o.stream == stream) all += o.data;
        return all;
    }

    static msg::ExecMembers group(std::uint64_t id, std::vector<std::string> argv, std::uint32_t count) {
        msg::ExecMembers m;
        m.group_id = id;
        m.nranks = count;
        m.local_size = count;
        msg::GroupEntry e;
        e.count = count;
        e.proc.argv = std::move(argv);
        m.spec.entries.push_back(e);
        for (std::uint32_t r = 0; r < count; ++r) m.members.push_back({r, r, {}});
        return m;
    }

    asio::io_context io;
    FakeRouter router;
    int first_groups = 0;
    int exits_changed = 0;
    Executor executor;
    Dispatcher<std::uint32_t> nodes;
    fs::path dir;
};

TEST_F(ExecutorTest, StartsMembersAndReportsTheirOutputBeforeTheirExit) {
    from_head(group(5, {"sh", "-c", "echo out$DRAGON_RANK-$DRAGON_NODE_ID-$KEEP; echo err$DRAGON_RANK >&2; exit 3"}, 2));
    ASSERT_TRUE(run_until([&] { return exits_reported() == 2; }));
    EXPECT_EQ(first_groups, 1);

    // (One report per start slice: a slice ends after 5 ms, so a slow spawn,
    // under ASan or load, splits even 2 members; the last one is complete.)
    const auto started = sent<msg::MembersStarted>();
    ASSERT_FALSE(started.empty());
    EXPECT_TRUE(started.back().complete);
    std::vector<msg::MemberStarted> members;
    for (const auto& s : started) {
        EXPECT_EQ(s.group_id, 5U);
        EXPECT_EQ(s.complete, &s == &started.back());
        members.insert(members.end(), s.members.begin(), s.members.end());
    }
    ASSERT_EQ(members.size(), 2U);
    for (const auto& m : members) {
        EXPECT_NE(m.puid, 0U) << m.error;
        EXPECT_EQ(m.puid >> 32, 1U) << "puids come from node 1's range";
    }
    EXPECT_EQ(output_of(0, msg::Stream::out), "out0-1-me\n");
    EXPECT_EQ(output_of(1, msg::Stream::out), "out1-1-me\n");
    EXPECT_EQ(output_of(1, msg::Stream::err), "err1\n");

    // Every member's output precedes its exit report, on the one path to node 0.
    std::map<Puid, std::size_t> last_output, exit_at;
    for (std::size_t i = 0; i < router.sent.size(); ++i) {
        const auto& f = router.sent[i].frame;
        if (auto o = msg::decode_as<msg::Output>(f); f.type == static_cast<std::uint16_t>(msg::Type::output) && o)
            last_output[o->puid] = i;
        if (auto x = msg::decode_as<msg::MembersExited>(f); f.type == static_cast<std::uint16_t>(msg::Type::members_exited) && x)
            for (const auto& m : x->members) {
                exit_at[m.puid] = i;
                EXPECT_EQ(m.status.exit_code, 3);
                EXPECT_TRUE(m.error.empty());
            }
    }
    ASSERT_EQ(exit_at.size(), 2U);
    for (auto [puid, at] : exit_at) EXPECT_LT(last_output.at(puid), at);
    EXPECT_GE(exits_changed, 1);
    EXPECT_TRUE(executor.report_all_exits());
}

TEST_F(ExecutorTest, AMemberThatCannotStartStopsTheRestOfItsGroup) {
    from_head(group(6, {"/nonexistent/dragon-test-program"}, 3));
    ASSERT_TRUE(run_until([&] { return !sent<msg::MembersStarted>().empty(); }));
    const auto members = sent<msg::MembersStarted>().at(0).members;
    ASSERT_EQ(members.size(), 3U);
    EXPECT_EQ(members[0].puid, 0U);
    EXPECT_EQ(members[0].sys_errno, ENOENT);
    EXPECT_NE(members[0].error.find("/nonexistent/dragon-test-program"), std::string::npos) << members[0].error;
    for (std::size_t r : {1U, 2U}) {
        EXPECT_EQ(members[r].puid, 0U);
        EXPECT_EQ(members[r].error, "not started: rank 0 could not start");
    }
    EXPECT_EQ(executor.running(), 0U);
}

TEST_F(ExecutorTest, OutputFilesAreEmptiedOnceByTheirOwnerAndAppendedOnRestart) {
    auto m = group(7, {"sh", "-c", "echo run$DRAGON_RANK"}, 2);
    auto& p = m.spec.entries[0].proc;
    p.stdout_mode = msg::OutputMode::file;
    p.stdout_path = (dir / "own.%r").string();
    p.stderr_mode = msg::OutputMode::file;
    p.stderr_path = (dir / "all.log").string();  // the group's file: node 0 empties it, never a node
    std::ofstream(dir / "own.0") << "old\n";
    std::ofstream(dir / "all.log") << "kept\n";
    from_head(m);
    ASSERT_TRUE(run_until([&] { return exits_reported() == 2; }));
    EXPECT_EQ(slurp(dir / "own.0"), "run0\n");
    EXPECT_EQ(slurp(dir / "own.1"), "run1\n");
    EXPECT_EQ(slurp(dir / "all.log"), "kept\n");

    from_head(msg::RespawnMember{7, 0});
    ASSERT_TRUE(run_until([&] { return exits_reported() == 3; }));
    EXPECT_EQ(slurp(dir / "own.0"), "run0\nrun0\n") << "a restarted rank appends to its earlier run's file";
    // The first report (of one or more: start slices) begins with rank 0; the
    // respawn's is the last.
    const auto started = sent<msg::MembersStarted>();
    ASSERT_GE(started.size(), 2U);
    EXPECT_EQ(started.front().members.at(0).rank, 0U);
    EXPECT_EQ(started.back().members.size(), 1U);
    EXPECT_EQ(started.back().members.at(0).rank, 0U);
    EXPECT_NE(started.back().members.at(0).puid, started.front().members.at(0).puid);

    from_head(msg::RespawnMember{7, 9});
    const auto refused = sent<msg::MembersStarted>().back().members.at(0);
    EXPECT_EQ(refused.puid, 0U);
    EXPECT_EQ(refused.error, "rank 9 is not placed on node 1");
}

TEST_F(ExecutorTest, AFileItCannotOpenIsAStartFailureThatIsNotTheProgramsFault) {
    auto m = group(8, {"true"}, 1);
    m.spec.entries[0].proc.stdout_mode = msg::OutputMode::file;
    m.spec.entries[0].proc.stdout_path = (dir / "no" / "such" / "dir" / "out").string();
    from_head(m);
    ASSERT_TRUE(run_until([&] { return !sent<msg::MembersStarted>().empty(); }));
    const auto s = sent<msg::MembersStarted>().at(0).members.at(0);
    EXPECT_EQ(s.puid, 0U);
    EXPECT_EQ(s.sys_errno, 0) << "126, not 127: the program was found";
    EXPECT_NE(s.error.find("cannot open stdout file"), std::string::npos) << s.error;
}

TEST_F(ExecutorTest, SignalsReachRunningMembersAndGroupsAreForgotten) {
    from_head(group(9, {"sleep", "30"}, 2));
    ASSERT_TRUE(run_until([&] { return executor.running() == 2; }));
    EXPECT_EQ(executor.process_table().procs.size(), 2U);
    from_head(msg::SignalMembers{9, SIGTERM});
    ASSERT_TRUE(run_until([&] { return exits_reported() == 2; }));
    const auto exited = sent<msg::MembersExited>();
    for (const auto& batch : exited)
        for (const auto& m : batch.members) EXPECT_EQ(m.status.signal, SIGTERM);
    from_head(msg::ForgetGroup{9});
    EXPECT_EQ(executor.group_count(), 0U);
    EXPECT_TRUE(executor.process_table().procs.empty());
}

TEST_F(ExecutorTest, NoWorkWhileTheRunStops) {
    router.accepting = false;
    from_head(group(10, {"true"}, 1));
    ASSERT_TRUE(run_until([&] { return !sent<msg::MembersStarted>().empty(); }));
    const auto s = sent<msg::MembersStarted>().at(0).members.at(0);
    EXPECT_EQ(s.puid, 0U);
    EXPECT_EQ(s.error, "the agent is shutting down");
}

TEST_F(ExecutorTest, StdinIsWrittenInOrderAndAcknowledged) {
    auto m = group(11, {"cat"}, 1);
    m.spec.entries[0].proc.stdin_mode = msg::StdinMode::owner;
    from_head(m);
    ASSERT_TRUE(run_until([&] { return executor.running() == 1; }));
    const Puid puid = sent<msg::MembersStarted>().at(0).members.at(0).puid;
    from_head(msg::StdinData{puid, "hello ", false});
    from_head(msg::StdinData{puid, "world", true});
    ASSERT_TRUE(run_until([&] { return exits_reported() == 1; }));
    EXPECT_EQ(output_of(0, msg::Stream::out), "hello world");
    std::uint64_t acked = 0;
    for (const auto& a : sent<msg::StdinAck>()) acked += a.consumed;
    EXPECT_EQ(acked, 11U);
    // Stdin for a process that is gone is acknowledged, so the writer's window moves on.
    from_head(msg::StdinData{puid + 1000, "lost", false});
    EXPECT_EQ(sent<msg::StdinAck>().back().consumed, 4U);
}

TEST_F(ExecutorTest, OutputHeldBackByAFullReaderHoldsTheExitBackToo) {
    router.output_full = true;
    from_head(group(12, {"sh", "-c", "echo first; sleep 0.3; echo second"}, 1));
    ASSERT_TRUE(run_until([&] { return !sent<msg::Output>().empty(); }));
    // The stream is parked: the process ends, but its exit waits for the rest of its output.
    ASSERT_TRUE(run_until([&] { return executor.running() == 0; }));
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);  // past the output grace
    run_until([&] { return std::chrono::steady_clock::now() > until; });
    EXPECT_EQ(exits_reported(), 0U);
    router.output_full = false;
    executor.resume_output();
    ASSERT_TRUE(run_until([&] { return exits_reported() == 1; }));
    EXPECT_EQ(output_of(0, msg::Stream::out), "first\nsecond\n");
}

TEST_F(ExecutorTest, SimplePmiRanksGetTheirEnvironmentAndABrokenConnectionEndsTheRank) {
    auto m = group(13, {"sh", "-c", "echo $PMI_RANK/$PMI_SIZE/$PMI_LOCAL_RANK/${PMI_FD:+fd}"}, 2);
    m.spec.pmi = msg::PmiMode::simple;
    m.rank_nodes = {1, 1};
    from_head(m);
    ASSERT_TRUE(run_until([&] { return exits_reported() == 2; }));
    EXPECT_EQ(output_of(0, msg::Stream::out), "0/2/0/fd\n");
    EXPECT_EQ(output_of(1, msg::Stream::out), "1/2/1/fd\n");
    for (const auto& x : sent<msg::MembersExited>())
        for (const auto& e : x.members) EXPECT_TRUE(e.error.empty()) << "never spoke PMI: its exit is its own";

    // A rank that breaks the protocol would hold its peers in a fence: it is ended at once.
    auto bad = group(14, {"bash", "-c", "printf 'cmd=bogus\\n' >&$PMI_FD; sleep 30"}, 1);
    bad.spec.pmi = msg::PmiMode::simple;
    bad.rank_nodes = {1};
    from_head(bad);
    ASSERT_TRUE(run_until([&] { return exits_reported() == 3; }));
    const auto last = sent<msg::MembersExited>().back().members.at(0);
    EXPECT_EQ(last.status.signal, SIGKILL);
    EXPECT_NE(last.error.find("unknown command 'bogus'"), std::string::npos) << last.error;
}

}  // namespace
}  // namespace dragon::agent
