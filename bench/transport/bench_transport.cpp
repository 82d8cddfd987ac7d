// Transport benchmark: 64 B round-trip latency and 1 MiB streaming bandwidth
// between two processes on loopback, dragon::transport against raw blocking
// TCP (TCP_NODELAY) in the same run, one table with ratios.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

// GCC 12 reports a false -Wnull-dereference inside std::string as inlined from CLI11.
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dragon/common/sys.hpp"
#include "dragon/transport/tcp.hpp"

namespace {

using namespace dragon;
using namespace dragon::transport;
using Clock = std::chrono::steady_clock;

struct Config {
    int rtt_iters = 20000;
    int rtt_warmup = 2000;
    int big_msgs = 2000;
    int rounds = 3;
    std::size_t small = 64;
    std::size_t big = 1 << 20;
    bool pin = true;
    std::string address = "127.0.0.1";
};

struct Results {
    double rtt_median_us = 0, rtt_p99_us = 0, gbps = 0;
};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    ::sched_setaffinity(0, sizeof set, &set);
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

// Forks the server side (which reports its port through a pipe) and runs the
// client side here.
std::optional<Results> run(const char* what, const Config& c, const std::function<int(int port_fd)>& server,
                           const std::function<std::optional<Results>(std::uint16_t port)>& client) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::nullopt;
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(p[0]);
        if (c.pin) pin_to(1);
        ::_exit(server(p[1]));
    }
    ::close(p[1]);
    std::uint16_t port = 0;
    std::optional<Results> r;
    if (sys::read_exact(p[0], &port, sizeof port)) r = client(port);
    ::close(p[0]);
    if (!r) ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::fprintf(stderr, "%s: benchmark failed (server status %d)\n", what, st);
        return std::nullopt;
    }
    return r;
}

// ---- raw TCP -------------------------------------------------------------------

