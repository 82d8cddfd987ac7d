// What starts an agent: its options and its body. All the front end (and
// dragon-agent's main) needs of the agent, without its event loop, Asio or
// PMIx headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dragon/common/config.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/transport/run_secret.hpp"

namespace dragon::agent {

struct AgentOptions {
    explicit AgentOptions(RunId r) : run(std::move(r)) {}
    RunId run;
    std::uint32_t node_id = 0;
    int control_fd = -1;  // node 0: connected stream socket to the front end (owned by the agent)
    Config config;
    // Several nodes: every agent has a listener and the run's secret; node k
    // > 0 joins by dialling node 0.
    std::uint32_t nnodes = 1;
    std::string address;       // this node's listen address
    int listen_fd = -1;        // a listening socket bound by the launcher (else the agent binds address:0)
    std::string head_address;  // node k > 0: where node 0 listens
    std::uint16_t head_port = 0;
    std::optional<transport::RunSecret> secret;
    std::chrono::seconds join_timeout{20};  // all nodes linked within this, or the run fails
    std::uint32_t cpu_limit = 0;  // a batch system granted this many cpus here (0: all the topology allows)
    std::vector<int> cpus;        // run on these cpus only, and so do its processes (empty: as started)
};

/// Sets up the agent's logging, creates it and runs it to the end; returns
/// the process exit code. The body of dragon-agent, and of the front end's
/// forked children under the local and virtual launchers.
int agent_main(AgentOptions opts);

}  // namespace dragon::agent
