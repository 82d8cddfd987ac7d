// The front end's event loop: one control connection per agent, the head's
// stdin/stdout/stderr, and the teardown sequence.
#include "frontend.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>

#include <asio.hpp>
#include <spdlog/spdlog.h>

#include "../runtime/connection.hpp"
#include "../runtime/node_lock.hpp"
#include "dragon/common/messages.hpp"
#include "launcher.hpp"

namespace dragon::cli {

namespace {

constexpr auto kAgentStartTimeout = std::chrono::seconds(30);

/// Lifecycle of a run as the front end sees it (docs/runtime.md).
enum class State { starting, running, stopping, done };

class FrontEnd {
public:
    explicit FrontEnd(RunOptions opts) : opts_(std::move(opts)), signals_(io_), start_timer_(io_) {}

    int run() {
        auto run_id = RunId::generate();
        if (!run_id) return fatal_now(run_id.error());
        run_ = std::move(*run_id);
        if (auto stale = rt::cleanup_stale(false); stale && !stale->removed.empty())
            spdlog::info("removed {} shared-memory entries of dead runs", stale->removed.size());

        auto launcher = make_launcher(opts_.launcher, default_agent_path());
        if (!launcher) return usage_error(launcher.error());
        // Signals are ours from here on: Ctrl-C starts an orderly teardown.
        signals_.add(SIGINT);
        signals_.add(SIGTERM);
        signals_.add(SIGHUP);
        ::signal(SIGPIPE, SIG_IGN);
        ::signal(SIGTTIN, SIG_IGN);  // reading a terminal from the background gives EIO, not a stop
        wait_signals();

        auto agents = (*launcher)->launch(*run_, opts_.config);
        if (!agents) return fatal_now(agents.error());
        auto& a = agents->front();
        agent_pid_ = a.pid;
        asio::local::stream_protocol::socket sock(io_);
        asio::error_code ec;
        sock.assign(asio::local::stream_protocol(), a.control.release(), ec);
        if (ec) return fatal_now(make_error(Errc::system, "agent connection: {}", ec.message()));
        agent_ = std::make_shared<rt::UnixConnection>(std::move(sock), "agent n0 connection");
        agent_->start([this](wire::Frame&& f) { on_frame(std::move(f)); },
                      [this](const Error* e) { on_agent_closed(e); });
        start_timer_.expires_after(kAgentStartTimeout);
        start_timer_.async_wait([this](const asio::error_code& e) {
            if (e || state_ != State::starting) return;
            fail(make_error(Errc::timeout, "the agent on node 0 did not start within {} s",
                            std::chrono::duration_cast<std::chrono::seconds>(kAgentStartTimeout).count()));
            ::kill(agent_pid_, SIGKILL);
        });
        io_.run();
        return finish();
    }

private:
    // ---- messages from the agent -------------------------------------------------

    void on_frame(wire::Frame&& f) {
        switch (static_cast<msg::Type>(f.type)) {
            case msg::Type::output: {
                auto m = msg::decode_as<msg::Output>(f);
                if (!m) return fail(std::move(m).error());
                return write_output(m->stream, m->data);
            }
            case msg::Type::proc_exit: {
                auto m = msg::decode_as<msg::ProcExit>(f);
                if (!m) return fail(std::move(m).error());
                for (const auto& e : m->exits) {
                    if (e.puid != head_puid_) continue;
                    head_status_ = e.status;
                    spdlog::info("head puid {} ended: exit code {}, signal {}", e.puid, e.status.exit_code,
                                 e.status.signal);
                    stop(false);
                }
                return;
            }
            case msg::Type::stdin_ack: {
                auto m = msg::decode_as<msg::StdinAck>(f);
                if (!m) return fail(std::move(m).error());
                stdin_acked_ += m->consumed;
                if (stdin_paused_ && stdin_sent_ - stdin_acked_ < msg::kStdinWindow) {
                    stdin_paused_ = false;
                    read_stdin();
                }
                return;
            }
            case msg::Type::agent_hello: {
                auto m = msg::decode_as<msg::AgentHello>(f);
                if (!m) return fail(std::move(m).error());
                if (m->version != msg::kProtocolVersion)
                    return fail(make_error(Errc::unsupported, "agent speaks protocol {}, this front end {}",
                                           m->version, msg::kProtocolVersion));
                return on_hello(*m);
            }
            case msg::Type::spawn_reply: {
                auto m = msg::decode_as<msg::SpawnReply>(f);
                if (!m) return fail(std::move(m).error());
                return on_spawned(*m);
            }
            case msg::Type::shutdown_done:
                state_ = State::done;
                spdlog::info("agent n0 stopped");
                return;
            default:
                fail(make_error(Errc::protocol, "unexpected message '{}' ({}) from the agent", msg::type_name(f.type),
                                f.type));
        }
    }

