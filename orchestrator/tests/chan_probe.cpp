// Channels across nodes, end to end, for the system tests (test_multinode.py).
//
//   chan_probe mesh N K      the head program (under dragon-orchestrate): starts
//                            N members placed cyclically over the nodes and checks
//                            what they report; prints one summary line, exit 0/1
//   chan_probe member K      one member (started by `mesh`, never by hand)
//
// The head creates, in its node's pool: a registry (members register their
// inbox and report their result there), a "go" channel (one token per member,
// put there only once every member registered, so the members' remote receives
// block first), an empty channel (a receive must time out) and a full channel
// of capacity 1 (a send must time out and not be delivered). Each member
// creates its inbox in its own node's pool, registers, takes a token, waits for
// the table of all inboxes, checks the timeout rules, then sends K messages to
// every other member (sizes from 24 B to 100 KiB: inline slots, pool blocks, and
// over Gateway::kInlineMax) while a thread receives (N-1)*K on its inbox,
// checking exactly-once, per-sender order and every byte.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dragon/orchestrator/channel.hpp"
#include "dragon/orchestrator/process_group.hpp"

using namespace dragon;
using namespace dragon::client;
using namespace std::chrono_literals;
using channels::ChannelDescriptor;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kEnvRegistry = "CHAN_PROBE_REGISTRY";
constexpr const char* kEnvGo = "CHAN_PROBE_GO";
constexpr const char* kEnvEmpty = "CHAN_PROBE_EMPTY";
constexpr const char* kEnvFull = "CHAN_PROBE_FULL";
constexpr std::uint32_t kMagic = 0x4d455348;  // "MESH"
constexpr std::size_t kHeader = 24;           // magic, src, dst, seq, u64 size
constexpr std::size_t kBig = 100U << 10;      // every 7th message: over Gateway::kInlineMax
constexpr auto kStep = 60s;                   // no single step of a healthy run takes this long
constexpr auto kHeadWait = 150s;              // the head outwaits members that wait kStep twice

std::string errc_name(Errc c) {
    return std::string(to_string(c));
}

std::string describe(const Error& e) {
    return errc_name(e.code()) + " (" + e.message() + ")";
}

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> v(s.size());
    if (!s.empty()) std::memcpy(v.data(), s.data(), s.size());
    return v;
}

std::string text_of(const std::vector<std::byte>& v) {
    return {reinterpret_cast<const char*>(v.data()), v.size()};
}

std::vector<std::string> words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> w;
    for (std::string x; in >> x;) w.push_back(x);
    return w;
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- data messages ---------------------------------------------------------------

std::size_t size_of(std::uint32_t src, std::uint32_t seq) {
    if (seq % 7 == 6) return kBig;                    // pool block here, pool block through the gateway
    if (seq % 7 == 2) return 3000 + (src % 16) * 10;  // pool block in the channel, inline on the gateway
    return kHeader + (seq * 37U + src) % 450;         // inline slot
}

std::uint8_t pattern(std::uint64_t seed, std::size_t i) {
    return static_cast<std::uint8_t>(((i + seed) * 2654435761ULL) >> 13);
}

std::uint64_t seed_of(std::uint32_t src, std::uint32_t dst, std::uint32_t seq) {
    return (static_cast<std::uint64_t>(src) << 40) ^ (static_cast<std::uint64_t>(dst) << 20) ^ seq;
}

std::vector<std::byte> make_message(std::uint32_t src, std::uint32_t dst, std::uint32_t seq) {
    const std::uint64_t size = size_of(src, seq);
    std::vector<std::byte> m(size);
    std::memcpy(m.data(), &kMagic, 4);
    std::memcpy(m.data() + 4, &src, 4);
    std::memcpy(m.data() + 8, &dst, 4);
    std::memcpy(m.data() + 12, &seq, 4);
    std::memcpy(m.data() + 16, &size, 8);
    const auto seed = seed_of(src, dst, seq);
    for (std::size_t i = kHeader; i < size; ++i) m[i] = std::byte{pattern(seed, i)};
    return m;
}

