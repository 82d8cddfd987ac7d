// The node agent: lifecycle, the front end connection, the executor (the
// processes of this node), local clients and teardown. Global services are
// in global.cpp, the links to other nodes in links.cpp.
#include "agent.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "../runtime/spawn.hpp"
#include "ompi_env.hpp"
#include "dragon/common/log.hpp"
#include "dragon/common/names.hpp"
#include "dragon/procgroup/io.hpp"
#include "dragon/procgroup/topology.hpp"

extern char** environ;

namespace dragon::agent {
using rt::ChildSpec;
using rt::merge_env;
using rt::resolve_program;
using rt::spawn_child;

namespace {

// Output waiting for its reader beyond this pauses reading children's pipes.
constexpr std::size_t kOutputHighWater = 8U << 20;
// How long to wait for a reaped process's pipes to reach EOF before reporting
// its exit anyway (a background grandchild may hold them open).
constexpr auto kOutputGrace = std::chrono::milliseconds(200);
// After SIGKILL, how long to wait for the last processes before giving up.
constexpr auto kKillWait = std::chrono::seconds(5);
constexpr std::size_t kClientMaxFrame = 1U << 20;
// The pool's pages are reserved (so touching them can never SIGBUS) once a run
// has lived this long; shorter runs never pay for it.
constexpr auto kReserveDelay = std::chrono::milliseconds(250);

const char* phase_name(Agent::Phase p) {
    switch (p) {
        case Agent::Phase::joining: return "joining";
        case Agent::Phase::running: return "running";
        case Agent::Phase::stopping_int: return "stopping_int";
        case Agent::Phase::stopping_term: return "stopping_term";
        case Agent::Phase::stopping_kill: return "stopping_kill";
        case Agent::Phase::finishing: return "finishing";
        case Agent::Phase::done: return "done";
    }
    return "?";
}

Result<std::array<sys::UniqueFd, 2>> make_pipe() {
    int fds[2];
    DRAGON_CHECK(sys::call("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); }));
    return std::array<sys::UniqueFd, 2>{sys::UniqueFd(fds[0]), sys::UniqueFd(fds[1])};
}

}  // namespace

Agent::Agent(AgentOptions opts, rt::NodeLock lock, channels::Pool pool)
    : opts_(std::move(opts)),
      frontend_routes_(kFrontEndRoutes, opts_.node_id == 0),
      client_routes_(kClientRoutes, opts_.node_id == 0),
      owner_routes_(kOwnerRoutes, opts_.node_id == 0),
      node_routes_(kNodeRoutes, opts_.node_id == 0),
      lane_routes_(kLaneRoutes, opts_.node_id == 0),
      lock_(std::move(lock)),
      pool_(std::move(pool)),
      client_acceptor_(io_),
      signals_(io_),
      escalation_(io_),
      reserve_timer_(io_),
      heartbeat_timer_(io_),
      join_timer_(io_),
      peers_done_timer_(io_),
      puids_(puid_allocator(opts_.node_id)) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    hostname_ = host;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view kv(*e);
        if (kv.starts_with("PATH=")) path_env_ = std::string(kv.substr(5));
        // The run's secret is the agents' alone: no managed process gets it.
        if (kv.starts_with(std::string(transport::kSecretHexEnv) + "=") ||
            kv.starts_with(std::string(transport::kSecretFileEnv) + "="))
            continue;
        base_env_.emplace_back(kv);
    }
    base_env_ = merge_env(std::move(base_env_),
                          {fmt::format("{}={}", names::kEnvRunId, opts_.run.str()),
                           fmt::format("{}={}", names::kEnvNodeId, opts_.node_id),
                           fmt::format("{}=@{}", names::kEnvAgentSocket,
                                       names::agent_socket_name(opts_.run, opts_.node_id))});
    links_.resize(opts_.nnodes);
    if (opts_.nnodes > 1) phase_ = Phase::joining;
    if (is_head())
        global_ = std::make_unique<GlobalServices>(
            static_cast<Router&>(*this), io_,
            GlobalOptions{opts_.nnodes, hostname_, opts_.config.patience_ms(), [this] { return node_resources(); }});
    bind_routes();
}

Agent::~Agent() { stop_waiting_all(); }

int agent_main(AgentOptions opts) {
    const std::string log_dir = opts.config.log_dir();
    if (auto st = log::init(fmt::format("agent-n{}", opts.node_id), opts.config.log_level(), log_dir); !st) {
        std::fprintf(stderr, "dragon-agent: error: %s\n", st.error().message().c_str());
        return 2;
    }
    if (!opts.cpus.empty()) {
        // Before the topology is read: it covers the cpus this process may use.
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : opts.cpus)
            if (c >= 0 && c < CPU_SETSIZE) CPU_SET(static_cast<std::size_t>(c), &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) {
            const int err = errno;
            const std::string list = fmt::format("{}", fmt::join(opts.cpus, ","));
            std::fprintf(stderr, "dragon-agent: error: --cpus %s: %s\n", list.c_str(), std::strerror(err));
            return 2;
        }
    }
    auto agent = Agent::create(std::move(opts));
    if (!agent) {
        if (!log_dir.empty()) spdlog::error("cannot start: {}", agent.error().message());
        std::fprintf(stderr, "dragon-agent: error: %s\n", agent.error().message().c_str());
        return 1;
    }
    return (*agent)->run();
}

