// The front end of `dragon-orchestrate run`: starts the run's agents, has
// node 0 start the head program, forwards its stdin and output, and tears the
// run down when the head ends or on Ctrl-C.
#pragma once

#include <string>
#include <vector>

#include "dragon/common/config.hpp"

namespace dragon::cli {

struct RunOptions {
    std::vector<std::string> argv;  // the head program and its arguments
    Config config;
    std::string launcher = "local";
    bool forward_stdin = true;
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