// Checks one received message against what rank `self` expects next from
// its sender; empty on success, else what is wrong.
std::string check_message(const std::vector<std::byte>& m, std::uint32_t self, std::uint32_t nranks,
                          std::vector<std::uint32_t>& next_seq, std::uint32_t& src_out) {
    if (m.size() < kHeader)
        return "a message of " + std::to_string(m.size()) + " bytes (shorter than the header)";
    std::uint32_t magic = 0, src = 0, dst = 0, seq = 0;
    std::uint64_t size = 0;
    std::memcpy(&magic, m.data(), 4);
    std::memcpy(&src, m.data() + 4, 4);
    std::memcpy(&dst, m.data() + 8, 4);
    std::memcpy(&seq, m.data() + 12, 4);
    std::memcpy(&size, m.data() + 16, 8);
    src_out = src;
    if (magic != kMagic) return "a message with a bad magic (" + std::to_string(magic) + ")";
    if (src >= nranks || src == self) return "a message from impossible rank " + std::to_string(src);
    const std::string from = "from rank " + std::to_string(src) + " seq " + std::to_string(seq) + ": ";
    if (dst != self) return from + "addressed to rank " + std::to_string(dst);
    if (seq != next_seq[src])
        return from + (seq < next_seq[src] ? "duplicate or reordered" : "gap") + ", expected seq " +
               std::to_string(next_seq[src]);
    if (size != m.size() || size != size_of(src, seq))
        return from + "size " + std::to_string(m.size()) + " (header says " + std::to_string(size) +
               ", expected " + std::to_string(size_of(src, seq)) + ")";
    const auto seed = seed_of(src, dst, seq);
    for (std::size_t i = kHeader; i < m.size(); ++i)
        if (m[i] != std::byte{pattern(seed, i)}) return from + "corrupt byte at offset " + std::to_string(i);
    ++next_seq[src];
    return {};
}

// ---- member ------------------------------------------------------------------------

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

struct MemberFailure {
    std::string what;
};

template <class T>
T need(Result<T> r, const std::string& what) {
    if (!r) throw MemberFailure{what + ": " + describe(r.error())};
    return std::move(*r);
}

void need(const Status& st, const std::string& what) {
    if (!st) throw MemberFailure{what + ": " + describe(st.error())};
}

ChannelRef open_ref(const std::shared_ptr<Gateway>& gw, const std::string& hex, const std::string& what) {
    auto d = need(ChannelDescriptor::from_hex(hex), "decoding the descriptor of " + what);
    auto ref = need(ChannelRef::open(gw, d), "opening " + what);
    if (ref.is_local() != (d.node_id == gw->node_id()))
        throw MemberFailure{what + " (node " + std::to_string(d.node_id) + ") opened as " +
                            (ref.is_local() ? "local" : "remote") + " from node " +
                            std::to_string(gw->node_id())};
    return ref;
}

// An operation that must fail with `want` after about `timeout`.
void expect_refusal(const std::string& what, Errc want, std::chrono::milliseconds timeout,
                    const std::function<Status()>& op) {
    const auto t0 = Clock::now();
    const Status st = op();
    const double took = ms_since(t0);
    if (st) throw MemberFailure{what + ": succeeded, expected " + errc_name(want)};
    if (st.error().code() != want)
        throw MemberFailure{what + ": " + describe(st.error()) + ", expected " + errc_name(want)};
    const double floor = static_cast<double>(timeout.count()) * 0.9;
    if (took < floor || took > static_cast<double>(timeout.count()) + 5000.0)
        throw MemberFailure{what + ": " + errc_name(want) + " after " + std::to_string(took) +
                            " ms, timeout was " + std::to_string(timeout.count()) + " ms"};
}

