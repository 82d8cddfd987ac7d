// A stranger at an agent's transport port: dials it with a secret of its own
// (not the run's) and prints how the agent answered. Used by the system
// tests to show that a peer that cannot prove the run's secret is refused.
//   peer_probe ADDRESS PORT CLAIMED_NODE_ID
#include <cstdio>
#include <cstdlib>

#include <asio.hpp>

#include "dragon/transport/tcp.hpp"

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: peer_probe ADDRESS PORT CLAIMED_NODE_ID\n");
        return 2;
    }
    asio::io_context io;
    auto secret = dragon::transport::RunSecret::generate();
    if (!secret) return 2;
    int rc = 1;
    dragon::transport::tcp::connect(io, argv[1], static_cast<std::uint16_t>(std::atoi(argv[2])), *secret,
                                    static_cast<std::uint32_t>(std::atoi(argv[3])), 0,
                                    [&](dragon::Result<std::shared_ptr<dragon::transport::tcp::Peer>> r) {
                                        if (r) {
                                            std::printf("accepted\n");
                                            rc = 0;
                                        } else {
                                            std::printf("refused: %s\n", r.error().message().c_str());
                                        }
                                    });
    io.run();
    return rc;
}
