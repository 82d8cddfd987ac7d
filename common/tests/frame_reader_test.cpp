// PayloadDecoder (frames and payload messages from any split of the stream)
// and FrameReader (the same over a socket, under deadlines).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dragon/common/frame_reader.hpp"
#include "dragon/common/payload.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::wire {
namespace {

using namespace std::chrono_literals;
using Kind = PayloadDecoder::Kind;

std::string frame(std::uint16_t type, std::string_view body) {
    std::string out;
    append_frame_header(out, type, body.size());
    out.append(body);
    return out;
}

std::string chunk(std::string_view bytes) {
    const auto h = payload_chunk_header(bytes.size());
    return std::string(h.data(), h.size()) + std::string(bytes);
}

std::string payload_begin(std::uint16_t type, std::string_view header, std::uint64_t size) {
    std::string out;
    append_payload_begin(out, type, size, header);
    return out;
}

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed) & 0xffU);
    return s;
}

/// Frames, a payload in uneven chunks, an empty payload, an empty frame.
std::string sample_stream() {
    return frame(5, "hello") + payload_begin(7, "hdr", 10) + chunk("abc") + chunk("def") + chunk("ghij") +
           frame(6, "after") + payload_begin(8, "", 0) + frame(9, "");
}
const char* const kSampleTranscript =
    "frame 5 'hello'\nbegin 7 'hdr' 10\nbytes 'abcdefghij'\nend\nframe 6 'after'\nbegin 8 '' 0\nend\nframe 9 ''\n";

/// Drains `d` into a readable transcript; payload bytes are gathered per payload.
struct Transcript {
    std::string text;
    std::string pending_bytes;
    bool use_destination = false;
    std::vector<char> dest;

    Status drain(PayloadDecoder& d) {
        for (;;) {
            auto ev = DRAGON_TRY(d.next());
            switch (ev.kind) {
                case Kind::need_more: return ok();
                case Kind::frame: text += fmt::format("frame {} '{}'\n", ev.type, ev.body); break;
                case Kind::payload_begin:
                    text += fmt::format("begin {} '{}' {}\n", ev.type, ev.body, ev.size);
                    if (use_destination) {
                        dest.assign(ev.size, '\0');
                        DRAGON_CHECK(d.set_destination(std::as_writable_bytes(std::span(dest))));
                    }
                    break;
                case Kind::payload_bytes: pending_bytes += ev.body; break;
                case Kind::payload_end:
                    if (use_destination) pending_bytes.assign(dest.begin(), dest.end());
                    if (!pending_bytes.empty()) text += fmt::format("bytes '{}'\n", pending_bytes);
                    pending_bytes.clear();
                    text += "end\n";
                    break;
            }
        }
    }
};

TEST(PayloadDecoder, SplitAtEveryByteBoundaryGivesTheSameMessages) {
    const std::string s = sample_stream();
    for (bool dest : {false, true}) {
        for (std::size_t k = 0; k <= s.size(); ++k) {
            PayloadDecoder d;
            Transcript t;
            t.use_destination = dest;
            d.feed(std::string_view(s).substr(0, k));
            ASSERT_TRUE(t.drain(d)) << k;
            d.feed(std::string_view(s).substr(k));
            ASSERT_TRUE(t.drain(d)) << k;
            EXPECT_EQ(t.text, kSampleTranscript) << "split at " << k << (dest ? " into a destination" : "");
            EXPECT_FALSE(d.mid_message());
        }
    }
}

TEST(PayloadDecoder, ByteByByte) {
    const std::string s = sample_stream();
    for (bool dest : {false, true}) {
        PayloadDecoder d;
        Transcript t;
        t.use_destination = dest;
        for (char c : s) {
            d.feed(std::string_view(&c, 1));
            ASSERT_TRUE(t.drain(d));
        }
        EXPECT_EQ(t.text, kSampleTranscript);
    }
}

