// The TCP transport over real loopback sockets (127.0.0.2 and up), one
// io_context in the test's thread: handshakes, hostile clients, ordering,
// large payloads and back-pressure.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "dragon/common/sys.hpp"
#include "dragon/transport/tcp.hpp"

namespace dragon::transport::tcp {
namespace {

using namespace std::chrono_literals;
using PeerPtr = std::shared_ptr<Peer>;

/// A test message: a sequence number and some filler.
struct Seq {
    static constexpr std::uint16_t kType = 1000;
    std::uint64_t seq = 0;
    std::string fill;
    DRAGON_WIRE_FIELDS(seq, fill)
};

/// Captures everything logged while it lives.
class LogCapture {
public:
    LogCapture() : old_(spdlog::default_logger()) {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
    }
    ~LogCapture() { spdlog::set_default_logger(old_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;
    [[nodiscard]] std::string text() const { return out_.str(); }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> old_;
};

/// Runs the loop until pred() holds; false after `limit`.
bool run_until(asio::io_context& io, const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        io.run_one_for(5ms);
        if (io.stopped()) io.restart();
    }
    return true;
}

void run_for(asio::io_context& io, std::chrono::milliseconds d) {
    const auto deadline = std::chrono::steady_clock::now() + d;
    (void)run_until(io, [&] { return std::chrono::steady_clock::now() >= deadline; }, d + 1s);
}

/// Options with a few fields set (designated initializers would have to name all).
Options opts(const std::function<void(Options&)>& set) {
    Options o;
    set(o);
    return o;
}

RunSecret new_secret() { return std::move(RunSecret::generate()).value(); }

struct Pair {
    Listener listener;
    PeerPtr acceptor;   // node 1, at 127.0.0.2
    PeerPtr initiator;  // node 2, from 127.0.0.3
};

/// A listener (node 1) and an authenticated connection to it from node 2.
Pair connect_pair(asio::io_context& io, const RunSecret& secret, Options listener_opts = {},
                  Options connect_opts = {}) {
    PeerPtr accepted;
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [&](PeerPtr p) { accepted = std::move(p); },
                              listener_opts);
    EXPECT_TRUE(l) << l.error().message();
    std::optional<Result<PeerPtr>> got;
    connect_opts.bind_address = "127.0.0.3";
    connect(io, "127.0.0.2", l->port(), secret, 2, 1, [&](Result<PeerPtr> r) { got = std::move(r); }, connect_opts);
    EXPECT_TRUE(run_until(io, [&] { return got.has_value() && accepted; }));
    EXPECT_TRUE(got && *got) << (got && !*got ? got->error().message() : "no result");
    return Pair{std::move(l).value(), std::move(accepted), got && *got ? std::move(*got).value() : nullptr};
}

/// A plain blocking client socket connected to 127.0.0.2:port.
sys::UniqueFd raw_client(std::uint16_t port) {
    sys::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
    return fd;
}

/// Runs the loop until the listener has closed the raw client's connection.
bool wait_dropped(asio::io_context& io, int fd, std::chrono::milliseconds limit = 5s) {
    return run_until(
        io,
        [&] {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0) return false;
            char buf[512];
            const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            return n == 0 || (n < 0 && errno != EAGAIN);  // EOF or reset; a reject frame is drained first
        },
        limit);
}

std::string header(std::uint8_t magic, std::uint8_t version, std::uint16_t type, std::uint32_t len) {
    std::string h;
    h.push_back(static_cast<char>(magic));
    h.push_back(static_cast<char>(version));
    wire::Writer w(h);
    w.scalar(type);
    w.scalar(len);
    return h;
}

void expect_good_peer_still_accepted(asio::io_context& io, Listener& l, const RunSecret& secret) {
    std::optional<Result<PeerPtr>> got;
    connect(io, "127.0.0.2", l.port(), secret, 9, 1, [&](Result<PeerPtr> r) { got = std::move(r); });
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    ASSERT_TRUE(*got) << got->error().message();
    EXPECT_EQ((*got).value()->remote_node_id(), 1U);
}

// ---- handshake ---------------------------------------------------------------

TEST(Tcp, HandshakeSucceedsBothWays) {
    asio::io_context io;
    auto secret = new_secret();
    auto p = connect_pair(io, secret);
    ASSERT_TRUE(p.acceptor && p.initiator);
    EXPECT_EQ(p.acceptor->remote_node_id(), 2U);
    EXPECT_EQ(p.initiator->remote_node_id(), 1U);
    EXPECT_EQ(p.acceptor->remote_endpoint().address().to_string(), "127.0.0.3");
    EXPECT_EQ(p.initiator->remote_endpoint().address().to_string(), "127.0.0.2");
    EXPECT_EQ(p.initiator->remote_endpoint().port(), p.listener.port());

    std::vector<std::uint64_t> at_acceptor, at_initiator;
    auto collect = [](std::vector<std::uint64_t>& into) {
        return [&into](wire::Frame&& f) { into.push_back(wire::decode_exact<Seq>(f.body)->seq); };
    };
    p.acceptor->start(collect(at_acceptor), nullptr);
    p.initiator->start(collect(at_initiator), nullptr);
    EXPECT_EQ(p.initiator->send(Seq{.seq = 11, .fill = "hello"}), SendState::ok);
    EXPECT_EQ(p.acceptor->send(Seq{.seq = 22, .fill = "world"}), SendState::ok);
    ASSERT_TRUE(run_until(io, [&] { return !at_acceptor.empty() && !at_initiator.empty(); }));
    EXPECT_EQ(at_acceptor, std::vector<std::uint64_t>{11});
    EXPECT_EQ(at_initiator, std::vector<std::uint64_t>{22});
}

TEST(Tcp, WrongSecretIsRefusedOnBothSidesWithALoggedReason) {
    LogCapture log;
    asio::io_context io;
    bool accepted = false;
    auto l = Listener::create(io, "127.0.0.2", 0, new_secret(), 1, [&](PeerPtr) { accepted = true; });
    ASSERT_TRUE(l);
    std::optional<Result<PeerPtr>> got;
    connect(io, "127.0.0.2", l->port(), new_secret(), 2, 1, [&](Result<PeerPtr> r) { got = std::move(r); },
            opts([](Options& o) { o.bind_address = "127.0.0.4"; }));
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    ASSERT_FALSE(*got);
    EXPECT_EQ(got->error().code(), Errc::permission_denied);
    EXPECT_NE(got->error().message().find("authentication failed"), std::string::npos) << got->error().message();
    // The listener's side: refused, with the peer's address and the reason.
    ASSERT_TRUE(run_until(io, [&] { return log.text().find("accepting 127.0.0.4:") != std::string::npos; }))
        << log.text();
    run_for(io, 50ms);
    const std::string text = log.text();
    EXPECT_NE(text.find("connecting to node 1 at 127.0.0.2"), std::string::npos) << text;
    EXPECT_NE(text.find("accepting 127.0.0.4:"), std::string::npos) << text;
    EXPECT_NE(text.find("authentication failed"), std::string::npos) << text;
    EXPECT_FALSE(accepted);
}

TEST(Tcp, ConnectingToTheWrongNodeIsRefused) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [](PeerPtr) {});
    ASSERT_TRUE(l);
    std::optional<Result<PeerPtr>> got;
    connect(io, "127.0.0.2", l->port(), secret, 2, 7, [&](Result<PeerPtr> r) { got = std::move(r); });
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    ASSERT_FALSE(*got);
    EXPECT_NE(got->error().message().find("expected node 7"), std::string::npos) << got->error().message();
}

