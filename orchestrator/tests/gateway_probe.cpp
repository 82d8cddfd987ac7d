// The channel gateway's edges, from the head program of a virtual cluster of
// two or more nodes. It opens a gateway to node 0's agent (its own) and, as
// a process of node 1 would, to node 1's agent (the virtual cluster runs both
// on this machine), then checks each answer and prints one line per check.
//
//   gateway_probe basic   every message size both ways, try-once and timed
//                         waits on empty and full remote channels, waits that
//                         a local peer ends, several threads on one gateway
//   gateway_probe errors  stale and foreign descriptors, a node out of range,
//                         the agent's own node through the gateway, malformed
//                         requests on a raw socket; the agent keeps serving
//   gateway_probe lost    blocks in a remote receive on node 1's channel and
//                         prints "waiting"; when node 1's agent is killed the
//                         receive must end with Errc::closed
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dragon/common/framing.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/orchestrator/channel.hpp"

namespace ch = dragon::channels;
namespace cl = dragon::client;
using dragon::Errc;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok" : "FAILED", what.c_str());
    if (!ok) ++failures;
}

template <class T>
T must(dragon::Result<T> r, const char* what) {
    if (!r) {
        std::fprintf(stderr, "gateway_probe: %s: %s\n", what, r.error().message().c_str());
        std::exit(2);
    }
    return std::move(*r);
}

std::string node_socket(std::uint32_t node) {
    std::string s = std::getenv("DRAGON_AGENT_SOCKET");
    const auto at = s.rfind("-n0-");
    if (at == std::string::npos) {
        std::fprintf(stderr, "gateway_probe: run me as the head (node 0) of a virtual cluster\n");
        std::exit(2);
    }
    return s.replace(at, 4, "-n" + std::to_string(node) + "-");
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
    std::vector<std::byte> v(size);
    for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xffU);
    return v;
}

Errc code_of(const dragon::Status& st) { return st ? Errc{} : st.error().code(); }

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

