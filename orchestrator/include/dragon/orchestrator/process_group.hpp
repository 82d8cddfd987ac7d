// ProcessGroup, the C++ API: describe processes with templates, start them
// as one group through the local agent, then watch, signal, stop, join and
// close it. States and semantics: docs/procgroup.md.
//
//   auto s = dragon::client::Session::connect_from_env().value();
//   dragon::client::ProcessGroup g(s, {.restart = false});
//   g.add(dragon::client::ProcessTemplate::command({"./worker", "--size", "8"}), 16);
//   g.start().value();
//   g.join(std::nullopt).value();
//   g.close().value();
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"
#include "dragon/orchestrator/client.hpp"

namespace dragon::client {

/// Where one standard stream of each process goes (or, for stdin, comes from).
struct Redirect {
    enum class Kind {
        inherit,  // stdout/stderr: the terminal of dragon-orchestrate; stdin: not allowed here
        discard,  // /dev/null
        file,     // a file per process: `path` is a pattern ("out.%r.txt", see procgroup/io.hpp)
        pipe,     // to (from) this owner: ProcessGroup::read_output / write_stdin
    };
    Kind kind = Kind::inherit;
    std::string path;

    static Redirect inherit() { return {Kind::inherit, {}}; }
    static Redirect discard() { return {Kind::discard, {}}; }
    static Redirect file(std::string pattern) { return {Kind::file, std::move(pattern)}; }
    static Redirect pipe() { return {Kind::pipe, {}}; }
};

/// One kind of process in a group.
struct ProcessTemplate {
    std::vector<std::string> argv;  // argv[0] is searched in PATH when it has no '/'
    std::string cwd;                // empty: the agent's working directory
    std::vector<std::string> env;   // "NAME=value" added to the run's environment
    Redirect stdin_redirect = Redirect::discard();
    Redirect stdout_redirect = Redirect::inherit();
    Redirect stderr_redirect = Redirect::inherit();
    // Where its processes go (docs/procgroup.md, "Placement constraints");
    // unset, the group's placement decides. A node, host or cpu the run does
    // not have makes start() fail with the agent's message.
    std::int32_t node = -1;            // -1: any node; else every process on this node id
    std::string host;                  // empty: any; else a node with this hostname (several: spread over them)
    std::vector<std::uint32_t> cpus;   // non-empty: each process bound to exactly these OS cpu ids
    // argv is `python [-S] -c code`: each process may start as a fork of the
    // node's pre-imported interpreter (docs/runtime.md, "Fast start").
    bool fast_start = false;

    static ProcessTemplate command(std::vector<std::string> argv) {
        ProcessTemplate t;
        t.argv = std::move(argv);
        return t;
    }
};

/// Placement and failure handling of the whole group.
struct GroupOptions {
    std::string placement = "block";  // block | cyclic | spread
    std::string binding = "none";     // none | core | pu | numa | socket
    std::uint32_t cpus_per_proc = 1;
    bool allow_oversubscribe = true;  // false: more ranks than cpus is an error
    bool restart = false;             // true: replace a failed member (Pool-like)
    std::uint32_t max_restarts = 0;   // with restart: replacements in all
    msg::PmiMode pmi = msg::PmiMode::none;  // simple | cray: MPI ranks get PMI from their agents (docs/pmi.md)
    bool pmi_port = false;                  // with pmi: PMI_PORT + PMI_ID instead of a PMI_FD socket
    bool outlive_owner = false;             // the owner's end (or death) does not stop the group
};

/// One rank of a started group, as the agent last reported it.
struct ProcessInfo {
    std::uint32_t rank = 0;
    Puid puid = 0;  // the current (latest) run's
    int pid = 0;
    std::uint32_t node_id = 0;
    std::uint32_t local_rank = 0;
    std::vector<std::uint32_t> cpus;  // bound to these; empty: not bound
    msg::MemberStateCode state = msg::MemberStateCode::pending;
    msg::ExitStatus status;           // of the last exit
    std::vector<msg::PastRun> runs;   // every run of this rank, oldest first
};

struct GroupInfo {
    msg::GroupStateCode state = msg::GroupStateCode::running;
    std::uint32_t restarts = 0;
    std::vector<ProcessInfo> processes;  // by rank
};

/// A group of processes owned by this client. Move-only. The Session must
/// outlive it. Destroying a group that still runs kills it and waits for it;
/// a finished one is closed.
class ProcessGroup {
public:
    ProcessGroup(Session& session, GroupOptions options = {});
    ProcessGroup(ProcessGroup&& o) noexcept;
    ProcessGroup& operator=(ProcessGroup&&) = delete;
    ProcessGroup(const ProcessGroup&) = delete;
    ~ProcessGroup();

