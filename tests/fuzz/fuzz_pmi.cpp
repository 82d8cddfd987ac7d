// What a rank, a peer node or a PMI server can make Dragon parse: PMI-1 lines, PMI-2 frames, fence batches.
// The wire codec (dragon::pmi_wire) is read both as the agent reads requests
// and as the shim reads answers, and what it parses must format back to
// bytes it parses the same; then the bytes go through a JobServer as the
// agent runs it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dragon/pmi/server.hpp"
#include "dragon/pmi/wire.hpp"
#include "dragon/pmi_wire/codec.hpp"

namespace {

namespace w = dragon::pmi_wire;

// A broken round trip is a codec bug: make it a crash the fuzzer reports.
void require(bool ok) {
    if (!ok) __builtin_trap();
}

bool v1_sayable(const w::Message& m) {
    if (!w::v1_value_ok(m.cmd)) return false;
    for (const auto& [k, v] : m.args)
        if (!w::v1_value_ok(k) || k.find('=') != std::string::npos || !w::v1_value_ok(v)) return false;
    return true;
}

void codec(std::string_view in, w::Sender from) {
    if (auto m = w::parse_v1(in, from); m && v1_sayable(*m)) {
        auto back = w::parse_v1(w::format_v1(*m), from);
        require(back && *back == *m);
    }
    if (auto m = w::parse_v2(in, from)) {
        // A request's fields are always sayable; an answer's may not be (an empty key).
        auto frame = w::format_v2(*m);
        require(frame || from == w::Sender::server);
        if (frame) {
            auto len = w::parse_v2_length(std::string_view(*frame).substr(0, w::kLengthDigits), w::kMaxReplyFrame);
            require(len && *len == frame->size() - w::kLengthDigits);
            auto back = w::parse_v2(std::string_view(*frame).substr(w::kLengthDigits), from);
            require(back && *back == *m);
        }
    }
    (void)w::parse_v2_length(in.substr(0, w::kLengthDigits), w::kMaxFrame);
    // The stream as one reader sees it, in pieces of a size the first byte
    // chooses, switched to PMI-2 after the first message.
    w::Decoder d(from);
    const std::size_t step = in.empty() ? 1 : 1 + static_cast<unsigned char>(in[0]) % 64;
    std::size_t got = 0;
    for (std::size_t i = 0; i < in.size(); i += step) {
        d.feed(in.substr(i, step));
        for (;;) {
            auto next = d.next();
            if (!next || !*next) break;
            if (++got == 1) d.use_v2();
        }
    }
}
struct NullHost : dragon::pmi::JobHost {
    std::size_t bytes = 0;
    void send(dragon::pmi::ConnId, std::string b) override { bytes += b.size(); }
    void close(dragon::pmi::ConnId) override {}
    void fence_out(std::uint64_t, std::string b) override { bytes += b.size(); }
    void abort(std::uint32_t, int, std::string) override {}
    void rank_error(std::optional<std::uint32_t>, std::string, bool) override {}
};
}  // namespace

// Input: chunks separated by 0xFF bytes; chunk k goes to connection k % 3
// (rank 0's PMI_FD socket, a PMI_PORT connection, rank 1's socket), every
// fourth chunk instead to remote_fence from node 1, as a peer's batch.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    codec(in, w::Sender::client);
    codec(in, w::Sender::server);
    (void)dragon::pmi::parse_v1(in);
    (void)dragon::pmi::parse_v2(in);
    (void)dragon::pmi::expand_process_mapping(in, 64);

    NullHost host;
    dragon::pmi::JobLayout layout;
    layout.job_id = 1;
    layout.kvsname = "kvs_1";
    layout.node = 0;
    layout.rank_node = {0, 0, 0, 1};
    dragon::pmi::JobServer server(layout, host);
    const dragon::pmi::ConnId conns[3] = {server.connect(0), server.connect(std::nullopt), server.connect(1)};
    std::size_t start = 0, k = 0;
    while (start <= in.size()) {
        auto end = in.find('\xff', start);
        if (end == std::string_view::npos) end = in.size();
        const auto chunk = in.substr(start, end - start);
        if (k % 4 == 3) (void)server.remote_fence(1, server.fences_done() + (chunk.size() & 1), chunk);
        else server.received(conns[k % 3], chunk);
        ++k;
        start = end + 1;
    }
    (void)server.rank_exited(0);
    (void)server.rank_exited(2);
    server.disconnected(conns[1]);
    return 0;
}