Result<std::unique_ptr<Agent>> Agent::create(AgentOptions opts) {
    // Raise the fd limit: two pipes per process add up at thousands of processes.
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    // Orphaned grandchildren become ours, so teardown can find and stop them.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    ::signal(SIGPIPE, SIG_IGN);

    if (opts.nnodes == 0 || opts.node_id >= opts.nnodes)
        return make_error(Errc::invalid_argument, "node id {} is not below the node count {}", opts.node_id, opts.nnodes);
    if (opts.nnodes > 1 && !opts.secret)
        return Error(Errc::invalid_argument, "a run of several nodes needs the run's secret");
    if (opts.node_id == 0 && opts.control_fd < 0) return Error(Errc::invalid_argument, "node 0 needs a control fd");
    sys::UniqueFd control(opts.control_fd);
    sys::UniqueFd listen_fd(opts.listen_fd);
    opts.listen_fd = -1;
    // Inherited without close-on-exec (it had to survive our own exec); no
    // managed process may hold it, or the front end would not see us die.
    if (control)
        DRAGON_CHECK(sys::call("control fd", [&] { return ::fcntl(control.get(), F_SETFD, FD_CLOEXEC); }));
    auto lock = DRAGON_TRY(rt::NodeLock::acquire(opts.run, opts.node_id));
    // The lock exists first, so a crash from here on leaves leftovers that cleanup recognises.
    auto pool_name = DRAGON_TRY(channels::make_pool_name(opts.run.str(), opts.node_id));
    auto pool = channels::Pool::create_unreserved(pool_name, opts.config.pool_size());
    if (!pool) {
        (void)lock.remove_node_segments();
        return std::move(pool).error().context("creating the node's shared-memory pool");
    }
    std::unique_ptr<Agent> a(new Agent(std::move(opts), std::move(lock), std::move(*pool)));
    auto undo = [&](Error e) {
        (void)a->lock_.remove_node_segments();
        return e;
    };
    if (auto st = a->check_routes(); !st) return undo(std::move(st).error());
    if (auto st = a->open_client_socket(); !st) return undo(std::move(st).error());
    if (a->opts_.nnodes > 1) {
        a->opts_.listen_fd = listen_fd.release();
        if (auto st = a->open_listener(); !st) return undo(std::move(st).error());
    }
    if (control) {
        asio::local::stream_protocol::socket sock(a->io_);
        asio::error_code ec;
        sock.assign(asio::local::stream_protocol(), control.release(), ec);
        if (ec) return undo(make_error(Errc::system, "control socket: {}", ec.message()));
        a->frontend_ = std::make_shared<rt::UnixConnection>(std::move(sock), "front end connection");
    }
    a->signals_.add(SIGCHLD);
    a->signals_.add(SIGINT);
    a->signals_.add(SIGTERM);
    a->signals_.add(SIGHUP);
    return a;
}

Status Agent::open_client_socket() {
    const std::string name = names::agent_socket_name(opts_.run, opts_.node_id);
    asio::local::stream_protocol::endpoint ep(std::string(1, '\0') + name);
    asio::error_code ec;
    client_acceptor_.open(ep.protocol(), ec);
    // Asio opens sockets without close-on-exec: no managed process may inherit them.
    if (!ec && ::fcntl(client_acceptor_.native_handle(), F_SETFD, FD_CLOEXEC) != 0)
        return sys::error_from_errno("client socket: fcntl");
    if (!ec) client_acceptor_.bind(ep, ec);
    if (!ec) client_acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error(Errc::system, "client socket @{}: {}", name, ec.message());
    return ok();
}

