// A managed process that drives the C++ ProcessGroup API through one
// scenario and prints what it saw, one fact per line, for the integration
// tests (test_group_api.py) to check.
//   group_probe SCENARIO [ARGS...]
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "dragon/orchestrator/process_group.hpp"

using namespace dragon;
using namespace dragon::client;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void die(const std::string& what, const Error& e) {
    std::fprintf(stderr, "group_probe: %s: %s\n", what.c_str(), e.message().c_str());
    std::exit(1);
}

template <class T>
T must(Result<T> r, const std::string& what) {
    if (!r) die(what, r.error());
    return std::move(*r);
}

void must(const Status& st, const std::string& what) {
    if (!st) die(what, st.error());
}

ProcessTemplate sh(const std::string& script) { return ProcessTemplate::command({"/bin/sh", "-c", script}); }

// One line per rank: what info() says, then the outcome.
void print_info(ProcessGroup& g) {
    auto info = must(g.info(), "info");
    std::printf("group state=%s restarts=%u\n", msg::name_of(info.state), info.restarts);
    for (const auto& p : info.processes) {
        std::string cpus;
        for (auto c : p.cpus) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);
        std::printf("rank=%u puid=%llu pid=%d node=%u local=%u cpus=%s state=%s code=%d signal=%d runs=%zu\n", p.rank,
                    static_cast<unsigned long long>(p.puid), p.pid, p.node_id, p.local_rank,
                    cpus.empty() ? "-" : cpus.c_str(), msg::name_of(p.state), p.status.exit_code, p.status.signal,
                    p.runs.size());
        for (const auto& run : p.runs)
            std::printf("  run puid=%llu exited=%d code=%d signal=%d\n", static_cast<unsigned long long>(run.puid),
                        run.exited ? 1 : 0, run.status.exit_code, run.status.signal);
    }
}

void print_outcome(const ProcessGroup& g) {
    const auto& d = g.outcome();
    if (!d) {
        std::printf("outcome none\n");
        return;
    }
    std::printf("outcome=%s fail_rank=%u fail_code=%d fail_signal=%d restarts=%u fail_error=%s\n",
                msg::name_of(d->outcome), d->fail_rank, d->fail_status.exit_code, d->fail_status.signal, d->restarts,
                d->fail_error.empty() ? "-" : d->fail_error.c_str());
}

// Counts of the agent's open fds, resident memory (KiB) and zombie children.
struct AgentUsage {
    int fds = 0;
    long rss_kib = 0;  // private (anonymous) memory: the pool's shared pages are not the agent's growth
    int zombies = 0;
    int children = 0;
};

AgentUsage agent_usage(int pid) {
    AgentUsage u;
    if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') ++u.fds;
        ::closedir(d);
    }
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with("RssAnon:")) u.rss_kib = std::strtol(line.c_str() + 8, nullptr, 10);
    std::ifstream kids("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    for (int child = 0; kids >> child;) {
        ++u.children;
        std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
        std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
        const auto close = all.rfind(')');
        if (close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z') ++u.zombies;
    }
    return u;
}

using Scenario = std::function<int(Session&, int, char**)>;

