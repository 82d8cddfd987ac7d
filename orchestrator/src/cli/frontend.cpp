// The front end's event loop: one control connection per agent, the head's
// stdin/stdout/stderr, and the teardown sequence.
#include "frontend.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <unordered_map>
#include <cstring>
#include <optional>

#include <asio.hpp>
#include <spdlog/spdlog.h>

#include "../runtime/connection.hpp"
#include "../runtime/node_lock.hpp"
#include "dragon/common/group_rules.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/names.hpp"
#include "dragon/common/cpulist.hpp"
#include "launcher.hpp"
#include "routes.hpp"

namespace dragon::cli {

namespace {

constexpr auto kAgentStartTimeout = std::chrono::seconds(30);

/// Lifecycle of a run as the front end sees it (docs/runtime.md).
enum class State { starting, running, stopping, done };

class FrontEnd {
public:
    FrontEnd(RunOptions opts, RunId run, std::vector<AgentHandle> agents)
        : opts_(std::move(opts)), routes_(kFrontEndInRoutes, false), signals_(io_), start_timer_(io_), run_(std::move(run)) {
        bind_routes();
        for (auto& a : agents) {
            if (a.node_id == 0) {
                agent_pid_ = a.pid;
                control_ = std::move(a.control);
            } else if (a.pid > 0) {
                other_pids_.push_back(a.pid);
            }
            if (a.node_id == 0 && a.pid > 0 && a.exit_grace > std::chrono::milliseconds(2000)) {
                // A batch step (srun) stands for every agent: wait for it like for the others.
                agent_pid_ = 0;
                other_pids_.push_back(a.pid);
                exit_grace_ = a.exit_grace;
            }
        }
    }

    int run() {
        if (auto missing = routes_.unhandled(); !missing.empty())
            return fatal_now(make_error(Errc::internal, "'{}' from the agent has no handler",
                                        msg::type_name(static_cast<std::uint16_t>(missing.front()))));
        // Signals are ours from here on: Ctrl-C starts an orderly teardown.
        signals_.add(SIGINT);
        signals_.add(SIGTERM);
        signals_.add(SIGHUP);
        ::signal(SIGPIPE, SIG_IGN);
        ::signal(SIGTTIN, SIG_IGN);  // reading a terminal from the background gives EIO, not a stop
        wait_signals();

        asio::local::stream_protocol::socket sock(io_);
        asio::error_code ec;
        sock.assign(asio::local::stream_protocol(), control_.release(), ec);
        if (ec) return fatal_now(make_error(Errc::system, "agent connection: {}", ec.message()));
        agent_ = std::make_shared<rt::UnixConnection>(std::move(sock), "agent n0 connection");
        agent_->start([this](wire::Frame&& f) { on_frame(std::move(f)); },
                      [this](const Error* e) { on_agent_closed(e); });
        start_timer_.expires_after(kAgentStartTimeout);
        start_timer_.async_wait([this](const asio::error_code& e) {
            if (e || state_ != State::starting) return;
            fail(make_error(Errc::timeout, "the agents did not start within {} s",
                            std::chrono::duration_cast<std::chrono::seconds>(kAgentStartTimeout).count()));
            if (agent_pid_ > 0) ::kill(agent_pid_, SIGKILL);
            for (pid_t p : other_pids_) ::kill(p, SIGKILL);
        });
        io_.run();
        return finish();
    }

private:
    // ---- messages from the agent -------------------------------------------------