/// Reads `src` through read_space()/commit() in reads of at most `max_read`
/// bytes, as a socket would deliver them; counts the bytes read straight into the destination.
struct FakeSocket {
    std::string_view src;
    std::size_t max_read;
    std::size_t direct_bytes = 0;

    bool read_into(PayloadDecoder& d) {
        if (src.empty()) return false;
        auto sp = d.read_space();
        std::size_t n = std::min(src.size(), max_read);
        const std::size_t to_direct = std::min(n, sp.direct.size());
        if (to_direct > 0) std::memcpy(sp.direct.data(), src.data(), to_direct);  // no destination: a null span
        const std::size_t to_buf = std::min(n - to_direct, sp.buffer.size());
        if (to_buf > 0) std::memcpy(sp.buffer.data(), src.data() + to_direct, to_buf);
        n = to_direct + to_buf;
        direct_bytes += to_direct;
        src.remove_prefix(n);
        d.commit(n);
        return true;
    }
};

TEST(PayloadDecoder, LargePayloadInChunksIsReadStraightIntoTheDestination) {
    const std::size_t size = 3 * kPayloadChunkSize + 12345;
    const std::string payload = pattern(size, 7);
    std::string s = frame(5, "first") + payload_begin(7, "h", size);
    for (std::size_t off = 0; off < size; off += kPayloadChunkSize)
        s += chunk(std::string_view(payload).substr(off, kPayloadChunkSize));
    s += frame(6, "last");
    for (std::size_t max_read : {std::size_t{1000}, std::size_t{65536}, std::size_t{1} << 30}) {
        PayloadDecoder d(PayloadDecoder::Options{.read_size = 4096});
        FakeSocket sock{s, max_read};
        Transcript t;
        t.use_destination = true;
        do {
            ASSERT_TRUE(t.drain(d));
        } while (sock.read_into(d));
        EXPECT_EQ(t.text, fmt::format("frame 5 'first'\nbegin 7 'h' {}\nbytes '{}'\nend\nframe 6 'last'\n", size, payload));
        // All but what came in the same read as a chunk header skipped the buffer.
        EXPECT_GT(sock.direct_bytes, size / 2) << max_read;
    }
}

TEST(PayloadDecoder, PayloadWithoutADestinationComesInPiecesOfAtMostAChunk) {
    const std::size_t size = 2 * kPayloadChunkSize + 1;
    const std::string payload = pattern(size, 3);
    std::string s = payload_begin(7, "h", size);
    for (std::size_t off = 0; off < size; off += kPayloadChunkSize)
        s += chunk(std::string_view(payload).substr(off, kPayloadChunkSize));
    PayloadDecoder d;
    d.feed(s);
    std::string got;
    std::size_t largest = 0;
    for (;;) {
        auto ev = d.next();
        ASSERT_TRUE(ev) << ev.error().message();
        if (ev->kind == Kind::payload_bytes) {
            got += ev->body;
            largest = std::max(largest, ev->body.size());
        }
        if (ev->kind == Kind::payload_end || ev->kind == Kind::need_more) break;
    }
    EXPECT_EQ(got, payload);
    EXPECT_LE(largest, kPayloadChunkSize);
}

Error error_of(std::string_view stream, bool dest_too_small = false) {
    PayloadDecoder d(PayloadDecoder::Options{.max_frame_body = 1024});
    d.feed(stream);
    for (;;) {
        auto ev = d.next();
        if (!ev) return std::move(ev).error();
        if (ev->kind == Kind::payload_begin && dest_too_small) {
            static std::vector<std::byte> small(1);
            if (auto st = d.set_destination(small); !st) return std::move(st).error();
        }
        if (ev->kind == Kind::need_more) return Error(Errc::internal, "no error");
    }
}