    void on_hello(const msg::AgentHello& h) {
        start_timer_.cancel();
        spdlog::info("agent n{} up: pid {} on {}", h.node_id, h.pid, h.hostname);
        if (state_ != State::starting) return;  // interrupted while starting: stop() already sent
        state_ = State::running;
        msg::ProcSpec head;
        head.argv = opts_.argv;
        head.stdin_mode = opts_.forward_stdin ? msg::StdinMode::forward : msg::StdinMode::null;
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd) != nullptr) head.cwd = cwd;
        agent_->send(msg::Spawn{1, {head}});
    }

    void on_spawned(const msg::SpawnReply& r) {
        if (r.results.size() != 1) return fail(make_error(Errc::protocol, "spawn reply with {} results", r.results.size()));
        const auto& res = r.results.front();
        if (res.puid == 0) {
            std::fprintf(stderr, "dragon-orchestrate: error: %s\n", res.error.c_str());
            spawn_failure_code_ = res.sys_errno == ENOENT ? kExitNotFound : kExitNotExecutable;
            return stop(false);
        }
        head_puid_ = res.puid;
        spdlog::info("head started: puid {} pid {}", res.puid, res.pid);
        if (opts_.forward_stdin) start_stdin();
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

    void write_output(msg::Stream stream, const std::string& data) {
        const int fd = stream == msg::Stream::out ? STDOUT_FILENO : STDERR_FILENO;
        bool& broken = stream == msg::Stream::out ? stdout_broken_ : stderr_broken_;
        if (broken) return;
        if (auto st = sys::write_all(fd, data.data(), data.size()); !st) {
            broken = true;  // e.g. `| head`: drop the rest of this stream, keep the run going
            spdlog::info("{} closed: {}", fd == 1 ? "stdout" : "stderr", st.error().message());
        }
    }

    void start_stdin() {
        int fd = ::dup(STDIN_FILENO);
        if (fd < 0) return send_stdin_eof();  // no stdin at all
        stdin_ = std::make_unique<asio::posix::stream_descriptor>(io_);
        asio::error_code ec;
        stdin_->assign(fd, ec);
        if (ec) {
            ::close(fd);
            stdin_.reset();
            return send_stdin_eof();
        }
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
                agent_->send(msg::StdinData{head_puid_, std::string(stdin_buf_.data(), n), false});
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
        if (state_ == State::running && head_puid_ != 0) agent_->send(msg::StdinData{head_puid_, {}, true});
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
                std::fprintf(stderr, "dragon-orchestrate: killing the agent\n");
                if (agent_pid_ > 0) ::kill(agent_pid_, SIGKILL);  // its children die with it (PDEATHSIG)
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
        if (failure_ && state_ != State::done) {
            // The agent could not clean up after itself: do it for this run.
            if (auto r = rt::cleanup_stale(false, &*run_); r && !r->removed.empty())
                spdlog::info("removed {} leftover shared-memory entries of this run", r->removed.size());
        }
        if (failure_) {
            std::fprintf(stderr, "dragon-orchestrate: error: %s\n", failure_->message().c_str());
            if (!head_status_) return kExitRuntimeFailure;
        }
        if (head_status_) return head_status_->shell_code();
        if (spawn_failure_code_ != 0) return spawn_failure_code_;
        if (interrupted_by_ != 0) return 128 + interrupted_by_;
        return kExitRuntimeFailure;
    }

    int fatal_now(const Error& e) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", e.message().c_str());
        return kExitRuntimeFailure;
    }
    int usage_error(const Error& e) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", e.message().c_str());
        return kExitUsage;
    }

    RunOptions opts_;
    asio::io_context io_;
    asio::signal_set signals_;
    asio::steady_timer start_timer_;
    std::optional<RunId> run_;
    std::shared_ptr<rt::UnixConnection> agent_;
    pid_t agent_pid_ = 0;
    State state_ = State::starting;
    Puid head_puid_ = 0;
    std::optional<msg::ExitStatus> head_status_;
    std::optional<Error> failure_;
    int spawn_failure_code_ = 0;
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

int run_program(RunOptions opts) { return FrontEnd(std::move(opts)).run(); }

}  // namespace dragon::cli
