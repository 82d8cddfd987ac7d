// Remote channels benchmark: 64 B round trip and a 1 MiB-message stream
// between two processes on two virtual nodes, through Dragon channels (each
// side sends to the inbox on the other node, i.e. via its agent, the TCP
// transport and the other agent, and receives on its own inbox in shared
// memory), against raw blocking TCP between the same loopback addresses.
//
//   dragon-bench-remote-channels [--rounds 3] [--rtt-iters 2000] [--big-msgs 300] ...
//       the driver: runs both in each cpu layout (split, shared, one), interleaved, and prints a table per layout
//   dragon-bench-remote-channels head ...     under dragon-orchestrate (the driver starts it)
//   dragon-bench-remote-channels member ...   a group member (the head starts it)
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

// GCC 12 reports a false -Wnull-dereference inside std::string as inlined from CLI11.
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "dragon/common/sys.hpp"
#include "dragon/orchestrator/channel.hpp"
#include "dragon/orchestrator/process_group.hpp"

namespace {

using namespace dragon;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kEnvRegistry = "DRAGON_BENCH_REGISTRY";
constexpr auto kOpTimeout = 20s;  // no single operation of a healthy run takes this long

/// Where the two sides run. Two real nodes each have their own cpus, so a
/// message between them always wakes the other side on another cpu; on one
/// machine the scheduler may instead put both ends on one cpu, where a wake-up
/// is far cheaper (a loopback ping-pong on one cpu is several times faster
/// than across two on a VM). Both sides are measured in the same layout.
enum class Layout { split, shared, one };

struct LayoutInfo {
    Layout layout;
    const char* name;
    const char* what;
};

constexpr LayoutInfo kLayouts[] = {
    {Layout::split, "split",
     "each node on its own cpu (dragon --split-cpus; raw: client on the first cpu, server on the second)"},
    {Layout::shared, "shared", "nothing pinned (both nodes, or both raw ends, share every cpu)"},
    {Layout::one, "one", "everything on one cpu (dragon's 2 agents and 2 members; raw's 2 ends)"},
};

struct Config {
    int rounds = 3;
    int rtt_iters = 2000;
    int rtt_warmup = 200;
    int big_msgs = 300;
    int big_warmup = 20;
    int stream_threads = 1;  // dragon: threads of the sender sharing the stream (a send is one round trip)
    std::size_t small = 64;
    std::size_t big = 1 << 20;
    int run_timeout_s = 60;
    std::string client_ip = "127.0.0.2";  // node 0's address in a virtual cluster
    std::string server_ip = "127.0.0.3";  // node 1's
    std::string orchestrate;              // default: next to this program
    std::vector<std::string> layouts{"split", "shared", "one"};
    std::vector<int> cpus;                // this process's cpus (the layouts pin onto the first two)

    [[nodiscard]] std::vector<std::string> args() const {
        return {std::to_string(rtt_iters), std::to_string(rtt_warmup), std::to_string(big_msgs),
                std::to_string(big_warmup), std::to_string(stream_threads)};
    }
    static constexpr int kArgs = 5;
    void from_args(char** a) {
        rtt_iters = std::atoi(a[0]);
        rtt_warmup = std::atoi(a[1]);
        big_msgs = std::atoi(a[2]);
        big_warmup = std::atoi(a[3]);
        stream_threads = std::max(1, std::atoi(a[4]));
    }
};

struct Results {
    double rtt_median_us = 0, rtt_p99_us = 0, gbps = 0;
    double send_median_us =
        0;  // dragon only: a remote send call (no timeout: until the message is on its way)
    double gbps_view = 0;  // dragon only: the receiver takes each message in place (recv_message)
};

double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void finish_rtts(std::vector<double>& rtts, Results& r) {
    std::sort(rtts.begin(), rtts.end());
    r.rtt_median_us = rtts[rtts.size() / 2];
    r.rtt_p99_us = rtts[rtts.size() * 99 / 100];
}

double stream_gbps(const Config& c, Clock::duration d) {
    return static_cast<double>(c.big) * c.big_msgs / seconds(d) / 1e9;
}

std::string self_exe() {
    char buf[4096];
    const auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n))
                 : std::string("dragon-bench-remote-channels");
}

// ---- raw TCP (adapted from bench/transport) ---------------------------------------------

