// The executor (executor.hpp): starting, signalling and reaping this node's
// members, their stdin and output, and their reports to node 0.
#include "executor.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "../../runtime/spawn.hpp"
#include "dragon/common/names.hpp"
#include "member_io.hpp"

namespace dragon::agent {
namespace pg = dragon::procgroup;

namespace {
// Members' start and end times as reported to node 0 (msg::PastRun): wall
// clock, so that times from different nodes can be put on one time line.
std::int64_t wall_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// How long to wait for a reaped process's pipes to reach EOF before reporting
// its exit anyway (a background grandchild may hold them open).
constexpr auto kOutputGrace = std::chrono::milliseconds(200);
// A slice of a group's first start per loop turn: thousands of spawns must
// not keep heartbeats, exits and clients waiting (a silent agent looks lost).
// At most kStartSlice members, and no more once kStartSliceTime has passed:
// on a loaded node (hundreds of Python members setting up on two cpus) one
// spawn can take tens of ms, and 256 of them outlasted the peers' patience.
constexpr std::size_t kStartSlice = 256;
constexpr auto kStartSliceTime = std::chrono::milliseconds(5);
constexpr std::size_t kReadChunk = 64 * 1024;

/// Signals a member's whole process group, so a shell's children hear it too.
void signal_process(pid_t pid, int sig) {
    if (::kill(-pid, sig) != 0) ::kill(pid, sig);
}
}  // namespace

Executor::Executor(Router& router, asio::io_context& io, ExecutorOptions opts)
    : router_(router),
      io_(io),
      opts_(std::move(opts)),
      puids_(puid_allocator(opts_.node_id)),
      pmi_(router, io, PmiOptions{opts_.run, opts_.node_id, opts_.hostname, opts_.base_env,
                                  [this](std::uint64_t g, std::uint32_t r, const std::string& why) {
                                      end_rank(g, r, why);
                                  }}),
      zygotes_(ZygoteOptions{opts_.base_env, opts_.fast_start}) {}

void Executor::bind(Dispatcher<std::uint32_t>& nodes) {
    nodes.on<msg::ExecMembers>([this](std::uint32_t, msg::ExecMembers&& m) { exec_members(m); });
    nodes.on<msg::SignalMembers>([this](std::uint32_t, msg::SignalMembers&& m) { signal_members(m); });
    nodes.on<msg::RespawnMember>([this](std::uint32_t, msg::RespawnMember&& m) { respawn_member(m); });
    nodes.on<msg::ForgetGroup>([this](std::uint32_t, msg::ForgetGroup&& m) { forget_group(m.group_id); });
    nodes.on<msg::StdinData>([this](std::uint32_t, msg::StdinData&& m) { handle_stdin(std::move(m)); });
    pmi_.bind(nodes);
}

// ---- starting ---------------------------------------------------------------------

void Executor::exec_members(const msg::ExecMembers& m) {
    auto [it, fresh] = groups_.try_emplace(m.group_id);
    LocalGroup& lg = it->second;
    if (!fresh) return spdlog::error("exec_members for group {} twice; ignored", m.group_id);
    lg.id = m.group_id;
    lg.spec = m.spec;
    lg.nranks = m.nranks;
    lg.local_size = m.local_size;
    std::uint32_t end = 0;
    for (const auto& e : lg.spec.entries) lg.entry_end.push_back(end += e.count);
    lg.to_start.reserve(m.members.size());
    for (const auto& p : m.members) {
        if (p.rank < lg.nranks && p.rank < end) lg.placement[p.rank] = p;
        lg.to_start.push_back(p.rank);
    }
    lg.started_reply = msg::MembersStarted{m.group_id, {}, false};
    lg.started_reply.members.reserve(m.members.size());
    if (m.spec.pmi != msg::PmiMode::none) {
        if (auto job = pmi_.start(m); job) {
            lg.pmi = *job;
        } else {
            spdlog::error("group {}: {}", m.group_id, job.error().message());
            lg.first_failure = fmt::format("not started: {}", job.error().message());
        }
    }
    start_some(m.group_id);
    if (!first_group_seen_) {
        first_group_seen_ = true;
        if (opts_.first_group) opts_.first_group();
    }
}

void Executor::start_some(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) return;
    LocalGroup& lg = it->second;
    auto& reply = lg.started_reply;
    const auto slice_end = std::chrono::steady_clock::now() + kStartSliceTime;
    for (std::size_t n = 0; n < kStartSlice && lg.next_start < lg.to_start.size() &&
                            (n == 0 || std::chrono::steady_clock::now() < slice_end);
         ++n) {
        const std::uint32_t rank = lg.to_start[lg.next_start++];
        if (!lg.placement.contains(rank)) {
            reply.members.push_back({rank, 0, 0, EINVAL, fmt::format("rank {} is not in the group", rank), 0});
            continue;
        }
        if (!lg.first_failure.empty()) {  // the group has failed: start no more
            reply.members.push_back({rank, 0, 0, 0, lg.first_failure, 0});
            continue;
        }
        auto r = spawn_member(lg, rank);
        if (r.puid == 0) lg.first_failure = fmt::format("not started: rank {} could not start", rank);
        reply.members.push_back(std::move(r));
    }
    // Each slice is reported before any exit of its members can be.
    reply.complete = lg.next_start >= lg.to_start.size();
    router_.send(0, reply);
    reply.members.clear();
    if (!reply.complete) return router_.post([this, group_id] { start_some(group_id); });
    spdlog::info("group {}: {} members started here", group_id, lg.to_start.size());
    lg.to_start = {};
}

