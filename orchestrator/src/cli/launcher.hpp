// Launch back ends: how the agents of a run get started. Chosen by name
// (--launcher); `local` starts one agent as a child on this machine. The
// `virtual` and `slurm` back ends plug in here.
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
/// the front end's end of its control connection.
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

/// The launcher called `name`; Errc::invalid_argument naming the known ones otherwise.
Result<std::unique_ptr<Launcher>> make_launcher(std::string_view name, std::string agent_path);

/// $DRAGON_AGENT if set (run that agent program), else empty (fork the agent).
std::string default_agent_path();

}  // namespace dragon::cli