TEST(PayloadDecoder, MalformedStreamsAreErrorsNotCrashes) {
    EXPECT_EQ(error_of(chunk("x")).message(), "payload_chunk outside a payload");
    EXPECT_EQ(error_of(payload_begin(7, "", 4) + chunk("")).code(), Errc::protocol);           // an empty chunk
    EXPECT_EQ(error_of(payload_begin(7, "", 4) + chunk("abcde")).code(), Errc::protocol);      // more than announced
    const std::string big = pattern(kPayloadChunkSize + 1, 1);
    EXPECT_EQ(error_of(payload_begin(7, "", big.size()) + chunk(big)).code(), Errc::protocol);  // an over-long chunk
    auto inside = error_of(payload_begin(7, "", 4) + chunk("ab") + frame(5, "x"));
    EXPECT_EQ(inside.code(), Errc::protocol);
    EXPECT_NE(inside.message().find("inside a payload"), std::string::npos) << inside.message();
    EXPECT_EQ(error_of(payload_begin(65, "", 4)).message(), "payload header of reserved type 65");
    EXPECT_EQ(error_of(frame(kPayloadBeginType, "garbage")).code(), Errc::protocol);  // an undecodable payload_begin
    EXPECT_EQ(error_of(payload_begin(7, "", 4), true).code(), Errc::invalid_argument);
    std::string bad_magic = frame(5, "x");
    bad_magic[0] = 'X';
    EXPECT_EQ(error_of(bad_magic).code(), Errc::protocol);
    // Refused from its header alone: the body is never awaited nor buffered.
    std::string header_only;
    append_frame_header(header_only, 5, 1025);
    auto over = error_of(header_only);
    EXPECT_EQ(over.code(), Errc::too_large);
    EXPECT_EQ(over.message(), "frame of type 5 with a body of 1025 bytes exceeds the limit of 1024");
}

TEST(PayloadDecoder, WithoutPayloadsTheirTypesArePlainFrames) {
    PayloadDecoder d(PayloadDecoder::Options{.payloads = false});
    d.feed(frame(kPayloadChunkType, "x") + frame(kPayloadBeginType, "y"));
    auto a = d.next();
    ASSERT_TRUE(a);
    EXPECT_EQ(a->kind, Kind::frame);
    EXPECT_EQ(a->type, kPayloadChunkType);
    auto b = d.next();
    ASSERT_TRUE(b);
    EXPECT_EQ(b->kind, Kind::frame);
    EXPECT_EQ(b->body, "y");
}

// ---- FrameReader over a socket ----------------------------------------------------