    /// Adds `count` processes of `t`; ranks follow in the order added.
    void add(ProcessTemplate t, std::uint32_t count);

    /// Places and starts every process (one request; the agent starts them
    /// all before answering). Errors: nothing added, already started, a
    /// refused placement or I/O route (the agent's message), a lost agent.
    /// A member that cannot exec is not an error here: the group fails and
    /// join() reports it.
    Status start();
    /// start() in two halves, for a caller that starts many groups and
    /// does other work meanwhile (the workflow runner): the request goes
    /// now; take_start_answer() takes its answer once the session's pump()
    /// has filed it (false until then, the start's error if it was
    /// refused); wait_started() pumps until it has.
    Status start_without_waiting();
    Result<bool> take_start_answer();
    Status wait_started();
    /// Whether a start_without_waiting() still waits for its answer.
    [[nodiscard]] bool starting() const { return start_request_ != 0; }
    /// The session's request id of that start (Session::group_started_arrived).
    [[nodiscard]] std::uint64_t start_request() const { return start_request_; }

    /// Only the placement the group would get; starts nothing.
    Result<std::vector<msg::GroupMember>> plan();

    /// Waits until every member has ended (and its output is in), or until
    /// `timeout`. Returns true when the group is done, false on timeout.
    Result<bool> join(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    /// Sends `sig` to every running member (to its process group).
    Status send_signal(int sig);

    /// Stops the group: SIGINT, SIGTERM after `patience`, SIGKILL after
    /// another; returns once it is done.
    Status stop(std::chrono::milliseconds patience = std::chrono::seconds(2));

    /// SIGKILL to every member; returns once it is done.
    Status kill();

    /// Asks for stop() (or, with force, kill()) and returns at once; join()
    /// then waits for the end (a caller that must stay responsive, such as
    /// the Python binding, joins in slices).
    Status request_stop(std::chrono::milliseconds patience, bool force = false);

    /// Forgets a finished group in the agent (its processes leave the
    /// process table). Errc::would_block while it runs.
    Status close();
    /// As close(), without waiting for the agent's answer, once the group's
    /// end has arrived (the agent then cannot refuse); before that, close().
    /// For callers that end many short groups (the workflow runner): one
    /// round trip fewer per group.
    Status close_without_waiting();

    // ---- queries ---------------------------------------------------------------
    [[nodiscard]] bool started() const { return group_id_ != 0; }
    [[nodiscard]] std::uint64_t id() const { return group_id_; }
    [[nodiscard]] std::uint32_t size() const;
    /// Placement and first puids, from the start reply.
    [[nodiscard]] const std::vector<msg::GroupMember>& members() const { return members_; }
    [[nodiscard]] std::vector<Puid> puids() const;
    [[nodiscard]] const std::vector<std::string>& warnings() const { return warnings_; }
    /// The end, once join() has seen it: outcome, first failure, restarts.
    [[nodiscard]] const std::optional<msg::GroupDone>& outcome() const;
    /// The state of the group and of every member now (one round trip).
    Result<GroupInfo> info();
    /// Exit status of each rank's last run (pending/running ranks: nullopt).
    Result<std::vector<std::optional<msg::ExitStatus>>> exit_statuses();

    // ---- pipes to the owner ---------------------------------------------------------
    /// Bytes rank `rank` wrote to `stream` (a pipe redirect) since the last
    /// read: waits until there are some, the group is done, or `timeout`.
    /// Empty once the group is done and everything was read.
    Result<std::string> read_output(std::uint32_t rank, msg::Stream stream,
                                    std::optional<std::chrono::milliseconds> timeout = std::nullopt);
    /// Writes to rank `rank`'s stdin (a pipe redirect), blocking while 1 MiB
    /// is unacknowledged; eof closes it.
    Status write_stdin(std::uint32_t rank, std::string_view data, bool eof = false);

private:
    msg::GroupSpec spec() const;
    Status require_started(const char* what) const;

    Session* session_;
    GroupOptions options_;
    std::vector<std::pair<ProcessTemplate, std::uint32_t>> entries_;
    std::uint64_t group_id_ = 0;
    std::vector<msg::GroupMember> members_;
    std::vector<std::string> warnings_;
    bool closed_ = false;
    std::optional<msg::GroupDone> outcome_;  // once closed (the session forgets its events)
    std::uint64_t start_request_ = 0;  // the session's request id of a start not yet answered
};

}  // namespace dragon::client