int basic() {
    auto gw0 = must(cl::Gateway::connect_from_env(), "gateway to node 0");
    auto gw1 = must(cl::Gateway::connect(node_socket(1), 0), "gateway to node 1");
    check(gw0->node_id() == 0 && gw1->node_id() == 1, "gateways on nodes 0 and 1");
    auto c0 = must(ch::Channel::create(gw0->pool(), {.capacity = 4}), "channel on node 0");
    auto c1 = must(ch::Channel::create(gw1->pool(), {.capacity = 4}), "channel on node 1");
    auto to1 = must(cl::ChannelRef::open(gw0, c1.descriptor()), "open node 1's channel from node 0");
    auto from0 = must(cl::ChannelRef::open(gw1, c0.descriptor()), "open node 0's channel from node 1");
    auto here = must(cl::ChannelRef::open(gw0, c0.descriptor()), "open node 0's channel on node 0");
    check(!to1.is_local() && !from0.is_local() && here.is_local(), "local and remote are told apart");

    // Every size, a remote send then a remote receive, content checked.
    const ch::PoolStats before0 = gw0->pool().stats(), before1 = gw1->pool().stats();
    bool all = true;
    for (std::size_t size : {0UL, 1UL, 496UL, 497UL, 32768UL, 32769UL, 1UL << 20, 6UL << 20}) {
        const auto m = pattern(size, static_cast<unsigned>(size));
        std::vector<std::byte> out;
        all &= static_cast<bool>(to1.send(m, 10s)) && c1.recv(out, ch::kTryOnce) && out == m;  // timed: in the channel on return
        all &= static_cast<bool>(to1.send(m)) && c1.recv(out, 10s) && out == m;                // default: on its way
        all &= static_cast<bool>(c0.send(m)) && from0.recv(out, ch::kTryOnce) && out == m;
    }
    check(all && gw0->flush(10s), "sizes 0 B to 6 MiB arrive intact by remote send (timed and default) and receive");
    // In place: a remote receive keeps a large message in the block the agent
    // received it into; the Message frees it (checked with the pools below).
    bool in_place = true;
    for (std::size_t size : {0UL, 64UL, 32769UL, 1UL << 20, 6UL << 20}) {
        const auto m = pattern(size, static_cast<unsigned>(size) + 7);
        if (!c0.send(m)) in_place = false;
        auto got = from0.recv_message(10s);
        in_place &= got && got->size() == size && std::equal(m.begin(), m.end(), got->data().begin());
        if (!to1.send(m, 10s)) in_place = false;
        auto here1 = must(cl::ChannelRef::open(gw1, c1.descriptor()), "open node 1's channel on node 1");
        auto local = here1.recv_message(ch::kTryOnce);  // on its own node: the sender's block itself
        in_place &= local && local->size() == size && std::equal(m.begin(), m.end(), local->data().begin());
    }
    check(in_place, "recv_message: sizes 0 B to 6 MiB, remote and local, intact without a copy out");
    check(gw0->pool().stats().free_bytes == before0.free_bytes && gw1->pool().stats().free_bytes == before1.free_bytes,
          "no pool block is left behind on either node");

    std::vector<std::byte> out;
    check(code_of(from0.recv(out, ch::kTryOnce)) == Errc::would_block, "try-once receive of an empty remote channel");
    auto t0 = Clock::now();
    const auto st = from0.recv(out, 300ms);
    const double waited = ms_since(t0);
    check(code_of(st) == Errc::timeout && waited >= 290, "a timed receive of an empty remote channel times out");

    const auto small = pattern(10, 7);
    for (int i = 0; i < 4; ++i) (void)to1.send(small);
    (void)gw0->flush(10s);
    check(code_of(to1.send(small, ch::kTryOnce)) == Errc::would_block, "try-once send to a full remote channel");
    t0 = Clock::now();
    const auto full = to1.send(small, 250ms);
    check(code_of(full) == Errc::timeout && ms_since(t0) >= 240 && c1.queued() == 4,
          "a timed send to a full remote channel times out and sends nothing");

    // A wait ended by a local peer on the channel's node.
    std::thread drain([&] {
        std::this_thread::sleep_for(200ms);
        std::vector<std::byte> o;
        (void)c1.recv(o);
    });
    const auto woke = to1.send(pattern(5, 9), 10s);
    drain.join();
    check(static_cast<bool>(woke) && c1.queued() == 4, "a blocked remote send completes when a local receiver makes room");
    while (c1.queued() > 0) (void)c1.recv(out, ch::kTryOnce);
    std::thread feed([&] {
        std::this_thread::sleep_for(200ms);
        (void)c0.send(pattern(77, 3));
    });
    const auto got = from0.recv(out, 10s);
    feed.join();
    check(got && out == pattern(77, 3), "a blocked remote receive completes when a local sender sends");

    // Default sends into a full channel: on their way at once (up to the
    // window), queued at node 1 behind the one waiting for room, in order.
    for (int i = 0; i < 4; ++i) (void)to1.send(small);
    bool quick = true;
    for (int i = 0; i < 40; ++i) {
        const std::string m = "seq " + std::to_string(i);
        t0 = Clock::now();
        quick &= static_cast<bool>(to1.send(std::as_bytes(std::span(m)))) && ms_since(t0) < 1000;
    }
    // A timed send behind them times out in the queue and is not sent.
    const auto queued_out = to1.send(pattern(6, 6), 150ms);
    for (int i = 0; i < 4; ++i) (void)c1.recv(out, 10s);
    bool in_order = quick && code_of(queued_out) == Errc::timeout;
    for (int i = 0; i < 40; ++i) {
        in_order &= c1.recv(out, 10s) && std::string(reinterpret_cast<const char*>(out.data()), out.size()) ==
                                              "seq " + std::to_string(i);
    }
    check(in_order && gw0->flush(10s) && c1.queued() == 0,
          "40 default sends to a full remote channel return at once and arrive in order as it drains; "
          "a timed send queued behind them times out unsent");
    // The same from a process that leaves at once: what it was told is on
    // its way still arrives, in order (its lane or gateway connection is gone).
    {
        auto leaver = must(cl::Gateway::connect(node_socket(0), 0), "a second gateway on node 0");
        auto to1_again = must(cl::ChannelRef::open(leaver, c1.descriptor()), "open");
        for (int i = 0; i < 4; ++i) (void)to1_again.send(small);
        for (int i = 0; i < 40; ++i) {
            const std::string m = "left " + std::to_string(i);
            (void)to1_again.send(std::as_bytes(std::span(m)));
        }
    }  // the gateway (and any lane) closes here, with sends still queued at node 1
    bool arrived = true;
    for (int i = 0; i < 4; ++i) arrived &= static_cast<bool>(c1.recv(out, 10s));
    for (int i = 0; i < 40; ++i) {
        arrived &= c1.recv(out, 10s) && std::string(reinterpret_cast<const char*>(out.data()), out.size()) ==
                                            "left " + std::to_string(i);
    }
    check(arrived && c1.queued() == 0, "40 default sends of a process that then leaves still arrive, in order");
    ch::ChannelDescriptor gone = c1.descriptor();
    gone.channel_id += 1;
    auto stale = must(cl::ChannelRef::open(gw0, gone), "open");
    const bool accepted = static_cast<bool>(stale.send(small));
    const auto later = gw0->flush(10s);
    const auto again = stale.send(small, 1s);
    check(accepted && code_of(later) == Errc::invalid_argument && code_of(again) == Errc::invalid_argument,
          "a default send to a stale channel: flush() reports invalid_argument");

    // Several threads on one gateway, each with its own sender order.
    auto big = must(ch::Channel::create(gw1->pool(), {.capacity = 64}), "channel on node 1");
    auto to_big = must(cl::ChannelRef::open(gw0, big.descriptor()), "open");
    constexpr int kThreads = 4, kEach = 300;
    std::vector<std::thread> senders;
    for (int t = 0; t < kThreads; ++t)
        senders.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                std::string m = std::to_string(t) + " " + std::to_string(i);
                if (i % 50 == 0) m.resize(40000, 'x');  // some large ones among them
                (void)to_big.send(std::as_bytes(std::span(m)));
            }
        });
    std::vector<int> next(kThreads, 0);
    bool ordered = true;
    for (int n = 0; n < kThreads * kEach; ++n) {
        if (!big.recv(out, 10s)) {
            ordered = false;
            break;
        }
        int t = -1, i = -1;
        const std::string text(reinterpret_cast<const char*>(out.data()), out.size());
        std::sscanf(text.c_str(), "%d %d", &t, &i);
        if (t < 0 || t >= kThreads || i != next[static_cast<std::size_t>(t)]++) ordered = false;
    }
    for (auto& s : senders) s.join();
    check(ordered && big.queued() == 0, "4 threads x 300 remote sends: exactly once, each thread's in order");
    // Which path all of that took: a lane per gateway and remote node, or
    // (DRAGON_CHANNEL_LANES=0) the agents' gateways only.
    const auto lanes0 = gw0->lane_nodes();
    const auto lanes1 = gw1->lane_nodes();
    if (gw0->lanes_enabled())
        check(lanes0 == std::vector<std::uint32_t>{1} && lanes1 == std::vector<std::uint32_t>{0},
              "every remote operation went over a lane (node 0 -> 1 and node 1 -> 0)");
    else
        check(lanes0.empty() && lanes1.empty(), "DRAGON_CHANNEL_LANES=0: no lane, every operation through the agents");
    (void)big.destroy();
    (void)c0.destroy();
    (void)c1.destroy();
    return failures == 0 ? 0 : 1;
}

