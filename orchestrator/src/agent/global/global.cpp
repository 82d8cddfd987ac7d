// Global services, hosted by node 0's agent: the group table, placement over
// every node, the groups' state machines, and routing between owners (the
// front end, or a client on any node) and the nodes running the members.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "global.hpp"
#include "dragon/common/group_rules.hpp"
#include "dragon/procgroup/io.hpp"
#include "dragon/procgroup/placement.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::agent {

namespace {

msg::GroupStateCode state_code(pg::GroupState s) {
    switch (s) {
        case pg::GroupState::running: return msg::GroupStateCode::running;
        case pg::GroupState::stopping: return msg::GroupStateCode::stopping;
        case pg::GroupState::succeeded: return msg::GroupStateCode::succeeded;
        case pg::GroupState::failed: return msg::GroupStateCode::failed;
        case pg::GroupState::stopped: return msg::GroupStateCode::stopped;
    }
    return msg::GroupStateCode::running;
}

}  // namespace

GlobalServices::GlobalServices(Router& router, asio::io_context& io, GlobalOptions opts)
    : router_(router), io_(io), opts_(std::move(opts)) {
    nodes_.resize(opts_.nnodes);
}

void GlobalServices::bind(Dispatcher<Owner>& front_end, Dispatcher<Owner>& owners, Dispatcher<std::uint32_t>& nodes) {
    front_end.on<msg::GroupStart>([this](Owner o, msg::GroupStart&& m) { start_group(m, o); });
    front_end.on<msg::StdinData>([this](Owner o, msg::StdinData&& m) { route_stdin(std::move(m), o); });

    owners.on<msg::GroupStart>([this](Owner o, msg::GroupStart&& m) { start_group(m, o); });
    owners.on<msg::StdinData>([this](Owner o, msg::StdinData&& m) { route_stdin(std::move(m), o); });
    owners.on<msg::GroupQuery>([this](Owner o, msg::GroupQuery&& m) { query_group(o, m); });
    owners.on<msg::MachineQuery>([this](Owner o, msg::MachineQuery&&) { query_machine(o); });
    owners.on<msg::GroupSignal>([this](Owner o, msg::GroupSignal&& m) { signal_group(o, m); });
    owners.on<msg::GroupStop>([this](Owner o, msg::GroupStop&& m) { stop_group_request(o, m); });
    owners.on<msg::GroupClose>([this](Owner o, msg::GroupClose&& m) { close_group_request(o, m); });

    nodes.on<msg::MembersStarted>([this](std::uint32_t from, msg::MembersStarted&& m) { on_members_started(from, m); });
    nodes.on<msg::MembersExited>([this](std::uint32_t from, msg::MembersExited&& m) { on_members_exited(from, m); });
    nodes.on<msg::PmiAbort>([this](std::uint32_t from, msg::PmiAbort&& m) { on_pmi_abort(from, m); });
    nodes.on<msg::StdinAck>([this](std::uint32_t, msg::StdinAck&& m) { route_stdin_ack(m); });
    nodes.on<msg::Output>([this](std::uint32_t from, msg::Output&& m) {
        if (!route_output(m)) router_.hold_back(from);  // its reader is full: stop reading that node
    });
    nodes.on<msg::ClientGone>([this](std::uint32_t from, msg::ClientGone&& m) { owner_gone(Owner{from, m.client}); });
}

void GlobalServices::node_joined(std::uint32_t node, pg::NodeResources resources) {
    if (node < nodes_.size()) nodes_[node] = std::move(resources);
}

void GlobalServices::stop_all() {
    for (auto& [id, g] : groups_)
        if (!g->tracker.finished()) (void)g->tracker.stop();
}

void GlobalServices::reply_error(Owner who, Errc code, std::string why) {
    router_.send_to_owner(who, msg::ErrorReply{static_cast<std::uint16_t>(code), std::move(why)});
}

// ---- placement ------------------------------------------------------------------