    /// Binds a handler to every route of kFrontEndInRoutes (routes.hpp).
    void bind_routes() {
        routes_.on<msg::Output>([this](FromAgent, msg::Output&& m) { write_output(m); });
        routes_.on<msg::ProcExit>([this](FromAgent, msg::ProcExit&& m) {
            for (const auto& e : m.exits) {
                spdlog::debug("puid {} ended: exit code {}, signal {}", e.puid, e.status.exit_code, e.status.signal);
                flush_partial_line(e.puid, msg::Stream::out);  // its output all came before this
                flush_partial_line(e.puid, msg::Stream::err);
            }
        });
        routes_.on<msg::StdinAck>([this](FromAgent, msg::StdinAck&& m) {
            stdin_acked_ += m.consumed;
            if (stdin_paused_ && stdin_sent_ - stdin_acked_ < msg::kStdinWindow) {
                stdin_paused_ = false;
                read_stdin();
            }
        });
        routes_.on<msg::AgentHello>([this](FromAgent, msg::AgentHello&& m) {
            if (m.version != msg::kProtocolVersion)
                return fail(make_error(Errc::unsupported, "agent speaks protocol {}, this front end {}", m.version,
                                       msg::kProtocolVersion));
            on_hello(m);
        });
        routes_.on<msg::GroupStarted>([this](FromAgent, msg::GroupStarted&& m) { on_group_started(m); });
        routes_.on<msg::GroupDone>([this](FromAgent, msg::GroupDone&& m) { on_group_done(m); });
        // Its body (the agents' counts) is for the log of the agent; the end is what counts.
        routes_.on_frame(msg::Type::shutdown_done, [this](FromAgent, wire::Frame&&) {
            flush_partial_lines();
            state_ = State::done;
            spdlog::info("agent n0 stopped");
        });
    }

    void on_frame(wire::Frame&& f) {
        if (!routes_.allows(f.type, agent::Sender::head))
            return fail(make_error(Errc::protocol, "unexpected message '{}' ({}) from the agent",
                                   msg::type_name(f.type), f.type));
        if (auto st = routes_.dispatch(agent::Sender::head, FromAgent{}, std::move(f)); !st) fail(std::move(st).error());
    }

    void on_hello(const msg::AgentHello& h) {
        start_timer_.cancel();
        spdlog::info("agent n{} up: pid {} on {}", h.node_id, h.pid, h.hostname);
        if (state_ != State::starting) return;  // interrupted while starting: stop() already sent
        state_ = State::running;
        if (opts_.serve) return serve_ready(h);
        msg::GroupStart req;
        char cwd[4096];
        const bool have_cwd = ::getcwd(cwd, sizeof cwd) != nullptr;
        for (const auto& p : opts_.programs) {
            msg::ProcSpec proc;
            proc.argv = p.argv;
            proc.stdin_mode = opts_.forward_stdin ? msg::StdinMode::forward : msg::StdinMode::null;
            if (have_cwd) proc.cwd = cwd;
            if (!opts_.input_pattern.empty()) {
                proc.stdin_mode = msg::StdinMode::file;
                proc.stdin_path = opts_.input_pattern;
            }
            if (!opts_.output_pattern.empty()) {
                proc.stdout_mode = msg::OutputMode::file;
                proc.stdout_path = opts_.output_pattern;
            }
            if (!opts_.error_pattern.empty()) {
                proc.stderr_mode = msg::OutputMode::file;
                proc.stderr_path = opts_.error_pattern;
            }
            req.spec.entries.push_back({std::move(proc), p.nprocs, -1, {}, {}});
        }
        req.spec.placement = opts_.placement;
        req.spec.binding = opts_.binding;
        req.spec.cpus_per_proc = opts_.cpus_per_proc;
        req.spec.allow_oversubscribe = opts_.allow_oversubscribe;
        req.spec.restart = opts_.restart;
        req.spec.max_restarts = opts_.max_restarts;
        req.spec.pmi = msg::pmi_mode_from(opts_.pmi).value_or(msg::PmiMode::none);  // checked in main()
        req.spec.pmi_port = opts_.pmi_port;
        if (opts_.display_map || opts_.dry_run) {
            req.request_id = kPlanRequest;
            req.dry_run = true;
            agent_->send(req);
        }
        if (!opts_.dry_run) {
            req.request_id = kStartRequest;
            req.dry_run = false;
            agent_->send(req);
        }
    }

    void on_group_started(const msg::GroupStarted& r) {
        for (const auto& w : r.warnings) std::fprintf(stderr, "dragon-orchestrate: warning: %s\n", w.c_str());
        if (!r.error.empty()) {
            std::fprintf(stderr, "dragon-orchestrate: error: %s\n", r.error.c_str());
            group_exit_code_ = kExitUsage;
            return stop(false);
        }
        if (r.request_id == kPlanRequest) {
            print_map(r.members);
            if (opts_.dry_run) {
                group_exit_code_ = 0;
                stop(false);
            }
            return;
        }
        group_id_ = r.group_id;
        if (!r.members.empty() && r.members.front().puid != 0) {
            stdin_puid_ = r.members.front().puid;
            spdlog::info("group {} started: {} processes, rank 0 is puid {}", r.group_id, r.members.size(), stdin_puid_);
            if (opts_.forward_stdin && opts_.input_pattern.empty()) start_stdin();
        }
    }

