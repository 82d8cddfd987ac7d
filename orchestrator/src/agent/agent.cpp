// The node agent's shell: lifecycle, the front end connection, local clients
// and teardown. The executor is in executor/, global services in global/,
// the links to other nodes in links/, the channel gateway in gateway/.
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
#include "dragon/common/log.hpp"
#include "dragon/common/names.hpp"
#include "dragon/procgroup/topology.hpp"

extern char** environ;

namespace dragon::agent {
namespace {

// After SIGKILL, how long to wait for the last processes before giving up.
constexpr auto kKillWait = std::chrono::seconds(5);
constexpr std::size_t kClientMaxFrame = 1U << 20;
// Connections accepted at once when several wait (accept_clients).
constexpr int kAcceptBurst = 128;
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

}  // namespace

Agent::Agent(AgentOptions opts, rt::NodeLock lock, channels::Pool pool)
    : opts_(std::move(opts)),
      frontend_routes_(kFrontEndRoutes, opts_.node_id == 0),
      client_routes_(kClientRoutes, opts_.node_id == 0),
      owner_routes_(kOwnerRoutes, opts_.node_id == 0),
      node_routes_(kNodeRoutes, opts_.node_id == 0),
      lock_(std::move(lock)),
      pool_(std::move(pool)),
      client_acceptor_(io_),
      signals_(io_),
      escalation_(io_),
      reserve_timer_(io_),
      peers_done_timer_(io_) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    hostname_ = host;
    ExecutorOptions ex{opts_.run, opts_.node_id, hostname_, {}, {}, {}, {}};
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view kv(*e);
        if (kv.starts_with("PATH=")) ex.path_env = std::string(kv.substr(5));
        if (kv == "DRAGON_FAST_START=0") ex.fast_start = false;
        // The run's secret is the agents' alone: no managed process gets it.
        if (kv.starts_with(std::string(transport::kSecretHexEnv) + "=") ||
            kv.starts_with(std::string(transport::kSecretFileEnv) + "="))
            continue;
        ex.base_env.emplace_back(kv);
    }
    ex.base_env = rt::merge_env(std::move(ex.base_env),
                                {fmt::format("{}={}", names::kEnvRunId, opts_.run.str()),
                                 fmt::format("{}={}", names::kEnvNodeId, opts_.node_id),
                                 fmt::format("{}=@{}", names::kEnvAgentSocket,
                                             names::agent_socket_name(opts_.run, opts_.node_id))});
    ex.first_group = [this] {
        // Off the start-up path, and not at all for runs shorter than the delay.
        reserve_timer_.expires_after(kReserveDelay);
        reserve_timer_.async_wait([this](const asio::error_code& ec) { if (!ec) reserve_pool_step(0); });
    };
    ex.exits_changed = [this] { maybe_finish(); };
    executor_ = std::make_unique<Executor>(static_cast<Router&>(*this), io_, std::move(ex));
    links_ = std::make_unique<Links>(
        static_cast<Router&>(*this), io_,
        LinksOptions{hostname_, {opts_.head_address, opts_.head_port}, opts_.config.heartbeat_timeout_ms()},
        links_hooks());
    gateway_ = std::make_unique<Gateway>(
        static_cast<Router&>(*this), io_, pool_,
        GatewayOptions{opts_.secret ? &*opts_.secret : nullptr, opts_.config.heartbeat_timeout_ms()}, gateway_hooks());
    if (opts_.nnodes > 1) phase_ = Phase::joining;
    if (is_head())
        global_ = std::make_unique<GlobalServices>(
            static_cast<Router&>(*this), io_,
            GlobalOptions{opts_.nnodes, hostname_, opts_.config.patience_ms(), [this] { return node_resources(); }});
    bind_routes();
}

