// The node agent's event loop and handlers.
#include "agent.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "dragon/common/log.hpp"
#include "dragon/common/names.hpp"
#include "dragon/procgroup/io.hpp"
#include "dragon/procgroup/placement.hpp"
#include "dragon/procgroup/topology.hpp"
#include "../runtime/spawn.hpp"

extern char** environ;

namespace dragon::agent {
using rt::ChildSpec;
using rt::merge_env;
using rt::resolve_program;
using rt::spawn_child;

namespace {

// Output waiting for the front end beyond this pauses reading children's pipes.
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
      lock_(std::move(lock)),
      pool_(std::move(pool)),
      client_acceptor_(io_),
      signals_(io_),
      escalation_(io_),
      reserve_timer_(io_),
      puids_(puid_allocator(opts_.node_id)) {
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view kv(*e);
        if (kv.starts_with("PATH=")) path_env_ = std::string(kv.substr(5));
        base_env_.emplace_back(kv);
    }
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    hostname_ = host;
    base_env_ = merge_env(std::move(base_env_),
                          {fmt::format("{}={}", names::kEnvRunId, opts_.run.str()),
                           fmt::format("{}={}", names::kEnvNodeId, opts_.node_id),
                           fmt::format("{}=@{}", names::kEnvAgentSocket,
                                       names::agent_socket_name(opts_.run, opts_.node_id))});
}

Agent::~Agent() = default;

int agent_main(AgentOptions opts) {
    const std::string log_dir = opts.config.log_dir();
    if (auto st = log::init(fmt::format("agent-n{}", opts.node_id), opts.config.log_level(), log_dir); !st) {
        std::fprintf(stderr, "dragon-agent: error: %s\n", st.error().message().c_str());
        return 2;
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

    sys::UniqueFd control(opts.control_fd);
    // Inherited without close-on-exec (it had to survive our own exec); no
    // managed process may hold it, or the front end would not see us die.
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
    if (auto st = a->open_client_socket(); !st) {
        (void)a->lock_.remove_node_segments();
        return std::move(st).error();
    }
    asio::local::stream_protocol::socket sock(a->io_);
    asio::error_code ec;
    sock.assign(asio::local::stream_protocol(), control.release(), ec);
    if (ec) return make_error(Errc::system, "control socket: {}", ec.message());
    a->frontend_ = std::make_shared<rt::UnixConnection>(std::move(sock), "front end connection");
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
    frontend_->start([this](wire::Frame&& f) { on_frontend_frame(std::move(f)); },
                     [this](const Error* e) { on_frontend_closed(e); });
    frontend_->on_drained([this] { resume_parked_output(); });
    frontend_->send(msg::AgentHello{msg::kProtocolVersion, opts_.run.str(), opts_.node_id,
                                    static_cast<std::int32_t>(::getpid()), hostname_});
    accept_clients();
    wait_signals();
    spdlog::info("agent n{} of run {} up, pid {}", opts_.node_id, opts_.run.str(), ::getpid());
    io_.run();
    return exit_code_;
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

// ---- front end ------------------------------------------------------------

void Agent::on_frontend_frame(wire::Frame&& f) {
    switch (static_cast<msg::Type>(f.type)) {
        case msg::Type::group_start:
            if (auto m = msg::decode_as<msg::GroupStart>(f)) return handle_group_start(*m, kFrontEnd);
            else return spdlog::error("bad group_start frame: {}", m.error().message());
        case msg::Type::stdin_data:
            if (auto m = msg::decode_as<msg::StdinData>(f)) return handle_stdin(std::move(*m), kFrontEnd);
            else return spdlog::error("bad stdin frame: {}", m.error().message());
        case msg::Type::shutdown:
            if (auto m = msg::decode_as<msg::Shutdown>(f)) {
                return begin_stop(m->force, m->patience_ms, m->force ? "forced shutdown" : "shutdown");
            } else {
                spdlog::error("bad shutdown frame: {}", m.error().message());
                return begin_stop(false, opts_.config.patience_ms(), "bad shutdown frame");
            }
        default:
            spdlog::error("unexpected message '{}' ({}) from the front end", msg::type_name(f.type), f.type);
    }
}

void Agent::on_frontend_closed(const Error* e) {
    frontend_lost_ = true;
    parked_output_.clear();
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    if (e != nullptr) spdlog::warn("lost the front end: {}; stopping", e->message());
    else spdlog::warn("the front end went away; stopping");
    begin_stop(false, opts_.config.patience_ms(), "front end lost");
}

rt::UnixConnection* Agent::sink(SinkId id) {
    if (id == kFrontEnd) return frontend_lost_ ? nullptr : frontend_.get();
    if (id == kNoSink) return nullptr;
    auto it = clients_.find(id);
    return it == clients_.end() ? nullptr : it->second.conn.get();
}

SpawnOutcome Agent::spawn_member(Group& g, std::uint32_t rank, const std::vector<std::string>& extra_env) {
    const msg::ProcSpec& spec = g.spec.entries[g.entry_of_rank[rank]].proc;
    const auto& cpus = g.members[rank].cpus;
    SpawnOutcome res;
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
    if (phase_ != Phase::running) return fail(Error(Errc::closed, "the agent is shutting down"));
    if (spec.argv.empty()) return fail(Error(Errc::invalid_argument, "empty argv"));
    auto puid = puids_.next();
    if (!puid) return fail(puid.error());

    auto env = merge_env(base_env_, spec.env);
    env = merge_env(std::move(env), extra_env);
    env = merge_env(std::move(env), {fmt::format("{}={}", names::kEnvPuid, *puid)});
    std::string path_env = path_env_;
    for (const auto& kv : spec.env)
        if (kv.starts_with("PATH=")) path_env = kv.substr(5);
    auto path = resolve_program(spec.argv[0], path_env);
    if (!path) return fail(path.error());

    // Files are opened here, not in the child, so a bad path is a clear start
    // failure. A restarted rank appends to the files of its earlier runs; a
    // file shared by several processes is emptied once, by local rank 0.
    const pg::PathContext pc{rank, *puid, opts_.node_id, g.tracker.id(), hostname_};
    const bool first_run = g.tracker.members()[rank].history.empty();
    std::string stdout_file;
    auto open_file = [&](const std::string& pattern, bool write, const char* what) -> Result<sys::UniqueFd> {
        auto name = DRAGON_TRY(pg::expand_path(pattern, pc));
        if (!name.starts_with('/') && !spec.cwd.empty()) name = spec.cwd + "/" + name;
        int flags = O_CLOEXEC | (write ? O_WRONLY | O_CREAT | O_APPEND : O_RDONLY);
        if (write && first_run && (pg::varies_by_process(pattern) || g.members[rank].local_rank == 0)) flags |= O_TRUNC;
        if (write && what == std::string_view("stdout")) stdout_file = name;
        const int fd = ::open(name.c_str(), flags, 0644);
        if (fd < 0) return sys::error_from_errno(fmt::format("{}: cannot open {} file '{}'", spec.argv[0], what, name));
        return sys::UniqueFd(fd);
    };

    std::array<sys::UniqueFd, 2> in_p, out_p, err_p;
    sys::UniqueFd in_file, out_file, err_file;
    auto in_mode = spec.stdin_mode;
    if (in_mode == msg::StdinMode::forward && rank != 0) in_mode = msg::StdinMode::null;  // as with mpiexec
    SinkId stdin_from = kNoSink, out_to = kNoSink, err_to = kNoSink;
    if (in_mode == msg::StdinMode::forward || in_mode == msg::StdinMode::owner) {
        auto p = make_pipe();
        if (!p) return fail(p.error());
        in_p = std::move(*p);
        stdin_from = in_mode == msg::StdinMode::forward ? kFrontEnd : g.owner;
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
            (is_out ? out_to : err_to) = mode == msg::OutputMode::forward ? kFrontEnd : g.owner;
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
    ChildSpec cs{*path, spec.argv, std::move(env), spec.cwd, in_fd, out_fd, err_fd, {cpus.begin(), cpus.end()}};
    auto pid = spawn_child(cs);
    if (!pid) return fail(pid.error());

    auto p = std::make_unique<Process>();
    p->puid = *puid;
    p->pid = *pid;
    p->group_id = g.tracker.id();
    p->rank = rank;
    p->out_to = out_to;
    p->err_to = err_to;
    p->stdin_from = stdin_from;
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
    ++running_;
    if (has_out) watch_output(*puid, msg::Stream::out);
    if (has_err) watch_output(*puid, msg::Stream::err);
    spdlog::debug("started puid {} pid {}: {}", *puid, *pid, fmt::join(spec.argv, " "));
    res.puid = *puid;
    res.pid = *pid;
    return res;
}

void Agent::handle_stdin(msg::StdinData&& d, SinkId from) {
    Process* p = find(d.puid);
    if (p == nullptr || !p->in || p->stdin_from != from) {
        // Gone, not forwarding, or not the sender's to write: consume it so
        // the sender's window moves on.
        if (p != nullptr && p->stdin_from != from && from != kFrontEnd)
            spdlog::warn("client {} wrote stdin of puid {}, which is not its to write; dropped", from, d.puid);
        if (auto* c = sink(from); c != nullptr && !d.data.empty()) c->send(msg::StdinAck{d.puid, d.data.size()});
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
                          if (ec == asio::error::operation_aborted) return;
                          const auto n = q->stdin_queue.front().size();
                          q->stdin_queue.pop_front();
                          if (auto* c = sink(q->stdin_from)) c->send(msg::StdinAck{puid, n});
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
    if (auto* c = sink(p.stdin_from); c != nullptr && dropped > 0) c->send(msg::StdinAck{p.puid, dropped});
    p.in.reset();
}

// ---- clients --------------------------------------------------------------

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
    auto refuse = [&](Errc code, std::string why) {
        spdlog::warn("{}: {}", c->name(), why);
        c->send(msg::ErrorReply{static_cast<std::uint16_t>(code), std::move(why)});
        c->close_after_flush(nullptr);
    };
    auto reply_error = [&](const Error& e) {  // a refused request; the connection stays
        c->send(msg::ErrorReply{static_cast<std::uint16_t>(e.code()), e.message()});
    };
    if (!cl.greeted) {
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
    switch (static_cast<msg::Type>(f.type)) {
        case msg::Type::proc_query: {
            if (auto q = msg::decode_as<msg::ProcQuery>(f); !q) return refuse(Errc::protocol, q.error().message());
            msg::ProcTable t;
            for (const auto& [puid, p] : procs_) t.procs.push_back({puid, p->pid, p->state, p->status, p->argv});
            return c->send(t);
        }
        case msg::Type::group_start: {
            auto m = msg::decode_as<msg::GroupStart>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            return handle_group_start(*m, id);
        }
        case msg::Type::stdin_data: {
            auto m = msg::decode_as<msg::StdinData>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            return handle_stdin(std::move(*m), id);
        }
        case msg::Type::group_query: {
            auto m = msg::decode_as<msg::GroupQuery>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            auto g = groups_.find(m->group_id);
            if (g == groups_.end()) return reply_error(Error(Errc::not_found, fmt::format("no group {}", m->group_id)));
            return c->send(group_status(*g->second));
        }
        case msg::Type::group_signal: {
            auto m = msg::decode_as<msg::GroupSignal>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            Group* g = owned_group(id, m->group_id);
            if (g == nullptr) return;
            if (m->signal < 1 || m->signal > SIGRTMAX)
                return reply_error(Error(Errc::invalid_argument, fmt::format("bad signal number {}", m->signal)));
            for (const auto& mem : g->tracker.members()) {
                if (mem.state != pg::MemberState::running) continue;
                if (::kill(-mem.pid, m->signal) != 0) ::kill(mem.pid, m->signal);
            }
            spdlog::info("group {}: signal {} to its running members (client {})", g->tracker.id(), m->signal, id);
            return c->send(msg::OkReply{});
        }
        case msg::Type::group_stop: {
            auto m = msg::decode_as<msg::GroupStop>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            Group* g = owned_group(id, m->group_id);
            if (g == nullptr) return;
            c->send(msg::OkReply{});
            if (g->tracker.finished()) return;
            g->patience_ms = m->patience_ms;
            if (m->force && g->stop_timer) {  // already stopping: straight to SIGKILL
                g->stop_signal = SIGTERM;
                g->stop_timer->cancel();
                return escalate_group(g->tracker.id());
            }
            if (m->force) g->stop_signal = SIGTERM;  // stop_group's first step is then SIGKILL
            return apply(*g, g->tracker.stop());
        }
        case msg::Type::group_close: {
            auto m = msg::decode_as<msg::GroupClose>(f);
            if (!m) return refuse(Errc::protocol, m.error().message());
            Group* g = owned_group(id, m->group_id);
            if (g == nullptr) return;
            if (!g->done_sent)
                return reply_error(Error(Errc::would_block,
                                         fmt::format("group {} is still running; join or stop it before closing it",
                                                     m->group_id)));
            close_group(m->group_id);
            return c->send(msg::OkReply{});
        }
        default:
            refuse(Errc::protocol, fmt::format("unexpected message '{}' ({})", msg::type_name(f.type), f.type));
    }
}

Group* Agent::owned_group(std::uint64_t client, std::uint64_t group_id) {
    auto* c = sink(client);
    auto it = groups_.find(group_id);
    if (it == groups_.end()) {
        if (c != nullptr) c->send(msg::ErrorReply{static_cast<std::uint16_t>(Errc::not_found),
                                                  fmt::format("no group {}", group_id)});
        return nullptr;
    }
    if (it->second->owner != client) {
        if (c != nullptr)
            c->send(msg::ErrorReply{static_cast<std::uint16_t>(Errc::permission_denied),
                                    fmt::format("group {} belongs to {}", group_id,
                                                it->second->owner == kFrontEnd ? std::string("the front end")
                                                                               : "another client")});
        return nullptr;
    }
    return it->second.get();
}

void Agent::on_client_closed(std::uint64_t id) {
    if (clients_.erase(id) == 0) return;
    // Its groups cannot be joined or closed by anyone now: stop them (with
    // the usual patience) and forget them once they have ended.
    for (auto& [gid, g] : groups_) {
        if (g->owner != id) continue;
        g->orphaned = true;
        if (g->done_sent) {
            asio::post(io_, [this, gid = gid] { close_group(gid); });
        } else if (!g->tracker.finished()) {
            spdlog::info("group {}: its owner (client {}) went away; stopping it", gid, id);
            g->patience_ms = opts_.config.patience_ms();
            apply(*g, g->tracker.stop());
        }
    }
}

msg::GroupStatus Agent::group_status(const Group& g) {
    msg::GroupStatus st;
    st.group_id = g.tracker.id();
    switch (g.tracker.state()) {
        case pg::GroupState::running: st.state = msg::GroupStateCode::running; break;
        case pg::GroupState::stopping: st.state = msg::GroupStateCode::stopping; break;
        case pg::GroupState::succeeded: st.state = msg::GroupStateCode::succeeded; break;
        case pg::GroupState::failed: st.state = msg::GroupStateCode::failed; break;
        case pg::GroupState::stopped: st.state = msg::GroupStateCode::stopped; break;
    }
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
        for (Puid puid : t.history) {
            const Process* p = find(puid);
            if (p == nullptr) continue;
            m.runs.push_back({puid, p->pid, p->state == msg::ProcState::exited, p->status});
        }
        st.members.push_back(std::move(m));
    }
    return st;
}

// ---- output and exits ----------------------------------------------------

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

void Agent::on_output_ready(Puid puid, msg::Stream stream) {
    Process* p = find(puid);
    if (p == nullptr) return;
    auto& sd = stream == msg::Stream::out ? p->out : p->err;
    if (!sd) return;
    static std::array<char, 64 * 1024> scratch;  // one loop thread: one buffer serves every pipe
    ssize_t n = ::read(sd->native_handle(), scratch.data(), scratch.size());
    if (n > 0) {
        auto* to = sink(stream == msg::Stream::out ? p->out_to : p->err_to);  // null: gone, so dropped
        if (to != nullptr) to->send(msg::Output{puid, stream, std::string(scratch.data(), static_cast<std::size_t>(n)), p->group_id, p->rank});
        if (to != nullptr && to->queued_bytes() > kOutputHighWater) {
            parked_output_.emplace_back(puid, stream);  // resumes when that connection drains
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
            if (auto* to = sink(stream == msg::Stream::out ? p.out_to : p.err_to))
                to->send(msg::Output{p.puid, stream, std::string(buf.data(), static_cast<std::size_t>(n)), p.group_id, p.rank});
        }
        sd.reset();
    }
}

void Agent::resume_parked_output() {
    auto parked = std::move(parked_output_);
    parked_output_.clear();
    for (auto [puid, stream] : parked) watch_output(puid, stream);
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
        if (auto g = groups_.find(p->group_id); g != groups_.end()) on_group_exit(*g->second, p->puid, p->status);
        if (p->out || p->err) {
            // Let the pipes drain first so the exit follows all of its output.
            p->output_grace = std::make_unique<asio::steady_timer>(io_, kOutputGrace);
            p->output_grace->async_wait([this, puid = p->puid](const asio::error_code& ec) {
                if (ec) return;
                if (Process* q = find(puid)) queue_exit_report(*q);
            });
        }
        maybe_report_exit(*p);
    }
    maybe_finish();
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
    exit_reports_.push_back({p.puid, p.pid, p.status});
    if (!exit_flush_posted_) {
        exit_flush_posted_ = true;  // one ProcExit per loop turn, however many exits
        asio::post(io_, [this] { flush_exit_reports(); });
    }
    if (auto g = groups_.find(p.group_id); g != groups_.end()) {
        if (g->second->unreported > 0) --g->second->unreported;
        maybe_finish_group(*g->second);
    }
}

void Agent::flush_exit_reports() {
    exit_flush_posted_ = false;
    send_exit_reports();
    maybe_finish();
}

void Agent::send_exit_reports() {
    if (exit_reports_.empty()) return;
    if (!frontend_lost_) frontend_->send(msg::ProcExit{std::move(exit_reports_)});
    exit_reports_.clear();
}

// ---- groups ------------------------------------------------------------------

Result<const pg::NodeResources*> Agent::node_resources() {
    if (resources_) return &*resources_;
    const std::string& spec = opts_.config.get("topology");
    Result<pg::Topology> topo = Error(Errc::internal, "no topology");
    if (spec.starts_with("synthetic:")) topo = pg::Topology::synthetic(spec.substr(10));
    else if (spec.starts_with("xml:")) topo = pg::Topology::from_xml_file(spec.substr(4));
    else topo = pg::Topology::discover();
    if (!topo) return std::move(topo).error().context("topology");
    auto res = DRAGON_TRY(pg::NodeResources::from(*topo, opts_.node_id, hostname_));
    spdlog::info("topology of node {}: {} cpus, {} cores, {} NUMA domains, {} sockets", opts_.node_id, res.pus.size(),
                 res.core_count(), res.numa_count(), res.socket_count());
    resources_ = std::move(res);
    return &*resources_;
}

Result<Agent::GroupPlan> Agent::plan_group(const msg::GroupSpec& spec, std::uint32_t nranks, bool want_cpus) {
    pg::PlacementRequest req;
    req.nprocs = nranks;
    req.cpus_per_proc = spec.cpus_per_proc;
    req.policy = DRAGON_TRY(pg::parse_policy(spec.placement));
    req.binding = DRAGON_TRY(pg::parse_binding(spec.binding));
    req.allow_oversubscribe = spec.allow_oversubscribe;
    GroupPlan out;
    if (req.binding == pg::Binding::none && req.allow_oversubscribe && !want_cpus) {
        // Unbound ranks on one node need no topology: rank r is local rank r here.
        out.members.resize(nranks);
        for (std::uint32_t r = 0; r < nranks; ++r) out.members[r] = {r, 0, 0, opts_.node_id, r, {}};
        return out;
    }
    const pg::NodeResources* res = DRAGON_TRY(node_resources());
    auto plan = DRAGON_TRY(pg::place({*res}, req));
    out.warnings = std::move(plan.warnings);
    out.members.reserve(plan.slots.size());
    for (auto& s : plan.slots) {
        // Unbound ranks are not pinned, whatever the map says they may use.
        auto cpus = req.binding == pg::Binding::none ? std::vector<std::uint32_t>{} : std::move(s.cpus);
        out.members.push_back({s.rank, 0, 0, s.node_id, s.local_rank, std::move(cpus)});
    }
    return out;
}

Status Agent::check_group_io(const msg::GroupSpec& spec, SinkId owner) const {
    for (std::size_t e = 0; e < spec.entries.size(); ++e) {
        const auto& p = spec.entries[e].proc;
        const auto where = fmt::format("entry {} ({})", e, p.argv.empty() ? std::string("?") : p.argv[0]);
        if (owner != kFrontEnd && p.stdin_mode == msg::StdinMode::forward)
            return make_error(Errc::invalid_argument, "{}: stdin from the terminal is only for the front end's group; "
                                                      "use null, a file or a pipe", where);
        if (owner == kFrontEnd && (p.stdin_mode == msg::StdinMode::owner || p.stdout_mode == msg::OutputMode::owner ||
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

void Agent::handle_group_start(const msg::GroupStart& req, SinkId owner) {
    msg::GroupStarted reply;
    reply.request_id = req.request_id;
    std::uint64_t total = 0;
    for (const auto& e : req.spec.entries) total += e.count;
    auto answer = [&] {
        if (auto* c = sink(owner)) c->send(reply);
    };
    auto refuse = [&](std::string why) {
        reply.error = std::move(why);
        answer();
    };
    if (phase_ != Phase::running) return refuse("the agent is shutting down");
    if (total == 0) return refuse("a group needs at least one process");
    if (total > 1'000'000) return refuse(fmt::format("a group of {} processes is too large", total));
    for (const auto& e : req.spec.entries)
        if (e.count > 0 && e.proc.argv.empty()) return refuse("a group entry has an empty argv");
    if (auto st = check_group_io(req.spec, owner); !st) return refuse(st.error().message());
    auto plan = plan_group(req.spec, static_cast<std::uint32_t>(total), req.dry_run);
    if (!plan) return refuse(plan.error().message());
    reply.warnings = std::move(plan->warnings);
    if (req.dry_run) {
        reply.members = std::move(plan->members);
        return answer();
    }
    const std::uint64_t id = next_group_id_++;
    auto g = std::make_unique<Group>(id, req.spec, std::move(plan->members));
    g->owner = owner;
    g->patience_ms = opts_.config.patience_ms();
    for (std::uint32_t e = 0; e < g->spec.entries.size(); ++e)
        for (std::uint32_t i = 0; i < g->spec.entries[e].count; ++i) g->entry_of_rank.push_back(e);
    for (const auto& m : g->members) g->local_size += m.node_id == opts_.node_id ? 1U : 0U;
    Group& group = *g;
    groups_.emplace(id, std::move(g));
    reply.group_id = id;
    // Start every rank first, then answer once: one batched reply per node.
    for (std::uint32_t r = 0; r < group.members.size(); ++r) {
        if (group.tracker.state() == pg::GroupState::running) start_member(group, r);
        else apply(group, group.tracker.start_failed(r, "not started: the group failed"));
    }
    group.starting = false;
    reply.members = group.members;
    answer();
    spdlog::info("group {} started: {} processes", id, group.members.size());
    if (!pool_reservation_started_) {
        // Off the start-up path, and not at all for runs shorter than the delay.
        pool_reservation_started_ = true;
        reserve_timer_.expires_after(kReserveDelay);
        reserve_timer_.async_wait([this](const asio::error_code& ec) { if (!ec) reserve_pool_step(0); });
    }
    maybe_finish_group(group);
}

void Agent::start_member(Group& g, std::uint32_t rank) {
    auto& m = g.members[rank];
    const std::uint32_t local_size = g.local_size;
    const std::vector<std::string> env = {
        fmt::format("DRAGON_RANK={}", rank),
        fmt::format("DRAGON_NRANKS={}", g.members.size()),
        fmt::format("DRAGON_LOCAL_RANK={}", m.local_rank),
        fmt::format("DRAGON_LOCAL_SIZE={}", local_size),
        fmt::format("DRAGON_GROUP_ID={}", g.tracker.id()),
    };
    auto res = spawn_member(g, rank, env);
    if (res.puid == 0) {
        apply(g, g.tracker.start_failed(rank, res.error, res.sys_errno));
        return;
    }
    m.puid = res.puid;
    m.pid = res.pid;
    ++g.unreported;
    g.tracker.started(rank, res.puid, res.pid);
}

void Agent::on_group_exit(Group& g, Puid puid, const msg::ExitStatus& status) {
    apply(g, g.tracker.exited(puid, status));
}

void Agent::apply(Group& g, pg::Action a) {
    switch (a.kind) {
        case pg::Action::none: return;
        case pg::Action::respawn:
            spdlog::info("group {}: restarting rank {} ({} of {} restarts)", g.tracker.id(), a.rank, g.tracker.restarts(),
                         g.spec.max_restarts);
            if (phase_ == Phase::running) start_member(g, a.rank);
            else apply(g, g.tracker.start_failed(a.rank, "the agent is shutting down"));
            return;
        case pg::Action::stop_all: return stop_group(g);
        case pg::Action::done:
            return maybe_finish_group(g);  // after group_started, and after the members' output
    }
}

void Agent::stop_group(Group& g) {
    if (g.stop_timer || phase_ != Phase::running) return;  // already stopping (or the agent stops everything)
    g.stop_timer = std::make_unique<asio::steady_timer>(io_);
    escalate_group(g.tracker.id());
}

void Agent::escalate_group(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end() || it->second->tracker.finished()) return;
    Group& g = *it->second;
    g.stop_signal = g.stop_signal == 0 ? SIGINT : g.stop_signal == SIGINT ? SIGTERM : SIGKILL;
    spdlog::info("group {}: {} to {} running members", group_id, ::sigabbrev_np(g.stop_signal), g.tracker.running());
    for (const auto& m : g.tracker.members()) {
        if (m.state != pg::MemberState::running) continue;
        if (::kill(-m.pid, g.stop_signal) != 0) ::kill(m.pid, g.stop_signal);
    }
    if (g.stop_signal == SIGKILL) return;
    g.stop_timer->expires_after(std::chrono::milliseconds(g.patience_ms));
    g.stop_timer->async_wait([this, group_id](const asio::error_code& ec) { if (!ec) escalate_group(group_id); });
}

void Agent::maybe_finish_group(Group& g) {
    // Done once every member has ended and its output has been passed on, so
    // whoever joins the group has all of it.
    if (g.done_sent || g.starting || !g.tracker.finished() || g.unreported > 0) return;
    g.done_sent = true;
    if (g.stop_timer) g.stop_timer->cancel();
    send_exit_reports();  // the members' proc_exit frames come before group_done
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
    }
    if (!g.tracker.members().empty()) done.rank0_status = g.tracker.members().front().status;
    done.restarts = g.tracker.restarts();
    spdlog::info("group {} {}", done.group_id, pg::to_string(g.tracker.state()));
    if (auto* c = sink(g.owner)) c->send(done);
    if (g.orphaned) asio::post(io_, [this, id = done.group_id] { close_group(id); });
}

void Agent::close_group(std::uint64_t group_id) {
    auto it = groups_.find(group_id);
    if (it == groups_.end()) return;
    std::size_t forgotten = 0;
    for (const auto& m : it->second->tracker.members()) {
        for (Puid puid : m.history) {
            auto p = procs_.find(puid);
            if (p == procs_.end() || p->second->state == msg::ProcState::running) continue;
            procs_.erase(p);  // closes its pipes; pending handlers find the puid gone
            ++forgotten;
        }
    }
    groups_.erase(it);
    spdlog::debug("group {} closed: {} processes forgotten", group_id, forgotten);
}

// ---- teardown ----------------------------------------------------------------

void Agent::wait_signals() {
    signals_.async_wait([this](const asio::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGCHLD) {
            reap_children();
        } else {
            const bool again = phase_ != Phase::running;
            spdlog::warn("agent got signal {}{}", ::strsignal(sig), again ? " again: killing everything" : "");
            begin_stop(again, opts_.config.patience_ms(), "signal");
        }
        if (phase_ != Phase::done) wait_signals();
    });
}

std::size_t Agent::running_count() const { return running_; }

void Agent::signal_running(int sig) {
    for (auto& [puid, p] : procs_) {
        if (p->state != msg::ProcState::running) continue;
        // The whole process group, so a shell's children hear it too.
        if (::kill(-p->pid, sig) != 0) ::kill(p->pid, sig);
    }
}

void Agent::begin_stop(bool force, std::uint32_t patience_ms, const char* why) {
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    if (phase_ == Phase::running) {
        for (auto& [id, g] : groups_)
            if (!g->tracker.finished()) (void)g->tracker.stop();  // the agent's own signals follow
        patience_ms_ = patience_ms;
        signalled_ = static_cast<std::uint32_t>(running_count());
        spdlog::info("stopping ({}): {} processes running", why, signalled_);
        phase_ = Phase::stopping_int;
        if (!force) {
            signal_running(SIGINT);
            escalation_.expires_after(std::chrono::milliseconds(patience_ms_));
            escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
        }
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
    if (exit_flush_posted_) return;  // flush_exit_reports() calls back here
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
    escalation_.cancel();
    reserve_timer_.cancel();
    kill_strays();
    asio::error_code ec;
    client_acceptor_.close(ec);
    for (auto& [puid, p] : procs_) {
        drain_output(*p);
        p->in.reset();
        if (p->output_grace) p->output_grace->cancel();
    }
    if (auto removed = lock_.remove_node_segments(); !removed) {
        spdlog::error("removing shared memory: {}", removed.error().message());
        exit_code_ = 1;
    }
    spdlog::info("agent n{} done ({} signalled, {} needed SIGKILL)", opts_.node_id, signalled_, killed_);
    auto done = [this] {
        phase_ = Phase::done;
        signals_.cancel();
        io_.stop();
    };
    if (frontend_lost_) return done();
    frontend_->send(msg::ShutdownDone{signalled_, killed_});
    frontend_->close_after_flush(done);
}

Process* Agent::find(Puid puid) {
    auto it = procs_.find(puid);
    return it == procs_.end() ? nullptr : it->second.get();
}

}  // namespace dragon::agent