TEST(Tcp, ConnectionRefusedAndBadAddressesAreErrors) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    std::uint16_t free_port = 0;
    {
        auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [](PeerPtr) {});
        ASSERT_TRUE(l);
        free_port = l->port();
    }
    std::optional<Result<PeerPtr>> got;
    connect(io, "127.0.0.2", free_port, secret, 2, 1, [&](Result<PeerPtr> r) { got = std::move(r); });
    EXPECT_FALSE(got.has_value()) << "on_done never runs inside connect()";
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    ASSERT_FALSE(*got);
    EXPECT_EQ(got->error().code(), Errc::closed);

    got.reset();
    connect(io, "not-an-address", 1, secret, 2, 1, [&](Result<PeerPtr> r) { got = std::move(r); });
    ASSERT_TRUE(run_until(io, [&] { return got.has_value(); }));
    EXPECT_EQ(got->error().code(), Errc::invalid_argument);

    auto wild = Listener::create(io, "0.0.0.0", 0, secret, 1, [](PeerPtr) {});
    ASSERT_FALSE(wild);
    EXPECT_EQ(wild.error().code(), Errc::invalid_argument);
    EXPECT_NE(wild.error().message().find("wildcard"), std::string::npos);
    EXPECT_TRUE(Listener::create(io, "0.0.0.0", 0, secret, 1, [](PeerPtr) {}, opts([](Options& o) { o.allow_wildcard_address = true; })));
}