int Agent::run() {
    if (frontend_) {
        frontend_->start([this](wire::Frame&& f) { on_frontend_frame(std::move(f)); },
                         [this](const Error* e) { on_frontend_closed(e); });
        frontend_->on_drained([this] { resume_parked_output(); });
    }
    accept_clients();
    wait_signals();
    spdlog::info("agent n{} of run {} up, pid {}", opts_.node_id, opts_.run.str(), ::getpid());
    if (opts_.nnodes > 1) {
        heartbeat_tick();
        join_timer_.expires_after(opts_.join_timeout);
        join_timer_.async_wait([this](const asio::error_code& ec) {
            if (ec || phase_ != Phase::joining) return;
            std::string missing;
            for (std::uint32_t n = 0; n < opts_.nnodes; ++n)
                if (n != opts_.node_id && !(links_[n].peer && (!is_head() || links_[n].ready)))
                    missing += fmt::format("{}{}", missing.empty() ? "" : ", ", n);
            spdlog::error("node {}: nodes {} did not join within {} s; giving up", opts_.node_id, missing,
                          opts_.join_timeout.count());
            exit_code_ = 1;
            begin_stop(true, 0, "join timeout");
        });
        if (!is_head()) dial_head();
    } else {
        say_hello_to_frontend();
    }
    // After channel-gateway traffic the loop keeps polling for a while
    // before it sleeps in epoll: a channel ping-pong between nodes then skips
    // the wake-up of a sleeping agent, at the price of that much CPU after
    // each burst (docs/runtime.md, agent-spin-us). Other events (start-up,
    // spawning, output) never spin: on a busy node that CPU is the ranks'.
    const auto spin = std::chrono::microseconds(opts_.config.agent_spin_us());
    if (spin.count() == 0) {
        io_.run();
        return exit_code_;
    }
    // Polls between pauses at first, then yields between polls: a process
    // that shares this cpu (a rank waiting for the message we carry, or the
    // one that will answer it) runs at once instead of after our time slice.
    constexpr int kPausesBeforeYield = 16;
    int idle = 0;
    while (!io_.stopped()) {
        if (io_.poll() > 0) {
            idle = 0;
            continue;
        }
        if (std::chrono::steady_clock::now() - gateway_busy_ < spin) {
            if (++idle > kPausesBeforeYield) {
                ::sched_yield();
            } else {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            continue;
        }
        idle = 0;
        io_.run_one();
    }
    return exit_code_;
}

void Agent::say_hello_to_frontend() {
    if (!frontend_ || frontend_lost_) return;
    frontend_->send(msg::AgentHello{msg::kProtocolVersion, opts_.run.str(), opts_.node_id,
                                    static_cast<std::int32_t>(::getpid()), hostname_});
}

void Agent::reserve_pool_step(std::size_t offset) {
    // 1 MiB per loop turn (under 1 ms), so exits and I/O are never held up long.
    constexpr std::size_t kStep = 1U << 20;
    if (phase_ != Phase::running || offset >= pool_.size()) {
        if (offset >= pool_.size()) spdlog::debug("pool {}: {} MiB reserved", pool_.name(), pool_.size() >> 20);
        return;
    }
    const std::size_t len = std::min(kStep, pool_.size() - offset);
    if (auto st = pool_.reserve(offset, len); !st) {
        spdlog::error("{}; processes touching the rest of the pool may be killed by SIGBUS", st.error().message());
        return;
    }
    asio::post(io_, [this, next = offset + len] { reserve_pool_step(next); });
}

// ---- front end (node 0) -----------------------------------------------------------

void Agent::on_frontend_closed(const Error* e) {
    frontend_lost_ = true;
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    if (e != nullptr) spdlog::warn("lost the front end: {}; stopping", e->message());
    else spdlog::warn("the front end went away; stopping");
    begin_stop(false, opts_.config.patience_ms(), "front end lost");
}

// ---- executor ---------------------------------------------------------------------

void Agent::exec_members(const msg::ExecMembers& m) {
    auto [it, fresh] = local_groups_.try_emplace(m.group_id);
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
    if (m.spec.pmi != msg::PmiMode::none)
        if (auto st = m.spec.pmi == msg::PmiMode::pmix ? start_pmix(lg, m) : start_pmi(lg, m); !st) {
            spdlog::error("group {}: {}", m.group_id, st.error().message());
            lg.first_failure = fmt::format("not started: {}", st.error().message());
        }
    start_some(m.group_id);
    if (!pool_reservation_started_) {
        // Off the start-up path, and not at all for runs shorter than the delay.
        pool_reservation_started_ = true;
        reserve_timer_.expires_after(kReserveDelay);
        reserve_timer_.async_wait([this](const asio::error_code& ec) { if (!ec) reserve_pool_step(0); });
    }
}

void Agent::start_some(std::uint64_t group_id) {
    // A slice per loop turn: thousands of spawns must not keep heartbeats,
    // exits and clients waiting (a silent agent looks lost to its peers).
    constexpr std::size_t kSlice = 256;
    auto it = local_groups_.find(group_id);
    if (it == local_groups_.end()) return;
    LocalGroup& lg = it->second;
    auto& reply = lg.started_reply;
    for (std::size_t n = 0; n < kSlice && lg.next_start < lg.to_start.size(); ++n) {
        const std::uint32_t rank = lg.to_start[lg.next_start++];
        if (!lg.placement.contains(rank)) {
            reply.members.push_back({rank, 0, 0, EINVAL, fmt::format("rank {} is not in the group", rank)});
            continue;
        }
        if (!lg.first_failure.empty()) {  // the group has failed: start no more
            reply.members.push_back({rank, 0, 0, 0, lg.first_failure});
            continue;
        }
        auto r = spawn_member(lg, rank);
        if (r.puid == 0) lg.first_failure = fmt::format("not started: rank {} could not start", rank);
        reply.members.push_back(std::move(r));
    }
    // Each slice is reported before any exit of its members can be.
    reply.complete = lg.next_start >= lg.to_start.size();
    send_to_node(0, reply);
    reply.members.clear();
    if (!reply.complete) return asio::post(io_, [this, group_id] { start_some(group_id); });
    spdlog::info("group {}: {} members started here", group_id, lg.to_start.size());
    lg.to_start = {};
}

msg::MemberStarted Agent::spawn_member(LocalGroup& g, std::uint32_t rank) {
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
    if (!accepting_work()) return fail(Error(Errc::closed, "the agent is shutting down"));
    if (spec.argv.empty()) return fail(Error(Errc::invalid_argument, "empty argv"));
    auto puid = puids_.next();
    if (!puid) return fail(puid.error());

    auto env = merge_env(base_env_, spec.env);
    env = merge_env(std::move(env), {
                                        fmt::format("DRAGON_RANK={}", rank),
                                        fmt::format("DRAGON_NRANKS={}", g.nranks),
                                        fmt::format("DRAGON_LOCAL_RANK={}", place.local_rank),
                                        fmt::format("DRAGON_LOCAL_SIZE={}", g.local_size),
                                        fmt::format("DRAGON_GROUP_ID={}", g.id),
                                        fmt::format("DRAGON_NODE_ID={}", opts_.node_id),
                                        fmt::format("{}={}", names::kEnvPuid, *puid),
                                    });
    std::pair<sys::UniqueFd, sys::UniqueFd> pmi_fds;  // (the child's end, ours) of its PMI_FD socket
    if (g.pmix) {
        auto pmix_env = pmix_for_member(g, rank);
        if (!pmix_env) return fail_io(pmix_env.error());
        env = merge_env(std::move(env), *pmix_env);
        const bool one_host =
            nodes_share_one_host(opts_.nnodes, [this](std::uint32_t n) { return node_hostname(n); });
        env = add_ompi_env(std::move(env), ompi_dirs(opts_.run, opts_.node_id), one_host);
    }
    if (g.pmi) {
        std::vector<std::string> pmi_env;
        auto fds = pmi_for_member(g, rank, pmi_env);
        if (!fds) return fail_io(fds.error());
        pmi_fds = std::move(*fds);
        env = merge_env(std::move(env), pmi_env);
    }
    std::string path_env = path_env_;
    for (const auto& kv : spec.env)
        if (kv.starts_with("PATH=")) path_env = kv.substr(5);
    auto path = resolve_program(spec.argv[0], path_env);
    if (!path) return fail(path.error());

    // Files are opened here, not in the child, so a bad path is a clear start
    // failure. A restarted rank appends to the files of its earlier runs; a
    // file shared by several processes is emptied once, by local rank 0.
    const pg::PathContext pc{rank, *puid, opts_.node_id, g.id, hostname_};
    const bool first_run = g.started_once.insert(rank).second;
    auto open_file = [&](const std::string& pattern, bool write, const char* what) -> Result<sys::UniqueFd> {
        auto name = DRAGON_TRY(pg::expand_path(pattern, pc));
        if (!name.starts_with('/') && !spec.cwd.empty()) name = spec.cwd + "/" + name;
        int flags = O_CLOEXEC | (write ? O_WRONLY | O_CREAT | O_APPEND : O_RDONLY);
        // A file of its own is emptied at its first start; a file per node
        // by that node's local rank 0; a file of the whole group by node 0
        // before any member starts (global.cpp), never here.
        if (write && first_run &&
            (pg::varies_by_process(pattern) || (pg::varies_by_node(pattern) && place.local_rank == 0)))
            flags |= O_TRUNC;
        const int fd = ::open(name.c_str(), flags, 0644);
        if (fd < 0) return sys::error_from_errno(fmt::format("{}: cannot open {} file '{}'", spec.argv[0], what, name));
        return sys::UniqueFd(fd);
    };

    std::array<sys::UniqueFd, 2> in_p, out_p, err_p;
    sys::UniqueFd in_file, out_file, err_file;
    auto in_mode = spec.stdin_mode;
    if (in_mode == msg::StdinMode::forward && rank != 0) in_mode = msg::StdinMode::null;  // as with mpiexec
    if (in_mode == msg::StdinMode::forward || in_mode == msg::StdinMode::owner) {
        auto p = make_pipe();
        if (!p) return fail(p.error());
        in_p = std::move(*p);
    } else if (in_mode == msg::StdinMode::file) {
        auto f = open_file(spec.stdin_path, false, "stdin");
        if (!f) return fail_io(f.error());
        in_file = std::move(*f);
    }
    for (auto stream : {msg::Stream::out, msg::Stream::err}) {
        const bool is_out = stream == msg::Stream::out;
        const auto mode = is_out ? spec.stdout_mode : spec.stderr_mode;
        auto& pipe = is_out ? out_p : err_p;
        if (mode == msg::OutputMode::forward || mode == msg::OutputMode::owner) {
            auto p = make_pipe();
            if (!p) return fail(p.error());
            pipe = std::move(*p);
        } else if (mode == msg::OutputMode::file) {
            if (!is_out && spec.stdout_mode == msg::OutputMode::file && spec.stderr_path == spec.stdout_path) continue;
            auto f = open_file(is_out ? spec.stdout_path : spec.stderr_path, true, is_out ? "stdout" : "stderr");
            if (!f) return fail_io(f.error());
            (is_out ? out_file : err_file) = std::move(*f);
        }
    }
    const int in_fd = in_p[0] ? in_p[0].get() : in_file.get();
    const int out_fd = out_p[1] ? out_p[1].get() : out_file.get();
    int err_fd = err_p[1] ? err_p[1].get() : err_file.get();
    if (spec.stderr_mode == msg::OutputMode::file && !err_file) err_fd = out_file.get();  // one file for both
    ChildSpec cs{*path, spec.argv, std::move(env), spec.cwd, in_fd, out_fd, err_fd,
                 {place.cpus.begin(), place.cpus.end()}, pmi_fds.first.get()};
    auto pid = spawn_child(cs);
    if (!pid) return fail(pid.error());
    if (g.pmi) {
        pmi_fds.first.reset();
        pmi_member_started(g, rank, std::move(pmi_fds.second));
    }

    auto p = std::make_unique<Process>();
    p->puid = *puid;
    p->pid = *pid;
    p->group_id = g.id;
    p->rank = rank;
    p->argv = spec.argv;
    asio::error_code ec;
    auto wrap = [&](sys::UniqueFd& fd) -> std::unique_ptr<asio::posix::stream_descriptor> {
        if (!fd) return nullptr;
        (void)sys::set_nonblocking(fd.get(), true);
        auto sd = std::make_unique<asio::posix::stream_descriptor>(io_);
        sd->assign(fd.release(), ec);
        return sd;
    };
    p->in = wrap(in_p[1]);
    p->out = wrap(out_p[0]);
    p->err = wrap(err_p[0]);
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
    return res;
}

void Agent::signal_members(const msg::SignalMembers& m) {
    auto it = local_groups_.find(m.group_id);
    if (it == local_groups_.end()) return;
    if (m.signal < 1 || m.signal > SIGRTMAX) return spdlog::error("signal_members: bad signal {}", m.signal);
    for (Puid puid : it->second.puids) {
        Process* p = find(puid);
        if (p == nullptr || p->state != msg::ProcState::running) continue;
        // The whole process group, so a shell's children hear it too.
        if (::kill(-p->pid, m.signal) != 0) ::kill(p->pid, m.signal);
    }
}

void Agent::respawn_member(const msg::RespawnMember& m) {
    msg::MembersStarted reply{m.group_id, {}, true};
    auto it = local_groups_.find(m.group_id);
    if (it == local_groups_.end() || !it->second.placement.contains(m.rank))
        reply.members.push_back({m.rank, 0, 0, EINVAL, fmt::format("rank {} is not placed on node {}", m.rank, opts_.node_id)});
    else
        reply.members.push_back(spawn_member(it->second, m.rank));
    send_to_node(0, reply);
}

void Agent::forget_group(std::uint64_t group_id) {
    auto it = local_groups_.find(group_id);
    if (it == local_groups_.end()) return;
    std::size_t forgotten = 0;
    for (Puid puid : it->second.puids) {
        auto p = procs_.find(puid);
        if (p == procs_.end() || p->second->state == msg::ProcState::running) continue;
        procs_.erase(p);  // closes its pipes; pending handlers find the puid gone
        ++forgotten;
    }
    if (it->second.pmi || it->second.pmix) pmi_forget(group_id);
    if (it->second.pmix) pmix_forget(it->second);
    local_groups_.erase(it);
    spdlog::debug("group {} closed: {} processes forgotten here", group_id, forgotten);
}

void Agent::handle_stdin(msg::StdinData&& d) {
    Process* p = find(d.puid);
    if (p == nullptr || !p->in) {
        // Gone or not forwarding: consume it so the writer's window moves on.
        if (!d.data.empty()) send_to_node(0, msg::StdinAck{d.puid, d.data.size()});
        return;
    }
    if (!d.data.empty()) p->stdin_queue.push_back(std::move(d.data));
    if (d.eof) p->stdin_eof = true;
    write_stdin(*p);
}

void Agent::write_stdin(Process& p) {
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
                          send_to_node(0, msg::StdinAck{puid, n});
                          if (ec) {  // the process closed its stdin: drop the rest, acknowledged
                              close_stdin(*q);
                              return;
                          }
                          write_stdin(*q);
                      });
}

