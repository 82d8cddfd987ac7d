// ProcessGroup over the agent's local socket (see process_group.hpp).
#include "dragon/orchestrator/process_group.hpp"

#include <signal.h>

#include <spdlog/spdlog.h>

#include "dragon/common/group_rules.hpp"

namespace dragon::client {

namespace {

msg::StdinMode stdin_mode(const Redirect& r) {
    switch (r.kind) {
        case Redirect::Kind::inherit: return msg::StdinMode::forward;  // refused by the agent, with the reason
        case Redirect::Kind::discard: return msg::StdinMode::null;
        case Redirect::Kind::file: return msg::StdinMode::file;
        case Redirect::Kind::pipe: return msg::StdinMode::owner;
    }
    return msg::StdinMode::null;
}

msg::OutputMode output_mode(const Redirect& r) {
    switch (r.kind) {
        case Redirect::Kind::inherit: return msg::OutputMode::forward;
        case Redirect::Kind::discard: return msg::OutputMode::discard;
        case Redirect::Kind::file: return msg::OutputMode::file;
        case Redirect::Kind::pipe: return msg::OutputMode::owner;
    }
    return msg::OutputMode::forward;
}

}  // namespace

ProcessGroup::ProcessGroup(Session& session, GroupOptions options) : session_(&session), options_(std::move(options)) {}

ProcessGroup::ProcessGroup(ProcessGroup&& o) noexcept
    : session_(o.session_),
      options_(std::move(o.options_)),
      entries_(std::move(o.entries_)),
      group_id_(o.group_id_),
      members_(std::move(o.members_)),
      warnings_(std::move(o.warnings_)),
      closed_(o.closed_),
      outcome_(std::move(o.outcome_)),
      start_request_(o.start_request_) {
    o.group_id_ = 0;
    o.start_request_ = 0;
}

ProcessGroup::~ProcessGroup() {
    if (start_request_ != 0) (void)wait_started();  // (its id is needed to stop it)
    if (group_id_ == 0 || closed_) return;
    if (!outcome()) {
        // SIGKILL, and a bounded wait: a destructor must not hang. A group
        // that outlives it is stopped by the agent when this session closes.
        auto st = session_->call<msg::OkReply>(msg::GroupStop{group_id_, true, 0});
        auto joined = st ? join(std::chrono::seconds(30)) : Result<bool>(std::move(st).error());
        if (!joined || !*joined) {
            spdlog::warn("group {}: not ended on destruction: {}", group_id_,
                         joined ? std::string("still running after SIGKILL and 30 s") : joined.error().message());
            return;
        }
    }
    if (auto st = close(); !st) spdlog::warn("group {}: closing it on destruction: {}", group_id_, st.error().message());
}

void ProcessGroup::add(ProcessTemplate t, std::uint32_t count) { entries_.emplace_back(std::move(t), count); }

std::uint32_t ProcessGroup::size() const {
    std::uint32_t n = 0;
    for (const auto& e : entries_) n += e.second;
    return n;
}

msg::GroupSpec ProcessGroup::spec() const {
    msg::GroupSpec s;
    for (const auto& [t, count] : entries_) {
        msg::ProcSpec p;
        p.argv = t.argv;
        p.env = t.env;
        p.cwd = t.cwd;
        p.stdin_mode = stdin_mode(t.stdin_redirect);
        p.stdout_mode = output_mode(t.stdout_redirect);
        p.stderr_mode = output_mode(t.stderr_redirect);
        p.stdin_path = t.stdin_redirect.path;
        p.stdout_path = t.stdout_redirect.path;
        p.stderr_path = t.stderr_redirect.path;
        p.fast_start = t.fast_start;
        s.entries.push_back({std::move(p), count, t.node, t.host, t.cpus});
    }
    s.placement = options_.placement;
    s.binding = options_.binding;
    s.cpus_per_proc = options_.cpus_per_proc;
    s.allow_oversubscribe = options_.allow_oversubscribe;
    s.restart = options_.restart;
    s.max_restarts = options_.max_restarts;
    s.pmi = options_.pmi;
    s.pmi_port = options_.pmi_port;
    s.outlive_owner = options_.outlive_owner;
    return s;
}

Status ProcessGroup::require_started(const char* what) const {
    if (group_id_ == 0) return make_error(Errc::invalid_argument, "{}: the group has not been started", what);
    if (closed_) return make_error(Errc::closed, "{}: group {} is closed", what, group_id_);
    return ok();
}

Status ProcessGroup::start() {
    DRAGON_CHECK(start_without_waiting());
    return wait_started();
}

Status ProcessGroup::start_without_waiting() {
    if (group_id_ != 0) return make_error(Errc::invalid_argument, "group {} is already started", group_id_);
    if (start_request_ != 0) return Error(Errc::invalid_argument, "start: the group is being started already");
    if (entries_.empty()) return Error(Errc::invalid_argument, "start: the group has no processes (add some first)");
    auto s = spec();
    DRAGON_CHECK(msg::check_group_spec(s));  // the runtime's own rules, before a round trip
    start_request_ = DRAGON_TRY(session_->post_group_start(msg::GroupStart{0, std::move(s), false}));
    return ok();
}

Result<bool> ProcessGroup::take_start_answer() {
    if (group_id_ != 0) return true;
    if (start_request_ == 0) return Error(Errc::invalid_argument, "started: the group has not been started");
    auto r = session_->take_group_started(start_request_);
    if (!r) return false;
    start_request_ = 0;
    if (!r->error.empty()) return Error(Errc::invalid_argument, r->error);
    group_id_ = r->group_id;
    members_ = std::move(r->members);
    warnings_ = std::move(r->warnings);
    return true;
}

Status ProcessGroup::wait_started() {
    for (;;) {
        if (DRAGON_TRY(take_start_answer())) return ok();
        DRAGON_CHECK(session_->pump(std::nullopt));
    }
}

Result<std::vector<msg::GroupMember>> ProcessGroup::plan() {
    if (entries_.empty()) return Error(Errc::invalid_argument, "plan: the group has no processes (add some first)");
    const auto id = DRAGON_TRY(session_->post_group_start(msg::GroupStart{0, spec(), true}));
    std::optional<msg::GroupStarted> r;
    while (!(r = session_->take_group_started(id))) DRAGON_CHECK(session_->pump(std::nullopt));
    if (!r->error.empty()) return Error(Errc::invalid_argument, r->error);
    warnings_ = std::move(r->warnings);
    return std::move(r->members);
}

const std::optional<msg::GroupDone>& ProcessGroup::outcome() const {
    static const std::optional<msg::GroupDone> kNone;
    if (group_id_ == 0) return kNone;
    if (closed_) return outcome_;
    return session_->events(group_id_).done;
}

Result<bool> ProcessGroup::join(std::optional<std::chrono::milliseconds> timeout) {
    DRAGON_CHECK(require_started("join"));
    std::optional<Clock::time_point> deadline;
    if (timeout) deadline = Clock::now() + *timeout;
    for (;;) {
        if (session_->events(group_id_).done) return true;
        const bool expired = deadline && Clock::now() >= *deadline;
        // Past the deadline this still takes what has arrived (join(0ms) polls).
        DRAGON_CHECK(session_->pump(deadline));
        if (session_->events(group_id_).done) return true;
        if (expired) return false;
    }
}

Status ProcessGroup::send_signal(int sig) {
    DRAGON_CHECK(require_started("send_signal"));
    DRAGON_CHECK(session_->call<msg::OkReply>(msg::GroupSignal{group_id_, sig}));
    return ok();
}

Status ProcessGroup::request_stop(std::chrono::milliseconds patience, bool force) {
    DRAGON_CHECK(require_started(force ? "kill" : "stop"));
    const auto ms = static_cast<std::uint32_t>(std::clamp<std::int64_t>(patience.count(), 0, 1 << 30));
    DRAGON_CHECK(session_->call<msg::OkReply>(msg::GroupStop{group_id_, force, force ? 0U : ms}));
    return ok();
}

Status ProcessGroup::stop(std::chrono::milliseconds patience) {
    DRAGON_CHECK(request_stop(patience, false));
    DRAGON_CHECK(join(std::nullopt));
    return ok();
}

Status ProcessGroup::kill() {
    DRAGON_CHECK(request_stop(std::chrono::milliseconds(0), true));
    DRAGON_CHECK(join(std::nullopt));
    return ok();
}

Status ProcessGroup::close() {
    DRAGON_CHECK(require_started("close"));
    DRAGON_CHECK(session_->call<msg::OkReply>(msg::GroupClose{group_id_}));
    closed_ = true;
    outcome_ = session_->events(group_id_).done;  // kept; unread output of a closed group goes
    session_->forget_events(group_id_);
    return ok();
}

Status ProcessGroup::close_without_waiting() {
    DRAGON_CHECK(require_started("close"));
    if (closed_ || !session_->events(group_id_).done) return close();
    DRAGON_CHECK(session_->post_unawaited(msg::GroupClose{group_id_}));
    closed_ = true;
    outcome_ = session_->events(group_id_).done;
    session_->forget_events(group_id_);
    return ok();
}

std::vector<Puid> ProcessGroup::puids() const {
    std::vector<Puid> out;
    out.reserve(members_.size());
    for (const auto& m : members_) out.push_back(m.puid);
    return out;
}

Result<GroupInfo> ProcessGroup::info() {
    DRAGON_CHECK(require_started("info"));
    auto st = DRAGON_TRY(session_->call<msg::GroupStatus>(msg::GroupQuery{group_id_}));
    GroupInfo out;
    out.state = st.state;
    out.restarts = st.restarts;
    out.processes.reserve(st.members.size());
    for (auto& m : st.members) {
        out.processes.push_back({m.where.rank, m.where.puid, m.where.pid, m.where.node_id, m.where.local_rank,
                                 std::move(m.where.cpus), m.state, m.status, std::move(m.runs)});
    }
    return out;
}

Result<std::vector<std::optional<msg::ExitStatus>>> ProcessGroup::exit_statuses() {
    auto i = DRAGON_TRY(info());
    std::vector<std::optional<msg::ExitStatus>> out;
    out.reserve(i.processes.size());
    for (const auto& p : i.processes)
        out.push_back(p.state == msg::MemberStateCode::exited ? std::optional(p.status) : std::nullopt);
    return out;
}

Result<std::string> ProcessGroup::read_output(std::uint32_t rank, msg::Stream stream,
                                              std::optional<std::chrono::milliseconds> timeout) {
    DRAGON_CHECK(require_started("read_output"));
    if (rank >= members_.size())
        return make_error(Errc::invalid_argument, "read_output: no rank {} (the group has {})", rank, members_.size());
    std::optional<Clock::time_point> deadline;
    if (timeout) deadline = Clock::now() + *timeout;
    for (;;) {
        auto& ev = session_->events(group_id_);
        if (auto it = ev.output.find({rank, stream}); it != ev.output.end() && !it->second.empty()) {
            std::string out = std::move(it->second);
            it->second.clear();
            return out;
        }
        if (ev.done) return std::string();  // the end: everything was read
        if (deadline && Clock::now() >= *deadline) return std::string();
        DRAGON_CHECK(session_->pump(deadline));
    }
}

Status ProcessGroup::write_stdin(std::uint32_t rank, std::string_view data, bool eof) {
    DRAGON_CHECK(require_started("write_stdin"));
    if (rank >= members_.size())
        return make_error(Errc::invalid_argument, "write_stdin: no rank {} (the group has {})", rank, members_.size());
    const Puid puid = members_[rank].puid;
    constexpr std::size_t kPiece = 64 * 1024;
    while (!data.empty()) {
        while (session_->stdin_unacked(puid) >= msg::kStdinWindow) {
            if (session_->events(group_id_).done)
                return make_error(Errc::closed, "write_stdin: group {} has ended", group_id_);
            DRAGON_CHECK(session_->pump(std::nullopt));
        }
        const auto n = std::min(data.size(), kPiece);
        DRAGON_CHECK(session_->post(msg::StdinData{puid, std::string(data.substr(0, n)), false}));
        session_->note_stdin_sent(puid, n);
        data.remove_prefix(n);
    }
    if (eof) DRAGON_CHECK(session_->post(msg::StdinData{puid, {}, true}));
    return ok();
}

}  // namespace dragon::client
