// The node agent: one event loop that owns the node's part of a run (the
// node lock and shared memory, the client socket, the processes it started)
// and talks to the front end over one control connection.
//
// Lifecycle (docs/runtime.md has the full table):
//   running -> stopping_int -> stopping_term -> stopping_kill -> finishing -> done
// Shutdown from the front end, loss of the front end, or SIGINT/SIGTERM/SIGHUP
// to the agent start stopping; a forced shutdown (or a second signal) jumps
// to stopping_kill. finishing removes strays and shared memory, reports
// ShutdownDone and exits.
#pragma once

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "../runtime/connection.hpp"
#include "../runtime/node_lock.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/config.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/procgroup/group.hpp"
#include "dragon/procgroup/resources.hpp"

namespace dragon::agent {
namespace pg = dragon::procgroup;

struct AgentOptions {
    RunId run;
    std::uint32_t node_id = 0;
    int control_fd = -1;  // connected stream socket to the front end (owned by the agent)
    Config config;
};

/// Sets up the agent's logging, creates it and runs it to the end; returns
/// the process exit code. The body of dragon-agent, and of the front end's
/// forked child under the local launcher.
int agent_main(AgentOptions opts);

/// Who a process's stream goes to, or comes from: the front end, a local
/// client (by id), or nobody.
using SinkId = std::uint64_t;
inline constexpr SinkId kFrontEnd = 0;
inline constexpr SinkId kNoSink = ~SinkId{0};

/// A process the agent started, until its group is closed (or the run ends).
struct Process {
    Puid puid = 0;
    pid_t pid = 0;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    SinkId out_to = kNoSink, err_to = kNoSink;  // where its output goes (pipes read by the agent)
    SinkId stdin_from = kNoSink;                // who may write its stdin (and gets the acks)
    std::vector<std::string> argv;
    msg::ProcState state = msg::ProcState::running;
    msg::ExitStatus status;
    std::unique_ptr<asio::posix::stream_descriptor> out, err;  // read ends while open
    std::unique_ptr<asio::posix::stream_descriptor> in;        // write end while open
    std::deque<std::string> stdin_queue;
    bool stdin_writing = false;
    bool stdin_eof = false;
    bool exit_reported = false;
    std::unique_ptr<asio::steady_timer> output_grace;  // after reaping, how long to wait for EOF
};

/// How starting one process went: a puid and pid, or why not.
struct SpawnOutcome {
    Puid puid = 0;  // 0: not started
    std::int32_t pid = 0;
    int sys_errno = 0;
    std::string error;  // names the program and the reason
};

/// A local client connection (a managed process using the client library).
struct Client {
    std::shared_ptr<rt::UnixConnection> conn;
    bool greeted = false;
    Puid puid = 0;
    int pid = 0;
};

/// A group the agent runs: its spec, its placement and its state machine.
struct Group {
    Group(std::uint64_t id, msg::GroupSpec s, std::vector<msg::GroupMember> plan)
        : tracker(id, static_cast<std::uint32_t>(plan.size()), pg::RestartPolicy{s.restart, s.max_restarts}),
          spec(std::move(s)),
          members(std::move(plan)) {}
    pg::GroupTracker tracker;
    msg::GroupSpec spec;
    std::vector<msg::GroupMember> members;  // placement and current puid/pid, by rank
    std::vector<std::uint32_t> entry_of_rank;
    std::uint32_t local_size = 0;  // members on this node
    SinkId owner = kFrontEnd;  // who started it: gets group_started, group_done, owner-mode output
    std::unique_ptr<asio::steady_timer> stop_timer;
    int stop_signal = 0;  // last signal sent while stopping
    std::uint32_t patience_ms = 2000;
    bool starting = true;  // group_done waits until group_started has been sent
    std::uint32_t unreported = 0;  // member processes whose exit is not yet reported (output draining)
    bool done_sent = false;
    bool orphaned = false;  // its client owner went away: stop it, then close it
};

class Agent {
public:
    enum class Phase { running, stopping_int, stopping_term, stopping_kill, finishing, done };

    /// Takes the node lock, opens the client socket, wraps the control fd.
    static Result<std::unique_ptr<Agent>> create(AgentOptions opts);

    /// Runs the event loop until the agent is done; returns the process exit code.
    int run();