void nodelay(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

/// The cpus a side runs on in `layout`: {client, server}; -1 leaves it unpinned.
std::pair<int, int> sides(const Config& c, Layout layout) {
    switch (layout) {
        case Layout::split: return {c.cpus[0], c.cpus[1]};
        case Layout::one: return {c.cpus[0], c.cpus[0]};
        case Layout::shared: break;
    }
    return {-1, -1};
}

sockaddr_in addr_of(const std::string& ip, std::uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    return sa;
}

// The node-1 side: echoes the pings, takes the stream, acks each phase.
int raw_server(const Config& c, int port_fd) {
    sys::UniqueFd ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = addr_of(c.server_ip, 0);
    socklen_t len = sizeof sa;
    if (::bind(ls.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(ls.get(), 1) != 0)
        return 2;
    ::getsockname(ls.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    const std::uint16_t port = ntohs(sa.sin_port);
    if (!sys::write_all(port_fd, &port, sizeof port)) return 3;
    sys::UniqueFd fd(::accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) return 4;
    nodelay(fd.get());
    std::vector<char> small(c.small, 1), big(c.big);
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i)
        if (!sys::read_exact(fd.get(), small.data(), c.small) ||
            !sys::write_all(fd.get(), small.data(), c.small))
            return 5;
    for (int phase : {c.big_warmup, c.big_msgs}) {
        for (int i = 0; i < phase; ++i)
            if (!sys::read_exact(fd.get(), big.data(), c.big)) return 6;
        if (!sys::write_all(fd.get(), small.data(), c.small)) return 7;
    }
    return 0;
}

// The node-0 side: measures, with the same script as the dragon members.
std::optional<Results> raw_client(const Config& c, std::uint16_t port) {
    sys::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in local = addr_of(c.client_ip, 0), sa = addr_of(c.server_ip, port);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
        ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
        return std::nullopt;
    nodelay(fd.get());
    Results r;
    std::vector<char> small(c.small, 3), big(c.big, 4);
    std::vector<double> rtts;
    rtts.reserve(static_cast<std::size_t>(c.rtt_iters));
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i) {
        auto t0 = Clock::now();
        if (!sys::write_all(fd.get(), small.data(), c.small) ||
            !sys::read_exact(fd.get(), small.data(), c.small))
            return std::nullopt;
        if (i >= c.rtt_warmup) rtts.push_back(seconds(Clock::now() - t0) * 1e6);
    }
    finish_rtts(rtts, r);
    Clock::time_point t0;
    for (int phase : {c.big_warmup, c.big_msgs}) {
        t0 = Clock::now();
        for (int i = 0; i < phase; ++i)
            if (!sys::write_all(fd.get(), big.data(), c.big)) return std::nullopt;
        if (!sys::read_exact(fd.get(), small.data(), c.small)) return std::nullopt;
    }
    r.gbps = stream_gbps(c, Clock::now() - t0);
    return r;
}

std::optional<Results> run_raw(const Config& c, Layout layout) {
    const auto [client_cpu, server_cpu] = sides(c, layout);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::nullopt;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(p[0]);
        if (server_cpu >= 0 && !pin_to(server_cpu)) ::_exit(8);
        ::alarm(static_cast<unsigned>(c.run_timeout_s));
        ::_exit(raw_server(c, p[1]));
    }
    ::close(p[1]);
    std::uint16_t port = 0;
    std::optional<Results> r;
    cpu_set_t all;
    ::sched_getaffinity(0, sizeof all, &all);
    if (client_cpu >= 0 && !pin_to(client_cpu)) std::fprintf(stderr, "raw tcp: cannot pin to cpu %d\n", client_cpu);
    if (sys::read_exact(p[0], &port, sizeof port)) r = raw_client(c, port);
    ::sched_setaffinity(0, sizeof all, &all);
    ::close(p[0]);
    if (!r) ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::fprintf(stderr, "raw tcp: benchmark failed (server status %d)\n", st);
        return std::nullopt;
    }
    return r;
}

// ---- dragon: the run, its head and its two members ----------------------------------------

struct Fail {
    std::string what;
};

template <class T>
T need(Result<T> r, const std::string& what) {
    if (!r) throw Fail{what + ": " + r.error().message()};
    return std::move(*r);
}

void need(const Status& st, const std::string& what) {
    if (!st) throw Fail{what + ": " + st.error().message()};
}

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> v(s.size());
    if (!s.empty()) std::memcpy(v.data(), s.data(), s.size());
    return v;
}

std::string text_of(const std::vector<std::byte>& v) {
    return {reinterpret_cast<const char*>(v.data()), v.size()};
}