Agent::~Agent() { gateway_->stop_waiting_all(); }

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
    if (!ec) client_acceptor_.non_blocking(true, ec);  // (accept_clients drains the backlog)
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
        links_->start(opts_.join_timeout);
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
        if (std::chrono::steady_clock::now() - gateway_->last_busy() < spin) {
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

// ---- local clients ------------------------------------------------------------------

void Agent::accept_clients() {
    client_acceptor_.async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket sock) {
        if (ec == asio::error::operation_aborted || !client_acceptor_.is_open()) return;
        if (!ec) serve_client(std::move(sock));
        else spdlog::warn("accepting a client: {}", ec.message());
        // And every connection already waiting: one per turn of the loop
        // would queue hundreds of members that start at once (a Pool's
        // workers, two connections each) behind each other and behind the
        // slices of their own group's start.
        for (int n = 0; n < kAcceptBurst && client_acceptor_.is_open(); ++n) {
            asio::error_code e;
            auto more = client_acceptor_.accept(e);
            if (e) break;  // would_block: the backlog is empty
            serve_client(std::move(more));
        }
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
                    // A client that went away (killed, or ended while we
                    // wrote to it: a pool's workers at terminate) is not news.
                    if (e != nullptr && (e->sys_errno() == EPIPE || e->sys_errno() == ECONNRESET))
                        spdlog::debug("client {} gone: {}", id, e->message());
                    else if (e != nullptr)
                        spdlog::warn("client {} dropped: {}", id, e->message());
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
        if (f.type == static_cast<std::uint16_t>(msg::Type::lane_open)) {
            cl.lane_opener = true;
            return gateway_->open_lane(id, cl.pid, std::move(f));
        }
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
    gateway_->client_gone(id);
    if (is_head()) global_->owner_gone(Owner{0, id});
    else send(0, msg::ClientGone{id});
}

void Agent::resume_parked_output() {
    self_held_back_ = false;
    executor_->resume_output();
    links_->resume_held();
}

// ---- links ---------------------------------------------------------------------------

Status Agent::open_listener() {
    auto t = transport::create_transport("tcp", io_, *opts_.secret, opts_.node_id, opts_.address);
    if (!t) return std::move(t).error().context(fmt::format("node {}", opts_.node_id));
    auto ep = links_->listen(std::move(*t), opts_.address, std::exchange(opts_.listen_fd, -1));
    if (!ep) return std::move(ep).error();
    if (opts_.address.empty()) opts_.address = ep->address;
    gateway_->set_lane_address(opts_.address);
    return ok();
}

void Agent::post_to_self(wire::Frame f) {
    asio::post(io_, [this, f = std::move(f)]() mutable { on_node_frame(opts_.node_id, std::move(f)); });
}

LinksHooks Agent::links_hooks() {
    LinksHooks h;
    h.frame = [this](std::uint32_t from, wire::Frame&& f) { on_node_frame(from, std::move(f)); };
    h.payload = [this](std::uint32_t from, wire::Frame&& header, std::uint64_t size) {
        return gateway_->on_payload(from, std::move(header), size);
    };
    h.lane = [this](std::shared_ptr<transport::Link> peer) { gateway_->accept_lane(std::move(peer)); };
    h.drained = [this] { resume_parked_output(); };
    h.resources = [this] { return node_resources(); };
    h.node_joined = [this](std::uint32_t node, pg::NodeResources r) { global_->node_joined(node, std::move(r)); };
    h.joined = [this] {
        phase_ = Phase::running;
        if (is_head()) say_hello_to_frontend();
    };
    h.join_failed = [this](const char* why) {
        exit_code_ = 1;
        begin_stop(true, 0, why);
    };
    h.link_down = [this](std::uint32_t node, const std::string& why) { gateway_->link_down(node, why); };
    h.node_lost = [this](std::uint32_t node, const std::string& why) {
        if (is_head()) global_->node_lost(node, why);
        else begin_stop(false, opts_.config.patience_ms(), "lost node 0");
        if (phase_ == Phase::finishing) finish_now();
    };
    h.node_finished = [this](std::uint32_t) {
        if (phase_ == Phase::finishing) finish_now();
    };
    return h;
}

// ---- channel gateway ---------------------------------------------------------------

GatewayHooks Agent::gateway_hooks() {
    GatewayHooks h;
    h.link = [this](std::uint32_t node) { return links_->link(node); };
    h.endpoint = [this](std::uint32_t node) { return links_->endpoint(node); };
    h.transport_name = [this] { return links_->transport_name(); };
    h.client = [this](std::uint64_t id) -> std::shared_ptr<rt::UnixConnection> {
        auto it = clients_.find(id);
        return it == clients_.end() ? nullptr : it->second.conn;
    };
    h.forget_client = [this](std::uint64_t id) { clients_.erase(id); };
    return h;
}

// ---- teardown -------------------------------------------------------------------

void Agent::wait_signals() {
    signals_.async_wait([this](const asio::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGCHLD) {
            executor_->reap();
        } else {
            const bool again = phase_ != Phase::running && phase_ != Phase::joining;
            spdlog::warn("agent got signal {}{}", ::strsignal(sig), again ? " again: killing everything" : "");
            begin_stop(again, opts_.config.patience_ms(), "signal");
        }
        if (phase_ != Phase::done) wait_signals();
    });
}