std::vector<std::string> Executor::member_env(const LocalGroup& g, std::uint32_t rank, Puid puid) const {
    const auto entry = static_cast<std::size_t>(
        std::upper_bound(g.entry_end.begin(), g.entry_end.end(), rank) - g.entry_end.begin());
    return rt::merge_env(rt::merge_env(opts_.base_env, g.spec.entries[entry].proc.env),
                         {
                             fmt::format("DRAGON_RANK={}", rank),
                             fmt::format("DRAGON_NRANKS={}", g.nranks),
                             fmt::format("DRAGON_LOCAL_RANK={}", g.placement.at(rank).local_rank),
                             fmt::format("DRAGON_LOCAL_SIZE={}", g.local_size),
                             fmt::format("DRAGON_GROUP_ID={}", g.id),
                             fmt::format("DRAGON_NODE_ID={}", opts_.node_id),
                             fmt::format("{}={}", names::kEnvPuid, puid),
                         });
}

msg::MemberStarted Executor::spawn_member(LocalGroup& g, std::uint32_t rank) {
    const auto entry = static_cast<std::size_t>(
        std::upper_bound(g.entry_end.begin(), g.entry_end.end(), rank) - g.entry_end.begin());
    const msg::ProcSpec& spec = g.spec.entries[entry].proc;
    const msg::MemberPlacement& place = g.placement[rank];
    msg::MemberStarted res;
    res.rank = rank;
    auto fail = [&](const Error& e) {
        res.sys_errno = e.sys_errno() != 0 ? e.sys_errno() : (e.code() == Errc::not_found ? ENOENT : EACCES);
        res.error = e.message();
        spdlog::info("spawn failed: {}", e.message());
        return res;
    };
    auto fail_io = [&](const Error& e) {  // not the program's fault: no exec errno (so 126, never 127)
        fail(e);
        res.sys_errno = 0;
        return res;
    };
    if (!router_.accepting_work()) return fail(Error(Errc::closed, "the agent is shutting down"));
    if (spec.argv.empty()) return fail(Error(Errc::invalid_argument, "empty argv"));
    auto puid = puids_.next();
    if (!puid) return fail(puid.error());

    auto env = member_env(g, rank, *puid);
    RankPmi pmi;
    if (g.pmi) {
        auto r = g.pmi->prepare_rank(rank, place.local_rank, std::move(env));
        if (!r) return fail_io(r.error());
        pmi = std::move(*r);
        env = std::move(pmi.env);
    }
    std::string path_env = opts_.path_env;
    for (const auto& kv : spec.env)
        if (kv.starts_with("PATH=")) path_env = kv.substr(5);
    auto path = rt::resolve_program(spec.argv[0], path_env);
    if (!path) return fail(path.error());

    const bool first_run = g.started_once.insert(rank).second;
    auto io = open_member_io(spec, rank, place.local_rank,
                             pg::PathContext{rank, *puid, opts_.node_id, g.id, opts_.hostname}, first_run);
    if (!io) return fail_io(io.error());
    rt::ChildSpec cs{*path, spec.argv, std::move(env), spec.cwd, io->child_in(), io->child_out(), io->child_err(),
                     {place.cpus.begin(), place.cpus.end()}, pmi.child_fd.get()};
    auto pid = [&]() -> Result<pid_t> {
        if (spec.fast_start && !g.pmi)
            if (auto forked = zygotes_.spawn(cs)) return std::move(*forked);
        return rt::spawn_child(cs);
    }();
    if (!pid) return fail(pid.error());
    if (g.pmi) {
        pmi.child_fd.reset();
        g.pmi->rank_started(rank, std::move(pmi.our_fd));
    }

    auto p = std::make_unique<Process>();
    p->puid = *puid;
    p->pid = *pid;
    p->group_id = g.id;
    p->rank = rank;
    p->argv = spec.argv;
    auto wrap = [&](sys::UniqueFd& fd) -> std::unique_ptr<asio::posix::stream_descriptor> {
        if (!fd) return nullptr;
        (void)sys::set_nonblocking(fd.get(), true);
        auto sd = std::make_unique<asio::posix::stream_descriptor>(io_);
        asio::error_code ec;
        sd->assign(fd.release(), ec);
        return sd;
    };
    p->in = wrap(io->in_pipe[1]);
    p->out = wrap(io->out_pipe[0]);
    p->err = wrap(io->err_pipe[0]);
    const bool has_out = p->out != nullptr, has_err = p->err != nullptr;
    by_pid_[*pid] = *puid;
    procs_.emplace(*puid, std::move(p));
    g.puids.push_back(*puid);
    ++running_;
    if (has_out) watch_output(*puid, msg::Stream::out);
    if (has_err) watch_output(*puid, msg::Stream::err);
    spdlog::debug("started puid {} pid {}: {}", *puid, *pid, fmt::join(spec.argv, " "));
    res.puid = *puid;
    res.pid = *pid;
    res.started_ns = wall_ns();
    return res;
}

