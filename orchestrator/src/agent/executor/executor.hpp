// The executor, on every node: starts the members node 0 placed here (with
// their environment, binding, stdio and PMI), signals and reaps them, writes
// their stdin, and reports their output, starts and exits to node 0's global
// services through the Router, node 0 included (docs/runtime.md). It owns
// its processes and local groups; the shell tells it of SIGCHLD, of owners'
// connections draining, and of the run's end.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "../dispatch.hpp"
#include "../pmi/pmi.hpp"
#include "../router.hpp"
#include "zygote.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"

namespace dragon::agent {

/// A process this node started, until its group is closed (or the run ends).
struct Process {
    Puid puid = 0;
    pid_t pid = 0;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    std::vector<std::string> argv;
    msg::ProcState state = msg::ProcState::running;
    msg::ExitStatus status;
    std::int64_t ended_ns = 0;  // CLOCK_REALTIME when reaped (reported with the exit)
    std::unique_ptr<asio::posix::stream_descriptor> out, err;  // read ends while open
    std::unique_ptr<asio::posix::stream_descriptor> in;        // write end while open
    std::deque<std::string> stdin_queue;
    bool stdin_writing = false;
    bool stdin_eof = false;
    bool exit_reported = false;
    std::unique_ptr<asio::steady_timer> output_grace;  // after reaping, how long to wait for EOF
};

/// The part of a group placed on this node.
struct LocalGroup {
    std::uint64_t id = 0;
    msg::GroupSpec spec;
    std::uint32_t nranks = 0;
    std::uint32_t local_size = 0;
    std::unordered_map<std::uint32_t, msg::MemberPlacement> placement;  // by rank
    std::vector<std::uint32_t> entry_end;      // prefix sums of entry counts: rank -> entry
    std::set<std::uint32_t> started_once;      // ranks started before (a restart appends to files)
    std::vector<Puid> puids;                   // every process it had here
    std::vector<msg::MemberExited> exit_batch;  // to node 0 at the end of this loop turn
    bool exit_flush_posted = false;
    // The first start, a slice per loop turn, answered once when all are done.
    std::vector<std::uint32_t> to_start;
    std::size_t next_start = 0;
    msg::MembersStarted started_reply;
    std::string first_failure;
    PmiJob* pmi = nullptr;  // when its members get PMI (owned by the PMI service)
};

struct ExecutorOptions {
    RunId run;
    std::uint32_t node_id = 0;
    std::string hostname;
    std::vector<std::string> base_env;  // every member's environment before its own
    std::string path_env;               // the PATH programs are looked up in, unless a member sets its own
    /// The first group came (the shell starts reserving the pool's pages, off the start-up path).
    std::function<void()> first_group;
    /// Exits were reaped or reported: the shell may be able to finish its teardown.
    std::function<void()> exits_changed;
    /// fast_start members fork from a zygote (zygote.hpp); DRAGON_FAST_START=0 in the agent's environment turns it off.
    bool fast_start = true;
};

class Executor {
public:
    Executor(Router& router, asio::io_context& io, ExecutorOptions opts);
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    /// Its handlers (node 0's orders: exec, signal, respawn, forget, stdin),
    /// and the PMI service's.
    void bind(Dispatcher<std::uint32_t>& nodes);

    /// SIGCHLD: reaps every child that ended (strays included, quietly).
    void reap();
    /// Processes still running.
    [[nodiscard]] std::size_t running() const { return running_; }
    /// Sends sig to every running process's process group (teardown).
    void signal_running(int sig);
    /// Teardown, once nothing runs: every exit is reported now, without
    /// waiting for output grace timers. True when nothing is left to send;
    /// false while a batch is queued (exits_changed follows once it is sent).
    bool report_all_exits();
    /// The run ends: what is still in the pipes goes out, stdin closes, PMI stops.
    void finish();
    /// Owners' connections drained: output held back for them is read again.
    void resume_output();
    /// Every process this node knows (proc_query).
    [[nodiscard]] msg::ProcTable process_table() const;

    // Exposed for tests and the shell's logs.
    [[nodiscard]] std::size_t group_count() const { return groups_.size(); }
    [[nodiscard]] const Process* find_process(Puid puid) const;
    /// Members started as forks of a zygote so far.
    [[nodiscard]] std::size_t fast_started() const { return zygotes_.forked(); }

private:
    void exec_members(const msg::ExecMembers& m);
    void start_some(std::uint64_t group_id);
    msg::MemberStarted spawn_member(LocalGroup& g, std::uint32_t rank);
    std::vector<std::string> member_env(const LocalGroup& g, std::uint32_t rank, Puid puid) const;
    void signal_members(const msg::SignalMembers& m);
    void respawn_member(const msg::RespawnMember& m);
    void forget_group(std::uint64_t group_id);
    /// A rank whose PMI connection broke (the PMI service asks).
    void end_rank(std::uint64_t group_id, std::uint32_t rank, const std::string& why);
    void handle_stdin(msg::StdinData&& d);
    void write_stdin(Process& p);
    void close_stdin(Process& p);
    void watch_output(Puid puid, msg::Stream stream);
    void on_output_ready(Puid puid, msg::Stream stream);
    void drain_output(Process& p);
    /// Sends output toward its reader; false when that path is above high water.
    bool send_output(msg::Output&& o);
    void maybe_report_exit(Process& p);
    void arm_output_grace(Puid puid);
    void queue_exit_report(Process& p);
    void flush_exits(std::uint64_t group_id);
    Process* find(Puid puid);

    Router& router_;
    asio::io_context& io_;
    ExecutorOptions opts_;
    IdAllocator puids_;
    PmiService pmi_;
    Zygotes zygotes_;
    std::map<Puid, std::unique_ptr<Process>> procs_;
    std::size_t running_ = 0;  // procs_ entries in state running
    std::unordered_map<pid_t, Puid> by_pid_;
    std::map<std::uint64_t, LocalGroup> groups_;
    std::vector<std::pair<Puid, msg::Stream>> parked_output_;  // waiting for their path to drain
    bool first_group_seen_ = false;
};

}  // namespace dragon::agent