Result<GlobalServices::GroupPlan> GlobalServices::plan_group(const msg::GroupSpec& spec, std::uint32_t nranks, bool want_cpus) {
    pg::PlacementRequest req;
    req.nprocs = nranks;
    req.cpus_per_proc = spec.cpus_per_proc;
    req.policy = DRAGON_TRY(pg::parse_policy(spec.placement));
    req.binding = DRAGON_TRY(pg::parse_binding(spec.binding));
    req.allow_oversubscribe = spec.allow_oversubscribe;
    std::vector<pg::EntryConstraint> entries;
    entries.reserve(spec.entries.size());
    bool constrained = false;
    for (std::size_t e = 0; e < spec.entries.size(); ++e) {
        const auto& en = spec.entries[e];
        entries.push_back({en.count, en.node, en.host, en.cpus, en.proc.argv.empty() ? "?" : en.proc.argv[0]});
        constrained = constrained || entries.back().constrained();
        // A lost node is not among those placed on: say so rather than "does not exist".
        if (en.node > 0 && static_cast<std::uint32_t>(en.node) < opts_.nnodes &&
            router_.node_lost(static_cast<std::uint32_t>(en.node)))
            return make_error(Errc::closed, "entry {} ({}): node {} is lost", e, entries.back().name, en.node);
    }
    GroupPlan out;
    if (opts_.nnodes == 1 && req.binding == pg::Binding::none && req.allow_oversubscribe && !want_cpus &&
        !constrained) {
        // Unbound ranks on one node need no topology: rank r is local rank r here.
        out.members.resize(nranks);
        for (std::uint32_t r = 0; r < nranks; ++r) out.members[r] = {r, 0, 0, 0, r, {}};
        return out;
    }
    const pg::NodeResources* mine = DRAGON_TRY(opts_.own_resources());
    nodes_[0] = *mine;
    std::vector<pg::NodeResources> live;  // a lost node gets no new work
    for (std::uint32_t k = 0; k < opts_.nnodes; ++k)
        if (k == 0 || !router_.node_lost(k)) live.push_back(nodes_[k]);
    auto plan = DRAGON_TRY(pg::place(live, req, entries));
    // Unbound ranks sharing cpus is what unbound means; say it only when asked to bind.
    if (req.binding != pg::Binding::none || !req.allow_oversubscribe) out.warnings = std::move(plan.warnings);
    out.members.reserve(plan.slots.size());
    std::size_t entry = 0;
    std::uint32_t entry_end = entries.empty() ? 0 : entries[0].count;
    for (auto& s : plan.slots) {
        while (s.rank >= entry_end && entry + 1 < entries.size()) entry_end += entries[++entry].count;
        // Unbound ranks are not pinned, whatever the map says they may use;
        // an entry's own cpus bind it whatever the group's binding.
        const bool unbound = req.binding == pg::Binding::none && entries[entry].cpus.empty();
        auto cpus = unbound ? std::vector<std::uint32_t>{} : std::move(s.cpus);
        out.members.push_back({s.rank, 0, 0, s.node_id, s.local_rank, std::move(cpus)});
    }
    return out;
}

// ---- starting ------------------------------------------------------------------------

Status GlobalServices::check_group_io(const msg::GroupSpec& spec, Owner owner) const {
    const bool front_end = owner == kFrontEnd;
    for (std::size_t e = 0; e < spec.entries.size(); ++e) {
        const auto& p = spec.entries[e].proc;
        const auto where = fmt::format("entry {} ({})", e, p.argv.empty() ? std::string("?") : p.argv[0]);
        if (!front_end && p.stdin_mode == msg::StdinMode::forward)
            return make_error(Errc::invalid_argument, "{}: stdin from the terminal is only for the front end's group; "
                                                      "use null, a file or a pipe", where);
        if (front_end && (p.stdin_mode == msg::StdinMode::owner || p.stdout_mode == msg::OutputMode::owner ||
                          p.stderr_mode == msg::OutputMode::owner))
            return make_error(Errc::invalid_argument, "{}: pipes to the owner need a client owner", where);
        const std::pair<bool, const std::string*> files[] = {
            {p.stdin_mode == msg::StdinMode::file, &p.stdin_path},
            {p.stdout_mode == msg::OutputMode::file, &p.stdout_path},
            {p.stderr_mode == msg::OutputMode::file, &p.stderr_path}};
        for (const auto& [used, path] : files) {
            if (!used) continue;
            if (auto st = pg::check_path_pattern(*path); !st) return std::move(st).error().context(where);
        }
    }
    return ok();
}

