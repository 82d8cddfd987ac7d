// Launch back ends: how the agents of a run get started. Chosen by name
// (--launcher): `local` starts one agent as a child on this machine;
// `virtual` starts N agents here, each on its own loopback address. The
// `slurm` back end plugs in here.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/config.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::cli {

/// A started agent: its node id, its pid when it is our child (else 0), and
/// the front end's end of its control connection (node 0 only: the other
/// nodes are reached through node 0).
struct AgentHandle {
    std::uint32_t node_id = 0;
    pid_t pid = 0;
    sys::UniqueFd control;
};

class Launcher {
public:
    virtual ~Launcher() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    /// Starts every agent of the run; does not wait for them to say hello.
    virtual Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) = 0;
};

struct LaunchOptions {
    std::string name = "local";      // local | virtual (slurm: a later back end)
    std::string agent_path;           // empty: fork the agent; else exec this program
    std::uint32_t nodes = 1;          // virtual: how many agents
    std::vector<std::string> hosts;   // virtual: each node's (loopback) listen address
};

/// The launcher `o.name` with its options checked; Errc::invalid_argument
/// naming the problem (an unknown launcher lists the known ones).
Result<std::unique_ptr<Launcher>> make_launcher(const LaunchOptions& o);

/// $DRAGON_AGENT if set (run that agent program), else empty (fork the agent).
std::string default_agent_path();

}  // namespace dragon::cli