void Executor::respawn_member(const msg::RespawnMember& m) {
    msg::MembersStarted reply{m.group_id, {}, true};
    auto it = groups_.find(m.group_id);
    if (it == groups_.end() || !it->second.placement.contains(m.rank))
        reply.members.push_back(
            {m.rank, 0, 0, EINVAL, fmt::format("rank {} is not placed on node {}", m.rank, opts_.node_id), 0});
    else
        reply.members.push_back(spawn_member(it->second, m.rank));
    router_.send(0, reply);
}

// ---- signals, closing ------------------------------------------------------------------

void Executor::signal_members(const msg::SignalMembers& m) {
    auto it = groups_.find(m.group_id);
    if (it == groups_.end()) return;
    if (m.signal < 1 || m.signal > SIGRTMAX) return spdlog::error("signal_members: bad signal {}", m.signal);
    for (Puid puid : it->second.puids) {
        Process* p = find(puid);
        if (p != nullptr && p->state == msg::ProcState::running) signal_process(p->pid, m.signal);
    }
}

void Executor::signal_running(int sig) {
    for (auto& [puid, p] : procs_)
        if (p->state == msg::ProcState::running) signal_process(p->pid, sig);
}

void Executor::end_rank(std::uint64_t group_id, std::uint32_t rank, const std::string& why) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) return;
    for (Puid puid : it->second.puids) {
        Process* p = find(puid);
        if (p == nullptr || p->rank != rank || p->state != msg::ProcState::running) continue;
        spdlog::warn("group {}: rank {}: {}; ending it", group_id, rank, why);
        signal_process(p->pid, SIGKILL);
    }
}

void Executor::forget_group(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) return;
    std::size_t forgotten = 0;
    for (Puid puid : it->second.puids) {
        auto p = procs_.find(puid);
        if (p == procs_.end() || p->second->state == msg::ProcState::running) continue;
        procs_.erase(p);  // closes its pipes; pending handlers find the puid gone
        ++forgotten;
    }
    if (it->second.spec.pmi != msg::PmiMode::none) pmi_.forget(group_id);
    groups_.erase(it);
    spdlog::debug("group {} closed: {} processes forgotten here", group_id, forgotten);
}

// ---- stdin ------------------------------------------------------------------------------

