// Channel benchmark: latency, small-message throughput and 1 MiB bandwidth between two
// processes, side by side with a pipe, a Unix socketpair and memcpy, in one run.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
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
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dragon/channels/channel.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/sys.hpp"

namespace {

using namespace dragon;
using namespace dragon::channels;
using Clock = std::chrono::steady_clock;

struct Config {
    int rtt_iters = 20000;
    int rtt_warmup = 2000;
    int small_msgs = 2000000;       // channel
    int small_msgs_fd = 300000;     // pipe / socketpair (slower: fewer, same measurement)
    int big_msgs = 2000;
    int big_msgs_fd = 300;          // pipe / socketpair
    int rounds = 3;                 // transports interleaved per round; medians reported
    std::size_t small = 64;
    std::size_t big = 1 << 20;
    bool pin = true;
    std::uint64_t max_queued = 4 << 20;
};

/// One side of a two-process link. Sizes are known to both sides.
class Link {
public:
    virtual ~Link() = default;
    virtual bool send(const std::byte* p, std::size_t n) = 0;
    virtual bool recv(std::byte* p, std::size_t n) = 0;
    virtual bool recv_zero_copy(std::byte* p, std::size_t n) { return recv(p, n); }
};

class FdLink : public Link {
public:
    FdLink(sys::UniqueFd in, sys::UniqueFd out) : in_(std::move(in)), out_(std::move(out)) {}
    bool send(const std::byte* p, std::size_t n) override { return static_cast<bool>(sys::write_all(out_.get(), p, n)); }
    bool recv(std::byte* p, std::size_t n) override { return static_cast<bool>(sys::read_exact(in_.get(), p, n)); }

private:
    sys::UniqueFd in_, out_;
};

class ChannelLink : public Link {
public:
    ChannelLink(Channel in, Channel out) : in_(std::move(in)), out_(std::move(out)) {}
    bool send(const std::byte* p, std::size_t n) override { return static_cast<bool>(out_.send({p, n})); }
    bool recv(std::byte* p, std::size_t n) override {
        auto r = in_.recv(std::span<std::byte>(p, n));
        return r && *r == n;
    }
    bool recv_zero_copy(std::byte*, std::size_t n) override {
        auto m = in_.recv_message();
        return m && m->size() == n;  // data is read in place; the block is freed here
    }

private:
    Channel in_, out_;
};

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    ::sched_setaffinity(0, sizeof set, &set);
}

struct Results {
    double rtt_median_us = 0, rtt_p99_us = 0, msgs_per_s = 0, gbps = 0, gbps_zero_copy = 0;
};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The fixed script both processes follow: ping-pong, then a small-message
// stream, then a large-message stream (twice for channels: copy and zero-copy).
int child_script(Link& l, const Config& c, int small_msgs, int big_msgs, bool zero_copy_phase) {
    std::vector<std::byte> small(c.small, std::byte{1}), big(c.big, std::byte{2});
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i)
        if (!l.recv(small.data(), c.small) || !l.send(small.data(), c.small)) return 1;
    for (int i = 0; i <= small_msgs; ++i)
        if (!l.send(small.data(), c.small)) return 2;
    for (int phase = 0; phase < (zero_copy_phase ? 2 : 1); ++phase)
        for (int i = 0; i <= big_msgs; ++i)
            if (!l.send(big.data(), c.big)) return 3;
    // Wait for the parent's "done" so no transport is torn down early.
    return l.recv(small.data(), c.small) ? 0 : 4;
}