void GlobalServices::start_group(const msg::GroupStart& req, Owner owner) {
    msg::GroupStarted reply;
    reply.request_id = req.request_id;
    std::uint64_t total = 0;
    for (const auto& e : req.spec.entries) total += e.count;
    auto refuse = [&](std::string why) {
        reply.error = std::move(why);
        router_.send_to_owner(owner, reply);
    };
    if (!router_.accepting_work()) return refuse("the runtime is shutting down");
    if (auto st = msg::check_group_spec(req.spec); !st) return refuse(st.error().message());
    if (auto st = check_group_io(req.spec, owner); !st) return refuse(st.error().message());
    auto plan = plan_group(req.spec, static_cast<std::uint32_t>(total), req.dry_run);
    if (!plan) return refuse(plan.error().message());
    if (req.dry_run) {
        reply.warnings = std::move(plan->warnings);
        reply.members = std::move(plan->members);
        router_.send_to_owner(owner, reply);
        return;
    }
    const std::uint64_t id = next_group_id_++;
    auto g = std::make_unique<Group>(id, req.spec, std::move(plan->members));
    g->owner = owner;
    g->request_id = req.request_id;
    g->warnings = std::move(plan->warnings);
    g->patience_ms = opts_.patience_ms;
    for (std::uint32_t e = 0; e < g->spec.entries.size(); ++e)
        for (std::uint32_t i = 0; i < g->spec.entries[e].count; ++i) g->entry_of_rank.push_back(e);
    // One batch per node: the members placed there, in rank order.
    std::map<std::uint32_t, msg::ExecMembers> batches;
    for (const auto& m : g->members) {
        auto& b = batches[m.node_id];
        b.members.push_back({m.rank, m.local_rank, m.cpus});
    }
    Group& group = *g;
    groups_.emplace(id, std::move(g));
    truncate_shared_files(group);
    std::vector<std::pair<std::uint32_t, std::uint32_t>> unavailable;  // (rank, node)
    for (auto& [node, b] : batches) {
        if (node >= opts_.nnodes || router_.node_lost(node) || !router_.node_reachable(node)) {
            for (const auto& m : b.members) unavailable.emplace_back(m.rank, node);
            continue;
        }
        b.group_id = id;
        b.nranks = static_cast<std::uint32_t>(group.members.size());
        b.local_size = static_cast<std::uint32_t>(b.members.size());
        b.spec = group.spec;
        if (group.spec.pmi != msg::PmiMode::none) {
            b.rank_nodes.reserve(group.members.size());
            for (const auto& m : group.members) b.rank_nodes.push_back(m.node_id);
        }
        group.nodes.insert(node);
        group.awaiting_start.insert(node);
        router_.send(node, b);
    }
    spdlog::info("group {}: {} processes on {} nodes", id, group.members.size(), group.nodes.size());
    // group_started always precedes group_done, even when nothing could start.
    if (!group.starting()) router_.send_to_owner(owner, msg::GroupStarted{req.request_id, id, {}, group.warnings, group.members});
    for (auto [rank, node] : unavailable) {
        apply(group, group.tracker.start_failed(rank, fmt::format("node {} is not available (it was lost)", node), 0,
                                                msg::FailKind::lost));
        if (!groups_.contains(id)) return;
    }
    if (!group.starting()) maybe_finish_group(group);
}

