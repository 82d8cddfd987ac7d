// The messages between front end, agents and local clients (protocol v2).
// docs/protocol.md is the specification; keep the two in step.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "dragon/common/codec.hpp"
#include "dragon/common/framing.hpp"

namespace dragon::msg {

inline constexpr std::uint32_t kProtocolVersion = 3;

enum class Type : std::uint16_t {
    // front end <-> agent
    agent_hello = 1,
    stdin_data = 4,
    output = 5,
    proc_exit = 6,
    shutdown = 7,
    shutdown_done = 8,
    stdin_ack = 9,
    group_start = 10,
    group_started = 11,
    group_done = 12,
    agent_checkin = 13,
    head_address = 14,
    // local client <-> agent
    client_hello = 32,
    client_welcome = 33,
    proc_query = 34,
    proc_table = 35,
    group_signal = 36,
    group_stop = 37,
    group_close = 38,
    group_query = 39,
    group_status = 40,
    chan_send = 41,
    chan_recv = 42,
    chan_reply = 43,
    lane_open = 44,
    lane_opened = 45,
    machine_query = 46,
    machine_info = 47,
    chan_count = 48,
    chan_sync = 49,
    ok_reply = 62,
    error_reply = 63,
    // 64-79: reserved for the inter-node transport (dragon/transport/handshake.hpp)
    // agent <-> agent, over the transport
    node_hello = 96,
    node_table = 97,
    node_ready = 98,
    heartbeat = 99,
    exec_members = 100,
    members_started = 101,
    members_exited = 102,
    signal_members = 103,
    respawn_member = 104,
    forget_group = 105,
    client_relay = 106,
    client_gone = 107,
    remote_send = 108,
    remote_recv = 109,
    remote_reply = 110,
    remote_cancel = 111,
    pmi_fence = 112,
    pmi_abort = 113,
    pmix_dmodex_request = 114,
    pmix_dmodex_reply = 115,
    // a process <-> another node's agent, on a lane (docs/channels.md)
    lane_hello = 116,
    lane_welcome = 117,
    remote_count = 118,
    remote_sync = 119,
};

/// Where a process's stdin comes from: nothing (/dev/null), the front end's
/// stdin (rank 0 only), a file, or the group's owner (stdin_data from it).
enum class StdinMode : std::uint8_t { null = 0, forward = 1, file = 2, owner = 3 };
/// Where a process's stdout/stderr go: the front end's terminal, nowhere, a
/// file per process (path pattern, see procgroup/io.hpp), or the group's
/// owner as `output` frames on its connection.
enum class OutputMode : std::uint8_t { forward = 0, discard = 1, file = 2, owner = 3 };
enum class Stream : std::uint8_t { out = 1, err = 2 };
enum class ProcState : std::uint8_t { running = 1, exited = 2 };
/// Which PMI a group's members get (docs/pmi.md): none, the simple PMI-1/PMI-2
/// wire server, that server plus the Cray/PALS environment and our libpmi, or
/// the PMIx server (Open MPI, mpi4py).
enum class PmiMode : std::uint8_t { none = 0, simple = 1, cray = 2, pmix = 3 };
/// Why a group failed first (GroupDone::fail_kind).
enum class FailKind : std::uint8_t {
    exited = 0,       // a member exited non-zero or was killed (fail_status)
    not_started = 1,  // a member could not be started (fail_error, fail_errno)
    lost = 2,         // a member's node went away (fail_error)
    aborted = 3,      // a member asked to abort the job (MPI_Abort): fail_status holds its code
    runtime = 4,      // the runtime failed the member (fail_error: e.g. it left PMI without finalize)
};

inline bool wire_valid(StdinMode v) { return static_cast<std::uint8_t>(v) <= 3; }
inline bool wire_valid(OutputMode v) { return static_cast<std::uint8_t>(v) <= 3; }
inline bool wire_valid(Stream v) { return v == Stream::out || v == Stream::err; }
inline bool wire_valid(ProcState v) { return v == ProcState::running || v == ProcState::exited; }
inline bool wire_valid(PmiMode v) { return static_cast<std::uint8_t>(v) <= 3; }
inline bool wire_valid(FailKind v) { return static_cast<std::uint8_t>(v) <= 4; }

/// How a process ended: exactly one of exit_code / signal is meaningful.
struct ExitStatus {
    std::int32_t exit_code = 0;  // valid when signal == 0
    std::int32_t signal = 0;     // the terminating signal, 0 if it exited
    DRAGON_WIRE_FIELDS(exit_code, signal)
    /// Shell convention: the exit code, or 128 + signal.
    [[nodiscard]] int shell_code() const { return signal != 0 ? 128 + signal : exit_code; }
    static ExitStatus from_wait_status(int wstatus);
};

// ---- front end <-> agent ---------------------------------------------------

/// Agent -> front end, first frame on the control connection.
struct AgentHello {
    static constexpr Type kType = Type::agent_hello;
    std::uint32_t version = kProtocolVersion;
    std::string run_id;
    std::uint32_t node_id = 0;
    std::int32_t pid = 0;
    std::string hostname;
    DRAGON_WIRE_FIELDS(version, run_id, node_id, pid, hostname)
};

/// Agent -> front end, on the rendezvous connection of a batch launcher
/// (slurm), after the transport handshake: where this node's agent listens.
struct AgentCheckin {
    static constexpr Type kType = Type::agent_checkin;
    std::uint32_t version = kProtocolVersion;
    std::uint32_t node_id = 0;
    std::int32_t pid = 0;
    std::string hostname;
    std::string node_name;  // the batch system's name of the node (SLURMD_NODENAME)
    std::string address;    // where its listener is
    std::uint16_t port = 0;
    DRAGON_WIRE_FIELDS(version, node_id, pid, hostname, node_name, address, port)
};

/// Front end -> agent k > 0 on the rendezvous connection: where node 0
/// listens (then the front end closes it). Node 0's rendezvous connection
/// becomes its control connection instead.
struct HeadAddress {
    static constexpr Type kType = Type::head_address;
    std::string address;
    std::uint16_t port = 0;
    DRAGON_WIRE_FIELDS(address, port)
};

/// One process to start.
struct ProcSpec {
    std::vector<std::string> argv;  // argv[0] is the program (searched in PATH if it has no '/')
    std::vector<std::string> env;   // "NAME=value" entries added to the agent's environment
    std::string cwd;                // empty: the agent's working directory
    StdinMode stdin_mode = StdinMode::null;
    OutputMode stdout_mode = OutputMode::forward;
    OutputMode stderr_mode = OutputMode::forward;
    // Path patterns for the file modes ("%r" rank, ...); relative to cwd.
    std::string stdin_path, stdout_path, stderr_path;
    // A `python [-S] -c code` member that may start as a fork of the node's
    // pre-imported interpreter of that Python (docs/runtime.md, "Fast start").
    bool fast_start = false;
    DRAGON_WIRE_FIELDS(argv, env, cwd, stdin_mode, stdout_mode, stderr_mode, stdin_path, stdout_path, stderr_path,
                       fast_start)
};

/// Front end -> agent: bytes for a process's stdin; eof closes it.
struct StdinData {
    static constexpr Type kType = Type::stdin_data;
    std::uint64_t puid = 0;
    std::string data;
    bool eof = false;
    DRAGON_WIRE_FIELDS(puid, data, eof)
};

/// Agent -> front end: `consumed` more bytes of a process's stdin were written
/// into it (or dropped because it closed its stdin). The front end keeps at
/// most kStdinWindow bytes unacknowledged, so a slow reader cannot make the
/// agent buffer without bound.
struct StdinAck {
    static constexpr Type kType = Type::stdin_ack;
    std::uint64_t puid = 0;
    std::uint64_t consumed = 0;
    DRAGON_WIRE_FIELDS(puid, consumed)
};
inline constexpr std::uint64_t kStdinWindow = 1U << 20;

/// Agent -> front end (or a group's owner): bytes a process wrote, in order
/// per (puid, stream). group_id and rank say whose they are, so output of a
/// restarted rank is attributed without a lookup.
struct Output {
    static constexpr Type kType = Type::output;
    std::uint64_t puid = 0;
    Stream stream = Stream::out;
    std::string data;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    DRAGON_WIRE_FIELDS(puid, stream, data, group_id, rank)
};

struct ExitInfo {
    std::uint64_t puid = 0;
    std::int32_t pid = 0;
    ExitStatus status;
    DRAGON_WIRE_FIELDS(puid, pid, status)
};

/// Agent -> front end: processes that ended (batched). All their output that
/// the agent read before the exit was sent before this frame.
struct ProcExit {
    static constexpr Type kType = Type::proc_exit;
    std::vector<ExitInfo> exits;
    DRAGON_WIRE_FIELDS(exits)
};

/// Front end -> agent: stop every process and exit. With force, SIGKILL at once;
/// otherwise SIGINT, SIGTERM after patience_ms, SIGKILL after another patience_ms.
struct Shutdown {
    static constexpr Type kType = Type::shutdown;
    bool force = false;
    std::uint32_t patience_ms = 2000;
    DRAGON_WIRE_FIELDS(force, patience_ms)
};

/// Agent -> front end: every process is reaped and the node's shared memory is
/// gone; the agent exits after sending this.
struct ShutdownDone {
    static constexpr Type kType = Type::shutdown_done;
    std::uint32_t signalled = 0;  // processes that were still running and got signals
    std::uint32_t killed = 0;     // of those, how many needed SIGKILL
    DRAGON_WIRE_FIELDS(signalled, killed)
};

/// One (template, count) entry of a group.
/// One program of a group and how many ranks run it, with where they may go
/// (docs/procgroup.md, "Placement constraints"; unset: anywhere, as placed).
struct GroupEntry {
    ProcSpec proc;
    std::uint32_t count = 1;
    std::int32_t node = -1;           // -1: any node; else every rank on this node id
    std::string host;                 // empty: any; else nodes with this hostname
    std::vector<std::uint32_t> cpus;  // non-empty: every rank bound to exactly these OS cpu ids
    DRAGON_WIRE_FIELDS(proc, count, node, host, cpus)
};

/// A ProcessGroup: its entries (ranks are numbered across entries, in order),
/// where they go and what happens when a member fails.
struct GroupSpec {
    std::vector<GroupEntry> entries;
    std::string placement = "block";  // block | cyclic | spread
    std::string binding = "none";     // none | core | pu | numa | socket
    std::uint32_t cpus_per_proc = 1;
    bool allow_oversubscribe = true;  // false: refuse more ranks than cpus
    bool restart = false;             // true: replace failed members (Pool-like)
    std::uint32_t max_restarts = 0;
    PmiMode pmi = PmiMode::none;  // serve PMI to the members (MPI ranks)
    bool pmi_port = false;        // PMI_PORT + PMI_ID (a TCP port) instead of a PMI_FD socket
    bool outlive_owner = false;   // keeps running when its owner goes (multiprocessing's non-daemonic children)
    DRAGON_WIRE_FIELDS(entries, placement, binding, cpus_per_proc, allow_oversubscribe, restart, max_restarts, pmi,
                       pmi_port, outlive_owner)
};

/// Front end -> agent: place and start a group (or, with dry_run, only place it).
struct GroupStart {
    static constexpr Type kType = Type::group_start;
    std::uint64_t request_id = 0;
    GroupSpec spec;
    bool dry_run = false;
    DRAGON_WIRE_FIELDS(request_id, spec, dry_run)
};

struct GroupMember {
    std::uint32_t rank = 0;
    std::uint64_t puid = 0;  // 0 in a dry run
    std::int32_t pid = 0;
    std::uint32_t node_id = 0;
    std::uint32_t local_rank = 0;
    std::vector<std::uint32_t> cpus;  // bound to these OS cpus; empty: not bound
    DRAGON_WIRE_FIELDS(rank, puid, pid, node_id, local_rank, cpus)
};

/// Agent -> front end: the group's placement and (unless a dry run) its
/// members' puids. `error` is set, and members empty, when it could not be
/// placed; start failures of single members arrive as group_done.
struct GroupStarted {
    static constexpr Type kType = Type::group_started;
    std::uint64_t request_id = 0;
    std::uint64_t group_id = 0;
    std::string error;
    std::vector<std::string> warnings;
    std::vector<GroupMember> members;
    DRAGON_WIRE_FIELDS(request_id, group_id, error, warnings, members)
};

enum class GroupOutcome : std::uint8_t { succeeded = 1, failed = 2, stopped = 3 };
inline bool wire_valid(GroupOutcome v) {
    return v == GroupOutcome::succeeded || v == GroupOutcome::failed || v == GroupOutcome::stopped;
}

/// Agent -> front end: every member of the group has ended.
struct GroupDone {
    static constexpr Type kType = Type::group_done;
    std::uint64_t group_id = 0;
    GroupOutcome outcome = GroupOutcome::succeeded;
    // The first failure (outcome failed): which rank, how it ended, or why it could not start.
    std::uint32_t fail_rank = 0;
    std::uint64_t fail_puid = 0;
    ExitStatus fail_status;
    std::int32_t fail_errno = 0;
    std::string fail_error;
    ExitStatus rank0_status;  // how rank 0 last ended (the exit code of a stopped group)
    std::uint32_t restarts = 0;
    FailKind fail_kind = FailKind::exited;
    DRAGON_WIRE_FIELDS(group_id, outcome, fail_rank, fail_puid, fail_status, fail_errno, fail_error, rank0_status,
                       restarts, fail_kind)
};

// ---- local client <-> agent ---------------------------------------------------

struct ClientHello {
    static constexpr Type kType = Type::client_hello;
    std::uint32_t version = kProtocolVersion;
    std::uint64_t puid = 0;  // the client's own puid (DRAGON_PUID), 0 if not a managed process
    DRAGON_WIRE_FIELDS(version, puid)
};

struct ClientWelcome {
    static constexpr Type kType = Type::client_welcome;
    std::uint32_t version = kProtocolVersion;
    std::string run_id;
    std::uint32_t node_id = 0;
    std::int32_t agent_pid = 0;
    DRAGON_WIRE_FIELDS(version, run_id, node_id, agent_pid)
};

struct ProcQuery {
    static constexpr Type kType = Type::proc_query;
    auto wire_fields() const { return std::tie(); }
    auto wire_fields() { return std::tie(); }
};

struct ProcEntry {
    std::uint64_t puid = 0;
    std::int32_t pid = 0;
    ProcState state = ProcState::running;
    ExitStatus status;  // meaningful when state == exited
    std::vector<std::string> argv;
    DRAGON_WIRE_FIELDS(puid, pid, state, status, argv)
};

struct ProcTable {
    static constexpr Type kType = Type::proc_table;
    std::vector<ProcEntry> procs;
    DRAGON_WIRE_FIELDS(procs)
};

/// Client -> agent: send `signal` to every running member of a group the
/// client owns (to each member's process group). Reply: ok_reply.
struct GroupSignal {
    static constexpr Type kType = Type::group_signal;
    std::uint64_t group_id = 0;
    std::int32_t signal = 0;
    DRAGON_WIRE_FIELDS(group_id, signal)
};

/// Client -> agent: stop a group: SIGINT, SIGTERM after patience_ms, SIGKILL
/// after another patience_ms (force: SIGKILL at once). Reply: ok_reply at
/// once; group_done follows when the last member has ended.
struct GroupStop {
    static constexpr Type kType = Type::group_stop;
    std::uint64_t group_id = 0;
    bool force = false;
    std::uint32_t patience_ms = 2000;
    DRAGON_WIRE_FIELDS(group_id, force, patience_ms)
};

/// Client -> agent: forget a finished group and its processes. Reply:
/// ok_reply, or error_reply while a member still runs.
struct GroupClose {
    static constexpr Type kType = Type::group_close;
    std::uint64_t group_id = 0;
    DRAGON_WIRE_FIELDS(group_id)
};

struct GroupQuery {
    static constexpr Type kType = Type::group_query;
    std::uint64_t group_id = 0;
    DRAGON_WIRE_FIELDS(group_id)
};

enum class GroupStateCode : std::uint8_t { running = 1, stopping = 2, succeeded = 3, failed = 4, stopped = 5 };
enum class MemberStateCode : std::uint8_t { pending = 0, running = 1, exited = 2 };
inline bool wire_valid(GroupStateCode v) { return static_cast<std::uint8_t>(v) >= 1 && static_cast<std::uint8_t>(v) <= 5; }
inline bool wire_valid(MemberStateCode v) { return static_cast<std::uint8_t>(v) <= 2; }

/// One earlier or current run of a rank.
struct PastRun {
    std::uint64_t puid = 0;
    std::int32_t pid = 0;
    bool exited = false;
    ExitStatus status;  // when exited
    // When its node's agent started it and reaped it (CLOCK_REALTIME, ns
    // since the epoch; 0: unknown, or not yet ended). Clocks of different
    // hosts agree only as far as they are synchronised.
    std::int64_t started_ns = 0;
    std::int64_t ended_ns = 0;
    DRAGON_WIRE_FIELDS(puid, pid, exited, status, started_ns, ended_ns)
};

struct MemberStatus {
    GroupMember where;  // rank, current puid and pid, node, local rank, cpus
    MemberStateCode state = MemberStateCode::pending;
    ExitStatus status;          // of the last exit, when exited
    std::vector<PastRun> runs;  // every run of this rank, oldest first (restarts add runs)
    DRAGON_WIRE_FIELDS(where, state, status, runs)
};

/// Agent -> client: the state of a group and of each member, by rank.
struct GroupStatus {
    static constexpr Type kType = Type::group_status;
    std::uint64_t group_id = 0;
    GroupStateCode state = GroupStateCode::running;
    std::uint32_t restarts = 0;
    std::vector<MemberStatus> members;
    DRAGON_WIRE_FIELDS(group_id, state, restarts, members)
};

/// Client -> agent (answered by node 0): the runtime's nodes.
struct MachineQuery {
    static constexpr Type kType = Type::machine_query;
    auto wire_fields() const { return std::tie(); }
    auto wire_fields() { return std::tie(); }
};

/// One node of the runtime, as placement sees it.
struct MachineNode {
    std::uint32_t node_id = 0;
    std::string hostname;
    std::uint32_t cpus = 0;   // the PUs granted to the runtime on this node
    std::uint32_t cores = 0;
    DRAGON_WIRE_FIELDS(node_id, hostname, cpus, cores)
};

/// Node 0 -> client: every node of the runtime, by node id.
struct MachineInfo {
    static constexpr Type kType = Type::machine_info;
    std::vector<MachineNode> nodes;
    DRAGON_WIRE_FIELDS(nodes)
};

// Channel operations through the gateway (docs/channels.md, "Channels on
// other nodes"). A timeout is in nanoseconds: negative waits for ever, 0
// tries once. A channel descriptor travels as its 128-byte encoding.

/// Client -> agent: send a message to a channel on another node. Small
/// messages travel in `data`; larger ones in a block of this node's pool
/// (`block`, `size`), which the agent owns (and frees) from the moment it
/// reads this request. Reply: chan_reply once the message is in the remote
/// channel, or an error (then nothing was sent).
struct ChanSend {
    static constexpr Type kType = Type::chan_send;
    std::uint64_t request_id = 0;
    std::string descriptor;
    std::int64_t timeout_ns = -1;
    std::string data;
    std::uint64_t block = 0;
    std::uint64_t size = 0;
    DRAGON_WIRE_FIELDS(request_id, descriptor, timeout_ns, data, block, size)
};

/// Client -> agent: receive the next message of a channel on another node.
/// Reply: chan_reply carrying it (in `data`, or in a block of this node's
/// pool that the client then owns and frees).
struct ChanRecv {
    static constexpr Type kType = Type::chan_recv;
    std::uint64_t request_id = 0;
    std::string descriptor;
    std::int64_t timeout_ns = -1;
    DRAGON_WIRE_FIELDS(request_id, descriptor, timeout_ns)
};

/// Agent -> client: the end of a chan_send or chan_recv. `code` is 0 or a
/// dragon::Errc value with `message`.
struct ChanReply {
    static constexpr Type kType = Type::chan_reply;
    std::uint64_t request_id = 0;
    std::uint16_t code = 0;
    std::string message;
    std::string data;
    std::uint64_t block = 0;
    std::uint64_t size = 0;
    DRAGON_WIRE_FIELDS(request_id, code, message, data, block, size)
};

/// Client -> agent: how many messages a channel on another node holds now
/// (Queue.qsize/empty/full there). Reply: chan_reply with the count in
/// `data`, in decimal.
struct ChanCount {
    static constexpr Type kType = Type::chan_count;
    std::uint64_t request_id = 0;
    std::string descriptor;
    DRAGON_WIRE_FIELDS(request_id, descriptor)
};

/// An operation on a Lock/Semaphore/Event/Barrier/Value block (a
/// channels::SyncBlock) done by its home node for a process that cannot map
/// the home's pool (another host; docs/multiprocessing.md, "Across hosts").
enum class SyncOp : std::uint8_t {
    info = 1,           // reply "<maximum> <data bytes>": the block exists (attach)
    acquire = 2,        // one count, waiting up to timeout_ns; reply "1" taken, "0" timed out
    release = 3,        // one count back; invalid_argument when released too many times
    value = 4,          // reply the count in decimal
    store = 5,          // Event: the count := arg, waking waiters when > 0
    wait_positive = 6,  // Event: until the count > 0 (up to timeout_ns); reply "1" / "0"
    bump = 7,           // Barrier's epoch: count + 1, waking waiters; reply the new count
    wait_change = 8,    // Barrier's epoch: until the count != arg (up to timeout_ns); reply "1" / "0"
    read = 9,           // reply `length` bytes of the data area from offset arg
    write = 10,         // `data` into the data area at offset arg
    forget = 11,        // the caller exits normally: what it holds is not given back when it goes
};

/// The most bytes one read or write of a sync block's data carries (larger
/// ones are done in pieces, far below the frame limit).
inline constexpr std::uint64_t kSyncMaxBytes = 1U << 20;

/// Client -> agent: an operation on a block whose home is another node,
/// which the agent forwards as remote_sync (a process with a lane to that
/// node sends remote_sync itself). Reply: chan_reply, the result in `data`.
struct ChanSync {
    static constexpr Type kType = Type::chan_sync;
    std::uint64_t request_id = 0;
    std::string pool_name;  // names the home node (pool names carry it)
    std::uint64_t generation = 0;
    std::uint64_t offset = 0;
    std::uint64_t id = 0;
    std::uint8_t op = 0;  // SyncOp
    std::int64_t arg = 0;
    std::uint64_t length = 0;
    std::int64_t timeout_ns = -1;
    std::string data;
    DRAGON_WIRE_FIELDS(request_id, pool_name, generation, offset, id, op, arg, length, timeout_ns, data)
};

/// Client -> agent, the first and only frame of a fresh connection: open a
/// lane, a TCP connection of the client's own to node `node`'s agent for
/// channel operations (docs/channels.md). The agent connects and
/// authenticates it as this node, then hands the socket over.
struct LaneOpen {
    static constexpr Type kType = Type::lane_open;
    std::uint32_t node = 0;
    DRAGON_WIRE_FIELDS(node)
};

/// Agent -> client: the answer to lane_open. With `code` 0 the lane's socket
/// comes with this frame (SCM_RIGHTS); else `code` is a dragon::Errc value
/// and `message` says why. The agent closes the connection afterwards.
struct LaneOpened {
    static constexpr Type kType = Type::lane_opened;
    std::uint16_t code = 0;
    std::string message;
    DRAGON_WIRE_FIELDS(code, message)
};

/// Agent -> client: the request was carried out.
struct OkReply {
    static constexpr Type kType = Type::ok_reply;
    auto wire_fields() const { return std::tie(); }
    auto wire_fields() { return std::tie(); }
};

/// Agent -> client: the request failed (code is a dragon::Errc value).
struct ErrorReply {
    static constexpr Type kType = Type::error_reply;
    std::uint16_t code = 0;
    std::string message;
    DRAGON_WIRE_FIELDS(code, message)
};

// ---- agent <-> agent (over the transport) ---------------------------------------
// Node 0's agent hosts the global services (the group table, placement over
// all nodes); every agent executes the part of a group placed on its node.
// docs/protocol.md has the sequences.

/// Node k -> node 0, first frame after the transport handshake: who it is and
/// what it offers for placement (NodeResources, encoded: procgroup sits above common).
struct NodeHello {
    static constexpr Type kType = Type::node_hello;
    std::uint32_t version = kProtocolVersion;
    std::uint32_t node_id = 0;
    std::int32_t pid = 0;
    std::string hostname;
    std::string address;  // where its listener is
    std::uint16_t port = 0;
    std::string resources;  // a wire-encoded procgroup::NodeResources
    DRAGON_WIRE_FIELDS(version, node_id, pid, hostname, address, port, resources)
};

struct NodeAddress {
    std::uint32_t node_id = 0;
    std::string hostname;
    std::string address;
    std::uint16_t port = 0;
    DRAGON_WIRE_FIELDS(node_id, hostname, address, port)
};

/// Node 0 -> every node, once all have said hello: every node's listener.
/// Node k then connects to each node j with 0 < j < k (the higher id dials).
struct NodeTable {
    static constexpr Type kType = Type::node_table;
    std::vector<NodeAddress> nodes;
    DRAGON_WIRE_FIELDS(nodes)
};

/// Node k -> node 0: connected to every other node; the run may start.
struct NodeReady {
    static constexpr Type kType = Type::node_ready;
    std::uint32_t node_id = 0;
    DRAGON_WIRE_FIELDS(node_id)
};

/// Either way on every link, every heartbeat interval: "I am alive".
struct Heartbeat {
    static constexpr Type kType = Type::heartbeat;
    std::uint64_t seq = 0;
    DRAGON_WIRE_FIELDS(seq)
};

struct MemberPlacement {
    std::uint32_t rank = 0;
    std::uint32_t local_rank = 0;
    std::vector<std::uint32_t> cpus;
    DRAGON_WIRE_FIELDS(rank, local_rank, cpus)
};

/// Node 0 -> a node: start these members of a group (one message per node per group).
struct ExecMembers {
    static constexpr Type kType = Type::exec_members;
    std::uint64_t group_id = 0;
    std::uint32_t nranks = 0;
    std::uint32_t local_size = 0;
    GroupSpec spec;  // the whole spec: members name their entry by rank
    std::vector<MemberPlacement> members;
    std::vector<std::uint32_t> rank_nodes;  // with PMI: the node of every rank of the group (else empty)
    DRAGON_WIRE_FIELDS(group_id, nranks, local_size, spec, members, rank_nodes)
};

struct MemberStarted {
    std::uint32_t rank = 0;
    std::uint64_t puid = 0;  // 0: not started (error says why)
    std::int32_t pid = 0;
    std::int32_t sys_errno = 0;
    std::string error;
    std::int64_t started_ns = 0;  // CLOCK_REALTIME when it was started (see PastRun)
    DRAGON_WIRE_FIELDS(rank, puid, pid, sys_errno, error, started_ns)
};

/// A node -> node 0: how starting members went (a slice of the batch, or one
/// respawn). `complete` on the last slice of the node's batch.
struct MembersStarted {
    static constexpr Type kType = Type::members_started;
    std::uint64_t group_id = 0;
    std::vector<MemberStarted> members;
    bool complete = true;
    DRAGON_WIRE_FIELDS(group_id, members, complete)
};

struct MemberExited {
    std::uint32_t rank = 0;
    std::uint64_t puid = 0;
    std::int32_t pid = 0;
    ExitStatus status;
    std::string error;  // set: a failure whatever the status (e.g. it left PMI without finalize)
    std::int64_t ended_ns = 0;  // CLOCK_REALTIME when it was reaped (see PastRun)
    DRAGON_WIRE_FIELDS(rank, puid, pid, status, error, ended_ns)
};

/// A node -> node 0: members that ended, each after all of its output was sent.
struct MembersExited {
    static constexpr Type kType = Type::members_exited;
    std::uint64_t group_id = 0;
    std::vector<MemberExited> members;
    DRAGON_WIRE_FIELDS(group_id, members)
};

/// Node 0 -> a node: send `signal` to the group's running members there.
struct SignalMembers {
    static constexpr Type kType = Type::signal_members;
    std::uint64_t group_id = 0;
    std::int32_t signal = 0;
    DRAGON_WIRE_FIELDS(group_id, signal)
};

/// Node 0 -> a node: start rank `rank` again (same placement, new puid).
struct RespawnMember {
    static constexpr Type kType = Type::respawn_member;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    DRAGON_WIRE_FIELDS(group_id, rank)
};

/// Node 0 -> a node: the group is closed; forget its processes.
struct ForgetGroup {
    static constexpr Type kType = Type::forget_group;
    std::uint64_t group_id = 0;
    DRAGON_WIRE_FIELDS(group_id)
};

/// A frame between a local client of node k and the global services of node
/// 0, carried over the k <-> 0 link: requests one way, replies and events
/// the other.
struct ClientRelay {
    static constexpr Type kType = Type::client_relay;
    std::uint64_t client = 0;  // the client's id at node k
    std::uint16_t type = 0;
    std::string body;
    DRAGON_WIRE_FIELDS(client, type, body)
};

/// Node k -> node 0: a local client disconnected (its groups are orphaned).
struct ClientGone {
    static constexpr Type kType = Type::client_gone;
    std::uint64_t client = 0;
    DRAGON_WIRE_FIELDS(client)
};

/// Node j -> node k: put a message into a channel of node k (the origin's
/// op_id names the operation in the reply). The message is `data`, or the
/// payload when this is the header of a transport payload message.
struct RemoteSend {
    static constexpr Type kType = Type::remote_send;
    std::uint64_t op_id = 0;
    std::string descriptor;
    std::int64_t timeout_ns = -1;
    std::string data;
    DRAGON_WIRE_FIELDS(op_id, descriptor, timeout_ns, data)
};

/// Node j -> node k: take the next message of a channel of node k.
struct RemoteRecv {
    static constexpr Type kType = Type::remote_recv;
    std::uint64_t op_id = 0;
    std::string descriptor;
    std::int64_t timeout_ns = -1;
    DRAGON_WIRE_FIELDS(op_id, descriptor, timeout_ns)
};

/// Node j (or a lane) -> node k: how many messages a channel of node k holds
/// now. Reply: remote_reply with the count in `data`, in decimal.
struct RemoteCount {
    static constexpr Type kType = Type::remote_count;
    std::uint64_t op_id = 0;
    std::string descriptor;
    DRAGON_WIRE_FIELDS(op_id, descriptor)
};

/// Node j (or a lane) -> the block's home node k: a SyncOp on one of node
/// k's sync blocks (fields as in chan_sync). Reply: remote_reply.
struct RemoteSync {
    static constexpr Type kType = Type::remote_sync;
    std::uint64_t op_id = 0;
    std::string pool_name;
    std::uint64_t generation = 0;
    std::uint64_t offset = 0;
    std::uint64_t id = 0;
    std::uint8_t op = 0;
    std::int64_t arg = 0;
    std::uint64_t length = 0;
    std::int64_t timeout_ns = -1;
    std::string data;
    DRAGON_WIRE_FIELDS(op_id, pool_name, generation, offset, id, op, arg, length, timeout_ns, data)
};

/// Node k -> node j: the end of a remote_send or remote_recv. A received
/// message is `data`, or the payload of this payload message.
struct RemoteReply {
    static constexpr Type kType = Type::remote_reply;
    std::uint64_t op_id = 0;
    std::uint16_t code = 0;
    std::string message;
    std::string data;
    DRAGON_WIRE_FIELDS(op_id, code, message, data)
};

/// Node j -> node k: the client behind op_id went away; stop waiting for it
/// (a receive not yet done then takes no message). No reply.
struct RemoteCancel {
    static constexpr Type kType = Type::remote_cancel;
    std::uint64_t op_id = 0;
    DRAGON_WIRE_FIELDS(op_id)
};

/// Node j -> node k: node j's key/values of PMI fence `seq` of a group
/// (docs/pmi.md); `batch` is an encoded list of (key, value). Every node of
/// the group sends its batch to every other; a fence ends on a node when it
/// has them all.
struct PmiFence {
    static constexpr Type kType = Type::pmi_fence;
    std::uint64_t group_id = 0;
    std::uint64_t seq = 0;
    std::string batch;
    DRAGON_WIRE_FIELDS(group_id, seq, batch)
};

/// A node -> node 0: a rank of a group asked to abort the job (PMI abort,
/// as MPI_Abort does): the group fails with that rank and exit code, and
/// its other members are stopped.
struct PmiAbort {
    static constexpr Type kType = Type::pmi_abort;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    std::int32_t exit_code = 1;
    std::string message;
    DRAGON_WIRE_FIELDS(group_id, rank, exit_code, message)
};

/// Node j -> node k: a rank of node j wants the PMIx data of `rank`, which
/// runs on node k (a direct modex). Answered by pmix_dmodex_reply.
struct PmixDmodexRequest {
    static constexpr Type kType = Type::pmix_dmodex_request;
    std::uint64_t group_id = 0;
    std::uint32_t rank = 0;
    std::uint64_t request_id = 0;
    DRAGON_WIRE_FIELDS(group_id, rank, request_id)
};

/// Node k -> node j: the data (`code` 0) or why not (a dragon::Errc value).
struct PmixDmodexReply {
    static constexpr Type kType = Type::pmix_dmodex_reply;
    std::uint64_t request_id = 0;
    std::uint16_t code = 0;
    std::string message;
    std::string data;
    DRAGON_WIRE_FIELDS(request_id, code, message, data)
};

/// Client (on node `node_id`) -> node k's agent, the first frame on a lane:
/// who speaks. Then the lane carries remote_send, remote_recv and
/// remote_cancel one way and remote_reply the other, as a link does.
struct LaneHello {
    static constexpr Type kType = Type::lane_hello;
    std::uint32_t version = kProtocolVersion;
    std::uint32_t node_id = 0;
    std::uint64_t puid = 0;
    DRAGON_WIRE_FIELDS(version, node_id, puid)
};

/// Node k's agent -> client: the lane is served (`code` 0), or why not (a
/// dragon::Errc value and `message`; the agent then closes it).
struct LaneWelcome {
    static constexpr Type kType = Type::lane_welcome;
    std::uint16_t code = 0;
    std::string message;
    DRAGON_WIRE_FIELDS(code, message)
};

/// Every message type, for dispatch and fuzzing.
using AllMessages = std::tuple<AgentHello, AgentCheckin, HeadAddress, StdinData, Output, ProcExit, Shutdown, ShutdownDone, StdinAck, GroupStart,
                               GroupStarted, GroupDone, ClientHello, ClientWelcome, ProcQuery, ProcTable, GroupSignal,
                               GroupStop, GroupClose, GroupQuery, GroupStatus, OkReply, ErrorReply, NodeHello, NodeTable,
                               NodeReady, Heartbeat, ExecMembers, MembersStarted, MembersExited, SignalMembers,
                               RespawnMember, ForgetGroup, ClientRelay, ClientGone, ChanSend, ChanRecv, ChanReply,
                               RemoteSend, RemoteRecv, RemoteReply, RemoteCancel, PmiFence, PmiAbort,
                               PmixDmodexRequest, PmixDmodexReply, LaneOpen, LaneOpened, LaneHello, LaneWelcome,
                               MachineQuery, MachineInfo, ChanCount, RemoteCount, ChanSync, RemoteSync>;

/// Decodes a frame's body as M, checking the type number first.
template <class M>
Result<M> decode_as(const wire::Frame& f) {
    if (f.type != static_cast<std::uint16_t>(M::kType))
        return make_error(Errc::protocol, "expected message type {}, got {}",
                          static_cast<unsigned>(M::kType), f.type);
    return wire::decode_exact<M>(f.body);
}

/// Name of a message type number ("spawn", "output", ...), or "unknown".
std::string_view type_name(std::uint16_t type);

/// Validates any frame: decodes it as whatever its type says. Used by the
/// fuzzer and to log a precise error for an unexpected frame.
Status validate(const wire::Frame& f);

// ---- names of states, for messages and bindings --------------------------------

inline const char* name_of(MemberStateCode s) {
    switch (s) {
        case MemberStateCode::pending: return "pending";
        case MemberStateCode::running: return "running";
        case MemberStateCode::exited: return "exited";
    }
    return "?";
}

inline const char* name_of(GroupStateCode s) {
    switch (s) {
        case GroupStateCode::running: return "running";
        case GroupStateCode::stopping: return "stopping";
        case GroupStateCode::succeeded: return "succeeded";
        case GroupStateCode::failed: return "failed";
        case GroupStateCode::stopped: return "stopped";
    }
    return "?";
}

inline const char* name_of(GroupOutcome o) {
    switch (o) {
        case GroupOutcome::succeeded: return "succeeded";
        case GroupOutcome::failed: return "failed";
        case GroupOutcome::stopped: return "stopped";
    }
    return "?";
}

inline const char* name_of(FailKind k) {
    switch (k) {
        case FailKind::exited: return "exited";
        case FailKind::not_started: return "not_started";
        case FailKind::lost: return "lost";
        case FailKind::aborted: return "aborted";
        case FailKind::runtime: return "runtime";
    }
    return "?";
}

}  // namespace dragon::msg