// Rank 0 (node 0) measures; rank 1 (node 1) echoes and acks. Each sends to the
// other's inbox (on the other node) and receives on its own.
int member(char** argv) {
    Config c;
    c.from_args(argv);
    const int rank = std::atoi(std::getenv("DRAGON_RANK") ? std::getenv("DRAGON_RANK") : "0");
    try {
        auto gw = need(client::Gateway::connect_from_env(), "connecting the gateway");
        const char* reg_hex = std::getenv(kEnvRegistry);
        auto registry = need(
            client::ChannelRef::open(gw, need(channels::ChannelDescriptor::from_hex(reg_hex ? reg_hex : ""),
                                              "registry descriptor")),
            "opening the registry");
        auto own = need(channels::Channel::create(gw->pool(), {.capacity = 64, .max_queued_bytes = 4U << 20}),
                        "creating the inbox");
        auto inbox = need(client::ChannelRef::open(gw, own.descriptor()), "opening the inbox");
        need(registry.send(bytes_of("reg " + std::to_string(rank) + " " + own.descriptor().to_hex()),
                           kOpTimeout),
             "registering");
        std::vector<std::byte> buf;
        need(inbox.recv(buf, kOpTimeout), "receiving the peer's inbox");
        auto peer = need(
            client::ChannelRef::open(gw, need(channels::ChannelDescriptor::from_hex(text_of(buf)), "peer")),
            "opening the peer's inbox");
        if (peer.is_local()) throw Fail{"the peer's inbox is on this node"};

        const std::vector<std::byte> small(c.small, std::byte{3}), big(c.big, std::byte{4});
        if (rank == 0) {
            Results r;
            std::vector<double> rtts, sends;
            rtts.reserve(static_cast<std::size_t>(c.rtt_iters));
            sends.reserve(static_cast<std::size_t>(c.rtt_iters));
            for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i) {
                auto t0 = Clock::now();
                need(peer.send(small), "ping");
                auto t1 = Clock::now();
                need(inbox.recv(buf, kOpTimeout), "pong");
                if (i >= c.rtt_warmup) {
                    rtts.push_back(seconds(Clock::now() - t0) * 1e6);
                    sends.push_back(seconds(t1 - t0) * 1e6);
                }
            }
            finish_rtts(rtts, r);
            r.send_median_us = median(sends);
            // Warm-up, then the stream received by copying out, then received in place.
            Clock::time_point t0;
            const int phases[] = {c.big_warmup, c.big_msgs, c.big_msgs};
            for (int p = 0; p < 3; ++p) {
                const int phase = phases[p];
                t0 = Clock::now();
                if (c.stream_threads == 1) {
                    for (int i = 0; i < phase; ++i) need(peer.send(big), "stream send");
                } else {  // the same gateway and ChannelRef from several threads: sends overlap
                    std::vector<std::thread> senders;
                    std::atomic<int> next{0};
                    std::atomic<bool> failed{false};
                    for (int t = 0; t < c.stream_threads; ++t)
                        senders.emplace_back([&] {
                            while (next.fetch_add(1) < phase)
                                if (!peer.send(big)) failed = true;
                        });
                    for (auto& t : senders) t.join();
                    if (failed) throw Fail{"stream send failed"};
                }
                need(inbox.recv(buf, kOpTimeout), "stream ack");
                if (p == 1) r.gbps = stream_gbps(c, Clock::now() - t0);
                if (p == 2) r.gbps_view = stream_gbps(c, Clock::now() - t0);
            }
            char line[240];
            std::snprintf(line, sizeof line,
                          "RESULT rtt_median_us=%.3f rtt_p99_us=%.3f gbps=%.4f send_median_us=%.3f gbps_view=%.4f",
                          r.rtt_median_us, r.rtt_p99_us, r.gbps, r.send_median_us, r.gbps_view);
            need(registry.send(bytes_of(line), kOpTimeout), "reporting");
        } else {
            for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i) {
                need(inbox.recv(buf, kOpTimeout), "ping");
                need(peer.send(buf), "pong");
            }
            const int phases[] = {c.big_warmup, c.big_msgs, c.big_msgs};
            for (int p = 0; p < 3; ++p) {
                for (int i = 0; i < phases[p]; ++i) {
                    std::size_t got = 0;
                    if (p < 2) {  // copied out, as a socket's read does
                        need(inbox.recv(buf, kOpTimeout), "stream recv");
                        got = buf.size();
                    } else {  // in place: the bytes stay in the pool block the agent wrote
                        got = need(inbox.recv_message(kOpTimeout), "stream recv_message").size();
                    }
                    if (got != c.big) throw Fail{"stream message of " + std::to_string(got) + " bytes"};
                }
                need(peer.send(small), "stream ack");
            }
        }
        // Rank 1's last message (the ack) was taken by rank 0 before it reported,
        // and rank 0's inbox is empty once it has: nobody touches the inboxes now.
        (void)own.destroy();
    } catch (const Fail& f) {
        std::fprintf(stderr, "bench member %d: %s\n", rank, f.what.c_str());
        return 1;
    }
    return 0;
}