void GlobalServices::truncate_shared_files(const Group& g) {
    // A file every member shares is emptied once, here, before any member
    // starts (members open files for appending); per-process and per-node
    // files are emptied by the members' own nodes.
    std::set<std::string> done;
    for (const auto& e : g.spec.entries) {
        const auto& p = e.proc;
        for (const auto& [used, pattern] : {std::pair{p.stdout_mode == msg::OutputMode::file, &p.stdout_path},
                                            std::pair{p.stderr_mode == msg::OutputMode::file, &p.stderr_path}}) {
            if (!used || pg::file_owner(*pattern) != pg::FileOwner::group) continue;
            auto name = pg::expand_path(*pattern, pg::PathContext{0, 0, 0, g.tracker.id(), opts_.hostname});
            if (!name) continue;  // refused before (check_group_io)
            if (!name->starts_with('/') && !p.cwd.empty()) *name = p.cwd + "/" + *name;
            if (!done.insert(*name).second) continue;
            // Only a regular file has anything to empty: /dev/null (a step's
            // `stdout: /dev/null`), a fifo or a tty is used as it is.
            struct stat st {};
            if (::stat(name->c_str(), &st) == 0 && !S_ISREG(st.st_mode)) continue;
            if (::truncate(name->c_str(), 0) != 0 && errno != ENOENT)
                spdlog::warn("group {}: cannot empty '{}': {}", g.tracker.id(), *name, ::strerror(errno));
        }
    }
}

void GlobalServices::on_members_started(std::uint32_t from, const msg::MembersStarted& m) {
    auto it = groups_.find(m.group_id);
    if (it == groups_.end()) return;
    Group& g = *it->second;
    for (const auto& s : m.members) {
        if (s.rank >= g.members.size() || g.members[s.rank].node_id != from) {
            spdlog::error("node {} reported rank {} of group {}, which is not its", from, s.rank, m.group_id);
            continue;
        }
        if (s.puid == 0) {
            apply(g, g.tracker.start_failed(s.rank, s.error, s.sys_errno));
            continue;
        }
        g.members[s.rank].puid = s.puid;
        g.members[s.rank].pid = s.pid;
        g.runs[s.rank].push_back({s.puid, s.pid, false, {}, s.started_ns, 0});
        member_of_[s.puid] = {m.group_id, s.rank};
        g.tracker.started(s.rank, s.puid, s.pid);
    }
    if (g.tracker.state() == pg::GroupState::stopping) {
        // The group began stopping while these were being started (a failure
        // elsewhere, its owner gone): they hear the stop too.
        if (!g.stop_timer) stop_group(g);
        else if (g.stop_signal != 0) router_.send(from, msg::SignalMembers{m.group_id, g.stop_signal});
    }
    if (m.complete && g.awaiting_start.erase(from) > 0 && !g.starting()) {
        // Every node has answered: one reply to the owner with every member.
        router_.send_to_owner(g.owner, msg::GroupStarted{g.request_id, g.tracker.id(), {}, g.warnings, g.members});
        spdlog::info("group {} started: {} processes", g.tracker.id(), g.members.size());
        maybe_finish_group(g);
    }
}

void GlobalServices::on_members_exited(std::uint32_t from, const msg::MembersExited& m) {
    auto it = groups_.find(m.group_id);
    if (it == groups_.end()) return;
    Group& g = *it->second;
    const std::uint64_t id = g.tracker.id();
    msg::ProcExit for_front_end;
    for (const auto& e : m.members) {
        if (e.rank >= g.members.size() || g.members[e.rank].node_id != from) continue;
        for (auto& run : g.runs[e.rank])
            if (run.puid == e.puid) {
                run.exited = true;
                run.status = e.status;
                run.ended_ns = e.ended_ns;
            }
        if (g.owner == kFrontEnd) for_front_end.exits.push_back({e.puid, e.pid, e.status});
        if (!e.error.empty()) {  // after the group began to stop, members killed inside PMI are expected
            if (g.tracker.state() == pg::GroupState::running) spdlog::warn("group {}: rank {} failed: {}", id, e.rank, e.error);
            else spdlog::debug("group {}: rank {}: {}", id, e.rank, e.error);
        }
        apply(g, g.tracker.exited(e.rank, e.puid, e.status, e.error));
        if (!groups_.contains(id)) return;
    }
    if (!for_front_end.exits.empty()) router_.send_to_owner(kFrontEnd, for_front_end);
}

void GlobalServices::on_pmi_abort(std::uint32_t from, const msg::PmiAbort& m) {
    auto it = groups_.find(m.group_id);
    if (it == groups_.end()) return;
    Group& g = *it->second;
    if (m.rank >= g.members.size() || g.members[m.rank].node_id != from) return;
    spdlog::warn("group {}: rank {} aborts the job with exit code {}{}{}", m.group_id, m.rank, m.exit_code,
                 m.message.empty() ? "" : ": ", m.message);
    apply(g, g.tracker.aborted(m.rank, m.exit_code, m.message));
}