int member(int argc, char** argv) {
    const std::uint32_t k = argc > 0 ? static_cast<std::uint32_t>(std::atoi(argv[0])) : 10;
    const auto rank = static_cast<std::uint32_t>(std::atoi(env_or_empty("DRAGON_RANK").c_str()));
    const auto nranks = static_cast<std::uint32_t>(std::atoi(env_or_empty("DRAGON_NRANKS").c_str()));
    auto gwr = Gateway::connect_from_env();
    if (!gwr) {
        std::fprintf(stderr, "chan_probe member %u: connect: %s\n", rank, gwr.error().message().c_str());
        return 1;
    }
    const auto gw = *gwr;
    const std::uint32_t node = gw->node_id();
    std::optional<ChannelRef> registry;
    std::optional<channels::Channel> inbox_owner;
    int rc = 0;
    try {
        registry.emplace(open_ref(gw, env_or_empty(kEnvRegistry), "the registry"));
        auto go = open_ref(gw, env_or_empty(kEnvGo), "the go channel");
        auto empty = open_ref(gw, env_or_empty(kEnvEmpty), "the empty channel");
        auto full = open_ref(gw, env_or_empty(kEnvFull), "the full channel");

        // The inbox, in this node's pool; bounded so a fast sender cannot fill the pool.
        inbox_owner.emplace(
            need(channels::Channel::create(gw->pool(),
                                           {.capacity = 64, .block_size = 496, .max_queued_bytes = 2U << 20}),
                 "creating the inbox"));
        auto inbox = open_ref(gw, inbox_owner->descriptor().to_hex(), "the own inbox");
        if (!inbox.is_local()) throw MemberFailure{"the own inbox opened as remote"};

        need(registry->send(bytes_of("reg " + std::to_string(rank) + " " + std::to_string(node) + " " +
                                     inbox_owner->descriptor().to_hex()),
                            kStep),
             "registering");

        // A blocking receive (remote off node 0) woken by the head's tokens.
        std::vector<std::byte> buf;
        need(go.recv(buf, kStep), "receiving a go token");
        const auto token = words(text_of(buf));
        if (token.size() != 2 || token[0] != "go") throw MemberFailure{"bad go token '" + text_of(buf) + "'"};

        need(inbox.recv(buf, kStep), "receiving the inbox table");
        const auto table = words(text_of(buf));
        if (table.size() != nranks + 1 || table[0] != "table")
            throw MemberFailure{"bad table (" + std::to_string(table.size()) + " words)"};
        std::vector<std::optional<ChannelRef>> peers(nranks);
        for (std::uint32_t r = 0; r < nranks; ++r)
            if (r != rank)
                peers[r].emplace(open_ref(gw, table[r + 1], "the inbox of rank " + std::to_string(r)));
        if (table[rank + 1] != inbox_owner->descriptor().to_hex())
            throw MemberFailure{"the table has a wrong own inbox"};

        // Timeouts, remote when the head's node is not ours.
        expect_refusal("recv from the empty channel (50 ms)", Errc::timeout, 50ms,
                       [&] { return empty.recv(buf, 50ms); });
        expect_refusal("try-once recv from the empty channel", Errc::would_block, 0ms,
                       [&] { return empty.recv(buf, channels::kTryOnce); });
        const auto intruder = bytes_of("intruder " + std::to_string(rank));
        expect_refusal("send to the full channel (100 ms)", Errc::timeout, 100ms,
                       [&] { return full.send(intruder, 100ms); });
        expect_refusal("try-once send to the full channel", Errc::would_block, 0ms,
                       [&] { return full.send(intruder, channels::kTryOnce); });

        // The mesh: a thread receives while this one sends. The receiver keeps
        // draining after a bad message (so senders never block on us) and gives
        // up only when nothing arrives for kStep.
        const std::uint64_t expected = static_cast<std::uint64_t>(nranks - 1) * k;
        std::uint64_t received = 0;  // the receiver's until joined
        std::string recv_failure;    // likewise
        std::atomic<bool> stop_receiving{false};
        std::thread receiver([&] {
            std::vector<std::uint32_t> next_seq(nranks, 0);
            std::vector<std::byte> m;
            auto last = Clock::now();
            while (received < expected && !stop_receiving.load()) {
                auto st = inbox.recv(m, 500ms);
                if (!st && st.error().code() == Errc::timeout) {
                    if (Clock::now() - last > kStep) break;
                    continue;  // re-check stop_receiving
                }
                if (!st) {
                    recv_failure = "recv on the inbox after " + std::to_string(received) +
                                   " messages: " + describe(st.error());
                    return;
                }
                last = Clock::now();
                ++received;
                std::uint32_t src = 0;
                if (auto bad = check_message(m, rank, nranks, next_seq, src);
                    !bad.empty() && recv_failure.empty())
                    recv_failure = "message " + std::to_string(received) + " " + bad;
            }
            if (received < expected && recv_failure.empty()) {
                std::string missing;
                for (std::uint32_t r = 0; r < nranks; ++r)
                    if (r != rank && next_seq[r] != k)
                        missing += " rank" + std::to_string(r) + "@" + std::to_string(next_seq[r]);
                recv_failure = "received " + std::to_string(received) + " of " + std::to_string(expected) +
                               " (nothing for " + std::to_string(kStep.count()) +
                               " s); next expected seq per sender:" + missing;
            }
        });
        std::string send_failure;
        std::uint64_t sent_remote = 0;
        for (std::uint32_t seq = 0; seq < k && send_failure.empty(); ++seq)
            for (std::uint32_t d = 0; d < nranks && send_failure.empty(); ++d) {
                if (d == rank) continue;
                auto st = peers[d]->send(make_message(rank, d, seq), kStep);
                if (!st)
                    send_failure = "send to rank " + std::to_string(d) + " seq " + std::to_string(seq) +
                                   ": " + describe(st.error());
                else if (!peers[d]->is_local())
                    ++sent_remote;
            }
        if (!send_failure.empty()) stop_receiving = true;
        receiver.join();
        if (!send_failure.empty()) throw MemberFailure{send_failure};
        if (!recv_failure.empty()) throw MemberFailure{recv_failure};
        // Nothing more may come: every sender has sent all it had for us.
        auto extra = inbox.recv(buf, 300ms);
        if (extra)
            throw MemberFailure{"an extra message of " + std::to_string(buf.size()) + " bytes after all"};
        if (extra.error().code() != Errc::timeout)
            throw MemberFailure{"the final empty recv: " + describe(extra.error())};

        need(registry->send(
                 bytes_of("ok " + std::to_string(rank) + " " + std::to_string(node) + " " +
                          std::to_string(received) + " " + token[1] + " " + std::to_string(sent_remote)),
                 kStep),
             "reporting");
    } catch (const MemberFailure& f) {
        std::fprintf(stderr, "chan_probe member %u (node %u): %s\n", rank, node, f.what.c_str());
        if (registry)
            (void)registry->send(
                bytes_of("fail " + std::to_string(rank) + " " + std::to_string(node) + " " + f.what), 5s);
        rc = 1;
    }
    // After a success every sender is done with the inbox; after a failure some
    // may not be, and the pool goes away with the run anyway.
    if (inbox_owner && rc == 0) (void)inbox_owner->destroy();
    return rc;
}