TEST(Tcp, HostileClientsAreDroppedAndTheListenerKeepsServing) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    int accepted = 0;
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [&](PeerPtr) { ++accepted; });
    ASSERT_TRUE(l);

    std::mt19937 rng(1234);
    std::vector<std::string> attacks = {
        header(0x00, 1, 64, 48) + std::string(48, 'x'),        // wrong magic
        header(wire::kFrameMagic, 9, 64, 48) + std::string(48, 'x'),  // wrong frame version
        header(wire::kFrameMagic, 1, 64, 1U << 30),            // far too large
        header(wire::kFrameMagic, 1, 64, kHandshakeMaxBody + 1),  // just too large
        header(wire::kFrameMagic, 1, 65, 36) + std::string(36, '\0'),  // response before challenge
        header(wire::kFrameMagic, 1, 1000, 0),                 // an application frame before the handshake
        header(wire::kFrameMagic, 1, 64, 48) + std::string(48, '\xff'),  // a malformed challenge
    };
    for (int i = 0; i < 20; ++i) {  // random bytes of random lengths
        std::string junk(std::uniform_int_distribution<std::size_t>(1, 4096)(rng), '\0');
        for (char& c : junk) c = static_cast<char>(rng());
        attacks.push_back(std::move(junk));
    }
    for (const auto& bytes : attacks) {
        auto fd = raw_client(l->port());
        ASSERT_TRUE(sys::write_all(fd.get(), bytes.data(), bytes.size()));
        EXPECT_TRUE(wait_dropped(io, fd.get())) << "attack of " << bytes.size() << " bytes not dropped";
    }
    const std::string text = log.text();
    EXPECT_NE(text.find("bad frame magic"), std::string::npos) << text;
    EXPECT_NE(text.find("unsupported frame version 9"), std::string::npos) << text;
    EXPECT_NE(text.find("exceeds the limit of 256"), std::string::npos) << text;
    EXPECT_NE(text.find("accepting 127.0.0.1:"), std::string::npos) << text;  // the client's address
    EXPECT_EQ(accepted, 0);
    expect_good_peer_still_accepted(io, *l, secret);
    ASSERT_TRUE(run_until(io, [&] { return accepted == 1; }));
}

TEST(Tcp, TruncatedHandshakeIsDropped) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [](PeerPtr) {});
    ASSERT_TRUE(l);
    // A real challenge cut short, then the client hangs up.
    auto hs = Handshake::initiator(secret, 2, 1);
    ASSERT_TRUE(hs);
    const std::string challenge = hs->initial_output();
    for (std::size_t cut : {std::size_t{3}, std::size_t{8}, challenge.size() - 1}) {
        auto fd = raw_client(l->port());
        ASSERT_TRUE(sys::write_all(fd.get(), challenge.data(), cut));
        ::shutdown(fd.get(), SHUT_WR);
        EXPECT_TRUE(wait_dropped(io, fd.get()));
    }
    EXPECT_NE(log.text().find("closed the connection"), std::string::npos) << log.text();
    expect_good_peer_still_accepted(io, *l, secret);
}

