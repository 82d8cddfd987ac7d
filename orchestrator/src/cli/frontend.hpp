// The front end of `dragon-orchestrate run`: starts the run's agents, has
// node 0 start the head program, forwards its stdin and output, and tears the
// run down when the head ends or on Ctrl-C.
#pragma once

#include <string>
#include <vector>

#include "dragon/common/config.hpp"

namespace dragon::cli {

struct RunOptions {
    std::vector<std::string> argv;  // the program and its arguments
    Config config;
    std::string launcher = "local";
    bool forward_stdin = true;      // to rank 0
    std::uint32_t nprocs = 1;       // copies of the program, as one group
    std::string placement = "block";
    std::string binding = "none";
    std::uint32_t cpus_per_proc = 1;
    bool allow_oversubscribe = true;
    bool restart = false;
    std::uint32_t max_restarts = 0;
    bool display_map = false;       // print the placement before starting
    bool dry_run = false;           // print the placement, start nothing
    bool label = false;             // prefix output lines with [rank]
};

// Exit codes of dragon-orchestrate other than the head's own (docs/runtime.md).
inline constexpr int kExitUsage = 2;          // bad command line or configuration
inline constexpr int kExitNotExecutable = 126;
inline constexpr int kExitNotFound = 127;
inline constexpr int kExitRuntimeFailure = 70;  // the runtime itself failed (agent died, protocol error)

/// Runs the head to completion; returns dragon-orchestrate's exit code: the
/// head's (128 + signal if a signal ended it), or one of the codes above.
int run_program(RunOptions opts);

}  // namespace dragon::cli