    void on_group_done(const msg::GroupDone& d) {
        flush_partial_lines();
        switch (d.outcome) {
            case msg::GroupOutcome::succeeded:
                group_exit_code_ = 0;
                break;
            case msg::GroupOutcome::stopped:
                group_exit_code_ = d.rank0_status.shell_code();
                break;
            case msg::GroupOutcome::failed:
                if (d.fail_kind == msg::FailKind::aborted) {
                    // MPI_Abort: the job ends with the code the rank gave.
                    std::fprintf(stderr, "dragon-orchestrate: rank %u (puid %llu) aborted the job with exit code %d%s%s\n",
                                 d.fail_rank, static_cast<unsigned long long>(d.fail_puid), d.fail_status.exit_code,
                                 d.fail_error.empty() ? "" : ": ", d.fail_error.c_str());
                    group_exit_code_ = d.fail_status.exit_code != 0 ? d.fail_status.exit_code & 0xff : 1;
                    if (*group_exit_code_ == 0) group_exit_code_ = 1;
                } else if (d.fail_kind == msg::FailKind::runtime) {
                    std::fprintf(stderr, "dragon-orchestrate: error: rank %u (puid %llu) %s\n", d.fail_rank,
                                 static_cast<unsigned long long>(d.fail_puid), d.fail_error.c_str());
                    group_exit_code_ = d.fail_status.shell_code() != 0 ? d.fail_status.shell_code() : 1;
                } else if (d.fail_kind == msg::FailKind::lost || (!d.fail_error.empty() && d.fail_puid != 0)) {
                    // The runtime lost it (its node went away), before or after it started.
                    std::fprintf(stderr, "dragon-orchestrate: error: %s%s\n",
                                 opts_.total_ranks() > 1 ? fmt::format("rank {}: ", d.fail_rank).c_str() : "",
                                 d.fail_error.empty() ? "its node was lost" : d.fail_error.c_str());
                    group_exit_code_ = kExitRuntimeFailure;
                } else if (!d.fail_error.empty()) {
                    std::fprintf(stderr, "dragon-orchestrate: error: %s%s\n",
                                 opts_.total_ranks() > 1 ? fmt::format("rank {}: ", d.fail_rank).c_str() : "",
                                 d.fail_error.c_str());
                    group_exit_code_ = d.fail_errno == ENOENT ? kExitNotFound : kExitNotExecutable;
                } else {
                    group_exit_code_ = d.fail_status.shell_code();
                    if (opts_.total_ranks() > 1) {
                        const auto how = d.fail_status.signal != 0
                                             ? fmt::format("was killed by signal {} ({})", d.fail_status.signal,
                                                           ::strsignal(d.fail_status.signal))
                                             : fmt::format("exited with code {}", d.fail_status.exit_code);
                        std::fprintf(stderr, "dragon-orchestrate: rank %u (puid %llu) %s\n", d.fail_rank,
                                     static_cast<unsigned long long>(d.fail_puid), how.c_str());
                    }
                }
                break;
        }
        spdlog::info("group {} done: exit code {}, {} restarts", d.group_id, *group_exit_code_, d.restarts);
        stop(false);
    }

    // ---- serve: a runtime without a head ------------------------------------------

    /// Says where the runtime is, then keeps it until stdin ends.
    void serve_ready(const msg::AgentHello& h) {
        group_id_ = 0;  // every group is a client's: labels name the group
        const auto line = fmt::format(R"({{"run_id":"{}","agent_socket":"@{}","agent_pid":{},"frontend_pid":{}}})"
                                      "\n",
                                      run_->str(), names::agent_socket_name(*run_, 0), h.pid, ::getpid());
        if (auto st = sys::write_all(opts_.ready_fd, line.data(), line.size()); !st)
            return fail(make_error(Errc::system, "--ready-fd {}: {}", opts_.ready_fd, st.error().message()));
        if (opts_.ready_fd > STDERR_FILENO) ::close(opts_.ready_fd);
        spdlog::info("serving run {} until stdin closes", run_->str());
        if (open_stdin()) watch_stdin();  // no stdin: until a signal
    }

