// The life of a ProcessGroup as a state machine: which members run, which
// exited how, when to restart a member, when the group has failed and the
// rest must be stopped, when it is done. Pure bookkeeping: the agent executes
// what it decides. docs/procgroup.md has the state tables.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"

namespace dragon::procgroup {

/// Group states:
///   running   -> stopping   (restart=false: a member failed; or stop() was asked)
///   running   -> succeeded  (every member exited 0)
///   running   -> failed     (restart=true: a member failed more than max_restarts times, and the rest ended)
///   stopping  -> failed | stopped  (the last running member ended)
enum class GroupState { running, stopping, succeeded, failed, stopped };

/// Member states: pending -> running -> exited; with restart, a failed member
/// is pending again until its replacement runs (under a new puid).
enum class MemberState { pending, running, exited };

std::string_view to_string(GroupState s);

struct RestartPolicy {
    bool restart = false;           // false: MPI-like, one failure fails the group
    std::uint32_t max_restarts = 0; // with restart: how many replacements in all, before the group fails
};

/// A member's life so far. `history` lists every puid the rank has had, oldest first.
struct Member {
    std::uint32_t rank = 0;
    MemberState state = MemberState::pending;
    Puid puid = 0;
    std::int32_t pid = 0;
    msg::ExitStatus status;  // of the last exit
    std::vector<Puid> history;
};

/// What went wrong first, for the group's error message and exit code.
struct Failure {
    std::uint32_t rank = 0;
    Puid puid = 0;
    msg::ExitStatus status;  // exit_code/signal of that member
    std::string error;       // set when the member could not be started at all (or see kind)
    int sys_errno = 0;       // and the errno behind that, if any
    msg::FailKind kind = msg::FailKind::exited;
};

/// What the executor must do after an event.
struct Action {
    enum Kind { none, respawn, stop_all, done } kind = none;
    std::uint32_t rank = 0;  // for respawn
};

class GroupTracker {
public:
    GroupTracker(std::uint64_t group_id, std::uint32_t nranks, RestartPolicy policy);

    /// Rank `rank` now runs as `puid`/`pid`.
    void started(std::uint32_t rank, Puid puid, std::int32_t pid);
    /// Rank `rank` could not be started; the group fails (and the rest must stop).
    Action start_failed(std::uint32_t rank, std::string error, int sys_errno = 0,
                        msg::FailKind kind = msg::FailKind::not_started);
    /// The process `puid` ended. Unknown puids (not current members) are ignored.
    Action exited(Puid puid, msg::ExitStatus status);
    /// The same, with the rank known (no search). A non-empty `error` makes
    /// the exit a failure whatever its status (the runtime's reason, e.g. a
    /// rank that left PMI without finalize).
    Action exited(std::uint32_t rank, Puid puid, msg::ExitStatus status, std::string error = {});
    /// Rank `rank` asked to abort the whole job with `exit_code` (MPI_Abort):
    /// the group fails with it (unless it failed already) and the rest stop,
    /// restart policy or not.
    Action aborted(std::uint32_t rank, int exit_code, std::string message);
    /// Rank `rank` is gone with its node: a failure (never restarted) that
    /// stops the group; `error` says which node and why.
    Action lost(std::uint32_t rank, std::string error);
    /// Asked to stop from outside (signal, front end): Action::stop_all or done.
    Action stop();

    [[nodiscard]] std::uint64_t id() const { return id_; }
    [[nodiscard]] GroupState state() const { return state_; }
    [[nodiscard]] bool finished() const;
    [[nodiscard]] const std::vector<Member>& members() const { return members_; }
    [[nodiscard]] const std::optional<Failure>& first_failure() const { return failure_; }
    [[nodiscard]] std::uint32_t restarts() const { return restarts_; }
    [[nodiscard]] std::uint32_t running() const { return running_; }
    /// The member whose current puid is `puid`, or null.
    [[nodiscard]] const Member* find(Puid puid) const;

private:
    Action after_exit();
    Action exit_member(Member& m, msg::ExitStatus status, std::string error = {});
    std::uint64_t id_;
    RestartPolicy policy_;
    GroupState state_ = GroupState::running;
    std::vector<Member> members_;
    std::optional<Failure> failure_;
    std::uint32_t restarts_ = 0;
    std::uint32_t running_ = 0;
};

}  // namespace dragon::procgroup