TEST(Tcp, SilentClientTimesOut) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [](PeerPtr) {}, opts([](Options& o) { o.handshake_timeout = 200ms; }));
    ASSERT_TRUE(l);
    auto silent = raw_client(l->port());
    auto half = raw_client(l->port());  // sends a challenge and then nothing
    auto hs = Handshake::initiator(secret, 2, 1);
    ASSERT_TRUE(hs);
    const std::string challenge = hs->initial_output();
    ASSERT_TRUE(sys::write_all(half.get(), challenge.data(), challenge.size()));
    const auto t0 = std::chrono::steady_clock::now();
    // A good peer is served while the silent ones wait for their deadline.
    expect_good_peer_still_accepted(io, *l, secret);
    EXPECT_TRUE(wait_dropped(io, silent.get()));
    EXPECT_TRUE(wait_dropped(io, half.get()));
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(waited, 150ms);
    EXPECT_LT(waited, 3s);
    EXPECT_NE(log.text().find("no complete handshake within 200 ms"), std::string::npos) << log.text();
}

TEST(Tcp, TooManyPendingHandshakesAreRefusedNotQueued) {
    LogCapture log;
    asio::io_context io;
    auto secret = new_secret();
    auto l = Listener::create(io, "127.0.0.2", 0, secret, 1, [](PeerPtr) {},
                              opts([](Options& o) {
                                  o.handshake_timeout = 300ms;
                                  o.max_pending_handshakes = 4;
                              }));
    ASSERT_TRUE(l);
    std::vector<sys::UniqueFd> silent;
    for (int i = 0; i < 8; ++i) silent.push_back(raw_client(l->port()));
    run_for(io, 50ms);
    EXPECT_NE(log.text().find("handshakes already in progress"), std::string::npos) << log.text();
    for (auto& fd : silent) EXPECT_TRUE(wait_dropped(io, fd.get()));
    expect_good_peer_still_accepted(io, *l, secret);
}

TEST(Tcp, EverySocketIsCloseOnExec) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    int sockets = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        const int fd = std::stoi(e.path().filename().string());
        struct stat sb {};
        if (::fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode)) continue;
        ++sockets;
        EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) << "socket fd " << fd << " lacks FD_CLOEXEC";
    }
    EXPECT_GE(sockets, 3);  // listener, and both ends of the pair
}

// ---- data --------------------------------------------------------------------

TEST(Tcp, FramesArriveInOrderExactlyOnceBothWays) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    constexpr std::uint64_t kCount = 20000;
    struct Side {
        std::uint64_t next = 0;
        bool bad = false;
        std::uint64_t payloads = 0;
    };
    Side at_acc, at_ini;
    auto on_frame = [](Side& s) {
        return [&s](wire::Frame&& f) {
            auto m = wire::decode_exact<Seq>(f.body);
            if (!m || m->seq != s.next) s.bad = true;
            ++s.next;
        };
    };
    // Every 97th message is a payload message; it takes its place in the order.
    std::vector<std::byte> blob(3000, std::byte{0x5a});
    auto on_payload = [&blob](Side& s) {
        return [&s, &blob](wire::Frame&& h, std::uint64_t size) -> Result<PayloadSink> {
            auto m = wire::decode_exact<Seq>(h.body);
            if (!m || m->seq != s.next || size != blob.size()) s.bad = true;
            ++s.next;
            ++s.payloads;
            return PayloadSink{};  // discard the bytes
        };
    };
    p.acceptor->start(on_frame(at_acc), nullptr, on_payload(at_acc));
    p.initiator->start(on_frame(at_ini), nullptr, on_payload(at_ini));
    std::mt19937 rng(7);
    for (std::uint64_t i = 0; i < kCount; ++i) {
        for (auto* peer : {p.initiator.get(), p.acceptor.get()}) {
            Seq m{.seq = i, .fill = std::string(std::uniform_int_distribution<std::size_t>(0, 300)(rng), 'f')};
            if (i % 97 == 0) (void)peer->send_with_payload(m, blob, nullptr);
            else (void)peer->send(m);
        }
        if (i % 1000 == 0) io.poll();  // interleave sending with delivery
    }
    ASSERT_TRUE(run_until(io, [&] { return at_acc.next >= kCount && at_ini.next >= kCount; }));
    run_for(io, 50ms);
    EXPECT_EQ(at_acc.next, kCount);
    EXPECT_EQ(at_ini.next, kCount);
    EXPECT_FALSE(at_acc.bad);
    EXPECT_FALSE(at_ini.bad);
    EXPECT_EQ(at_acc.payloads, (kCount + 96) / 97);
}