void Executor::handle_stdin(msg::StdinData&& d) {
    Process* p = find(d.puid);
    if (p == nullptr || !p->in) {
        // Gone or not forwarding: consume it so the writer's window moves on.
        if (!d.data.empty()) router_.send(0, msg::StdinAck{d.puid, d.data.size()});
        return;
    }
    if (!d.data.empty()) p->stdin_queue.push_back(std::move(d.data));
    if (d.eof) p->stdin_eof = true;
    write_stdin(*p);
}

void Executor::write_stdin(Process& p) {
    if (p.stdin_writing || !p.in) return;
    if (p.stdin_queue.empty()) {
        if (p.stdin_eof) close_stdin(p);
        return;
    }
    p.stdin_writing = true;
    asio::async_write(*p.in, asio::buffer(p.stdin_queue.front()),
                      [this, puid = p.puid](const asio::error_code& ec, std::size_t) {
                          Process* q = find(puid);
                          if (q == nullptr) return;
                          q->stdin_writing = false;
                          // A write that completed just as the process was reaped: close_stdin
                          // already dropped (and acknowledged) the queue, this piece included.
                          if (ec == asio::error::operation_aborted || !q->in || q->stdin_queue.empty()) return;
                          const auto n = q->stdin_queue.front().size();
                          q->stdin_queue.pop_front();
                          router_.send(0, msg::StdinAck{puid, n});
                          if (ec) {  // the process closed its stdin: drop the rest, acknowledged
                              close_stdin(*q);
                              return;
                          }
                          write_stdin(*q);
                      });
}

void Executor::close_stdin(Process& p) {
    std::uint64_t dropped = 0;
    for (const auto& s : p.stdin_queue) dropped += s.size();
    p.stdin_queue.clear();
    if (dropped > 0) router_.send(0, msg::StdinAck{p.puid, dropped});
    p.in.reset();
}

// ---- output -----------------------------------------------------------------------------

void Executor::watch_output(Puid puid, msg::Stream stream) {
    Process* p = find(puid);
    if (p == nullptr) return;
    auto& sd = stream == msg::Stream::out ? p->out : p->err;
    if (!sd) return;
    sd->async_wait(asio::posix::descriptor_base::wait_read, [this, puid, stream](const asio::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        on_output_ready(puid, stream);
    });
}

bool Executor::send_output(msg::Output&& o) {
    // To the global services like any report (on node 0 too); dropped when node 0 is gone: nobody can read it.
    return router_.send(0, o) != Delivery::above_high_water;
}

void Executor::on_output_ready(Puid puid, msg::Stream stream) {
    Process* p = find(puid);
    if (p == nullptr) return;
    auto& sd = stream == msg::Stream::out ? p->out : p->err;
    if (!sd) return;
    static std::array<char, kReadChunk> scratch;  // one loop thread: one buffer serves every pipe
    ssize_t n = ::read(sd->native_handle(), scratch.data(), scratch.size());
    if (n > 0) {
        if (!send_output(msg::Output{puid, stream, std::string(scratch.data(), static_cast<std::size_t>(n)),
                                     p->group_id, p->rank})) {
            parked_output_.emplace_back(puid, stream);  // resumes when that path drains
            return;
        }
        watch_output(puid, stream);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        watch_output(puid, stream);
        return;
    }
    sd.reset();  // EOF (or a read error): this stream is done
    maybe_report_exit(*p);
}

void Executor::drain_output(Process& p) {
    // Whatever is still in the pipes goes out before ShutdownDone. Bounded:
    // strays are dead by now, so the pipes are at EOF or close to it.
    for (auto stream : {msg::Stream::out, msg::Stream::err}) {
        auto& sd = stream == msg::Stream::out ? p.out : p.err;
        for (unsigned i = 0; sd && i < 64; ++i) {
            std::array<char, kReadChunk> buf;
            ssize_t n = ::read(sd->native_handle(), buf.data(), buf.size());
            if (n <= 0) break;
            (void)send_output(msg::Output{p.puid, stream, std::string(buf.data(), static_cast<std::size_t>(n)),
                                          p.group_id, p.rank});
        }
        sd.reset();
    }
}

void Executor::resume_output() {
    auto parked = std::move(parked_output_);
    parked_output_.clear();
    for (auto [puid, stream] : parked) watch_output(puid, stream);
}

// ---- exits ------------------------------------------------------------------------------