struct Pair {
    sys::UniqueFd reader, writer;
    Pair() {
        int fds[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        reader.reset(fds[0]);
        writer.reset(fds[1]);
    }
    void write(std::string_view s) const { ASSERT_TRUE(sys::send_all(writer.get(), s, "test write")); }
};

FrameReader::Options with_payloads() { return {.max_payload = std::uint64_t{1} << 30}; }

std::string describe(const Received& m) {
    if (m.payload)
        return fmt::format("payload {} '{}' '{}'\n", m.type, m.body,
                           std::string_view(reinterpret_cast<const char*>(m.payload->data()), m.payload->size()));
    return fmt::format("frame {} '{}'\n", m.type, m.body);
}

TEST(FrameReader, StreamSplitAtEveryByteBoundaryAcrossReadsAndTimeouts) {
    const std::string s = sample_stream();
    const std::string want = "frame 5 'hello'\npayload 7 'hdr' 'abcdefghij'\nframe 6 'after'\npayload 8 '' ''\nframe 9 ''\n";
    for (std::size_t k = 0; k <= s.size(); ++k) {
        Pair p;
        FrameReader r(p.reader.get(), "the test peer", with_payloads());
        std::string got;
        p.write(std::string_view(s).substr(0, k));
        for (;;) {  // what the first part completes, then a timeout that keeps the rest
            auto m = r.next(std::chrono::steady_clock::now());
            if (!m) {
                ASSERT_EQ(m.error().code(), Errc::timeout) << m.error().message();
                break;
            }
            got += describe(*m);
        }
        p.write(std::string_view(s).substr(k));
        while (got.size() < want.size()) {
            auto m = r.next(2s);
            ASSERT_TRUE(m) << "split at " << k << ": " << m.error().message();
            got += describe(*m);
        }
        EXPECT_EQ(got, want) << "split at " << k;
    }
}

TEST(FrameReader, DeadlinePassingIsATimeoutNamingTheConnectionAndLosesNothing) {
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", {});
    const std::string f = frame(5, "late");
    p.write(std::string_view(f).substr(0, 5));
    const auto t0 = std::chrono::steady_clock::now();
    auto m = r.next(60ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code(), Errc::timeout);
    EXPECT_EQ(m.error().message(), "no answer from the test peer within 60 ms");
    EXPECT_GE(waited, 60ms);
    EXPECT_LT(waited, 2s);
    p.write(std::string_view(f).substr(5));
    auto late = r.next(2s);
    ASSERT_TRUE(late) << late.error().message();
    EXPECT_EQ(late->body, "late");
}

TEST(FrameReader, PeerClosingMidFrameOrMidPayloadIsClosedAndSaysSo) {
    {
        Pair p;
        FrameReader r(p.reader.get(), "the test peer", {});
        p.write(frame(5, "whole") + frame(6, "cut short").substr(0, 11));
        p.writer.reset();
        auto whole = r.next(2s);
        ASSERT_TRUE(whole);
        EXPECT_EQ(whole->body, "whole");
        auto cut = r.next(2s);
        ASSERT_FALSE(cut);
        EXPECT_EQ(cut.error().code(), Errc::closed);
        EXPECT_EQ(cut.error().message(), "the test peer closed the connection in the middle of a frame");
        EXPECT_TRUE(r.peer_closed());
    }
    {
        Pair p;
        FrameReader r(p.reader.get(), "the test peer", with_payloads());
        p.write(payload_begin(7, "h", 10) + chunk("abc"));
        p.writer.reset();
        auto cut = r.next(2s);
        ASSERT_FALSE(cut);
        EXPECT_EQ(cut.error().message(), "the test peer closed the connection in the middle of a payload");
    }
    {
        Pair p;
        FrameReader r(p.reader.get(), "the test peer", {});
        p.writer.reset();
        auto clean = r.next(2s);
        ASSERT_FALSE(clean);
        EXPECT_EQ(clean.error().code(), Errc::closed);
        EXPECT_EQ(clean.error().message(), "the test peer closed the connection");
    }
}

TEST(FrameReader, OverLongFramesAndPayloadsAreRefusedBeforeTheyArrive) {
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", {.max_frame_body = 1024, .max_payload = 100});
    std::string header_only;
    append_frame_header(header_only, 5, 1025);
    p.write(header_only);  // the body never comes: the header is enough to refuse
    auto m = r.next(2s);
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code(), Errc::too_large);
    EXPECT_EQ(m.error().message(), "from the test peer: frame of type 5 with a body of 1025 bytes exceeds the limit of 1024");

    Pair q;
    FrameReader rq(q.reader.get(), "the test peer", {.max_frame_body = 1024, .max_payload = 100});
    q.write(payload_begin(7, "", 101));
    auto pm = rq.next(2s);
    ASSERT_FALSE(pm);
    EXPECT_EQ(pm.error().code(), Errc::too_large);
    EXPECT_EQ(pm.error().message(), "from the test peer: a payload of 101 bytes exceeds the limit of 100");

    Pair n;  // a protocol without payloads: payload messages are not read as such
    FrameReader rn(n.reader.get(), "the test peer", {});
    n.write(chunk("x"));
    auto plain = rn.next(2s);
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->type, kPayloadChunkType);
    EXPECT_FALSE(plain->payload);
}

