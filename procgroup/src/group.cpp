// GroupTracker: the ProcessGroup state machine.
#include "dragon/procgroup/group.hpp"

namespace dragon::procgroup {

std::string_view to_string(GroupState s) {
    switch (s) {
        case GroupState::running: return "running";
        case GroupState::stopping: return "stopping";
        case GroupState::succeeded: return "succeeded";
        case GroupState::failed: return "failed";
        case GroupState::stopped: return "stopped";
    }
    return "?";
}

GroupTracker::GroupTracker(std::uint64_t group_id, std::uint32_t nranks, RestartPolicy policy)
    : id_(group_id), policy_(policy), members_(nranks) {
    for (std::uint32_t r = 0; r < nranks; ++r) members_[r].rank = r;
}

void GroupTracker::started(std::uint32_t rank, Puid puid, std::int32_t pid) {
    if (rank >= members_.size()) return;
    auto& m = members_[rank];
    if (m.state != MemberState::running) ++running_;
    m.state = MemberState::running;
    m.puid = puid;
    m.pid = pid;
    m.history.push_back(puid);
}

Action GroupTracker::start_failed(std::uint32_t rank, std::string error, int sys_errno, msg::FailKind kind) {
    if (rank < members_.size()) members_[rank].state = MemberState::exited;
    if (!failure_) failure_ = Failure{rank, 0, {}, std::move(error), sys_errno, kind};
    if (state_ == GroupState::running) state_ = GroupState::stopping;
    return after_exit();
}

const Member* GroupTracker::find(Puid puid) const {
    for (const auto& m : members_)
        if (m.puid == puid && m.state != MemberState::pending) return &m;
    return nullptr;
}

Action GroupTracker::exited(Puid puid, msg::ExitStatus status) {
    Member* m = nullptr;
    for (auto& x : members_)
        if (x.puid == puid && x.state == MemberState::running) m = &x;
    if (m == nullptr) return {};
    return exit_member(*m, status);
}

Action GroupTracker::exit_member(Member& member, msg::ExitStatus status, std::string error) {
    Member* m = &member;
    const Puid puid = m->puid;
    m->state = MemberState::exited;
    m->status = status;
    --running_;
    const bool failed = status.signal != 0 || status.exit_code != 0 || !error.empty();
    if (!failed || state_ != GroupState::running) return after_exit();
    const auto kind = error.empty() ? msg::FailKind::exited : msg::FailKind::runtime;

    if (policy_.restart) {
        if (restarts_ < policy_.max_restarts) {
            ++restarts_;
            m->state = MemberState::pending;  // until its replacement has started (or failed to)
            return {Action::respawn, m->rank};
        }
        // Out of restarts: the group has failed, but members still running may finish their work.
        if (!failure_) failure_ = Failure{m->rank, puid, status, std::move(error), 0, kind};
        return after_exit();
    }
    if (!failure_) failure_ = Failure{m->rank, puid, status, std::move(error), 0, kind};
    state_ = GroupState::stopping;
    return running_ > 0 ? Action{Action::stop_all, 0} : after_exit();
}

Action GroupTracker::exited(std::uint32_t rank, Puid puid, msg::ExitStatus status, std::string error) {
    if (rank >= members_.size() || members_[rank].puid != puid) {
        for (auto& x : members_)
            if (x.puid == puid && x.state == MemberState::running) return exit_member(x, status, std::move(error));
        return {};
    }
    if (members_[rank].state != MemberState::running) return {};
    return exit_member(members_[rank], status, std::move(error));
}

Action GroupTracker::aborted(std::uint32_t rank, int exit_code, std::string message) {
    if (rank >= members_.size() || finished()) return {};
    if (!failure_)
        failure_ = Failure{rank, members_[rank].puid, msg::ExitStatus{exit_code, 0}, std::move(message), 0,
                           msg::FailKind::aborted};
    if (state_ == GroupState::running) state_ = GroupState::stopping;
    return running_ > 0 ? Action{Action::stop_all, 0} : after_exit();
}

Action GroupTracker::lost(std::uint32_t rank, std::string error) {
    if (rank >= members_.size()) return {};
    auto& m = members_[rank];
    if (m.state == MemberState::exited) return {};
    if (m.state == MemberState::running) --running_;
    m.state = MemberState::exited;
    m.status = msg::ExitStatus{0, 9};  // as good as SIGKILLed: its node is gone
    if (!failure_) failure_ = Failure{rank, m.puid, m.status, std::move(error), 0, msg::FailKind::lost};
    if (state_ == GroupState::running) state_ = GroupState::stopping;
    return after_exit();
}

Action GroupTracker::stop() {
    if (state_ == GroupState::running) state_ = GroupState::stopping;
    return running_ > 0 ? Action{Action::stop_all, 0} : after_exit();
}

Action GroupTracker::after_exit() {
    if (running_ > 0) return state_ == GroupState::stopping ? Action{Action::stop_all, 0} : Action{};
    for (const auto& m : members_)
        if (m.state == MemberState::pending) return {};  // still being started
    if (state_ == GroupState::running) state_ = failure_ ? GroupState::failed : GroupState::succeeded;
    else if (state_ == GroupState::stopping) state_ = failure_ ? GroupState::failed : GroupState::stopped;
    return {Action::done, 0};
}

bool GroupTracker::finished() const {
    return state_ == GroupState::succeeded || state_ == GroupState::failed || state_ == GroupState::stopped;
}

}  // namespace dragon::procgroup