    void watch_stdin() {
        stdin_->async_read_some(asio::buffer(stdin_buf_), [this](const asio::error_code& ec, std::size_t) {
            if (ec == asio::error::operation_aborted || state_ != State::running) return;
            if (!ec) return watch_stdin();  // bytes mean nothing; only the end does
            spdlog::info("stdin closed: stopping the runtime");
            stop(false);
        });
    }

    void print_map(const std::vector<msg::GroupMember>& members) {
        std::string out = fmt::format("{:>6}  {:>5}  {:>11}  {}\n", "rank", "node", "local rank", "cpus");
        for (const auto& m : members)
            out += fmt::format("{:>6}  {:>5}  {:>11}  {}\n", m.rank, m.node_id, m.local_rank,
                               m.cpus.empty() ? std::string("(not bound)") : format_cpulist(m.cpus));
        (void)sys::write_all(STDOUT_FILENO, out.data(), out.size());
    }

    void on_agent_closed(const Error* e) {
        if (state_ != State::done) {
            int status = 0;
            std::string how = "closed its connection";
            if (agent_pid_ > 0 && ::waitpid(agent_pid_, &status, 0) == agent_pid_) {
                agent_pid_ = 0;
                auto s = msg::ExitStatus::from_wait_status(status);
                how = s.signal != 0 ? fmt::format("was killed by signal {} ({})", s.signal, ::strsignal(s.signal))
                                    : fmt::format("exited with code {}", s.exit_code);
            }
            fail(make_error(Errc::closed, "the agent on node 0 {}{}", how,
                            e != nullptr ? fmt::format(" ({})", e->message()) : ""));
        }
        io_.stop();
    }

    // ---- the head's stdio ---------------------------------------------------------

    void write_output(const msg::Output& m) {
        const bool labelled = opts_.label || opts_.label_node;
        // The head alone: its bytes as they come (a prompt without a newline
        // shows). Groups the head (or a client of `serve`) started have
        // several writers: whole lines.
        if (!labelled && opts_.total_ranks() <= 1 && !opts_.serve && m.group_id == group_id_)
            return write_stream(m.stream, m.data);
        // Several: whole lines only, so two ranks never mix within a line; with
        // a label each is prefixed with its rank ([group:rank] for a group a
        // process of the run started). A partial line waits for its end.
        auto& [prefix, partial] = partial_[{m.puid, m.stream}];
        if (labelled && prefix.empty())
            prefix = opts_.label_node           ? fmt::format("[{}:{}] ", puid_node(m.puid), m.puid)
                     : m.group_id == group_id_ ? fmt::format("[{}] ", m.rank)
                                               : fmt::format("[{}:{}] ", m.group_id, m.rank);
        std::string out;
        std::size_t start = 0;
        // Unlabelled, a carriage return ends a line too, so progress bars move.
        const char* ends = labelled ? "\n" : "\n\r";
        for (std::size_t nl; (nl = m.data.find_first_of(ends, start)) != std::string::npos; start = nl + 1) {
            out += prefix;
            out += partial;
            partial.clear();
            out.append(m.data, start, nl + 1 - start);
        }
        partial.append(m.data, start);
        if (!out.empty()) write_stream(m.stream, out);
        if (partial.size() > kMaxPartialLine) flush_partial_line(m.puid, m.stream);  // no newline in sight
    }

    static constexpr std::size_t kMaxPartialLine = 64U << 10;

    /// A process's unfinished line goes out as it is (labelled: as a line).
    void flush_partial_line(Puid puid, msg::Stream stream) {
        auto it = partial_.find({puid, stream});
        if (it == partial_.end()) return;
        auto& [prefix, partial] = it->second;
        const bool labelled = opts_.label || opts_.label_node;
        if (!partial.empty()) write_stream(stream, labelled ? fmt::format("{}{}\n", prefix, partial) : partial);
        partial_.erase(it);
    }

    void flush_partial_lines() {
        while (!partial_.empty()) flush_partial_line(partial_.begin()->first.first, partial_.begin()->first.second);
    }