void nodelay(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sockaddr_in addr_of(const std::string& ip, std::uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    return sa;
}

int raw_server(const Config& c, int port_fd) {
    sys::UniqueFd ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = addr_of(c.address, 0);
    socklen_t len = sizeof sa;
    if (::bind(ls.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(ls.get(), 1) != 0) return 2;
    ::getsockname(ls.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    const std::uint16_t port = ntohs(sa.sin_port);
    if (!sys::write_all(port_fd, &port, sizeof port)) return 3;
    sys::UniqueFd fd(::accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) return 4;
    nodelay(fd.get());
    std::vector<char> small(c.small, 1), big(c.big, 2);
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i)
        if (!sys::read_exact(fd.get(), small.data(), c.small) || !sys::write_all(fd.get(), small.data(), c.small))
            return 5;
    for (int i = 0; i <= c.big_msgs; ++i)
        if (!sys::write_all(fd.get(), big.data(), c.big)) return 6;
    return sys::read_exact(fd.get(), small.data(), c.small) ? 0 : 7;
}

std::optional<Results> raw_client(const Config& c, std::uint16_t port) {
    sys::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = addr_of(c.address, port);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return std::nullopt;
    nodelay(fd.get());
    Results r;
    std::vector<char> small(c.small, 3), big(c.big);
    std::vector<double> rtts;
    rtts.reserve(static_cast<std::size_t>(c.rtt_iters));
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i) {
        auto t0 = Clock::now();
        if (!sys::write_all(fd.get(), small.data(), c.small) || !sys::read_exact(fd.get(), small.data(), c.small))
            return std::nullopt;
        if (i >= c.rtt_warmup) rtts.push_back(seconds(Clock::now() - t0) * 1e6);
    }
    finish_rtts(rtts, r);
    if (!sys::read_exact(fd.get(), big.data(), c.big)) return std::nullopt;  // the first message starts the clock
    auto t0 = Clock::now();
    for (int i = 0; i < c.big_msgs; ++i)
        if (!sys::read_exact(fd.get(), big.data(), c.big)) return std::nullopt;
    r.gbps = static_cast<double>(c.big) * c.big_msgs / seconds(Clock::now() - t0) / 1e9;
    if (!sys::write_all(fd.get(), small.data(), c.small)) return std::nullopt;
    return r;
}

// ---- dragon transport ------------------------------------------------------------

struct Ping {
    static constexpr std::uint16_t kType = 1;
    std::string data;
    DRAGON_WIRE_FIELDS(data)
};
struct Bulk {
    static constexpr std::uint16_t kType = 2;
    std::uint32_t index = 0;
    DRAGON_WIRE_FIELDS(index)
};
struct Done {
    static constexpr std::uint16_t kType = 3;
    auto wire_fields() const { return std::tie(); }
    auto wire_fields() { return std::tie(); }
};

int dragon_server(const Config& c, const RunSecret& secret, int port_fd) {
    asio::io_context io;
    std::shared_ptr<tcp::Peer> peer;
    const std::vector<std::byte> big(c.big, std::byte{2});
    int pings = 0, sent = 0, rc = 1;
    auto stream = [&] {
        while (sent <= c.big_msgs) {
            auto s = peer->send_with_payload(Bulk{.index = static_cast<std::uint32_t>(sent)}, big, nullptr);
            ++sent;
            if (s != tcp::SendState::ok) break;
        }
    };
    auto l = tcp::Listener::create(io, c.address, 0, secret, 1, [&](std::shared_ptr<tcp::Peer> p) {
        peer = std::move(p);
        peer->set_on_drained(stream);
        peer->start(
            [&](wire::Frame&& f) {
                if (f.type == Ping::kType) {
                    (void)peer->send_frame(Ping::kType, f.body);  // echo as is
                    if (++pings == c.rtt_warmup + c.rtt_iters) stream();
                } else if (f.type == Done::kType) {
                    rc = 0;
                    peer->close_after_flush([&] { io.stop(); });
                }
            },
            [&](const Error* e) {
                if (e) std::fprintf(stderr, "server: %s\n", e->message().c_str());
                io.stop();
            });
    });
    if (!l) {
        std::fprintf(stderr, "server: %s\n", l.error().message().c_str());
        return 2;
    }
    const std::uint16_t port = l->port();
    if (!sys::write_all(port_fd, &port, sizeof port)) return 3;
    io.run();
    return rc;
}

std::optional<Results> dragon_client(const Config& c, const RunSecret& secret, std::uint16_t port) {
    asio::io_context io;
    std::shared_ptr<tcp::Peer> peer;
    Results r;
    bool ok = false;
    std::vector<double> rtts;
    rtts.reserve(static_cast<std::size_t>(c.rtt_iters));
    std::vector<std::byte> dest(c.big);
    const Ping ping{.data = std::string(c.small - 4, 'p')};  // 64 B of message body with its length prefix
    int pings = 0, received = 0;
    Clock::time_point t0, stream_t0;
    auto send_ping = [&] {
        t0 = Clock::now();
        (void)peer->send(ping);
    };
    tcp::connect(io, c.address, port, secret, 2, 1, [&](Result<std::shared_ptr<tcp::Peer>> res) {
        if (!res) {
            std::fprintf(stderr, "client: %s\n", res.error().message().c_str());
            io.stop();
            return;
        }
        peer = std::move(res).value();
        peer->start(
            [&](wire::Frame&&) {
                if (pings >= c.rtt_warmup) rtts.push_back(seconds(Clock::now() - t0) * 1e6);
                if (++pings < c.rtt_warmup + c.rtt_iters) send_ping();
            },
            [&](const Error* e) {
                if (e) std::fprintf(stderr, "client: %s\n", e->message().c_str());
                io.stop();
            },
            [&](wire::Frame&&, std::uint64_t size) -> Result<tcp::PayloadSink> {
                if (size != c.big) return Error(Errc::protocol, "unexpected payload size");
                return tcp::PayloadSink{.destination = dest, .on_bytes = nullptr, .on_complete = [&] {
                                            if (received++ == 0) {
                                                stream_t0 = Clock::now();  // the first message starts the clock
                                            } else if (received == c.big_msgs + 1) {
                                                r.gbps = static_cast<double>(c.big) * c.big_msgs /
                                                         seconds(Clock::now() - stream_t0) / 1e9;
                                                ok = true;
                                                (void)peer->send(Done{});
                                                peer->close_after_flush([&] { io.stop(); });
                                            }
                                        }};
            });
        send_ping();
    });
    io.run();
    if (!ok) return std::nullopt;
    finish_rtts(rtts, r);
    return r;
}

Results combine(const std::vector<Results>& rs) {
    auto pick = [&](double Results::*f) {
        std::vector<double> v;
        for (const auto& r : rs) v.push_back(r.*f);
        return median(v);
    };
    return {pick(&Results::rtt_median_us), pick(&Results::rtt_p99_us), pick(&Results::gbps)};
}

}  // namespace

