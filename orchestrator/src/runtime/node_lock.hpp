// The lock that marks a node's part of a run as alive, and the removal of a
// run's shared memory. See docs/runtime.md ("Leftovers").
#pragma once

#include <string>
#include <vector>

#include "dragon/common/ids.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::rt {

/// An flock held on /dev/shm/dragon-<run>-n<node>-lock for the life of the
/// agent. The kernel drops the lock when the agent dies, however it dies, so a
/// run whose lock can be taken is dead and its segments may be removed.
class NodeLock {
public:
    /// Creates and locks the file (as lock.tmp, renamed once locked and
    /// written, so no one ever sees an unlocked lock file of a live agent).
    static Result<NodeLock> acquire(const RunId& run, std::uint32_t node);

    NodeLock(NodeLock&&) noexcept = default;
    NodeLock& operator=(NodeLock&&) noexcept = default;
    ~NodeLock() = default;  // the lock goes with the fd; unlinking is explicit

    /// Unlinks every /dev/shm entry of this run and node (a directory with its
    /// contents), the lock file last. Returns how many entries were removed.
    Result<std::size_t> remove_node_segments();

private:
    NodeLock(RunId run, std::uint32_t node, sys::UniqueFd fd) : run_(std::move(run)), node_(node), fd_(std::move(fd)) {}
    RunId run_;
    std::uint32_t node_;
    sys::UniqueFd fd_;
};

struct CleanupReport {
    std::vector<std::string> removed;     // /dev/shm entry names removed (or that would be, dry run)
    std::vector<std::string> live_runs;   // "<run>-n<node>" groups left alone because their agent lives
};

/// Finds /dev/shm entries of Dragon runs owned by this user whose agent is
/// dead (its lock can be taken, or it has no lock file) and removes them.
/// With only_run set, looks at that run alone. Never touches a live run.
Result<CleanupReport> cleanup_stale(bool dry_run, const RunId* only_run = nullptr);

}  // namespace dragon::rt