// ---- the state machine's decisions -------------------------------------------------------

void GlobalServices::apply(Group& g, pg::Action a) {
    switch (a.kind) {
        case pg::Action::none: return;
        case pg::Action::respawn: {
            const std::uint32_t node = g.members[a.rank].node_id;
            spdlog::info("group {}: restarting rank {} on node {} ({} of {} restarts)", g.tracker.id(), a.rank, node,
                         g.tracker.restarts(), g.spec.max_restarts);
            if (!router_.accepting_work() || router_.node_lost(node))
                return apply(g, g.tracker.start_failed(a.rank, "not restarted: the runtime is shutting down"));
            router_.send(node, msg::RespawnMember{g.tracker.id(), a.rank});
            return;
        }
        case pg::Action::stop_all: return stop_group(g);
        case pg::Action::done: return maybe_finish_group(g);  // after group_started, and after the members' output
    }
}

void GlobalServices::stop_group(Group& g) {
    if (g.stop_timer || !router_.accepting_work()) return;  // already stopping (or every node stops everything)
    g.stop_timer = std::make_unique<asio::steady_timer>(io_);
    escalate_group(g.tracker.id());
}

void GlobalServices::escalate_group(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end() || it->second->tracker.finished()) return;
    Group& g = *it->second;
    g.stop_signal = g.stop_signal == 0 ? SIGINT : g.stop_signal == SIGINT ? SIGTERM : SIGKILL;
    spdlog::info("group {}: {} to {} running members", group_id, ::sigabbrev_np(g.stop_signal), g.tracker.running());
    for (std::uint32_t node : g.nodes)
        if (!router_.node_lost(node)) router_.send(node, msg::SignalMembers{group_id, g.stop_signal});
    if (g.stop_signal == SIGKILL) return;
    g.stop_timer->expires_after(std::chrono::milliseconds(g.patience_ms));
    g.stop_timer->async_wait([this, group_id](const asio::error_code& ec) { if (!ec) escalate_group(group_id); });
}

void GlobalServices::maybe_finish_group(Group& g) {
    // Members report their exit only after their output, so every byte an
    // owner reads comes before this.
    if (g.done_sent || g.starting() || !g.tracker.finished()) return;
    g.done_sent = true;
    if (g.stop_timer) g.stop_timer->cancel();
    msg::GroupDone done;
    done.group_id = g.tracker.id();
    done.outcome = g.tracker.state() == pg::GroupState::succeeded ? msg::GroupOutcome::succeeded
                   : g.tracker.state() == pg::GroupState::failed  ? msg::GroupOutcome::failed
                                                                  : msg::GroupOutcome::stopped;
    if (const auto& f = g.tracker.first_failure()) {
        done.fail_rank = f->rank;
        done.fail_puid = f->puid;
        done.fail_status = f->status;
        done.fail_error = f->error;
        done.fail_errno = f->sys_errno;
        done.fail_kind = f->kind;
    }
    if (!g.tracker.members().empty()) done.rank0_status = g.tracker.members().front().status;
    done.restarts = g.tracker.restarts();
    spdlog::info("group {} {}", done.group_id, pg::to_string(g.tracker.state()));
    router_.send_to_owner(g.owner, done);
    if (g.orphaned) router_.post([this, id = done.group_id] { close_group(id); });
}

void GlobalServices::close_group(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) return;
    for (std::uint32_t node : it->second->nodes)
        if (!router_.node_lost(node)) router_.send(node, msg::ForgetGroup{group_id});
    for (const auto& runs : it->second->runs)
        for (const auto& run : runs) member_of_.erase(run.puid);
    groups_.erase(it);
}