TEST(FrameReader, LargePayloadWrittenInPiecesArrivesWhole) {
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", with_payloads());
    const std::size_t size = 5 * kPayloadChunkSize + 777;
    const std::string payload = pattern(size, 11);
    std::string s = payload_begin(7, "big", size);
    for (std::size_t off = 0; off < size; off += kPayloadChunkSize)
        s += chunk(std::string_view(payload).substr(off, kPayloadChunkSize));
    s += frame(5, "then");
    std::thread w([&] {
        // Uneven writes, so reads end anywhere: in headers, chunks and frames.
        std::string_view rest(s);
        std::size_t piece = 1;
        while (!rest.empty()) {
            const std::size_t n = std::min(rest.size(), piece);
            EXPECT_TRUE(sys::send_all(p.writer.get(), rest.substr(0, n), "test write"));
            rest.remove_prefix(n);
            piece = piece * 7 % 300007 + 1;
        }
    });
    auto m = r.next(10s);
    auto then = r.next(10s);
    w.join();
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->type, 7);
    EXPECT_EQ(m->body, "big");
    ASSERT_TRUE(m->payload);
    ASSERT_EQ(m->payload->size(), size);
    EXPECT_EQ(std::memcmp(m->payload->data(), payload.data(), size), 0);
    ASSERT_TRUE(then) << then.error().message();
    EXPECT_EQ(then->body, "then");
}

TEST(FrameReader, NextBufferedTakesOnlyWhatHasArrived) {
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", {});
    p.write(frame(1, "a") + frame(2, "b") + frame(3, "c").substr(0, 4));
    auto a = r.next(2s);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->body, "a");
    auto b = r.next_buffered();
    ASSERT_TRUE(b && *b);
    EXPECT_EQ((*b)->body, "b");
    auto c = r.next_buffered();
    ASSERT_TRUE(c);
    EXPECT_FALSE(*c);
}

TEST(FrameReader, ExactReadsLeaveWhatFollowsInTheSocket) {
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", {.exact = true});
    const std::string second = frame(2, "for whoever reads next");
    p.write(frame(1, "handshake") + second);
    auto m = r.next(2s);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body, "handshake");
    std::string rest(second.size() + 10, '\0');
    const ssize_t n = ::recv(p.reader.get(), rest.data(), rest.size(), MSG_DONTWAIT);
    ASSERT_EQ(n, static_cast<ssize_t>(second.size()));
    rest.resize(static_cast<std::size_t>(n));
    EXPECT_EQ(rest, second);
}

TEST(FrameReader, DescriptorsArriveWithTheirFrame) {
    Pair p;
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    sys::UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    FrameReader r(p.reader.get(), "the test peer", {.receive_fds = true});
    ASSERT_TRUE(sys::send_with_fd(p.writer.get(), frame(4, "with a pipe"), wr.get(), "test"));
    auto m = r.next(2s);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->body, "with a pipe");
    sys::UniqueFd got = r.take_fd();
    ASSERT_TRUE(got);
    ASSERT_EQ(::write(got.get(), "x", 1), 1);
    char c = 0;
    ASSERT_EQ(::read(rd.get(), &c, 1), 1);
    EXPECT_EQ(c, 'x');
}

void on_signal(int /*unused*/) {}

TEST(FrameReader, SignalsDoNotEndTheWait) {
    // A handler without SA_RESTART: poll and reads fail with EINTR while signals land.
    // It stays installed: one last signal may still be pending after the test.
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigemptyset(&sa.sa_mask);
    ASSERT_EQ(::sigaction(SIGUSR1, &sa, nullptr), 0);
    Pair p;
    FrameReader r(p.reader.get(), "the test peer", {});
    const pthread_t me = ::pthread_self();
    std::atomic<bool> stop{false};
    std::thread sig([&] {
        while (!stop) {
            ::pthread_kill(me, SIGUSR1);
            std::this_thread::sleep_for(2ms);
        }
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto nothing = r.next(100ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    std::thread w([&] {
        std::this_thread::sleep_for(50ms);
        p.write(frame(5, "despite the signals"));
    });
    auto m = r.next(5s);
    stop = true;
    sig.join();
    w.join();
    ASSERT_FALSE(nothing);
    EXPECT_EQ(nothing.error().code(), Errc::timeout) << nothing.error().message();
    EXPECT_GE(waited, 100ms);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ(m->body, "despite the signals");
}

}  // namespace
}  // namespace dragon::wire