// A raw connection to node 0's agent: greets, then sends `frame` and returns the reply frame.
std::optional<dragon::wire::Frame> raw_exchange(const std::string& frame) {
    std::string name = std::getenv("DRAGON_AGENT_SOCKET");
    if (name.starts_with('@')) name.erase(0, 1);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path + 1, name.data(), name.size());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a),
                  static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0) {
        ::close(fd);
        return std::nullopt;
    }
    std::string out = dragon::wire::frame_of(dragon::msg::ClientHello{dragon::msg::kProtocolVersion, 0}) + frame;
    (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    dragon::wire::FrameDecoder dec(1U << 20);
    std::optional<dragon::wire::Frame> reply;
    int frames = 0;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (frames < 2) {
        char* buf = dec.prepare(4096);
        const ssize_t n = ::recv(fd, buf, 4096, 0);
        if (n <= 0) break;
        dec.commit(static_cast<std::size_t>(n));
        while (auto f = dec.next()) {
            if (!*f) break;
            if (++frames == 2) reply = std::move(**f);  // the first is the welcome
        }
    }
    ::close(fd);
    return reply;
}

dragon::Result<dragon::msg::ChanReply> reply_to(const std::string& frame) {
    auto reply = raw_exchange(frame);
    if (!reply) return dragon::Error(Errc::closed, "no reply");
    return dragon::msg::decode_as<dragon::msg::ChanReply>(*reply);
}