void GlobalServices::node_lost(std::uint32_t node, const std::string& why) {
    // Clients of that node are gone with it: their groups are orphaned.
    std::set<std::uint64_t> owners;
    for (const auto& [id, g] : groups_)
        if (g->owner.node == node) owners.insert(g->owner.client);
    for (std::uint64_t client : owners) owner_gone(Owner{node, client});
    const std::string error = fmt::format("node {} ({}) was lost: {}", node,
                                          router_.node_hostname(node), why);
    std::vector<std::uint64_t> ids;
    for (const auto& [id, g] : groups_)
        if (g->nodes.contains(node)) ids.push_back(id);
    for (std::uint64_t id : ids) {
        auto it = groups_.find(id);
        if (it == groups_.end()) continue;
        Group& g = *it->second;
        for (const auto& m : g.members) {
            if (m.node_id != node) continue;
            apply(g, g.tracker.lost(m.rank, error));
            if (!groups_.contains(id)) break;
        }
        if (!groups_.contains(id)) continue;
        if (g.awaiting_start.erase(node) > 0 && !g.starting()) {
            router_.send_to_owner(g.owner, msg::GroupStarted{g.request_id, id, {}, g.warnings, g.members});
            maybe_finish_group(g);
        }
    }
}

// ---- owners' requests ---------------------------------------------------------------------

Group* GlobalServices::owned_group(Owner who, std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) {
        reply_error(who, Errc::not_found, fmt::format("no group {}", group_id));
        return nullptr;
    }
    if (!(it->second->owner == who)) {
        reply_error(who, Errc::permission_denied,
                    fmt::format("group {} belongs to {}", group_id,
                                it->second->owner == kFrontEnd ? std::string("the front end") : "another client"));
        return nullptr;
    }
    return it->second.get();
}

void GlobalServices::query_group(Owner who, const msg::GroupQuery& m) {
    auto g = groups_.find(m.group_id);
    if (g == groups_.end())
        return reply_error(who, Errc::not_found, fmt::format("no group {}", m.group_id));
    router_.send_to_owner(who, group_status(*g->second));
}

void GlobalServices::query_machine(Owner who) {
    msg::MachineInfo info;
    for (std::uint32_t k = 0; k < opts_.nnodes; ++k) {
        const pg::NodeResources* r = k < nodes_.size() && !nodes_[k].pus.empty() ? &nodes_[k] : nullptr;
        if (r == nullptr && k == 0 && opts_.own_resources) {
            auto mine = opts_.own_resources();
            if (!mine) return reply_error(who, mine.error().code(), mine.error().message());
            r = *mine;
        }
        if (r == nullptr) return reply_error(who, Errc::closed, fmt::format("node {} has not joined yet", k));
        info.nodes.push_back({k, r->hostname, static_cast<std::uint32_t>(r->pus.size()), r->core_count()});
    }
    router_.send_to_owner(who, info);
}

void GlobalServices::signal_group(Owner who, const msg::GroupSignal& m) {
    Group* g = owned_group(who, m.group_id);
    if (g == nullptr) return;
    if (m.signal < 1 || m.signal > SIGRTMAX)
        return reply_error(who, Errc::invalid_argument, fmt::format("bad signal number {}", m.signal));
    for (std::uint32_t node : g->nodes)
        if (!router_.node_lost(node)) router_.send(node, msg::SignalMembers{m.group_id, m.signal});
    spdlog::info("group {}: signal {} to its running members", m.group_id, m.signal);
    router_.send_to_owner(who, msg::OkReply{});
}

void GlobalServices::stop_group_request(Owner who, const msg::GroupStop& m) {
    Group* g = owned_group(who, m.group_id);
    if (g == nullptr) return;
    router_.send_to_owner(who, msg::OkReply{});
    if (g->tracker.finished()) return;
    g->patience_ms = m.patience_ms;
    if (m.force && g->stop_timer) {  // already stopping: straight to SIGKILL
        g->stop_signal = SIGTERM;
        g->stop_timer->cancel();
        return escalate_group(m.group_id);
    }
    if (m.force) g->stop_signal = SIGTERM;  // the first step is then SIGKILL
    apply(*g, g->tracker.stop());
}

void GlobalServices::close_group_request(Owner who, const msg::GroupClose& m) {
    Group* g = owned_group(who, m.group_id);
    if (g == nullptr) return;
    if (!g->done_sent)
        return reply_error(who, Errc::would_block,
                           fmt::format("group {} is still running; join or stop it before closing it", m.group_id));
    close_group(m.group_id);
    router_.send_to_owner(who, msg::OkReply{});
}