int head(char** argv) {
    Config c;
    c.from_args(argv);
    try {
        auto ses = need(client::Session::connect_from_env(), "connecting");
        auto gw = need(client::Gateway::connect_from_env(), "connecting the gateway");
        auto reg_owner =
            need(channels::Channel::create(gw->pool(), {.capacity = 16}), "creating the registry");
        auto registry = need(client::ChannelRef::open(gw, reg_owner.descriptor()), "opening the registry");
        client::ProcessGroup g(ses, client::GroupOptions{.placement = "cyclic"});
        std::vector<std::string> argv_m{self_exe(), "member"};
        for (auto& a : c.args()) argv_m.push_back(a);
        auto t = client::ProcessTemplate::command(argv_m);
        t.env = {std::string(kEnvRegistry) + "=" + reg_owner.descriptor().to_hex()};
        g.add(t, 2);
        need(g.start(), "starting the members");
        for (const auto& m : g.members())
            if (m.node_id != m.rank)
                throw Fail{"rank " + std::to_string(m.rank) + " placed on node " + std::to_string(m.node_id)};
        std::string inbox[2];
        std::vector<std::byte> buf;
        for (int got = 0; got < 2; ++got) {
            need(registry.recv(buf, kOpTimeout), "waiting for registrations");
            std::istringstream in(text_of(buf));
            std::string word, hex;
            int rank = -1;
            in >> word >> rank >> hex;
            if (word != "reg" || rank < 0 || rank > 1) throw Fail{"bad registration: " + text_of(buf)};
            inbox[rank] = hex;
        }
        // Rank 1 first: a send returns once the message is in the channel, so rank 1
        // has its peer's inbox before rank 0 can learn rank 1's and ping it (messages
        // of two senders, the head and rank 0, are not ordered with each other).
        for (int r = 1; r >= 0; --r) {
            auto ref = need(
                client::ChannelRef::open(gw, need(channels::ChannelDescriptor::from_hex(inbox[r]), "inbox")),
                "opening an inbox");
            need(ref.send(bytes_of(inbox[1 - r]), kOpTimeout), "sending the peer's inbox");
        }
        std::string result;
        const auto deadline = Clock::now() + std::chrono::seconds(c.run_timeout_s);
        while (result.empty()) {
            auto st = registry.recv(buf, 500ms);
            if (st) {
                result = text_of(buf);
                break;
            }
            if (Clock::now() > deadline) throw Fail{"no result in time"};
            // Not 0 ms: a zero timeout returns before reading the agent's news.
            if (need(g.join(20ms), "join")) {
                // The members may have reported and ended since the recv above gave up.
                if (!registry.recv(buf, channels::kTryOnce)) throw Fail{"a member ended without a result"};
                result = text_of(buf);
            }
        }
        if (!need(g.join(kOpTimeout), "joining") || !g.outcome() ||
            g.outcome()->outcome != msg::GroupOutcome::succeeded)
            throw Fail{"the members did not succeed"};
        (void)g.close();
        (void)reg_owner.destroy();
        std::printf("%s\n", result.c_str());
    } catch (const Fail& f) {
        std::fprintf(stderr, "bench head: %s\n", f.what.c_str());
        return 1;
    }
    return 0;
}