    Agent(const Agent&) = delete;
    Agent& operator=(const Agent&) = delete;
    ~Agent();

private:
    Agent(AgentOptions opts, rt::NodeLock lock, channels::Pool pool);
    Status open_client_socket();
    void reserve_pool_step(std::size_t offset);

    // front end
    void on_frontend_frame(wire::Frame&& f);
    void on_frontend_closed(const Error* e);
    /// Starts one member of `g` as rank `rank` (its spec, env, cpus and I/O routing).
    SpawnOutcome spawn_member(Group& g, std::uint32_t rank, const std::vector<std::string>& extra_env);
    /// The connection behind a sink id, or null (gone, lost, or kNoSink).
    rt::UnixConnection* sink(SinkId id);

    // groups
    void handle_group_start(const msg::GroupStart& req, SinkId owner);
    Status check_group_io(const msg::GroupSpec& spec, SinkId owner) const;
    struct GroupPlan {
        std::vector<msg::GroupMember> members;
        std::vector<std::string> warnings;
    };
    Result<GroupPlan> plan_group(const msg::GroupSpec& spec, std::uint32_t nranks, bool want_cpus);
    Result<const pg::NodeResources*> node_resources();
    void start_member(Group& g, std::uint32_t rank);
    void on_group_exit(Group& g, Puid puid, const msg::ExitStatus& status);
    void apply(Group& g, pg::Action a);
    void stop_group(Group& g);
    void escalate_group(std::uint64_t group_id);
    void maybe_finish_group(Group& g);
    void close_group(std::uint64_t group_id);
    void handle_stdin(msg::StdinData&& d, SinkId from);
    void write_stdin(Process& p);
    void close_stdin(Process& p);

    // clients
    void accept_clients();
    void serve_client(asio::local::stream_protocol::socket sock);
    void on_client_frame(std::uint64_t id, wire::Frame&& f);
    void on_client_closed(std::uint64_t id);
    /// The group `group_id` if `client` may change it; otherwise replies with an error and returns null.
    Group* owned_group(std::uint64_t client, std::uint64_t group_id);
    msg::GroupStatus group_status(const Group& g);

    // output and exits
    void watch_output(Puid puid, msg::Stream stream);
    void on_output_ready(Puid puid, msg::Stream stream);
    void resume_parked_output();
    void drain_output(Process& p);
    void reap_children();
    void maybe_report_exit(Process& p);
    void queue_exit_report(Process& p);
    void flush_exit_reports();
    void send_exit_reports();

    // teardown
    void wait_signals();
    void begin_stop(bool force, std::uint32_t patience_ms, const char* why);
    void escalate();
    void signal_running(int sig);
    void maybe_finish();
    void finish();
    void kill_strays();
    [[nodiscard]] std::size_t running_count() const;

    Process* find(Puid puid);

    asio::io_context io_;
    AgentOptions opts_;
    rt::NodeLock lock_;
    channels::Pool pool_;  // the node's pool: channels of this node live in it
    bool pool_reservation_started_ = false;
    std::shared_ptr<rt::UnixConnection> frontend_;
    bool frontend_lost_ = false;
    asio::local::stream_protocol::acceptor client_acceptor_;
    asio::signal_set signals_;
    asio::steady_timer escalation_;
    asio::steady_timer reserve_timer_;
    IdAllocator puids_;
    std::map<Puid, std::unique_ptr<Process>> procs_;
    std::size_t running_ = 0;  // procs_ entries in state running
    std::map<std::uint64_t, std::unique_ptr<Group>> groups_;
    std::string hostname_;
    std::uint64_t next_group_id_ = 1;
    std::map<std::uint64_t, Client> clients_;
    std::uint64_t next_client_id_ = 1;
    std::optional<pg::NodeResources> resources_;  // discovered on first need (hwloc costs ~2 ms)
    std::unordered_map<pid_t, Puid> by_pid_;
    std::vector<std::pair<Puid, msg::Stream>> parked_output_;  // waiting for the front end to drain
    std::vector<msg::ExitInfo> exit_reports_;
    bool exit_flush_posted_ = false;
    std::vector<std::string> base_env_;
    std::string path_env_;
    Phase phase_ = Phase::running;
    std::uint32_t patience_ms_ = 2000;
    std::uint32_t signalled_ = 0;
    std::uint32_t killed_ = 0;
    int exit_code_ = 0;
};

}  // namespace dragon::agent