    void write_stream(msg::Stream stream, const std::string& data) {
        const int fd = stream == msg::Stream::out ? STDOUT_FILENO : STDERR_FILENO;
        bool& broken = stream == msg::Stream::out ? stdout_broken_ : stderr_broken_;
        if (broken) return;
        if (auto st = sys::write_all(fd, data.data(), data.size()); !st) {
            broken = true;  // e.g. `| head`: drop the rest of this stream, keep the run going
            spdlog::info("{} closed: {}", fd == 1 ? "stdout" : "stderr", st.error().message());
        }
    }

    /// Our stdin as an Asio stream (stdin_); false when there is none.
    bool open_stdin() {
        int fd = ::dup(STDIN_FILENO);
        if (fd < 0) return false;
        stdin_ = std::make_unique<asio::posix::stream_descriptor>(io_);
        asio::error_code ec;
        stdin_->assign(fd, ec);
        if (ec) {
            ::close(fd);
            stdin_.reset();
            return false;
        }
        return true;
    }

    void start_stdin() {
        if (!open_stdin()) return send_stdin_eof();  // no stdin at all
        read_stdin();
    }

    void read_stdin() {
        if (!stdin_ || state_ != State::running) return;
        if (stdin_sent_ - stdin_acked_ >= msg::kStdinWindow) {
            stdin_paused_ = true;  // resumes on StdinAck
            return;
        }
        stdin_->async_read_some(asio::buffer(stdin_buf_), [this](const asio::error_code& ec, std::size_t n) {
            if (ec == asio::error::operation_aborted || state_ != State::running) return;
            if (n > 0) {
                agent_->send(msg::StdinData{stdin_puid_, std::string(stdin_buf_.data(), n), false});
                stdin_sent_ += n;
            }
            if (ec) {  // EOF, or EIO from a terminal we do not own
                stdin_.reset();
                return send_stdin_eof();
            }
            read_stdin();
        });
    }

    void send_stdin_eof() {
        if (state_ == State::running && stdin_puid_ != 0) agent_->send(msg::StdinData{stdin_puid_, {}, true});
    }

    // ---- teardown -----------------------------------------------------------------

    void wait_signals() {
        signals_.async_wait([this](const asio::error_code& ec, int sig) {
            if (ec) return;
            ++interrupts_;
            if (interrupts_ == 1) {
                interrupted_by_ = sig;
                std::fprintf(stderr, "dragon-orchestrate: %s: stopping the run (again to kill at once)\n",
                             ::strsignal(sig));
                stop(false);
            } else if (interrupts_ == 2) {
                std::fprintf(stderr, "dragon-orchestrate: killing every process of the run\n");
                stop(true);
            } else {
                std::fprintf(stderr, "dragon-orchestrate: killing the agents\n");
                if (agent_pid_ > 0) ::kill(agent_pid_, SIGKILL);  // their children die with them (PDEATHSIG)
                for (pid_t p : other_pids_) ::kill(p, SIGKILL);
            }
            wait_signals();
        });
    }

    void stop(bool force) {
        if (state_ == State::done) return;
        if (state_ == State::stopping && !force) return;
        state_ = State::stopping;
        if (stdin_) {
            asio::error_code ec;
            stdin_->cancel(ec);
            stdin_.reset();
        }
        agent_->send(msg::Shutdown{force, opts_.config.patience_ms()});
    }

    void fail(Error e) {
        if (!failure_) failure_ = std::move(e);
        if (state_ == State::starting || state_ == State::running) stop(false);
        else if (state_ == State::stopping) return;
        else io_.stop();
    }