int errors() {
    auto gw0 = must(cl::Gateway::connect_from_env(), "gateway to node 0");
    auto gw1 = must(cl::Gateway::connect(node_socket(1), 0), "gateway to node 1");
    auto c1 = must(ch::Channel::create(gw1->pool(), {.capacity = 4}), "channel on node 1");
    const ch::ChannelDescriptor good = c1.descriptor();
    std::vector<std::byte> out;
    const auto small = pattern(8, 1);

    ch::ChannelDescriptor stale = good;
    stale.channel_id += 1000;
    auto r = cl::ChannelRef::open(gw0, stale);
    check(r && code_of(r->send(small, 1s)) == Errc::invalid_argument, "a stale descriptor: invalid_argument from node 1");

    ch::ChannelDescriptor offset = good;
    offset.channel_offset = 12345;
    r = cl::ChannelRef::open(gw0, offset);
    check(r && code_of(r->recv(out, 1s)) == Errc::invalid_argument, "a wrong offset: invalid_argument, no crash");

    ch::ChannelDescriptor far = good;
    far.node_id = 57;
    far.pool_name = must(ch::make_pool_name(gw0->run_id(), 57), "name");
    r = cl::ChannelRef::open(gw0, far);
    const auto far_st = r ? r->send(small, 1s) : dragon::Status(r.error());
    check(code_of(far_st) == Errc::invalid_argument && far_st.error().message().find("node 57") != std::string::npos,
          "a node the run does not have: " + (far_st ? std::string("ok?") : far_st.error().message()));

    ch::ChannelDescriptor other_run = good;
    other_run.pool_name = must(ch::make_pool_name("abc123", 1), "name");
    check(!cl::ChannelRef::open(gw0, other_run), "a descriptor of another run is refused on open");

    // Requests a well-behaved client never sends, on a raw socket.
    dragon::msg::ChanSend self;
    self.request_id = 5;
    auto self_desc = good;
    self_desc.node_id = 0;
    self_desc.pool_name = must(ch::make_pool_name(gw0->run_id(), 0), "name");
    const auto enc = self_desc.encode();
    self.descriptor.assign(reinterpret_cast<const char*>(enc.data()), enc.size());
    auto decoded = reply_to(dragon::wire::frame_of(self));
    check(decoded && decoded->request_id == 5 && decoded->code == static_cast<std::uint16_t>(Errc::invalid_argument),
          "a channel of the agent's own node through the gateway: refused with a reason");

    dragon::msg::ChanSend bad_block = self;
    bad_block.descriptor = std::string(reinterpret_cast<const char*>(good.encode().data()), ch::ChannelDescriptor::kEncodedSize);
    bad_block.block = 999999;
    bad_block.size = 100;
    decoded = reply_to(dragon::wire::frame_of(bad_block));
    check(decoded && decoded->code == static_cast<std::uint16_t>(Errc::invalid_argument),
          "a block offset that is not a block of the pool: refused");

    dragon::msg::ChanRecv junk_desc{6, std::string(128, 'x'), 0};
    decoded = reply_to(dragon::wire::frame_of(junk_desc));
    check(decoded && decoded->code == static_cast<std::uint16_t>(Errc::protocol), "128 junk bytes as a descriptor: protocol error");

    std::string truncated;
    dragon::wire::append_frame_header(truncated, static_cast<std::uint16_t>(dragon::msg::Type::chan_send), 3);
    truncated += "abc";
    check(raw_exchange(truncated).has_value(), "a truncated chan_send gets an answer, not a crash");

    // Still serving.
    auto to1 = must(cl::ChannelRef::open(gw0, good), "open");
    check(to1.send(small, 1s) && c1.recv(out, ch::kTryOnce) && out == small, "the gateway still works afterwards");
    (void)c1.destroy();
    return failures == 0 ? 0 : 1;
}

int lost() {
    auto gw0 = must(cl::Gateway::connect_from_env(), "gateway to node 0");
    auto gw1 = must(cl::Gateway::connect(node_socket(1), 0), "gateway to node 1");
    auto c1 = must(ch::Channel::create(gw1->pool(), {.capacity = 4}), "channel on node 1");
    auto from1 = must(cl::ChannelRef::open(gw0, c1.descriptor()), "open");
    std::printf("waiting\n");
    std::fflush(stdout);
    std::vector<std::byte> out;
    const auto t0 = Clock::now();
    const auto st = from1.recv(out);  // no timeout: only the loss of node 1 ends it
    std::printf("recv ended after %.1f s: %s\n", ms_since(t0) / 1000, st ? "ok?!" : st.error().message().c_str());
    // Over a lane the process sees node 1's agent go itself; through the
    // gateway, its own agent reports the loss. Either way the node is named.
    const std::string why = st ? "" : st.error().message();
    check(code_of(st) == Errc::closed && why.find("node 1") != std::string::npos && why.find("lost") != std::string::npos,
          "a receive waiting on a lost node ends with closed");
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string what = argc > 1 ? argv[1] : "";
    if (what == "basic") return basic();
    if (what == "errors") return errors();
    if (what == "lost") return lost();
    std::fprintf(stderr, "usage: gateway_probe basic|errors|lost\n");
    return 2;
}
