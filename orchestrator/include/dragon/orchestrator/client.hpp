// The client side of the agent's local socket: what a managed process (or a
// library inside it) uses to talk to its node's agent. Blocking calls.
#pragma once

#include <string>
#include <vector>

#include "dragon/channels/pool.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::client {

/// A greeted connection to the local agent. Move-only; closes on destruction.
class Session {
public:
    /// Connects to the agent named by DRAGON_AGENT_SOCKET (set by the agent for
    /// every process it starts) as the puid in DRAGON_PUID. Errc::not_found
    /// when the process does not run under Dragon. Blocks for one round trip.
    static Result<Session> connect_from_env();

    /// Connects to the agent at an abstract socket name ("@name" or "name").
    static Result<Session> connect(const std::string& socket_name, Puid self);

    [[nodiscard]] const std::string& run_id() const { return welcome_.run_id; }
    [[nodiscard]] std::uint32_t node_id() const { return welcome_.node_id; }
    [[nodiscard]] int agent_pid() const { return welcome_.agent_pid; }

    /// The agent's process table: every process it started in this run.
    Result<std::vector<msg::ProcEntry>> processes();

    /// Maps this node's shared-memory pool (created by the agent at start);
    /// channels are created in it or attached from it. Does not block.
    [[nodiscard]] Result<channels::Pool> attach_pool() const;

private:
    Session(sys::UniqueFd fd, msg::ClientWelcome w) : fd_(std::move(fd)), welcome_(std::move(w)) {}
    template <class Reply, class Request>
    Result<Reply> call(const Request& req);

    sys::UniqueFd fd_;
    msg::ClientWelcome welcome_;
};

}  // namespace dragon::client