void GlobalServices::owner_gone(Owner who) {
    // Its groups cannot be joined or closed by anyone now: stop them (with
    // the usual patience) and forget them once they have ended.
    for (auto& [gid, g] : groups_) {
        if (!(g->owner == who)) continue;
        g->orphaned = true;
        if (g->spec.outlive_owner && !g->done_sent && !g->tracker.finished()) {
            spdlog::debug("group {}: its owner (client {} of node {}) went away; it runs on", gid, who.client, who.node);
        } else if (g->done_sent) {
            router_.post([this, gid = gid] { close_group(gid); });
        } else if (!g->tracker.finished()) {
            spdlog::info("group {}: its owner (client {} of node {}) went away; stopping it", gid, who.client, who.node);
            g->patience_ms = opts_.patience_ms;
            apply(*g, g->tracker.stop());
        }
    }
}

msg::GroupStatus GlobalServices::group_status(const Group& g) {
    msg::GroupStatus st;
    st.group_id = g.tracker.id();
    st.state = state_code(g.tracker.state());
    st.restarts = g.tracker.restarts();
    st.members.reserve(g.members.size());
    for (std::uint32_t r = 0; r < g.members.size(); ++r) {
        const auto& t = g.tracker.members()[r];
        msg::MemberStatus m;
        m.where = g.members[r];
        m.state = t.state == pg::MemberState::pending   ? msg::MemberStateCode::pending
                  : t.state == pg::MemberState::running ? msg::MemberStateCode::running
                                                        : msg::MemberStateCode::exited;
        m.status = t.status;
        m.runs = g.runs[r];
        st.members.push_back(std::move(m));
    }
    return st;
}

// ---- stdin and output routing -----------------------------------------------------------

void GlobalServices::route_stdin(msg::StdinData&& d, Owner from) {
    auto drop = [&] {  // not the sender's to write, or gone: consumed, so its window moves on
        if (!d.data.empty()) router_.send_to_owner(from, msg::StdinAck{d.puid, d.data.size()});
    };
    auto it = member_of_.find(d.puid);
    if (it == member_of_.end()) return drop();
    auto g = groups_.find(it->second.first);
    if (g == groups_.end()) return drop();
    const std::uint32_t rank = it->second.second;
    const auto mode = g->second->spec.entries[g->second->entry_of_rank[rank]].proc.stdin_mode;
    const bool allowed = (mode == msg::StdinMode::forward && from == kFrontEnd && rank == 0) ||
                         (mode == msg::StdinMode::owner && from == g->second->owner);
    if (!allowed) {
        spdlog::warn("stdin for puid {} from client {} of node {}, which may not write it; dropped", d.puid,
                     from.client, from.node);
        return drop();
    }
    const std::uint32_t node = g->second->members[rank].node_id;
    if (router_.node_lost(node)) return drop();
    router_.send(node, d);
}

void GlobalServices::route_stdin_ack(const msg::StdinAck& a) {
    auto it = member_of_.find(a.puid);
    if (it == member_of_.end()) return;
    auto g = groups_.find(it->second.first);
    if (g == groups_.end()) return;
    const auto mode = g->second->spec.entries[g->second->entry_of_rank[it->second.second]].proc.stdin_mode;
    router_.send_to_owner(mode == msg::StdinMode::forward ? kFrontEnd : g->second->owner, a);
}

bool GlobalServices::route_output(const msg::Output& o) {
    auto g = groups_.find(o.group_id);
    if (g == groups_.end() || o.rank >= g->second->entry_of_rank.size()) return true;  // closed: nobody reads it
    const auto& proc = g->second->spec.entries[g->second->entry_of_rank[o.rank]].proc;
    const auto mode = o.stream == msg::Stream::out ? proc.stdout_mode : proc.stderr_mode;
    Owner to;
    if (mode == msg::OutputMode::forward) to = kFrontEnd;
    else if (mode == msg::OutputMode::owner) to = g->second->owner;
    else return true;
    return router_.send_to_owner(to, o) != Delivery::above_high_water;
}

}  // namespace dragon::agent