// ---- head --------------------------------------------------------------------------

struct HeadFailure {
    std::string what;
};

template <class T>
T head_need(Result<T> r, const std::string& what) {
    if (!r) throw HeadFailure{what + ": " + describe(r.error())};
    return std::move(*r);
}

void head_need(const Status& st, const std::string& what) {
    if (!st) throw HeadFailure{what + ": " + describe(st.error())};
}

std::string self_exe() {
    char buf[4096];
    const auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "chan_probe";
    return {buf, static_cast<std::size_t>(n)};
}

// The next message of the registry; fails when the group ended early or after kHeadWait.
std::string next_registry_message(ChannelRef& registry, ProcessGroup& g, const std::string& waiting_for) {
    const auto deadline = Clock::now() + kHeadWait;
    std::vector<std::byte> m;
    for (;;) {
        auto st = registry.recv(m, 500ms);
        if (st) return text_of(m);
        if (st.error().code() != Errc::timeout) throw HeadFailure{"registry recv: " + describe(st.error())};
        if (Clock::now() > deadline)
            throw HeadFailure{"nothing in the registry for " + std::to_string(kHeadWait.count()) +
                              " s while waiting for " + waiting_for};
        auto done = g.join(20ms);  // not 0 ms: a zero timeout returns before reading the agent's news
        if (done && *done) {
            // Drain what is left: a member's failure report explains more than "the group ended".
            if (registry.recv(m, channels::kTryOnce)) return text_of(m);
            std::string why = "the group ended while waiting for " + waiting_for;
            if (const auto& o = g.outcome(); o && o->outcome != msg::GroupOutcome::succeeded)
                why += " (rank " + std::to_string(o->fail_rank) + " exit code " +
                       std::to_string(o->fail_status.exit_code) + " signal " +
                       std::to_string(o->fail_status.signal) + ")";
            throw HeadFailure{why};
        }
    }
}

