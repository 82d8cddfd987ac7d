// `dragon-orchestrate run flow.yaml`: validate a workflow before anything
// starts, draw or print it, then run dragon-workflow as the head process.
#pragma once

#include <string>

#include "frontend.hpp"

namespace dragon::cli {

struct WorkflowFlags {
    bool resume = false;
    bool fail_fast = false;
    std::string dag_path;    // .dot or .svg
    std::string trace_path;  // Chrome trace JSON
    std::string progress = "auto";  // auto | tty | plain | none
};

/// True for a lone program word that names a workflow file (*.yaml, *.yml).
bool is_workflow_file(const std::string& word);

/// Loads and expands `path` (exit 2 with file:line:column on any error,
/// nothing started); writes the DAG picture; with opts.dry_run prints the
/// plan and stops; else runs the runtime with dragon-workflow as its head.
int run_workflow(const std::string& path, RunOptions opts, const WorkflowFlags& flags);

}  // namespace dragon::cli
