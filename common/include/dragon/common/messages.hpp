// The messages between front end, agents and local clients (protocol v1).
// docs/protocol.md is the specification; keep the two in step.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "dragon/common/codec.hpp"
#include "dragon/common/framing.hpp"

namespace dragon::msg {

inline constexpr std::uint32_t kProtocolVersion = 1;

enum class Type : std::uint16_t {
    // front end <-> agent
    agent_hello = 1,
    spawn = 2,
    spawn_reply = 3,
    stdin_data = 4,
    output = 5,
    proc_exit = 6,
    shutdown = 7,
    shutdown_done = 8,
    stdin_ack = 9,
    // local client <-> agent
    client_hello = 32,
    client_welcome = 33,
    proc_query = 34,
    proc_table = 35,
    error_reply = 63,
};

enum class StdinMode : std::uint8_t { null = 0, forward = 1 };
enum class OutputMode : std::uint8_t { forward = 0, discard = 1 };
enum class Stream : std::uint8_t { out = 1, err = 2 };
enum class ProcState : std::uint8_t { running = 1, exited = 2 };

inline bool wire_valid(StdinMode v) { return v == StdinMode::null || v == StdinMode::forward; }
inline bool wire_valid(OutputMode v) { return v == OutputMode::forward || v == OutputMode::discard; }
inline bool wire_valid(Stream v) { return v == Stream::out || v == Stream::err; }
inline bool wire_valid(ProcState v) { return v == ProcState::running || v == ProcState::exited; }

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

/// One process to start.
struct ProcSpec {
    std::vector<std::string> argv;  // argv[0] is the program (searched in PATH if it has no '/')
    std::vector<std::string> env;   // "NAME=value" entries added to the agent's environment
    std::string cwd;                // empty: the agent's working directory
    StdinMode stdin_mode = StdinMode::null;
    OutputMode stdout_mode = OutputMode::forward;
    OutputMode stderr_mode = OutputMode::forward;
    DRAGON_WIRE_FIELDS(argv, env, cwd, stdin_mode, stdout_mode, stderr_mode)
};

/// Front end -> agent: start these processes (one batch per node).
struct Spawn {
    static constexpr Type kType = Type::spawn;
    std::uint64_t request_id = 0;
    std::vector<ProcSpec> procs;
    DRAGON_WIRE_FIELDS(request_id, procs)
};

struct SpawnResult {
    std::uint64_t puid = 0;  // 0 when the process could not be started
    std::int32_t pid = 0;
    std::int32_t sys_errno = 0;  // why exec failed, 0 on success
    std::string error;           // a one-line message naming the program, empty on success
    DRAGON_WIRE_FIELDS(puid, pid, sys_errno, error)
};

/// Agent -> front end: one result per ProcSpec, in order.
struct SpawnReply {
    static constexpr Type kType = Type::spawn_reply;
    std::uint64_t request_id = 0;
    std::vector<SpawnResult> results;
    DRAGON_WIRE_FIELDS(request_id, results)
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

/// Agent -> front end: bytes a process wrote, in order per (puid, stream).
struct Output {
    static constexpr Type kType = Type::output;
    std::uint64_t puid = 0;
    Stream stream = Stream::out;
    std::string data;
    DRAGON_WIRE_FIELDS(puid, stream, data)
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

/// Agent -> client: the request failed (code is a dragon::Errc value).
struct ErrorReply {
    static constexpr Type kType = Type::error_reply;
    std::uint16_t code = 0;
    std::string message;
    DRAGON_WIRE_FIELDS(code, message)
};

/// Every message type, for dispatch and fuzzing.
using AllMessages = std::tuple<AgentHello, Spawn, SpawnReply, StdinData, Output, ProcExit, Shutdown,
                               ShutdownDone, StdinAck, ClientHello, ClientWelcome, ProcQuery, ProcTable, ErrorReply>;

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

}  // namespace dragon::msg
