// Launch back ends: how the agents of a run get started. Chosen by name
// (--launcher): `local` starts one agent as a child on this machine;
// `virtual` starts N agents here, each on its own loopback address. The
// `slurm` back end plugs in here.
#pragma once

#include <sys/types.h>

#include <chrono>
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
    /// How long the front end waits for `pid` to exit after node 0 is done
    /// before it kills it (srun needs longer than a forked agent).
    std::chrono::milliseconds exit_grace{2000};
};

class Launcher {
public:
    virtual ~Launcher() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    /// Starts every agent of the run; does not wait for them to say hello.
    virtual Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) = 0;
};

struct LaunchOptions {
    std::string name;                 // local | virtual | slurm; empty: slurm inside an allocation, else local
    std::string agent_path;           // empty: fork the agent; else exec this program
    std::uint32_t nodes = 0;          // virtual: how many agents (0: 1); slurm: how many nodes (0: all)
    std::vector<std::string> hosts;   // virtual: each node's (loopback) listen address
    std::vector<std::string> srun_args;  // slurm: extra arguments for srun
    std::string control_address;      // slurm: where the front end listens for the agents (empty: this host's)
    bool split_cpus = false;          // virtual: node k runs on its own share of this process's cpus
};

/// The launcher chosen when --launcher is not given: `slurm` when
/// SLURM_JOB_ID is set and srun is on PATH, else `local`.
std::string default_launcher_name();

/// The launcher `o.name` with its options checked; Errc::invalid_argument
/// naming the problem (an unknown launcher lists the known ones).
Result<std::unique_ptr<Launcher>> make_launcher(const LaunchOptions& o);

/// $DRAGON_AGENT if set (run that agent program), else empty (fork the agent).
std::string default_agent_path();

}  // namespace dragon::cli