void Agent::close_stdin(Process& p) {
    std::uint64_t dropped = 0;
    for (const auto& s : p.stdin_queue) dropped += s.size();
    p.stdin_queue.clear();
    if (dropped > 0) send_to_node(0, msg::StdinAck{p.puid, dropped});
    p.in.reset();
}

void Agent::watch_output(Puid puid, msg::Stream stream) {
    Process* p = find(puid);
    if (p == nullptr) return;
    auto& sd = stream == msg::Stream::out ? p->out : p->err;
    if (!sd) return;
    sd->async_wait(asio::posix::descriptor_base::wait_read, [this, puid, stream](const asio::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        on_output_ready(puid, stream);
    });
}

bool Agent::send_output(msg::Output&& o) {
    // To the global services like any report (on node 0 too); dropped when node 0 is gone: nobody can read it.
    return send(0, o) != Delivery::above_high_water;
}

void Agent::on_output_ready(Puid puid, msg::Stream stream) {
    Process* p = find(puid);
    if (p == nullptr) return;
    auto& sd = stream == msg::Stream::out ? p->out : p->err;
    if (!sd) return;
    static std::array<char, 64 * 1024> scratch;  // one loop thread: one buffer serves every pipe
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

void Agent::drain_output(Process& p) {
    // Whatever is still in the pipes goes out before ShutdownDone. Bounded:
    // strays are dead by now, so the pipes are at EOF or close to it.
    for (auto stream : {msg::Stream::out, msg::Stream::err}) {
        auto& sd = stream == msg::Stream::out ? p.out : p.err;
        for (unsigned i = 0; sd && i < 64; ++i) {
            std::array<char, 64 * 1024> buf;
            ssize_t n = ::read(sd->native_handle(), buf.data(), buf.size());
            if (n <= 0) break;
            (void)send_output(msg::Output{p.puid, stream, std::string(buf.data(), static_cast<std::size_t>(n)),
                                          p.group_id, p.rank});
        }
        sd.reset();
    }
}

void Agent::resume_parked_output() {
    self_held_back_ = false;
    auto parked = std::move(parked_output_);
    parked_output_.clear();
    for (auto [puid, stream] : parked) watch_output(puid, stream);
    auto paused = std::move(paused_links_);
    paused_links_.clear();
    for (auto& peer : paused)
        if (peer->is_open()) peer->resume_reading();
}

void Agent::reap_children() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        auto it = by_pid_.find(pid);
        if (it == by_pid_.end()) {
            spdlog::debug("reaped stray descendant pid {}", pid);
            continue;
        }
        Process* p = find(it->second);
        by_pid_.erase(it);
        if (p == nullptr) continue;
        p->state = msg::ProcState::exited;
        p->status = msg::ExitStatus::from_wait_status(status);
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
    maybe_finish();
}