void Agent::begin_stop(bool force, std::uint32_t patience_ms, const char* why) {
    if (phase_ == Phase::finishing || phase_ == Phase::done) return;
    if (phase_ == Phase::running || phase_ == Phase::joining) {
        links_->end_join();
        if (is_head()) {
            global_->stop_all();  // each node signals its own processes
            for (std::uint32_t n = 1; n < opts_.nnodes; ++n) send(n, msg::Shutdown{force, patience_ms});
        }
        patience_ms_ = patience_ms;
        signalled_ = static_cast<std::uint32_t>(executor_->running());
        spdlog::info("stopping ({}): {} processes running", why, signalled_);
        phase_ = Phase::stopping_int;
        if (!force) {
            executor_->signal_running(SIGINT);
            escalation_.expires_after(std::chrono::milliseconds(patience_ms_));
            escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
        }
    } else if (force && is_head()) {
        for (std::uint32_t n = 1; n < opts_.nnodes; ++n) send(n, msg::Shutdown{true, 0});
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
        spdlog::info("{} processes outlived SIGINT: SIGTERM", executor_->running());
        phase_ = Phase::stopping_term;
        executor_->signal_running(SIGTERM);
        escalation_.expires_after(std::chrono::milliseconds(patience_ms_));
        escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
    } else if (phase_ == Phase::stopping_term) {
        killed_ = static_cast<std::uint32_t>(executor_->running());
        if (killed_ > 0) spdlog::info("{} processes outlived SIGTERM: SIGKILL", killed_);
        phase_ = Phase::stopping_kill;
        executor_->signal_running(SIGKILL);
        escalation_.expires_after(kKillWait);
        escalation_.async_wait([this](const asio::error_code& ec) { if (!ec) escalate(); });
    } else if (phase_ == Phase::stopping_kill) {
        spdlog::error("{} processes did not die after SIGKILL; giving up on them", executor_->running());
        finish();
    }
}

void Agent::maybe_finish() {
    if (phase_ != Phase::stopping_int && phase_ != Phase::stopping_term && phase_ != Phase::stopping_kill) return;
    if (executor_->running() > 0) return;
    if (!executor_->report_all_exits()) return;  // exits_changed calls back once they are sent
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
    links_->begin_finish();  // no lanes any more
    gateway_->finish();  // other nodes' channel operations waiting here end now, lanes close
    escalation_.cancel();
    reserve_timer_.cancel();
    kill_strays();
    asio::error_code ec;
    client_acceptor_.close(ec);
    executor_->finish();  // output still in pipes, stdin, PMI (its PMIx server and directory)
    if (auto removed = lock_.remove_node_segments(); !removed) {
        spdlog::error("removing shared memory: {}", removed.error().message());
        exit_code_ = 1;
    }
    spdlog::info("agent n{} done ({} signalled, {} needed SIGKILL)", opts_.node_id, signalled_, killed_);
    if (!is_head()) {
        // Node 0 learns we are done; then the link closes and we exit.
        transport::Link* head = links_->link(0);
        if (head == nullptr || !head->is_open()) return finish_now();
        head->send(msg::ShutdownDone{signalled_, killed_});
        head->close_after_flush([this] { finish_now(); });
        return;
    }
    // Node 0 reports last: the other nodes' output passes through it until
    // each has finished (or is lost), bounded by their own stop sequence.
    // After the output drained above, which goes to the global services on a
    // later loop turn like any report: ShutdownDone must follow it.
    if (links_->unfinished() == 0) return asio::post(io_, [this] { finish_now(); });
    spdlog::info("waiting for {} other nodes to finish", links_->unfinished());
    peers_done_timer_.expires_after(std::chrono::milliseconds(2 * patience_ms_) + 2 * kKillWait);
    peers_done_timer_.async_wait([this](const asio::error_code& e) {
        if (e || phase_ != Phase::finishing) return;
        if (links_->give_up_unfinished() > 0) exit_code_ = 1;
        finish_now();
    });
}

void Agent::finish_now() {
    if (phase_ == Phase::done) return;
    if (is_head() && phase_ == Phase::finishing && links_->unfinished() > 0) return;  // still waiting (the timer ends it)
    peers_done_timer_.cancel();
    links_->close();
    auto done = [this] {
        phase_ = Phase::done;
        gateway_->close();
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

}  // namespace dragon::agent