    int finish() {
        if (agent_pid_ > 0) {
            int status = 0;
            while (::waitpid(agent_pid_, &status, 0) < 0 && errno == EINTR) {
            }
            auto s = msg::ExitStatus::from_wait_status(status);
            if ((s.exit_code != 0 || s.signal != 0) && !failure_)
                failure_ = make_error(Errc::system, "the agent on node 0 ended with code {} signal {}", s.exit_code, s.signal);
        }
        // The other nodes' agents end once node 0 has seen them finish; one
        // that did not (lost, hung) is killed, so nothing of the run stays.
        bool killed_any = false;
        const auto deadline = std::chrono::steady_clock::now() + exit_grace_;
        for (pid_t p : other_pids_) {
            int status = 0;
            while (::waitpid(p, &status, WNOHANG) == 0) {
                if (std::chrono::steady_clock::now() >= deadline) {
                    spdlog::warn("agent pid {} is still there after the run; killing it", p);
                    ::kill(p, SIGKILL);
                    ::waitpid(p, &status, 0);
                    killed_any = true;
                    break;
                }
                ::usleep(10'000);
            }
        }
        // An agent that died (or was killed above) could not clean up after
        // itself: do it for this run. Entries of live agents are never touched.
        if ((failure_ && state_ != State::done) || killed_any || !other_pids_.empty()) {
            // The agent could not clean up after itself: do it for this run.
            if (auto r = rt::cleanup_stale(false, &*run_); r && !r->removed.empty())
                spdlog::info("removed {} leftover shared-memory entries of this run", r->removed.size());
        }
        if (failure_) {
            std::fprintf(stderr, "dragon-orchestrate: error: %s\n", failure_->message().c_str());
            if (!group_exit_code_) return kExitRuntimeFailure;
        }
        if (group_exit_code_) return *group_exit_code_;
        if (interrupted_by_ != 0) return 128 + interrupted_by_;
        if (opts_.serve && !failure_) return 0;
        return kExitRuntimeFailure;
    }

    int fatal_now(const Error& e) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", e.message().c_str());
        return kExitRuntimeFailure;
    }

    RunOptions opts_;
    asio::io_context io_;
    FrontEndDispatcher routes_;  // who may send what (routes.hpp), and the handlers
    asio::signal_set signals_;
    asio::steady_timer start_timer_;
    std::optional<RunId> run_;
    sys::UniqueFd control_;
    std::shared_ptr<rt::UnixConnection> agent_;
    pid_t agent_pid_ = 0;
    std::vector<pid_t> other_pids_;  // the other nodes' agents, when they are our children (or srun)
    std::chrono::milliseconds exit_grace_{2000};
    State state_ = State::starting;
    static constexpr std::uint64_t kPlanRequest = 1, kStartRequest = 2;
    Puid stdin_puid_ = 0;                        // rank 0 of the group
    std::optional<int> group_exit_code_;         // known once the group is done (or refused)
    // The run's group. Node 0 numbers groups from 1 and ours is the first
    // request anyone can make (no process exists before it), so output that
    // beats group_started to us (ranks of node 0, while other nodes answer)
    // is labelled right.
    std::uint64_t group_id_ = 1;
    // With --label: each stream's prefix and unfinished line.
    std::map<std::pair<Puid, msg::Stream>, std::pair<std::string, std::string>> partial_;
    std::optional<Error> failure_;
    int interrupts_ = 0;
    int interrupted_by_ = 0;
    std::unique_ptr<asio::posix::stream_descriptor> stdin_;
    std::array<char, 64 * 1024> stdin_buf_{};
    std::uint64_t stdin_sent_ = 0;
    std::uint64_t stdin_acked_ = 0;
    bool stdin_paused_ = false;
    bool stdout_broken_ = false;
    bool stderr_broken_ = false;
};

}  // namespace

int run_program(RunOptions opts) {
    auto run = RunId::generate();
    if (!run) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", run.error().message().c_str());
        return kExitRuntimeFailure;
    }
    if (auto stale = rt::cleanup_stale(false); stale && !stale->removed.empty())
        spdlog::info("removed {} shared-memory entries of dead runs", stale->removed.size());
    auto launcher = make_launcher(LaunchOptions{opts.launcher, default_agent_path(), opts.nodes, opts.hosts,
                                                opts.srun_args, opts.control_address, opts.split_cpus});
    if (!launcher) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", launcher.error().message().c_str());
        return kExitUsage;
    }
    // Agents first, before any Asio object exists here: a forked agent must
    // not share this process's Asio signal pipe or epoll set.
    auto agents = (*launcher)->launch(*run, opts.config);
    if (!agents) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", agents.error().message().c_str());
        // A request the environment cannot meet (no allocation, too many nodes) is a usage error.
        return agents.error().code() == Errc::invalid_argument ? kExitUsage : kExitRuntimeFailure;
    }
    return FrontEnd(std::move(opts), std::move(*run), std::move(*agents)).run();
}

}  // namespace dragon::cli