void Executor::reap() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        auto it = by_pid_.find(pid);
        if (it == by_pid_.end()) {
            if (!zygotes_.reaped(pid, status)) spdlog::debug("reaped stray descendant pid {}", pid);
            continue;
        }
        Process* p = find(it->second);
        by_pid_.erase(it);
        if (p == nullptr) continue;
        p->state = msg::ProcState::exited;
        p->status = msg::ExitStatus::from_wait_status(status);
        p->ended_ns = wall_ns();
        --running_;
        close_stdin(*p);
        spdlog::debug("puid {} pid {} ended: code {} signal {}", p->puid, pid, p->status.exit_code, p->status.signal);
        if (p->out || p->err) {
            // Let the pipes drain first so the exit follows all of its output.
            p->output_grace = std::make_unique<asio::steady_timer>(io_, kOutputGrace);
            arm_output_grace(p->puid);
        }
        maybe_report_exit(*p);
    }
    if (opts_.exits_changed) opts_.exits_changed();
}

void Executor::arm_output_grace(Puid puid) {
    Process* p = find(puid);
    if (p == nullptr || !p->output_grace) return;
    p->output_grace->async_wait([this, puid](const asio::error_code& ec) {
        if (ec) return;
        Process* q = find(puid);
        if (q == nullptr) return;
        // A stream held back by a full reader is not a stream at EOF: its
        // bytes are still to come, so the exit waits for them.
        const bool parked = std::any_of(parked_output_.begin(), parked_output_.end(),
                                        [puid](const auto& e) { return e.first == puid; });
        if (parked && router_.accepting_work()) {
            q->output_grace->expires_after(kOutputGrace);
            return arm_output_grace(puid);
        }
        queue_exit_report(*q);
    });
}

void Executor::maybe_report_exit(Process& p) {
    if (p.state != msg::ProcState::exited || p.exit_reported) return;
    if (p.out || p.err) return;  // output still draining (or the grace timer will report)
    queue_exit_report(p);
}

void Executor::queue_exit_report(Process& p) {
    if (p.exit_reported) return;
    p.exit_reported = true;
    if (p.output_grace) p.output_grace->cancel();
    auto it = groups_.find(p.group_id);
    if (it == groups_.end()) return;
    LocalGroup& lg = it->second;
    const bool clean = p.status.signal == 0 && p.status.exit_code == 0;
    std::string why = lg.pmi ? lg.pmi->rank_exited(p.rank, clean) : std::string();
    lg.exit_batch.push_back({p.rank, p.puid, p.pid, p.status, std::move(why), p.ended_ns});
    if (!lg.exit_flush_posted) {
        lg.exit_flush_posted = true;  // one members_exited per group per loop turn, however many exits
        router_.post([this, id = lg.id] { flush_exits(id); });
    }
}

void Executor::flush_exits(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it != groups_.end()) {
        LocalGroup& lg = it->second;
        lg.exit_flush_posted = false;
        if (!lg.exit_batch.empty()) router_.send(0, msg::MembersExited{group_id, std::move(lg.exit_batch)});
        lg.exit_batch.clear();
    }
    if (opts_.exits_changed) opts_.exits_changed();
}

bool Executor::report_all_exits() {
    for (auto& [puid, p] : procs_) queue_exit_report(*p);  // now: no grace timers at the end
    return std::none_of(groups_.begin(), groups_.end(), [](const auto& g) { return g.second.exit_flush_posted; });
}

void Executor::finish() {
    for (auto& [puid, p] : procs_) {
        drain_output(*p);
        p->in.reset();
        if (p->output_grace) p->output_grace->cancel();
    }
    pmi_.stop();  // its jobs, the PMIx server and its directory
    zygotes_.stop();
    // A member reaped from now on (one that outlived SIGKILL) reports without PMI.
    for (auto& [id, g] : groups_) g.pmi = nullptr;
}

msg::ProcTable Executor::process_table() const {
    msg::ProcTable t;
    for (const auto& [puid, p] : procs_) t.procs.push_back({puid, p->pid, p->state, p->status, p->argv});
    return t;
}

Process* Executor::find(Puid puid) {
    auto it = procs_.find(puid);
    return it == procs_.end() ? nullptr : it->second.get();
}

const Process* Executor::find_process(Puid puid) const {
    auto it = procs_.find(puid);
    return it == procs_.end() ? nullptr : it->second.get();
}

}  // namespace dragon::agent