std::optional<Results> parent_script(Link& l, const Config& c, int small_msgs, int big_msgs, bool zero_copy_phase) {
    Results r;
    std::vector<std::byte> small(c.small, std::byte{3}), big(c.big);
    std::vector<double> rtts;
    rtts.reserve(static_cast<std::size_t>(c.rtt_iters));
    for (int i = 0; i < c.rtt_warmup + c.rtt_iters; ++i) {
        auto t0 = Clock::now();
        if (!l.send(small.data(), c.small) || !l.recv(small.data(), c.small)) return std::nullopt;
        if (i >= c.rtt_warmup) rtts.push_back(seconds(Clock::now() - t0) * 1e6);
    }
    std::sort(rtts.begin(), rtts.end());
    r.rtt_median_us = rtts[rtts.size() / 2];
    r.rtt_p99_us = rtts[rtts.size() * 99 / 100];

    if (!l.recv(small.data(), c.small)) return std::nullopt;  // first message starts the clock
    auto t0 = Clock::now();
    for (int i = 0; i < small_msgs; ++i)
        if (!l.recv(small.data(), c.small)) return std::nullopt;
    r.msgs_per_s = small_msgs / seconds(Clock::now() - t0);

    for (int phase = 0; phase < (zero_copy_phase ? 2 : 1); ++phase) {
        auto rx = [&] { return phase == 0 ? l.recv(big.data(), c.big) : l.recv_zero_copy(big.data(), c.big); };
        if (!rx()) return std::nullopt;
        t0 = Clock::now();
        for (int i = 0; i < big_msgs; ++i)
            if (!rx()) return std::nullopt;
        double gbps = static_cast<double>(c.big) * big_msgs / seconds(Clock::now() - t0) / 1e9;
        (phase == 0 ? r.gbps : r.gbps_zero_copy) = gbps;
    }
    if (!l.send(small.data(), c.small)) return std::nullopt;
    return r;
}

// Forks the child side; make_child runs in the child (after fork), make_parent in the parent.
std::optional<Results> run(const char* what, const Config& c, int small_msgs, int big_msgs, bool zero_copy_phase,
                           const std::function<std::unique_ptr<Link>()>& make_child,
                           const std::function<std::unique_ptr<Link>()>& make_parent) {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (c.pin) pin_to(1);
        auto l = make_child();
        ::_exit(l ? child_script(*l, c, small_msgs, big_msgs, zero_copy_phase) : 10);
    }
    auto l = make_parent();
    std::optional<Results> r;
    if (l) r = parent_script(*l, c, small_msgs, big_msgs, zero_copy_phase);
    l.reset();
    if (!r) ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::fprintf(stderr, "%s: benchmark failed (child status %d)\n", what, st);
        return std::nullopt;
    }
    return r;
}

double memcpy_gbps(std::size_t size, int iters) {
    std::vector<std::byte> a(size, std::byte{1}), b(size, std::byte{2});
    for (int i = 0; i < 20; ++i) std::memcpy(b.data(), a.data(), size);
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
        std::memcpy((i & 1) != 0 ? a.data() : b.data(), (i & 1) != 0 ? b.data() : a.data(), size);
        asm volatile("" ::: "memory");
    }
    return static_cast<double>(size) * iters / seconds(Clock::now() - t0) / 1e9;
}

