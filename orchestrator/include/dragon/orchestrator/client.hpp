// The client side of the agent's local socket: what a managed process (or a
// library inside it) uses to talk to its node's agent. Blocking calls; one
// thread at a time per Session.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dragon/channels/pool.hpp"
#include "dragon/common/frame_reader.hpp"
#include "dragon/common/framing.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::client {

using Clock = std::chrono::steady_clock;

/// What the agent told this session about one group it owns, as it arrived
/// between replies: output for the owner, stdin credit, the end.
struct GroupEvents {
    std::map<std::pair<std::uint32_t, msg::Stream>, std::string> output;  // by (rank, stream), unread bytes
    std::optional<msg::GroupDone> done;
};

/// A greeted connection to the local agent. Move-only; closes on destruction
/// (which stops every group it started: see docs/procgroup.md).
/// The agent this process was started under (DRAGON_AGENT_SOCKET) and its
/// own puid (DRAGON_PUID, 0 if unset). Errc::not_found outside Dragon.
Result<std::pair<std::string, Puid>> agent_from_env();

/// A connected stream socket to the agent at an abstract socket name
/// ("@name" or "name"), close-on-exec, blocking, before any greeting.
Result<sys::UniqueFd> dial_agent(const std::string& socket_name);

class Session {
public:
    /// Connects to the agent named by DRAGON_AGENT_SOCKET (set by the agent for
    /// every process it starts) as the puid in DRAGON_PUID. Errc::not_found
    /// when the process does not run under Dragon. Blocks for one round trip.
    static Result<Session> connect_from_env();

    /// Connects to the agent at an abstract socket name ("@name" or "name").
    static Result<Session> connect(const std::string& socket_name, Puid self);

    Session(Session&&) noexcept = default;
    Session& operator=(Session&&) noexcept = default;

    [[nodiscard]] const std::string& run_id() const { return welcome_.run_id; }
    [[nodiscard]] std::uint32_t node_id() const { return welcome_.node_id; }
    [[nodiscard]] int agent_pid() const { return welcome_.agent_pid; }

    /// The agent's process table: every process of the groups still open.
    Result<std::vector<msg::ProcEntry>> processes();

    /// The runtime's nodes (hostname, cpus granted), from node 0. One round trip.
    Result<std::vector<msg::MachineNode>> machine();

    /// Maps this node's shared-memory pool (created by the agent at start);
    /// channels are created in it or attached from it. Does not block.
    [[nodiscard]] Result<channels::Pool> attach_pool() const;

    /// Sends `req` and waits for its reply (events arriving meanwhile are
    /// kept). An error_reply becomes an Error with its code and text.
    template <class Reply, class Request>
    Result<Reply> call(const Request& req);

    /// Sends one message that has no reply.
    template <class Message>
    Status post(const Message& m);

    /// Sends a request whose reply nobody waits for: that reply is dropped
    /// when it arrives, an error_reply included. For requests that cannot
    /// fail in a way the caller would act on (closing a group whose end
    /// arrived). Replies other than group_started come in the order of
    /// their requests only per route (node 0's global services answer
    /// after a relay, this agent at once), so call() first takes every
    /// unawaited reply still to come.
    template <class Request>
    Status post_unawaited(const Request& req);

    /// Sends a group_start under a request id unique in this session and
    /// returns the id at once. Its group_started (the agent sends it once
    /// every member started, after replies to later requests, possibly)
    /// is filed by pump() under that id: take_group_started() hands it over.
    Result<std::uint64_t> post_group_start(msg::GroupStart req);
    std::optional<msg::GroupStarted> take_group_started(std::uint64_t request_id);
    [[nodiscard]] bool group_started_arrived(std::uint64_t request_id) const {
        return started_.contains(request_id);
    }

    /// Reads and files whatever the agent sends until `deadline` (nullopt:
    /// wait for at least one frame). Returns whether any frame arrived.
    Result<bool> pump(std::optional<Clock::time_point> deadline);

    /// Events of group `id` so far (created empty on first use).
    GroupEvents& events(std::uint64_t group_id) { return events_[group_id]; }
    void forget_events(std::uint64_t group_id) { events_.erase(group_id); }

    /// Stdin bytes sent to `puid` and not yet acknowledged.
    [[nodiscard]] std::uint64_t stdin_unacked(Puid puid) const;
    void note_stdin_sent(Puid puid, std::uint64_t n) { stdin_unacked_[puid] += n; }

private:
    friend class Gateway;  // greets through a Session, then keeps its socket
    Session(sys::UniqueFd fd, msg::ClientWelcome w)
        : fd_(std::move(fd)), welcome_(std::move(w)), reader_(fd_.get(), "the agent", {.max_frame_body = 64U << 20}) {}
    Status send_bytes(const std::string& frame);
    Status file_frame(wire::Frame&& f);

    sys::UniqueFd fd_;
    msg::ClientWelcome welcome_;
    wire::FrameReader reader_;  // reads fd_ (a moved Session keeps the same descriptor)
    std::deque<wire::Frame> replies_;
    std::uint64_t unawaited_ = 0;  // replies still to come that nobody waits for (post_unawaited)
    std::map<std::uint64_t, msg::GroupStarted> started_;  // group_started by request id, not yet taken
    std::uint64_t next_start_ = 1;
    std::map<std::uint64_t, GroupEvents> events_;
    std::map<Puid, std::uint64_t> stdin_unacked_;
};

template <class Message>
Status Session::post(const Message& m) {
    return send_bytes(wire::frame_of(m));
}

template <class Request>
Status Session::post_unawaited(const Request& req) {
    DRAGON_CHECK(send_bytes(wire::frame_of(req)));
    ++unawaited_;
    return ok();
}

/// Turns an error_reply frame into its Error, or decodes the expected reply.
template <class Reply>
Result<Reply> expect_reply(const wire::Frame& f) {
    if (f.type == static_cast<std::uint16_t>(msg::Type::error_reply)) {
        auto e = msg::decode_as<msg::ErrorReply>(f);
        if (!e) return std::move(e).error();
        return Error(static_cast<Errc>(e->code), "agent: " + e->message);
    }
    return msg::decode_as<Reply>(f);
}

template <class Reply, class Request>
Result<Reply> Session::call(const Request& req) {
    while (unawaited_ > 0) DRAGON_CHECK(pump(std::nullopt));  // (see post_unawaited)
    DRAGON_CHECK(send_bytes(wire::frame_of(req)));
    while (replies_.empty()) DRAGON_CHECK(pump(std::nullopt));
    wire::Frame f = std::move(replies_.front());
    replies_.pop_front();
    return expect_reply<Reply>(f);
}

}  // namespace dragon::client