std::map<std::string, Scenario> scenarios() {
    std::map<std::string, Scenario> s;

    // Two templates (MPMD): ranks 0-1 exit 0, ranks 2-4 exit 0 after printing their rank.
    // An MPI job from the C++ API: group_probe mpi PROGRAM N [ARGS...]
    s["mpi"] = [](Session& ses, int argc, char** argv) {
        if (argc < 2) return 2;
        ProcessGroup g(ses, {.pmi = msg::PmiMode::simple});
        std::vector<std::string> cmd{argv[0]};
        for (int i = 2; i < argc; ++i) cmd.emplace_back(argv[i]);
        g.add(ProcessTemplate::command(cmd), static_cast<std::uint32_t>(std::atoi(argv[1])));
        must(g.start(), "start");
        must(g.join(std::nullopt), "join");
        print_outcome(g);
        std::printf("fail_kind=%d\n", g.outcome() ? static_cast<int>(g.outcome()->fail_kind) : -1);
        must(g.close(), "close");
        return 0;
    };

    // Several PMIx jobs in one runtime: group_probe pmix_many PROGRAM [ARGS...]
    // Two groups of 4 ranks of PROGRAM at once (started both, then joined
    // both), then three more one after another; one `pmix_many` line per group.
    s["pmix_many"] = [](Session& ses, int argc, char** argv) {
        if (argc < 1) return 2;
        // msg::PmiMode::pmix: the value the PMIx server will use (not yet in the enum).
        const auto pmix = msg::PmiMode::pmix;
        std::vector<std::string> cmd(argv, argv + argc);
        auto report = [](const char* phase, int i, const ProcessGroup& g) {
            const auto& d = g.outcome();
            std::printf("pmix_many phase=%s group=%d outcome=%s fail_rank=%u fail_code=%d fail_signal=%d fail_kind=%d\n",
                        phase, i, d ? msg::name_of(d->outcome) : "none", d ? d->fail_rank : 0u,
                        d ? d->fail_status.exit_code : 0, d ? d->fail_status.signal : 0,
                        d ? static_cast<int>(d->fail_kind) : -1);
        };
        {
            ProcessGroup a(ses, {.pmi = pmix}), b(ses, {.pmi = pmix});
            a.add(ProcessTemplate::command(cmd), 4);
            b.add(ProcessTemplate::command(cmd), 4);
            must(a.start(), "start a");
            must(b.start(), "start b");
            must(a.join(std::nullopt), "join a");
            must(b.join(std::nullopt), "join b");
            report("together", 0, a);
            report("together", 1, b);
            must(a.close(), "close a");
            must(b.close(), "close b");
        }
        for (int i = 0; i < 3; ++i) {
            ProcessGroup g(ses, {.pmi = pmix});
            g.add(ProcessTemplate::command(cmd), 4);
            must(g.start(), "start");
            must(g.join(std::nullopt), "join");
            report("sequence", i, g);
            must(g.close(), "close");
        }
        return 0;
    };

    s["basic"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        g.add(ProcessTemplate::command({"true"}), 2);
        auto t = sh("echo entry2 rank $DRAGON_RANK of $DRAGON_NRANKS");
        t.stdout_redirect = Redirect::pipe();
        g.add(t, 3);
        must(g.start(), "start");
        std::printf("started id=%llu size=%zu\n", static_cast<unsigned long long>(g.id()), g.members().size());
        std::printf("joined=%d\n", must(g.join(), "join") ? 1 : 0);
        print_outcome(g);
        print_info(g);
        for (std::uint32_t r = 2; r < 5; ++r) std::printf("out%u=%s", r, must(g.read_output(r, msg::Stream::out), "read").c_str());
        auto codes = must(g.exit_statuses(), "exit_statuses");
        std::printf("codes=%zu\n", codes.size());
        must(g.close(), "close");
        auto procs = must(ses.processes(), "processes");
        std::printf("table_after_close=%zu\n", procs.size());
        return 0;
    };

    // A failure fails the group (restart=false) and the rest are stopped.
    s["failure"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        g.add(sh("sleep 30"), 2);
        g.add(sh("sleep 0.2; exit 3"), 1);
        must(g.start(), "start");
        must(g.join(), "join");
        print_outcome(g);
        print_info(g);
        return 0;
    };

    // join with a timeout returns false while the group runs; signals reach every member.
    s["signal"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        g.add(ProcessTemplate::command({"sleep", "30"}), 3);
        must(g.start(), "start");
        std::printf("joined_early=%d\n", must(g.join(200ms), "join") ? 1 : 0);
        print_info(g);
        must(g.send_signal(SIGUSR1), "send_signal");
        // Polled with a zero timeout: each call takes what has arrived.
        bool joined = false;
        for (int i = 0; i < 2000 && !joined; ++i) {
            joined = must(g.join(0ms), "join");
            if (!joined) std::this_thread::sleep_for(10ms);
        }
        std::printf("joined=%d\n", joined ? 1 : 0);
        print_outcome(g);
        print_info(g);
        return 0;
    };

    // stop(patience) escalates past members that ignore SIGINT and SIGTERM.
    s["stop"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        auto stubborn = sh("trap '' INT TERM; echo ready; exec sleep 30");
        stubborn.stdout_redirect = Redirect::pipe();
        g.add(stubborn, 2);
        g.add(ProcessTemplate::command({"sleep", "30"}), 1);
        must(g.start(), "start");
        for (std::uint32_t r = 0; r < 2; ++r) {  // the traps are set once they say so
            std::string seen;
            while (seen.find("ready") == std::string::npos) {
                auto more = must(g.read_output(r, msg::Stream::out, 10s), "read");
                if (more.empty()) die("stop", Error(Errc::timeout, "rank never got ready"));
                seen += more;
            }
        }
        must(g.stop(300ms), "stop");
        print_outcome(g);
        print_info(g);
        return 0;
    };

    // kill() is SIGKILL at once; close() refuses a running group.
    s["kill"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        g.add(sh("trap '' INT TERM; exec sleep 30"), 2);
        must(g.start(), "start");
        auto st = g.close();
        std::printf("close_running=%s\n", st ? "ok" : st.error().message().c_str());
        must(g.kill(), "kill");
        print_outcome(g);
        print_info(g);
        must(g.close(), "close");
        auto again = g.close();
        std::printf("close_twice=%s\n", again ? "ok" : again.error().message().c_str());
        return 0;
    };

    // close_without_waiting: a running group is closed the waiting way
    // (refused); ended groups go without waiting, and the calls after them
    // still get their own replies, not the closes'.
    s["close_nowait"] = [](Session& ses, int, char**) {
        ProcessGroup running(ses);
        running.add(ProcessTemplate::command({"sleep", "30"}), 1);
        must(running.start(), "start");
        auto st = running.close_without_waiting();
        std::printf("nowait_running=%s\n", st ? "ok" : st.error().message().c_str());
        std::vector<std::unique_ptr<ProcessGroup>> ended;
        for (int i = 0; i < 20; ++i) {
            ended.push_back(std::make_unique<ProcessGroup>(ses));
            ended.back()->add(ProcessTemplate::command({"true"}), 1);
            must(ended.back()->start(), "start");
            must(ended.back()->join(), "join");
        }
        for (auto& g : ended) must(g->close_without_waiting(), "close_without_waiting");
        std::printf("nowait_outcome=%s\n", ended.back()->outcome() ? msg::name_of(ended.back()->outcome()->outcome) : "none");
        auto again = ended.back()->close();
        std::printf("nowait_twice=%s\n", again ? "ok" : again.error().message().c_str());
        // Calls right after: each gets its own reply (a proc_table, not one
        // of the 20 closes' ok_reply, which would not decode as one), and
        // the agent forgets the closed groups' processes (within 5 s).
        std::size_t mine = 0;
        for (int tries = 0; tries < 500; ++tries) {
            auto procs = must(ses.processes(), "processes");
            mine = 0;
            for (const auto& p : procs) mine += p.argv.size() == 1 && p.argv[0] == "true";
            if (mine == 0) break;
            std::this_thread::sleep_for(10ms);
        }
        std::printf("nowait_procs_true=%zu\n", mine);
        must(running.kill(), "kill");
        must(running.close(), "close");
        return 0;
    };

    // restart=true replaces a failing rank until the restarts run out, keeping every run.
    s["restart"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses, GroupOptions{.restart = true, .max_restarts = 3});
        g.add(sh("exit 4"), 1);
        g.add(ProcessTemplate::command({"true"}), 1);
        must(g.start(), "start");
        must(g.join(), "join");
        print_outcome(g);
        print_info(g);
        return 0;
    };

    // Output to files (per rank, and one shared), discarded, and pipes both ways.
    s["io"] = [](Session& ses, int argc, char** argv) {
        if (argc < 1) die("io", Error(Errc::invalid_argument, "needs a directory"));
        const std::string dir = argv[0];
        ProcessGroup g(ses);
        auto files = sh("echo out of $DRAGON_RANK; echo err of $DRAGON_RANK >&2");
        files.stdout_redirect = Redirect::file(dir + "/out.%r.txt");
        files.stderr_redirect = Redirect::file("err.%2r.txt");  // relative to cwd
        files.cwd = dir;
        g.add(files, 2);
        auto gone = sh("echo nobody sees this; echo nor this >&2");
        gone.stdout_redirect = Redirect::discard();
        gone.stderr_redirect = Redirect::discard();
        g.add(gone, 1);
        auto both = sh("echo first; echo second >&2");
        both.stdout_redirect = Redirect::file(dir + "/both.txt");
        both.stderr_redirect = Redirect::file(dir + "/both.txt");
        g.add(both, 1);
        auto echo = ProcessTemplate::command({"cat"});
        echo.stdin_redirect = Redirect::pipe();
        echo.stdout_redirect = Redirect::pipe();
        g.add(echo, 1);
        auto from_file = ProcessTemplate::command({"cat"});
        from_file.stdin_redirect = Redirect::file(dir + "/input.txt");
        from_file.stdout_redirect = Redirect::pipe();
        g.add(from_file, 1);
        must(g.start(), "start");
        const std::string big(3U << 20, 'x');  // over the 1 MiB stdin window
        must(g.write_stdin(4, "hello through a pipe\n"), "write_stdin");
        must(g.write_stdin(4, big, true), "write_stdin");
        std::string back;
        for (;;) {
            auto more = must(g.read_output(4, msg::Stream::out, 20s), "read");
            if (more.empty()) break;
            back += more;
        }
        must(g.join(), "join");
        print_outcome(g);
        std::printf("echoed_bytes=%zu echoed_ok=%d\n", back.size(),
                    back == "hello through a pipe\n" + big ? 1 : 0);
        std::printf("from_file=%s", must(g.read_output(5, msg::Stream::out), "read").c_str());
        return 0;
    };

    // A start that the agent refuses names the reason; nothing runs.
    s["refused"] = [](Session& ses, int, char**) {
        ProcessGroup g(ses);
        auto t = ProcessTemplate::command({"true"});
        t.stdout_redirect = Redirect::file("out.%q");
        g.add(t, 1);
        auto st = g.start();
        std::printf("bad_pattern=%s\n", st ? "ok" : st.error().message().c_str());
        ProcessGroup h(ses);
        auto u = ProcessTemplate::command({"true"});
        u.stdin_redirect = Redirect::inherit();
        h.add(u, 1);
        st = h.start();
        std::printf("stdin_inherit=%s\n", st ? "ok" : st.error().message().c_str());
        ProcessGroup k(ses);
        auto v = ProcessTemplate::command({"true"});
        v.stdout_redirect = Redirect::file("/nonexistent-dir/out.%r");
        k.add(v, 2);
        must(k.start(), "start");
        must(k.join(), "join");
        print_outcome(k);
        ProcessGroup e(ses);
        std::printf("empty=%s\n", e.start() ? "ok" : e.start().error().message().c_str());
        auto foreign = ses.call<msg::OkReply>(msg::GroupStop{1, true, 0});  // the front end's group
        std::printf("foreign=%s\n", foreign ? "ok" : foreign.error().message().c_str());
        return 0;
    };

    // Placement as planned on a large (synthetic) node, and binding as the
    // agent reports it for a started group, next to what each rank sees.
    s["placed"] = [](Session& ses, int argc, char** argv) {
        const bool start = argc > 0 && std::string(argv[0]) == "start";
        ProcessGroup g(ses, GroupOptions{.placement = "cyclic", .binding = "core", .cpus_per_proc = start ? 1U : 2U});
        auto t = sh("grep Cpus_allowed_list /proc/self/status");
        t.stdout_redirect = Redirect::pipe();
        g.add(t, start ? 2 : 4);
        if (!start) {
            for (const auto& m : must(g.plan(), "plan")) {
                std::string cpus;
                for (auto c : m.cpus) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);
                std::printf("plan rank=%u node=%u local=%u cpus=%s\n", m.rank, m.node_id, m.local_rank, cpus.c_str());
            }
            return 0;
        }
        must(g.start(), "start");
        must(g.join(), "join");
        print_outcome(g);
        print_info(g);
        for (std::uint32_t r = 0; r < 2; ++r)
            std::printf("seen%u %s", r, must(g.read_output(r, msg::Stream::out), "read").c_str());
        return 0;
    };

    // Per-entry placement constraints: group_probe constraints PIN_NODE.
    // Ranks 0-1 anywhere, 2-4 pinned to PIN_NODE, 5-6 bound to cpu 0, 7-10
    // on every node with this hostname (cyclic); then starts refused for a
    // node, a host and a cpu the run does not have.
    s["constraints"] = [](Session& ses, int argc, char** argv) {
        if (argc < 1) return 2;
        const int pin = std::atoi(argv[0]);
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        auto report = sh("echo node=$DRAGON_NODE_ID $(grep Cpus_allowed_list /proc/self/status)");
        report.stdout_redirect = Redirect::pipe();
        ProcessGroup g(ses, GroupOptions{.placement = "cyclic"});
        g.add(report, 2);
        auto pinned = report;
        pinned.node = pin;
        g.add(pinned, 3);
        auto bound = report;
        bound.cpus = {0};
        g.add(bound, 2);
        auto by_host = report;
        by_host.host = host;
        g.add(by_host, 4);
        must(g.start(), "start");
        must(g.join(), "join");
        print_outcome(g);
        print_info(g);
        for (std::uint32_t r = 0; r < g.size(); ++r)
            std::printf("seen%u %s", r, must(g.read_output(r, msg::Stream::out), "read").c_str());
        must(g.close(), "close");
        auto refused = [&](const char* what, ProcessTemplate t) {
            ProcessGroup h(ses);
            h.add(ProcessTemplate::command({"true"}), 1);
            h.add(std::move(t), 2);
            auto st = h.start();
            std::printf("%s=%s\n", what, st ? "ok" : st.error().message().c_str());
        };
        auto t = ProcessTemplate::command({"true"});
        t.node = 7;
        refused("bad_node", t);
        t = ProcessTemplate::command({"true"});
        t.host = "no-such-host.invalid";
        refused("bad_host", t);
        t = ProcessTemplate::command({"true"});
        t.cpus = {0, 4095};
        refused("bad_cpu", t);
        return 0;
    };

    // G groups of N started, joined and closed one after the other; the
    // agent's fds, memory and zombies after each.
    s["leak"] = [](Session& ses, int argc, char** argv) {
        const int groups = argc > 0 ? std::atoi(argv[0]) : 10;
        const auto n = static_cast<std::uint32_t>(argc > 1 ? std::atoi(argv[1]) : 500);
        const std::string prog = argc > 2 ? argv[2] : "true";
        auto before = agent_usage(ses.agent_pid());
        std::printf("before fds=%d anon_kib=%ld zombies=%d children=%d\n", before.fds, before.rss_kib, before.zombies,
                    before.children);
        for (int i = 0; i < groups; ++i) {
            ProcessGroup g(ses);
            g.add(ProcessTemplate::command({prog}), n);
            must(g.start(), "start");
            must(g.join(), "join");
            if (g.outcome()->outcome != msg::GroupOutcome::succeeded) die("leak", Error(Errc::internal, "a group failed"));
            must(g.close(), "close");
            auto u = agent_usage(ses.agent_pid());
            auto table = must(ses.processes(), "processes");
            std::printf("after %d fds=%d anon_kib=%ld zombies=%d children=%d table=%zu\n", i, u.fds, u.rss_kib,
                        u.zombies, u.children, table.size());
        }
        return 0;
    };

    // Leaves without stopping or closing its group: the agent must stop it.
    s["orphan"] = [](Session& ses, int, char**) -> int {
        auto* g = new ProcessGroup(ses);  // never destroyed: no kill on the way out
        g->add(ProcessTemplate::command({"sleep", "30"}), 3);
        must(g->start(), "start");
        for (const auto& m : g->members()) std::printf("pid=%d\n", m.pid);
        std::fflush(stdout);
        ::_exit(0);
    };

    return s;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: group_probe SCENARIO [ARGS...]\n");
        return 2;
    }
    auto all = scenarios();
    auto it = all.find(argv[1]);
    if (it == all.end()) {
        std::fprintf(stderr, "group_probe: unknown scenario '%s'\n", argv[1]);
        return 2;
    }
    auto ses = must(Session::connect_from_env(), "connect");
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    return it->second(ses, argc - 2, argv + 2);
}