TEST(Transport, TcpBehindTheInterfaceLinksTwoNodesByName) {
    asio::io_context io;
    const auto secret = new_secret();
    auto a = create_transport("tcp", io, secret, 1, "127.0.0.2");
    auto b = create_transport("tcp", io, secret, 2, "127.0.0.3");
    ASSERT_TRUE(a && b);
    EXPECT_EQ((*a)->name(), "tcp");
    std::shared_ptr<Link> accepted;
    ASSERT_TRUE((*a)->listen("127.0.0.2", -1, [&](std::shared_ptr<Link> l) { accepted = std::move(l); }));
    const Endpoint at = (*a)->local_endpoint();
    EXPECT_EQ(at.address, "127.0.0.2");
    ASSERT_NE(at.port, 0);
    std::optional<Result<std::shared_ptr<Link>>> dialled;
    (*b)->connect(at, 1, [&](Result<std::shared_ptr<Link>> r) { dialled = std::move(r); });
    ASSERT_TRUE(run_until(io, [&] { return dialled.has_value() && accepted; }));
    ASSERT_TRUE(*dialled) << dialled->error().message();
    std::shared_ptr<Link> link = std::move(*dialled).value();
    EXPECT_EQ(link->remote_node_id(), 1U);
    EXPECT_EQ(accepted->remote_node_id(), 2U);

    // Messages through the interface arrive in order, frames and payloads alike.
    std::vector<std::uint64_t> got;
    accepted->start([&](wire::Frame&& f) { got.push_back(wire::decode_exact<Seq>(f.body)->seq); }, nullptr,
                    [&](wire::Frame&& h, std::uint64_t) -> Result<PayloadSink> {
                        got.push_back(wire::decode_exact<Seq>(h.body)->seq);
                        return PayloadSink{};
                    });
    link->start([](wire::Frame&&) {}, nullptr);
    std::vector<std::byte> blob(1000, std::byte{1});
    EXPECT_EQ(link->send(Seq{.seq = 1, .fill = "a"}), SendState::ok);
    EXPECT_EQ(link->send_with_payload(Seq{.seq = 2, .fill = {}}, blob, nullptr), SendState::ok);
    EXPECT_EQ(link->send(Seq{.seq = 3, .fill = "c"}), SendState::ok);
    ASSERT_TRUE(run_until(io, [&] { return got.size() == 3; }));
    EXPECT_EQ(got, (std::vector<std::uint64_t>{1, 2, 3}));

    // A dial that fails says why; a transport that does not exist names the ones that do.
    (*a)->stop_listening();
    std::optional<Result<std::shared_ptr<Link>>> refused;
    (*b)->connect(at, 1, [&](Result<std::shared_ptr<Link>> r) { refused = std::move(r); });
    ASSERT_TRUE(run_until(io, [&] { return refused.has_value(); }));
    EXPECT_FALSE(*refused);
    auto ofi = create_transport("ofi", io, secret, 1, {});
    ASSERT_FALSE(ofi);
    EXPECT_EQ(ofi.error().message(), "transport 'ofi' is not available (tcp)");
    link->close();
    accepted->close();
}

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
    std::vector<std::byte> v(n);
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (std::size_t i = 0; i < n; i += 8) {
        x ^= x << 13U;
        x ^= x >> 7U;
        x ^= x << 17U;
        std::memcpy(v.data() + i, &x, std::min<std::size_t>(8, n - i));
    }
    return v;
}

