// What a rank (or a peer node) can make a PMI server parse: PMI-1 lines,
// PMI-2 frames and fence batches, through a JobServer as the agent runs it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dragon/pmi/server.hpp"
#include "dragon/pmi/wire.hpp"

namespace {
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