void Agent::arm_output_grace(Puid puid) {
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
        if (parked && phase_ == Phase::running) {
            q->output_grace->expires_after(kOutputGrace);
            return arm_output_grace(puid);
        }
        queue_exit_report(*q);
    });
}

void Agent::maybe_report_exit(Process& p) {
    if (p.state != msg::ProcState::exited || p.exit_reported) return;
    if (p.out || p.err) return;  // output still draining (or the grace timer will report)
    queue_exit_report(p);
}

void Agent::queue_exit_report(Process& p) {
    if (p.exit_reported) return;
    p.exit_reported = true;
    if (p.output_grace) p.output_grace->cancel();
    auto it = local_groups_.find(p.group_id);
    if (it == local_groups_.end()) return;
    LocalGroup& lg = it->second;
    std::string why;
    const bool clean = p.status.signal == 0 && p.status.exit_code == 0;
    if (lg.pmi) {
        pmi_drain(lg, p.rank);
        why = lg.pmi->server->rank_exited(p.rank, clean);
    }
    if (lg.pmix) why = pmix_rank_exited(lg, p.rank, clean);
    lg.exit_batch.push_back({p.rank, p.puid, p.pid, p.status, std::move(why)});
    if (!lg.exit_flush_posted) {
        lg.exit_flush_posted = true;  // one members_exited per group per loop turn, however many exits
        asio::post(io_, [this, id = lg.id] { flush_exits(id); });
    }
}