// One round of one transport. Pool and channels are fresh per round.
std::optional<Results> run_channel(const Config& c) {
    std::string run_id = fmt::format("be4c{:x}", ::getpid());
    auto name = *make_pool_name(run_id, 0);
    // Hold the run's node lock as an agent would, so a concurrent stale-run
    // cleanup (dragon-orchestrate) does not remove the pool mid-benchmark.
    std::string lock_path = fmt::format("/dev/shm/dragon-{}-n0-lock", run_id);
    sys::UniqueFd lock(::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
    if (lock) (void)::flock(lock.get(), LOCK_EX | LOCK_NB);
    struct Unlink {
        const std::string& path;
        ~Unlink() { ::unlink(path.c_str()); }
    } unlink_lock{lock_path};
    auto pool = Pool::create(name, std::size_t{64} << 20);
    if (!pool) {
        std::fprintf(stderr, "pool: %s\n", pool.error().message().c_str());
        return std::nullopt;
    }
    // max_queued_bytes keeps the large-message blocks in flight cache-resident
    // (the pool's free lists are LIFO); everything else is the default.
    const ChannelAttrs attrs{.max_queued_bytes = c.max_queued};
    auto up = Channel::create(*pool, attrs);
    auto down = Channel::create(*pool, attrs);
    std::optional<Results> r;
    if (up && down) {
        std::string up_hex = up->descriptor().to_hex(), down_hex = down->descriptor().to_hex();
        r = run(
            "channel", c, c.small_msgs, c.big_msgs, true,
            [&]() -> std::unique_ptr<Link> {  // child: attaches by descriptor alone, own mapping
                auto in = Channel::attach(*ChannelDescriptor::from_hex(down_hex));
                auto out = Channel::attach(*ChannelDescriptor::from_hex(up_hex));
                if (!in || !out) return nullptr;
                return std::make_unique<ChannelLink>(std::move(in).value(), std::move(out).value());
            },
            [&]() -> std::unique_ptr<Link> {
                auto in = Channel::attach(*pool, up->descriptor());
                auto out = Channel::attach(*pool, down->descriptor());
                if (!in || !out) return nullptr;
                return std::make_unique<ChannelLink>(std::move(in).value(), std::move(out).value());
            });
        (void)up->destroy();
        (void)down->destroy();
    }
    (void)Pool::unlink(name);
    return r;
}

std::optional<Results> run_pipe(const Config& c) {
    int p2c[2], c2p[2];
    if (::pipe2(p2c, O_CLOEXEC) != 0) return std::nullopt;
    if (::pipe2(c2p, O_CLOEXEC) != 0) return std::nullopt;
    auto r = run(
        "pipe", c, c.small_msgs_fd, c.big_msgs_fd, false,
        [&]() -> std::unique_ptr<Link> {
            ::close(p2c[1]);
            ::close(c2p[0]);
            return std::make_unique<FdLink>(sys::UniqueFd(p2c[0]), sys::UniqueFd(c2p[1]));
        },
        [&]() -> std::unique_ptr<Link> {
            ::close(p2c[0]);
            ::close(c2p[1]);
            return std::make_unique<FdLink>(sys::UniqueFd(c2p[0]), sys::UniqueFd(p2c[1]));
        });
    return r;
}

std::optional<Results> run_socketpair(const Config& c) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return std::nullopt;
    return run(
        "socketpair", c, c.small_msgs_fd, c.big_msgs_fd, false,
        [&]() -> std::unique_ptr<Link> {
            ::close(sv[0]);
            return std::make_unique<FdLink>(sys::UniqueFd(sv[1]), sys::UniqueFd(::dup(sv[1])));
        },
        [&]() -> std::unique_ptr<Link> {
            ::close(sv[1]);
            return std::make_unique<FdLink>(sys::UniqueFd(sv[0]), sys::UniqueFd(::dup(sv[0])));
        });
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Per-metric median over the rounds.
Results combine(const std::vector<Results>& rs) {
    auto pick = [&](double Results::*f) {
        std::vector<double> v;
        for (const auto& r : rs) v.push_back(r.*f);
        return median(v);
    };
    return {pick(&Results::rtt_median_us), pick(&Results::rtt_p99_us), pick(&Results::msgs_per_s),
            pick(&Results::gbps), pick(&Results::gbps_zero_copy)};
}

}  // namespace