int mesh(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: chan_probe mesh N K\n");
        return 2;
    }
    const auto n = static_cast<std::uint32_t>(std::atoi(argv[0]));
    const auto k = static_cast<std::uint32_t>(std::atoi(argv[1]));
    if (n < 2 || n > 200 || k < 1) {
        std::fprintf(stderr, "chan_probe mesh: N must be 2..200 and K >= 1\n");
        return 2;
    }
    auto ses_r = Session::connect_from_env();
    auto gw_r = Gateway::connect_from_env();
    if (!ses_r || !gw_r) {
        std::fprintf(stderr, "chan_probe mesh: connect: %s\n",
                     (!ses_r ? ses_r.error() : gw_r.error()).message().c_str());
        return 1;
    }
    auto& ses = *ses_r;
    const auto gw = *gw_r;
    std::vector<channels::Channel> owned;
    int rc = 0;
    try {
        auto make = [&](std::uint32_t capacity, const char* what) {
            owned.push_back(head_need(channels::Channel::create(gw->pool(), {.capacity = capacity}),
                                      std::string("creating the ") + what));
            return head_need(ChannelRef::open(gw, owned.back().descriptor()),
                             std::string("opening the ") + what);
        };
        auto registry = make(2 * n + 8, "registry");
        auto go = make(n, "go channel");
        auto empty = make(4, "empty channel");
        auto full = make(1, "full channel");
        head_need(full.send(bytes_of("filler"), channels::kTryOnce), "filling the full channel");

        ProcessGroup g(ses, GroupOptions{.placement = "cyclic"});
        auto t = ProcessTemplate::command({self_exe(), "member", std::to_string(k)});
        t.env = {std::string(kEnvRegistry) + "=" + registry.descriptor().to_hex(),
                 std::string(kEnvGo) + "=" + go.descriptor().to_hex(),
                 std::string(kEnvEmpty) + "=" + empty.descriptor().to_hex(),
                 std::string(kEnvFull) + "=" + full.descriptor().to_hex()};
        g.add(t, n);
        head_need(g.start(), "starting the group");
        std::map<std::uint32_t, std::uint32_t> placed;  // rank -> node, from the start reply
        for (const auto& m : g.members()) placed[m.rank] = m.node_id;

        // Registrations: every inbox, on its member's node.
        std::vector<std::string> inboxes(n);
        for (std::uint32_t got = 0; got < n;) {
            const auto msg_text = next_registry_message(registry, g, "registrations");
            const auto w = words(msg_text);
            if (!w.empty() && w[0] == "fail") throw HeadFailure{"member failed: " + msg_text};
            if (w.size() != 4 || w[0] != "reg") throw HeadFailure{"unexpected registry message: " + msg_text};
            const auto r = static_cast<std::uint32_t>(std::stoul(w[1]));
            if (r >= n || !inboxes[r].empty()) throw HeadFailure{"bad or repeated registration: " + msg_text};
            const auto d = head_need(ChannelDescriptor::from_hex(w[3]), "inbox of rank " + w[1]);
            if (std::to_string(d.node_id) != w[2] || placed[r] != d.node_id)
                throw HeadFailure{"rank " + w[1] + " placed on node " + std::to_string(placed[r]) +
                                  " registered an inbox of node " + std::to_string(d.node_id) +
                                  " (says node " + w[2] + ")"};
            inboxes[r] = w[3];
            ++got;
        }
        // The table to every inbox (remote sends to the other nodes), then the tokens.
        // A member sends data only after taking a token, and a send returns once the
        // message is in the channel, so every table is in its inbox before any data.
        std::string table = "table";
        for (const auto& x : inboxes) table += " " + x;
        for (std::uint32_t r = 0; r < n; ++r) {
            auto inbox =
                head_need(ChannelRef::open(gw, head_need(ChannelDescriptor::from_hex(inboxes[r]), "decode")),
                          "opening the inbox of rank " + std::to_string(r));
            head_need(inbox.send(bytes_of(table), kStep), "sending the table to rank " + std::to_string(r));
        }
        for (std::uint32_t i = 0; i < n; ++i)
            head_need(go.send(bytes_of("go " + std::to_string(i)), channels::kTryOnce), "putting a go token");

        // Reports.
        std::map<std::uint32_t, std::uint32_t> node_of;
        std::set<std::string> tokens;
        std::uint64_t total = 0, remote_sends = 0;
        std::vector<std::string> failures;
        for (std::uint32_t got = 0; got < n; ++got) {
            std::string msg_text;
            try {
                msg_text = next_registry_message(registry, g, "reports");
            } catch (const HeadFailure& f) {  // name who is missing, and what the others said
                std::string missing;
                for (std::uint32_t r = 0; r < n; ++r)
                    if (!node_of.count(r)) missing += " " + std::to_string(r);
                std::string all;
                for (const auto& x : failures) all += "; " + x;
                throw HeadFailure{f.what + "; no ok report from ranks" + missing + all};
            }
            const auto w = words(msg_text);
            if (!w.empty() && w[0] == "fail") {
                failures.push_back(msg_text);
                continue;
            }
            if (w.size() != 6 || w[0] != "ok") throw HeadFailure{"unexpected registry message: " + msg_text};
            const auto r = static_cast<std::uint32_t>(std::stoul(w[1]));
            if (r >= n || node_of.count(r)) throw HeadFailure{"bad or repeated report: " + msg_text};
            node_of[r] = static_cast<std::uint32_t>(std::stoul(w[2]));
            if (node_of[r] != placed[r])
                throw HeadFailure{"rank " + w[1] + " reports node " + w[2] + " but was placed on node " +
                                  std::to_string(placed[r])};
            if (std::stoull(w[3]) != static_cast<std::uint64_t>(n - 1) * k)
                throw HeadFailure{"rank " + w[1] + " received " + w[3] + " messages"};
            total += std::stoull(w[3]);
            if (!tokens.insert(w[4]).second) throw HeadFailure{"go token " + w[4] + " received twice"};
            remote_sends += std::stoull(w[5]);
        }
        if (!failures.empty()) {
            std::string all;
            for (const auto& f : failures) all += (all.empty() ? "" : "; ") + f;
            throw HeadFailure{std::to_string(failures.size()) + " member(s) failed: " + all};
        }
        if (tokens.size() != n)
            throw HeadFailure{"only " + std::to_string(tokens.size()) + " distinct go tokens"};

        // The refused operations left no trace.
        std::vector<std::byte> m;
        head_need(full.recv(m, channels::kTryOnce), "taking the filler back");
        if (text_of(m) != "filler") throw HeadFailure{"the full channel held '" + text_of(m) + "' first"};
        if (full.recv(m, channels::kTryOnce))
            throw HeadFailure{"a timed-out send was delivered after all: '" + text_of(m) + "'"};
        if (empty.recv(m, channels::kTryOnce))
            throw HeadFailure{"the empty channel holds '" + text_of(m) + "'"};
        if (go.recv(m, channels::kTryOnce))
            throw HeadFailure{"a go token is left over: '" + text_of(m) + "'"};

        auto done = head_need(g.join(kStep), "joining the group");
        if (!done) throw HeadFailure{"the group did not end within 60 s"};
        if (!g.outcome() || g.outcome()->outcome != msg::GroupOutcome::succeeded)
            throw HeadFailure{"the group did not succeed"};
        (void)g.close();

        std::set<std::uint32_t> nodes;
        std::string ranks;
        for (const auto& [r, nd] : node_of) {
            nodes.insert(nd);
            ranks += (ranks.empty() ? "" : " ") + std::to_string(r) + ":" + std::to_string(nd);
        }
        std::string node_list;
        for (auto nd : nodes) node_list += (node_list.empty() ? "" : ",") + std::to_string(nd);
        std::printf("mesh ok: %u members on nodes {%s}, %u*%u*%u = %llu messages (%llu remote sends)\n", n,
                    node_list.c_str(), n, n - 1, k, static_cast<unsigned long long>(total),
                    static_cast<unsigned long long>(remote_sends));
        std::printf("rank:node %s\n", ranks.c_str());
        std::printf("run %s\n", gw->run_id().c_str());
    } catch (const HeadFailure& f) {
        std::printf("mesh FAILED: %s\n", f.what.c_str());
        std::fprintf(stderr, "chan_probe mesh: %s\n", f.what.c_str());
        rc = 1;
    }
    std::fflush(stdout);
    // The members are gone (joined) or killed with the group; nobody uses these any more.
    for (auto& c : owned) (void)c.destroy();
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (argc >= 2 && std::string(argv[1]) == "mesh") return mesh(argc - 2, argv + 2);
    if (argc >= 2 && std::string(argv[1]) == "member") return member(argc - 2, argv + 2);
    std::fprintf(stderr, "usage: chan_probe mesh N K | chan_probe member K\n");
    return 2;
}