void Agent::flush_exits(std::uint64_t group_id) {
    auto it = local_groups_.find(group_id);
    if (it == local_groups_.end()) return maybe_finish();
    LocalGroup& lg = it->second;
    lg.exit_flush_posted = false;
    if (!lg.exit_batch.empty()) send_to_node(0, msg::MembersExited{group_id, std::move(lg.exit_batch)});
    lg.exit_batch.clear();
    maybe_finish();
}

// ---- local clients ------------------------------------------------------------------

void Agent::accept_clients() {
    client_acceptor_.async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket sock) {
        if (ec == asio::error::operation_aborted || !client_acceptor_.is_open()) return;
        if (!ec) serve_client(std::move(sock));
        else spdlog::warn("accepting a client: {}", ec.message());
        accept_clients();
    });
}

void Agent::serve_client(asio::local::stream_protocol::socket sock) {
    ::fcntl(sock.native_handle(), F_SETFD, FD_CLOEXEC);  // not inherited by processes we start
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != ::geteuid() && cred.uid != 0)) {
        spdlog::warn("refused a client connection from uid {} pid {} (not this run's user)", cred.uid, cred.pid);
        return;
    }
    const std::uint64_t id = next_client_id_++;
    auto conn = std::make_shared<rt::UnixConnection>(std::move(sock), fmt::format("client {} (pid {})", id, cred.pid),
                                                     kClientMaxFrame);
    clients_[id] = Client{conn, false, 0, cred.pid};
    conn->on_drained([this] { resume_parked_output(); });
    conn->start([this, id](wire::Frame&& f) { on_client_frame(id, std::move(f)); },
                [this, id](const Error* e) {
                    if (e != nullptr) spdlog::warn("client {} dropped: {}", id, e->message());
                    on_client_closed(id);
                });
}

