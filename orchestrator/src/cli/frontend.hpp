// The front end of `dragon-orchestrate run`: starts the run's agents, has
// node 0 start the head program, forwards its stdin and output, and tears the
// run down when the head ends or on Ctrl-C.
#pragma once

#include <string>
#include <vector>

#include "dragon/common/config.hpp"

namespace dragon::cli {

/// One program of the run's group and how many copies of it (ranks follow
/// in the order given: `-n 2 a : -n 3 b` is ranks 0-1 a, 2-4 b).
struct ProgramEntry {
    std::vector<std::string> argv;  // the program and its arguments
    std::uint32_t nprocs = 1;
};

struct RunOptions {
    std::vector<ProgramEntry> programs;
    Config config;
    std::string launcher;              // empty: slurm inside an allocation, else local
    std::uint32_t nodes = 0;           // virtual: agents on this machine (0: 1); slurm: nodes used (0: all)
    std::vector<std::string> hosts;    // --launcher virtual: each node's listen address
    std::vector<std::string> srun_args;  // --launcher slurm: extra srun arguments
    std::string control_address;       // --launcher slurm: where the front end listens for agents
    bool split_cpus = false;           // --launcher virtual: each node on its own share of the cpus
    bool forward_stdin = true;      // to rank 0
    std::string input_pattern;      // non-empty: every rank's stdin from this file pattern
    std::string output_pattern;     // non-empty: every rank's stdout to this file pattern
    std::string error_pattern;      // non-empty: every rank's stderr to this file pattern
    std::string placement = "block";
    std::string binding = "none";
    std::uint32_t cpus_per_proc = 1;
    bool allow_oversubscribe = true;
    bool restart = false;
    std::uint32_t max_restarts = 0;
    std::string pmi = "none";  // none | simple | cray (docs/pmi.md)
    bool pmi_port = false;     // PMI_PORT + PMI_ID instead of a PMI_FD socket
    bool display_map = false;       // print the placement before starting
    bool dry_run = false;           // print the placement, start nothing
    bool label = false;             // prefix output lines with [rank]
    bool label_node = false;        // prefix output lines with [node:puid]
    // `serve`: no head program; the runtime stays up until our stdin closes
    // (or a signal), for clients that connect on their own (the Python
    // package's embedded runtime). One JSON line on ready_fd says where.
    bool serve = false;
    int ready_fd = 1;

    [[nodiscard]] std::uint32_t total_ranks() const {
        std::uint32_t n = 0;
        for (const auto& p : programs) n += p.nprocs;
        return n;
    }
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