// Runs the head under a 2-node virtual cluster and parses its RESULT line.
std::optional<Results> run_dragon(const Config& c, Layout layout) {
    std::vector<std::string> args{c.orchestrate, "run", "--launcher", "virtual", "--nodes", "2"};
    if (layout == Layout::split) args.emplace_back("--split-cpus");  // node k on cpu k
    for (const char* a : {"--", "@self", "head"}) args.emplace_back(a == std::string("@self") ? self_exe() : a);
    for (auto& a : c.args()) args.push_back(a);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::nullopt;
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (layout == Layout::one && !pin_to(c.cpus[0])) ::_exit(126);  // agents and members inherit it
        ::dup2(p[1], 1);
        const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0) ::dup2(devnull, 0);  // nothing for the run's stdin
        std::vector<char*> av;
        for (auto& a : args) av.push_back(a.data());
        av.push_back(nullptr);
        ::execv(av[0], av.data());
        std::fprintf(stderr, "exec %s: %s\n", av[0], std::strerror(errno));
        ::_exit(127);
    }
    ::close(p[1]);
    std::string out;
    const auto deadline = Clock::now() + std::chrono::seconds(c.run_timeout_s);
    bool timed_out = false;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        pollfd pfd{p[0], POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
        char buf[4096];
        const auto n = ::read(p[0], buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    if (timed_out) ::kill(pid, SIGINT);  // dragon-orchestrate stops the whole run on SIGINT
    ::close(p[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    Results r;
    const auto at = out.find("RESULT ");
    if (timed_out || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || at == std::string::npos ||
        std::sscanf(out.c_str() + at,
                    "RESULT rtt_median_us=%lf rtt_p99_us=%lf gbps=%lf send_median_us=%lf gbps_view=%lf",
                    &r.rtt_median_us, &r.rtt_p99_us, &r.gbps, &r.send_median_us, &r.gbps_view) != 5) {
        std::fprintf(stderr, "dragon: benchmark run failed (%s, status %d); its output: %s\n",
                     timed_out ? "timed out" : "ended", st, out.c_str());
        return std::nullopt;
    }
    return r;
}

Results combine(const std::vector<Results>& rs) {
    auto pick = [&](double Results::*f) {
        std::vector<double> v;
        for (const auto& r : rs) v.push_back(r.*f);
        return median(v);
    };
    return {pick(&Results::rtt_median_us), pick(&Results::rtt_p99_us), pick(&Results::gbps),
            pick(&Results::send_median_us), pick(&Results::gbps_view)};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 + Config::kArgs && std::string(argv[1]) == "head") return head(argv + 2);
    if (argc == 2 + Config::kArgs && std::string(argv[1]) == "member") return member(argv + 2);
    Config c;
    CLI::App app{
        "Dragon remote channels benchmark: channels across 2 virtual nodes vs raw TCP between the same "
        "addresses"};
    app.add_option("--rounds", c.rounds, "rounds; dragon and raw tcp are interleaved and medians reported")
        ->check(CLI::Range(1, 100));
    app.add_option("--rtt-iters", c.rtt_iters, "ping-pong round trips measured")
        ->check(CLI::Range(10, 10000000));
    app.add_option("--rtt-warmup", c.rtt_warmup, "ping-pong round trips before measuring")
        ->check(CLI::Range(0, 1000000));
    app.add_option("--big-msgs", c.big_msgs, "1 MiB messages streamed (measured)")
        ->check(CLI::Range(1, 1000000));
    app.add_option("--big-warmup", c.big_warmup, "1 MiB messages streamed before measuring")
        ->check(CLI::Range(0, 100000));
    app.add_option("--stream-threads", c.stream_threads,
                   "dragon: threads sending the 1 MiB stream at once (default 1: one message at a time)")
        ->check(CLI::Range(1, 64));
    app.add_option("--run-timeout", c.run_timeout_s, "seconds before a run counts as hung")
        ->check(CLI::Range(5, 3600));
    app.add_option("--orchestrate", c.orchestrate, "dragon-orchestrate (default: next to this program)");
    app.add_option("--layouts", c.layouts,
                   "cpu layouts to measure, each for both sides: split (each node on its own cpu, as real nodes), "
                   "shared (nothing pinned), one (everything on one cpu)")
        ->delimiter(',')
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (c.orchestrate.empty()) {
        const auto self = self_exe();
        c.orchestrate = self.substr(0, self.rfind('/') + 1) + "dragon-orchestrate";
    }

    {
        cpu_set_t set;
        CPU_ZERO(&set);
        ::sched_getaffinity(0, sizeof set, &set);
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(static_cast<std::size_t>(cpu), &set)) c.cpus.push_back(cpu);
    }
    std::vector<LayoutInfo> layouts;
    for (const auto& name : c.layouts) {
        const auto* l = std::find_if(std::begin(kLayouts), std::end(kLayouts),
                                     [&](const LayoutInfo& x) { return name == x.name; });
        if (l == std::end(kLayouts)) {
            std::fprintf(stderr, "--layouts: unknown layout '%s' (split, shared, one)\n", name.c_str());
            return 2;
        }
        if (l->layout == Layout::split && c.cpus.size() < 2) {
            std::fprintf(stderr, "layout split needs 2 cpus; this process may use %zu: skipped\n", c.cpus.size());
            continue;
        }
        layouts.push_back(*l);
    }

    std::vector<std::vector<Results>> dragons(layouts.size()), raws(layouts.size());
    const auto t0 = Clock::now();
    for (int round = 0; round < c.rounds; ++round) {
        for (std::size_t i = 0; i < layouts.size(); ++i) {
            auto d = run_dragon(c, layouts[i].layout);
            auto r = run_raw(c, layouts[i].layout);
            if (!d || !r) return 1;
            dragons[i].push_back(*d);
            raws[i].push_back(*r);
        }
    }
    auto met = [](bool b) { return b ? "MET" : "MISSED"; };
    std::printf(
        "Dragon remote channels benchmark: 2 virtual nodes on %s and %s (one machine, %ld CPUs online), "
        "median of %d interleaved rounds, %.1f s\n",
        c.client_ip.c_str(), c.server_ip.c_str(), ::sysconf(_SC_NPROCESSORS_ONLN), c.rounds,
        seconds(Clock::now() - t0));
    const std::string how = c.stream_threads == 1
                                ? std::string("one at a time")
                                : "from " + std::to_string(c.stream_threads) + " threads at once";
    const char* lanes = std::getenv("DRAGON_CHANNEL_LANES");
    const bool via_lane = lanes == nullptr || std::strcmp(lanes, "0") != 0;
    std::printf(
        "dragon: a member on each node sends to the inbox on the other node (%s) and receives on its own inbox (shared memory), default sends (no timeout), %d round trips, "
        "%d x 1 MiB %s + ack, received once by copying out (recv) and once in place (recv_message); "
        "raw: 2 processes, blocking TCP %s -> %s, TCP_NODELAY, same script\n",
        via_lane ? "over its lane: TCP straight to the other node's agent"
                 : "DRAGON_CHANNEL_LANES=0: gateway -> agent -> transport -> agent",
        c.rtt_iters, c.big_msgs, how.c_str(), c.client_ip.c_str(), c.server_ip.c_str());
    for (std::size_t i = 0; i < layouts.size(); ++i) {
        const Results d = combine(dragons[i]), r = combine(raws[i]);
        const double rtt_ratio = d.rtt_median_us / r.rtt_median_us;
        const double bw_ratio = d.gbps / r.gbps;
        std::printf("\nlayout %s: %s\n", layouts[i].name, layouts[i].what);
        std::printf("%-30s %11s %11s   %s\n", "metric", "dragon", "raw tcp", "ratio (goal)");
        std::printf("%-30s %11.2f %11.2f   dragon/raw = %.2fx (<= 2x) %s\n", "RTT 64 B median [us]",
                    d.rtt_median_us, r.rtt_median_us, rtt_ratio, met(rtt_ratio <= 2.0));
        std::printf("%-30s %11.2f %11.2f   dragon/raw = %.2fx\n", "RTT 64 B p99 [us]", d.rtt_p99_us,
                    r.rtt_p99_us, d.rtt_p99_us / r.rtt_p99_us);
        std::printf("%-30s %11.2f %11.2f   dragon/raw = %.2f (>= 0.60) %s\n", "1 MiB stream, recv [GB/s]",
                    d.gbps, r.gbps, bw_ratio, met(bw_ratio >= 0.6));
        std::printf("%-30s %11.2f %11.2f   dragon/raw = %.2f (>= 0.60) %s\n", "1 MiB stream, in place [GB/s]",
                    d.gbps_view, r.gbps, d.gbps_view / r.gbps, met(d.gbps_view / r.gbps >= 0.6));
        std::printf("%-30s %11.2f %11s   dragon send / raw RTT = %.2fx (returns once the message is on its way)\n",
                    "64 B send call median [us]", d.send_median_us, "-", d.send_median_us / r.rtt_median_us);
        std::printf("per round, dragon RTT us/GB/s recv/in place:");
        for (const auto& x : dragons[i]) std::printf(" %.1f/%.2f/%.2f", x.rtt_median_us, x.gbps, x.gbps_view);
        std::printf("; raw RTT us/GB/s:");
        for (const auto& x : raws[i]) std::printf(" %.1f/%.2f", x.rtt_median_us, x.gbps);
        std::printf("\n");
    }
    return 0;
}