int main(int argc, char** argv) {
    Config c;
    CLI::App app{"Dragon channel benchmark: channel vs pipe vs socketpair vs memcpy (two processes)"};
    app.add_option("--rounds", c.rounds, "rounds; transports are interleaved and medians reported")->check(CLI::Range(1, 100));
    app.add_option("--rtt-iters", c.rtt_iters, "ping-pong round trips measured")->check(CLI::Range(10, 100000000));
    app.add_option("--small-msgs", c.small_msgs, "64-byte messages streamed through the channel")->check(CLI::PositiveNumber);
    app.add_option("--small-msgs-fd", c.small_msgs_fd, "64-byte messages streamed through pipe/socketpair")->check(CLI::PositiveNumber);
    app.add_option("--big-msgs", c.big_msgs, "1 MiB messages streamed through the channel")->check(CLI::PositiveNumber);
    app.add_option("--big-msgs-fd", c.big_msgs_fd, "1 MiB messages streamed through pipe/socketpair")->check(CLI::PositiveNumber);
    app.add_option("--max-queued-bytes", c.max_queued, "channel bound on queued large-message bytes (0: none)");
    app.add_flag("!--no-pin", c.pin, "do not pin the two processes to CPUs 0 and 1");
    CLI11_PARSE(app, argc, argv);
    if (c.pin) {
        if (::sysconf(_SC_NPROCESSORS_ONLN) < 2) c.pin = false;
        else pin_to(0);
    }

    std::vector<Results> chs, pipes, socks;
    std::vector<double> mems;
    for (int round = 0; round < c.rounds; ++round) {
        auto ch = run_channel(c);
        auto pi = run_pipe(c);
        auto so = run_socketpair(c);
        if (!ch || !pi || !so) return 1;
        chs.push_back(*ch);
        pipes.push_back(*pi);
        socks.push_back(*so);
        mems.push_back(memcpy_gbps(c.big, c.big_msgs * 2));
    }
    const Results ch = combine(chs), pi = combine(pipes), so = combine(socks);
    const double mem = median(mems);

    auto ok = [](bool b) { return b ? "MET" : "MISSED"; };
    double lat_ratio = so.rtt_median_us / ch.rtt_median_us;
    double thr_ratio = ch.msgs_per_s / pi.msgs_per_s;
    double bw_ratio = ch.gbps / mem;
    std::printf("Dragon channels benchmark: 2 processes%s, %ld CPUs online, median of %d interleaved rounds\n",
                c.pin ? " pinned to CPUs 0 and 1" : "", ::sysconf(_SC_NPROCESSORS_ONLN), c.rounds);
    std::printf("channel: default attrs + max_queued_bytes=%llu; memcpy: single thread, 1 MiB, cache-warm\n",
                static_cast<unsigned long long>(c.max_queued));
    std::printf("%-28s %11s %11s %11s %11s   %s\n", "metric", "channel", "pipe", "socketpair", "memcpy",
                "ratio (goal)");
    std::printf("%-28s %11.2f %11.2f %11.2f %11s   socketpair/channel = %.1fx (>= 3x) %s\n",
                "RTT 64 B median [us]", ch.rtt_median_us, pi.rtt_median_us, so.rtt_median_us, "-", lat_ratio,
                ok(lat_ratio >= 3.0));
    std::printf("%-28s %11.2f %11.2f %11.2f %11s   socketpair/channel = %.1fx\n", "RTT 64 B p99 [us]",
                ch.rtt_p99_us, pi.rtt_p99_us, so.rtt_p99_us, "-", so.rtt_p99_us / ch.rtt_p99_us);
    std::printf("%-28s %11.3f %11.3f %11.3f %11s   channel/pipe = %.1fx (>= 5x) %s\n", "64 B one-way [Mmsg/s]",
                ch.msgs_per_s / 1e6, pi.msgs_per_s / 1e6, so.msgs_per_s / 1e6, "-", thr_ratio, ok(thr_ratio >= 5.0));
    std::printf("%-28s %11.2f %11.2f %11.2f %11.2f   channel/memcpy = %.2f (>= 0.40) %s\n",
                "1 MiB one-way [GB/s]", ch.gbps, pi.gbps, so.gbps, mem, bw_ratio, ok(bw_ratio >= 0.4));
    std::printf("%-28s %11.2f %11s %11s %11.2f   channel/memcpy = %.2f (recv_message, no copy out)\n",
                "1 MiB zero-copy recv [GB/s]", ch.gbps_zero_copy, "-", "-", mem, ch.gbps_zero_copy / mem);
    std::printf("per-round channel 64 B Mmsg/s:");
    for (const auto& r : chs) std::printf(" %.2f", r.msgs_per_s / 1e6);
    std::printf("; 1 MiB GB/s:");
    for (const auto& r : chs) std::printf(" %.2f", r.gbps);
    std::printf("\n");
    return 0;
}