TEST(Tcp, LargePayloadArrivesByteIdenticalIntoADestination) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    const std::size_t kSize = (64U << 20) + 12345;  // not a multiple of the chunk size
    const auto data = pattern(kSize, 1);
    std::vector<std::byte> dest(kSize);
    bool complete = false;
    std::uint64_t seen_size = 0;
    p.acceptor->start([](wire::Frame&&) {}, nullptr, [&](wire::Frame&& h, std::uint64_t size) -> Result<PayloadSink> {
        seen_size = size;
        EXPECT_EQ(wire::decode_exact<Seq>(h.body)->seq, 42U);
        return PayloadSink{.destination = dest, .on_bytes = nullptr, .on_complete = [&] { complete = true; }};
    });
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    std::optional<Status> sent;
    EXPECT_EQ(p.initiator->send_with_payload(Seq{.seq = 42, .fill = {}}, data, [&](Status s) { sent = s; }),
              SendState::above_high_water);
    EXPECT_GT(p.initiator->queued_bytes(), kSize);
    ASSERT_TRUE(run_until(io, [&] { return complete && sent.has_value(); }));
    EXPECT_TRUE(*sent);
    EXPECT_EQ(seen_size, kSize);
    EXPECT_EQ(p.initiator->queued_bytes(), 0U);
    EXPECT_TRUE(std::memcmp(dest.data(), data.data(), kSize) == 0) << "payload differs";
}

TEST(Tcp, LargePayloadIsDeliveredIncrementally) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    const std::size_t kSize = 64U << 20;
    const auto data = pattern(kSize, 2);
    std::size_t got = 0, pieces = 0, largest = 0;
    bool same = true, complete = false;
    p.acceptor->start([](wire::Frame&&) {}, nullptr, [&](wire::Frame&&, std::uint64_t) -> Result<PayloadSink> {
        return PayloadSink{.destination = {},
                           .on_bytes =
                               [&](std::span<const std::byte> piece) {
                                   same = same && std::memcmp(piece.data(), data.data() + got, piece.size()) == 0;
                                   got += piece.size();
                                   ++pieces;
                                   largest = std::max(largest, piece.size());
                               },
                           .on_complete = [&] { complete = true; }};
    });
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    (void)p.initiator->send_with_payload(Seq{}, data, nullptr);
    ASSERT_TRUE(run_until(io, [&] { return complete; }));
    EXPECT_EQ(got, kSize);
    EXPECT_TRUE(same);
    EXPECT_GT(pieces, kSize / kChunkSize - 1);  // at least per chunk, never the whole payload at once
    EXPECT_LE(largest, kChunkSize);
}

TEST(Tcp, PausedReceiverBoundsTheSendersQueue) {
    asio::io_context io;
    const Options sender_opts = opts([](Options& o) {
        o.high_water = 1U << 20;
        o.low_water = 256U << 10;
    });
    auto p = connect_pair(io, new_secret(), Options{}, sender_opts);
    ASSERT_TRUE(p.acceptor && p.initiator);
    const std::size_t kMsg = kChunkSize;
    const std::size_t kTotal = 256;  // 64 MiB in all
    const auto data = pattern(kMsg, 3);

    std::size_t received = 0;
    bool order_ok = true;
    p.acceptor->start([](wire::Frame&&) {}, nullptr, [&](wire::Frame&& h, std::uint64_t) -> Result<PayloadSink> {
        if (wire::decode_exact<Seq>(h.body)->seq != received) order_ok = false;
        ++received;
        return PayloadSink{};
    });
    p.acceptor->pause_reading();
    p.initiator->start([](wire::Frame&&) {}, nullptr);

    // A well-behaved producer: sends until told to stop, resumes when drained.
    std::size_t sent = 0, max_queued = 0, drained_calls = 0;
    std::function<void()> produce = [&] {
        while (sent < kTotal) {
            const SendState s = p.initiator->send_with_payload(Seq{.seq = sent, .fill = {}}, data, nullptr);
            ++sent;
            max_queued = std::max(max_queued, p.initiator->queued_bytes());
            if (s != SendState::ok) break;
        }
    };
    p.initiator->set_on_drained([&] {
        ++drained_calls;
        produce();
    });
    produce();
    run_for(io, 300ms);
    const std::size_t stalled_at = sent;
    run_for(io, 300ms);
    EXPECT_EQ(sent, stalled_at) << "the producer should be stalled while the receiver is paused";
    EXPECT_LT(sent, kTotal);
    EXPECT_EQ(received, 0U);
    const std::size_t one_chunk_with_framing = kChunkSize + 2 * wire::kFrameHeaderSize + 64;
    EXPECT_LE(max_queued, sender_opts.high_water + one_chunk_with_framing);
    EXPECT_GT(p.initiator->queued_bytes(), sender_opts.low_water);

    const std::size_t drained_before = drained_calls;
    p.acceptor->resume_reading();
    ASSERT_TRUE(run_until(io, [&] { return received == kTotal; }));
    EXPECT_GT(drained_calls, drained_before) << "the drained callback fires after resume";
    EXPECT_TRUE(order_ok);
    EXPECT_LE(max_queued, sender_opts.high_water + one_chunk_with_framing);
}

