// The workflow runner: schedules a Dag's instances as ProcessGroups through
// the local agent (it runs as the head process of a runtime that
// `dragon-orchestrate run flow.yaml` started), with retries, timeouts, a
// resume state, a progress view, a summary and a Chrome trace.
//
// Instance states (one table, docs/workflows.md "States"):
//   waiting  -> ready      every dependency done
//   ready    -> running    cpus free (or nothing else runs)
//   running  -> done       the group succeeded
//   running  -> ready      it failed (or timed out) and attempts remain
//   running  -> failed     it failed and no attempt remains
//   waiting  -> skipped    a dependency failed or was skipped
//   ready/waiting -> cancelled   --fail-fast after a failure, or an interrupt
//   (done earlier: with --resume, an instance the state file lists as done)
#pragma once

#include <string>

#include "dragon/orchestrator/client.hpp"
#include "dragon/workflows/workflow.hpp"

namespace dragon::workflows {

enum class Progress { none, plain, tty };

struct RunnerOptions {
    bool resume = false;
    bool fail_fast = false;
    Progress progress = Progress::plain;
    std::string trace_path;   // non-empty: write a Chrome trace here at the end
    std::string python = "/usr/bin/python3";
    std::string python_path;  // prepended to PYTHONPATH of python steps (the dragon package's folder)
};

/// Where a workflow keeps its state and default logs: <dir>/<file stem>.dragon/.
std::string state_dir(const Workflow& wf);

/// Runs every instance not already done, blocking until all ended. Returns the
/// exit code: 0 all done, 1 something failed, skipped or was cancelled, 130
/// interrupted. Errors only for what stops the runner itself (the agent lost,
/// the state folder not writable).
Result<int> run(client::Session& session, const Workflow& wf, const Dag& dag, const RunnerOptions& opts);

}  // namespace dragon::workflows