void Agent::on_client_frame(std::uint64_t id, wire::Frame&& f) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    Client& cl = it->second;
    auto c = cl.conn;
    auto refuse = [&](Errc code, std::string why) { refuse_client(id, code, std::move(why)); };
    if (cl.lane_opener) return;  // it asked for a lane; the answer is all it gets
    if (!cl.greeted) {
        if (f.type == static_cast<std::uint16_t>(msg::Type::lane_open)) return open_lane(id, std::move(f));
        auto hello = msg::decode_as<msg::ClientHello>(f);
        if (!hello) return refuse(Errc::protocol, "expected client_hello: " + hello.error().message());
        if (hello->version != msg::kProtocolVersion)
            return refuse(Errc::unsupported, fmt::format("protocol version {} not supported (agent speaks {})",
                                                         hello->version, msg::kProtocolVersion));
        cl.greeted = true;
        cl.puid = hello->puid;
        c->send(msg::ClientWelcome{msg::kProtocolVersion, opts_.run.str(), opts_.node_id,
                                   static_cast<std::int32_t>(::getpid())});
        return;
    }
    if (auto st = client_routes_.dispatch(Sender::client, id, std::move(f)); !st)
        refuse(Errc::protocol, st.error().message());
}

void Agent::on_client_closed(std::uint64_t id) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    const bool lane_opener = it->second.lane_opener;
    clients_.erase(it);
    if (lane_opener) return;  // nothing of it anywhere
    gateway_client_gone(id);
    if (is_head()) global_->owner_gone(Owner{0, id});
    else send_to_node(0, msg::ClientGone{id});
}

// ---- teardown -------------------------------------------------------------------

void Agent::wait_signals() {
    signals_.async_wait([this](const asio::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGCHLD) {
            reap_children();
        } else {
            const bool again = phase_ != Phase::running && phase_ != Phase::joining;
            spdlog::warn("agent got signal {}{}", ::strsignal(sig), again ? " again: killing everything" : "");
            begin_stop(again, opts_.config.patience_ms(), "signal");
        }
        if (phase_ != Phase::done) wait_signals();
    });
}

void Agent::signal_running(int sig) {
    for (auto& [puid, p] : procs_) {
        if (p->state != msg::ProcState::running) continue;
        // The whole process group, so a shell's children hear it too.
        if (::kill(-p->pid, sig) != 0) ::kill(p->pid, sig);
    }
}

void Agent::begin_stop(bool force, std::uint32_t patience_ms, const char* why) {
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    if (phase_ == Phase::running || phase_ == Phase::joining) {
        join_timer_.cancel();
        if (is_head()) {
            global_->stop_all();  // each node signals its own processes
            for (std::uint32_t n = 1; n < opts_.nnodes; ++n)
                if (links_[n].peer) links_[n].peer->send(msg::Shutdown{force, patience_ms});
        }
        patience_ms_ = patience_ms;
        signalled_ = static_cast<std::uint32_t>(running_count());
        spdlog::info("stopping ({}): {} processes running", why, signalled_);
        phase_ = Phase::stopping_int;
        if (!force) {
            signal_running(SIGINT);
            escalation_.expires_after(std::chrono::milliseconds(patience_ms_));
            escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
        }
    } else if (force && is_head()) {
        for (std::uint32_t n = 1; n < opts_.nnodes; ++n)
            if (links_[n].peer) links_[n].peer->send(msg::Shutdown{true, 0});
    }
    if (force && phase_ != Phase::stopping_kill) {
        phase_ = Phase::stopping_term;  // escalate() moves it to stopping_kill
        escalate();
    }
    spdlog::debug("agent phase: {}", phase_name(phase_));
    maybe_finish();
}

void Agent::escalate() {
    if (phase_ == Phase::stopping_int) {
        spdlog::info("{} processes outlived SIGINT: SIGTERM", running_count());
        phase_ = Phase::stopping_term;
        signal_running(SIGTERM);
        escalation_.expires_after(std::chrono::milliseconds(patience_ms_));
        escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
    } else if (phase_ == Phase::stopping_term) {
        killed_ = static_cast<std::uint32_t>(running_count());
        if (killed_ > 0) spdlog::info("{} processes outlived SIGTERM: SIGKILL", killed_);
        phase_ = Phase::stopping_kill;
        signal_running(SIGKILL);
        escalation_.expires_after(kKillWait);
        escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
    } else if (phase_ == Phase::stopping_kill) {
        spdlog::error("{} processes did not die after SIGKILL; giving up on them", running_count());
        finish();
    }
}

void Agent::maybe_finish() {
    if (phase_ != Phase::stopping_int && phase_ != Phase::stopping_term && phase_ != Phase::stopping_kill) return;
    if (running_count() > 0) return;
    for (auto& [puid, p] : procs_) queue_exit_report(*p);  // report now, do not wait for grace timers
    for (const auto& [id, lg] : local_groups_)
        if (lg.exit_flush_posted) return;  // flush_exits() calls back here
    finish();
}

void Agent::kill_strays() {
    // As subreaper we inherit orphaned descendants that left their process
    // group; the kernel lists our children in /proc/self/task/<tid>/children
    // (one thread: the loop's), which is far cheaper than scanning /proc.
    const std::string path = fmt::format("/proc/self/task/{}/children", ::getpid());
    for (int round = 0; round < 3; ++round) {
        std::ifstream in(path);
        if (!in) {
            spdlog::warn("{} is missing (kernel without CONFIG_PROC_CHILDREN): strays are not looked for", path);
            return;
        }
        std::vector<pid_t> strays;
        for (long pid = 0; in >> pid;) strays.push_back(static_cast<pid_t>(pid));
        if (strays.empty()) return;
        for (pid_t pid : strays) {
            spdlog::info("killing stray descendant pid {}", pid);
            ::kill(pid, SIGKILL);
        }
        for (pid_t pid : strays) ::waitpid(pid, nullptr, 0);
    }
}