TEST(Tcp, CloseAfterFlushDeliversEverythingThenEof) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    std::uint64_t got = 0;
    bool closed = false, clean = false, flushed = false;
    p.acceptor->start([&](wire::Frame&&) { ++got; }, [&](const Error* e) {
        closed = true;
        clean = e == nullptr;
    });
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    for (std::uint64_t i = 0; i < 5000; ++i) (void)p.initiator->send(Seq{.seq = i, .fill = std::string(100, 'x')});
    p.initiator->close_after_flush([&] { flushed = true; });
    EXPECT_EQ(p.initiator->send(Seq{}), SendState::closed);
    ASSERT_TRUE(run_until(io, [&] { return closed && flushed; }));
    EXPECT_EQ(got, 5000U);
    EXPECT_TRUE(clean);
}

TEST(Tcp, PausedReceiverGetsEverythingBeforeTheEnd) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    std::uint64_t got = 0;
    std::optional<bool> clean;
    p.acceptor->start([&](wire::Frame&&) { ++got; }, [&](const Error* e) { clean = e == nullptr; });
    p.acceptor->pause_reading();  // with a read already in flight
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    for (std::uint64_t i = 0; i < 100; ++i) (void)p.initiator->send(Seq{.seq = i, .fill = std::string(50, 'x')});
    p.initiator->close_after_flush();
    run_for(io, 100ms);
    EXPECT_EQ(got, 0U);
    EXPECT_FALSE(clean.has_value());
    p.acceptor->resume_reading();
    ASSERT_TRUE(run_until(io, [&] { return clean.has_value(); }));
    EXPECT_EQ(got, 100U);
    EXPECT_TRUE(*clean);
}

TEST(Tcp, PeerDisappearingMidPayloadIsReported) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    std::optional<Error> close_error;
    bool completed = false;
    p.acceptor->start([](wire::Frame&&) {}, [&](const Error* e) { close_error = e ? *e : Error(Errc::internal, "clean"); },
                      [&](wire::Frame&&, std::uint64_t) -> Result<PayloadSink> {
                          return PayloadSink{.destination = {}, .on_bytes = nullptr, .on_complete = [&] { completed = true; }};
                      });
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    const auto data = pattern(32U << 20, 4);
    std::optional<Status> done;
    (void)p.initiator->send_with_payload(Seq{}, data, [&](Status s) { done = s; });
    run_for(io, 5ms);
    p.initiator->close();
    ASSERT_TRUE(done.has_value());  // close() answers queued payloads at once
    EXPECT_FALSE(*done);
    EXPECT_EQ(done->error().code(), Errc::closed);
    ASSERT_TRUE(run_until(io, [&] { return close_error.has_value(); }));
    EXPECT_FALSE(completed);
    EXPECT_NE(close_error->message().find("middle of a payload"), std::string::npos) << close_error->message();
}

TEST(Tcp, ProtocolViolationAfterTheHandshakeClosesWithAReason) {
    asio::io_context io;
    auto p = connect_pair(io, new_secret());
    ASSERT_TRUE(p.acceptor && p.initiator);
    std::optional<std::string> why;
    p.acceptor->start([](wire::Frame&&) {}, [&](const Error* e) { why = e ? e->message() : "clean"; });
    p.initiator->start([](wire::Frame&&) {}, nullptr);
    // A payload message to a peer that has no payload handler.
    (void)p.initiator->send_with_payload(Seq{}, std::span<const std::byte>{}, nullptr);
    ASSERT_TRUE(run_until(io, [&] { return why.has_value(); }));
    EXPECT_NE(why->find("no payload handler"), std::string::npos) << *why;
    EXPECT_NE(why->find("node 2"), std::string::npos) << *why;
}

}  // namespace
}  // namespace dragon::transport::tcp