int main(int argc, char** argv) {
    Config c;
    CLI::App app{"Dragon transport benchmark: dragon::transport vs raw TCP (two processes, loopback)"};
    app.add_option("--rounds", c.rounds, "rounds; transports are interleaved and medians reported")
        ->check(CLI::Range(1, 100));
    app.add_option("--rtt-iters", c.rtt_iters, "ping-pong round trips measured")->check(CLI::Range(10, 100000000));
    app.add_option("--big-msgs", c.big_msgs, "1 MiB messages streamed")->check(CLI::PositiveNumber);
    app.add_option("--address", c.address, "loopback address to listen on");
    app.add_flag("!--no-pin", c.pin, "do not pin the two processes to CPUs 0 and 1");
    CLI11_PARSE(app, argc, argv);
    if (c.pin) {
        if (::sysconf(_SC_NPROCESSORS_ONLN) < 2) c.pin = false;
        else pin_to(0);
    }
    auto secret = RunSecret::generate();
    if (!secret) {
        std::fprintf(stderr, "%s\n", secret.error().message().c_str());
        return 1;
    }

    std::vector<Results> dragons, raws;
    for (int round = 0; round < c.rounds; ++round) {
        auto d = run(
            "dragon", c, [&](int fd) { return dragon_server(c, *secret, fd); },
            [&](std::uint16_t port) { return dragon_client(c, *secret, port); });
        auto r = run(
            "raw tcp", c, [&](int fd) { return raw_server(c, fd); },
            [&](std::uint16_t port) { return raw_client(c, port); });
        if (!d || !r) return 1;
        dragons.push_back(*d);
        raws.push_back(*r);
    }
    const Results d = combine(dragons), r = combine(raws);
    auto met = [](bool b) { return b ? "MET" : "MISSED"; };
    const double rtt_ratio = d.rtt_median_us / r.rtt_median_us;
    const double bw_ratio = d.gbps / r.gbps;
    std::printf("Dragon transport benchmark: 2 processes on %s%s, %ld CPUs online, median of %d interleaved rounds\n",
                c.address.c_str(), c.pin ? " pinned to CPUs 0 and 1" : "", ::sysconf(_SC_NPROCESSORS_ONLN), c.rounds);
    std::printf("dragon: authenticated tcp::Peer, default options, payloads read into a destination; "
                "raw: blocking TCP, TCP_NODELAY\n");
    std::printf("%-28s %11s %11s   %s\n", "metric", "dragon", "raw tcp", "ratio (goal)");
    std::printf("%-28s %11.2f %11.2f   dragon/raw = %.2fx (<= 2x) %s\n", "RTT 64 B median [us]", d.rtt_median_us,
                r.rtt_median_us, rtt_ratio, met(rtt_ratio <= 2.0));
    std::printf("%-28s %11.2f %11.2f   dragon/raw = %.2fx\n", "RTT 64 B p99 [us]", d.rtt_p99_us, r.rtt_p99_us,
                d.rtt_p99_us / r.rtt_p99_us);
    std::printf("%-28s %11.2f %11.2f   dragon/raw = %.2f (>= 0.60) %s\n", "1 MiB stream [GB/s]", d.gbps, r.gbps,
                bw_ratio, met(bw_ratio >= 0.6));
    std::printf("per-round dragon GB/s:");
    for (const auto& x : dragons) std::printf(" %.2f", x.gbps);
    std::printf("; raw GB/s:");
    for (const auto& x : raws) std::printf(" %.2f", x.gbps);
    std::printf("\n");
    return 0;
}