void Agent::finish() {
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    phase_ = Phase::finishing;
    stop_waiting_all();  // other nodes' channel operations waiting here end now
    close_all_lanes();
    escalation_.cancel();
    reserve_timer_.cancel();
    join_timer_.cancel();
    kill_strays();
    asio::error_code ec;
    client_acceptor_.close(ec);
    for (auto& [puid, p] : procs_) {
        drain_output(*p);
        p->in.reset();
        if (p->output_grace) p->output_grace->cancel();
    }
    stop_pmix_server();  // its namespaces, its thread, its rendezvous directory
    if (auto removed = lock_.remove_node_segments(); !removed) {
        spdlog::error("removing shared memory: {}", removed.error().message());
        exit_code_ = 1;
    }
    spdlog::info("agent n{} done ({} signalled, {} needed SIGKILL)", opts_.node_id, signalled_, killed_);
    if (!is_head()) {
        // Node 0 learns we are done; then the link closes and we exit.
        auto& head = links_[0].peer;
        if (!head || !head->is_open()) return finish_now();
        head->send(msg::ShutdownDone{signalled_, killed_});
        head->close_after_flush([this] { finish_now(); });
        return;
    }
    // Node 0 reports last: the other nodes' output passes through it until
    // each has finished (or is lost), bounded by their own stop sequence.
    auto pending = [this] {
        std::uint32_t n = 0;
        for (std::uint32_t k = 1; k < opts_.nnodes; ++k) n += links_[k].peer && !links_[k].shutdown_done ? 1U : 0U;
        return n;
    };
    // After the output drained above, which goes to the global services on a
    // later loop turn like any report: ShutdownDone must follow it.
    if (pending() == 0) return asio::post(io_, [this] { finish_now(); });
    spdlog::info("waiting for {} other nodes to finish", pending());
    peers_done_timer_.expires_after(std::chrono::milliseconds(2 * patience_ms_) + 2 * kKillWait);
    peers_done_timer_.async_wait([this](const asio::error_code& e) {
        if (e || phase_ != Phase::finishing) return;
        for (std::uint32_t k = 1; k < opts_.nnodes; ++k)
            if (links_[k].peer && !links_[k].shutdown_done) {
                spdlog::error("node {} did not finish its teardown in time; giving up on it", k);
                exit_code_ = 1;
                links_[k].shutdown_done = true;  // given up: the front end kills what is left of it
                links_[k].peer->close();
                links_[k].peer.reset();
            }
        finish_now();
    });
}

void Agent::finish_now() {
    if (phase_ == Phase::done) return;
    if (is_head() && phase_ == Phase::finishing) {
        for (std::uint32_t k = 1; k < opts_.nnodes; ++k)
            if (links_[k].peer && !links_[k].shutdown_done) return;  // still waiting (the timer ends it)
    }
    peers_done_timer_.cancel();
    heartbeat_timer_.cancel();
    listener_.reset();
    for (auto& l : links_)
        if (l.peer) l.peer->close();
    auto done = [this] {
        phase_ = Phase::done;
        signals_.cancel();
        io_.stop();
    };
    if (!frontend_ || frontend_lost_) return done();
    frontend_->send(msg::ShutdownDone{signalled_, killed_});
    frontend_->close_after_flush(done);
}

Result<const pg::NodeResources*> Agent::node_resources() {
    if (resources_) return &*resources_;
    const std::string& spec = opts_.config.get("topology");
    Result<pg::Topology> topo = Error(Errc::internal, "no topology");
    if (spec.starts_with("synthetic:")) topo = pg::Topology::synthetic(spec.substr(10));
    else if (spec.starts_with("xml:")) topo = pg::Topology::from_xml_file(spec.substr(4));
    else topo = pg::Topology::discover();
    if (!topo) return std::move(topo).error().context("topology");
    auto res = DRAGON_TRY(pg::NodeResources::from(*topo, opts_.node_id, hostname_));
    if (opts_.cpu_limit != 0 && opts_.cpu_limit < res.pus.size()) {
        spdlog::info("node {}: using {} of its {} cpus (the batch system's grant)", opts_.node_id, opts_.cpu_limit,
                     res.pus.size());
        res.keep_first(opts_.cpu_limit);
    }
    spdlog::info("topology of node {}: {} cpus, {} cores, {} NUMA domains, {} sockets", opts_.node_id, res.pus.size(),
                 res.core_count(), res.numa_count(), res.socket_count());
    resources_ = std::move(res);
    return &*resources_;
}

Process* Agent::find(Puid puid) {
    auto it = procs_.find(puid);
    return it == procs_.end() ? nullptr : it->second.get();
}

}  // namespace dragon::agent
