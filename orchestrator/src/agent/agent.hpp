// The node agent: one event loop that owns the node's part of a run (the
// node lock and shared memory, the client socket, the processes it started,
// its links to the other nodes' agents). Node 0's agent also hosts the
// global services: the group table, placement over every node, the owners
// of groups, and the front end's control connection.
//
// The agent is a shell (this class: start-up, phases, connections,
// teardown) around services that own their state. Every message it takes is
// dispatched through a table (dispatch.hpp) whose rules, who may send what,
// are data (routes.hpp). Services reach the rest through the Router
// (router.hpp), which this class implements:
//   global (node 0)        global/: places groups, runs their state machines,
//                          answers owners (the front end or a client on any node)
//   executor (every node)  executor/: starts, signals and reaps the members
//                          placed here, with their stdio and PMI (pmi/: one
//                          PmiJob interface, simple/Cray and PMIx behind it);
//                          reports their output and exits to node 0, its own
//                          node 0 included, through the same dispatcher
//   links (every node)     links/: join, node table, heartbeats, loss; owns
//                          the transport this class makes and every link,
//                          and tells this class through hooks
//   gateway (every node)   gateway/: clients' operations on other nodes'
//                          channels, other nodes' operations on ours, lanes
//
// Lifecycle: running -> stopping_int -> stopping_term -> stopping_kill ->
// finishing -> done (docs/runtime.md has the table).
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <thread>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "../runtime/connection.hpp"
#include "agent_main.hpp"
#include "dispatch.hpp"
#include "executor/executor.hpp"
#include "gateway/gateway.hpp"
#include "global/global.hpp"
#include "links/links.hpp"
#include "router.hpp"
#include "../runtime/node_lock.hpp"
#include "dragon/channels/channel.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/config.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/procgroup/group.hpp"
#include "dragon/procgroup/resources.hpp"
#include "dragon/transport/link.hpp"
#include "dragon/transport/tcp.hpp"

namespace dragon::agent {
namespace pg = dragon::procgroup;
namespace tcp = dragon::transport::tcp;

/// A local client connection (a managed process using the client library).
struct Client {
    std::shared_ptr<rt::UnixConnection> conn;
    bool greeted = false;
    Puid puid = 0;
    int pid = 0;
    bool lane_opener = false;  // a connection that only asked for a lane (no client behind it; nothing more is read)
};

class Agent final : private Router {
public:
    enum class Phase { joining, running, stopping_int, stopping_term, stopping_kill, finishing, done };

    /// Takes the node lock, creates the pool, opens the client socket and
    /// (several nodes) the listener; wraps the control fd.
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
    [[nodiscard]] bool is_head() const { return opts_.node_id == 0; }
    /// Binds a handler to every route of this agent's role (routes.hpp).
    void bind_routes();
    /// Every route has a handler (a start-up check: a route without one is a bug).
    [[nodiscard]] Status check_routes() const;
    [[nodiscard]] Sender node_sender(std::uint32_t from) const {
        return from == opts_.node_id ? Sender::self : from == 0 ? Sender::head : Sender::node;
    }
    void refuse_client(std::uint64_t id, Errc code, std::string why);
    void relay_to_client(const msg::ClientRelay& m);

    // ---- front end (node 0) ----
    void on_frontend_frame(wire::Frame&& f);
    void on_frontend_closed(const Error* e);
    void say_hello_to_frontend();

    // ---- links (links/) ----
    /// The links' hooks: what they tell this shell, and ask of it.
    LinksHooks links_hooks();
    /// Makes the transport (by name: tcp today) and has the links listen on it.
    Status open_listener();
    /// Delivers a frame to this agent's own dispatcher on a later loop turn.
    void post_to_self(wire::Frame f);
    void on_node_frame(std::uint32_t from, wire::Frame&& f);

    // ---- the Router (routing.cpp): how services reach the rest ----
    [[nodiscard]] std::uint32_t node_id() const override { return opts_.node_id; }
    [[nodiscard]] std::uint32_t nnodes() const override { return opts_.nnodes; }
    [[nodiscard]] bool accepting_work() const override { return phase_ == Phase::running; }
    Delivery send_frame(std::uint32_t node, std::uint16_t type, std::string body) override;
    Delivery send_frame_to_owner(Owner who, std::uint16_t type, std::string body) override;
    void hold_back(std::uint32_t node) override;
    void post(std::function<void()> fn) override;
    [[nodiscard]] bool node_lost(std::uint32_t node) const override;
    [[nodiscard]] bool node_reachable(std::uint32_t node) const override;
    [[nodiscard]] std::string node_hostname(std::uint32_t node) const override;
    /// Clients' group requests (local, or relayed from their nodes) at node 0's global services.
    void on_client_request(Owner who, wire::Frame&& f);
    /// This node's resources (hwloc costs ~2 ms: discovered on first need).
    Result<const pg::NodeResources*> node_resources();
    /// The connection of a local owner (front end or client), or null.
    rt::UnixConnection* local_owner_conn(std::uint64_t client);

    // ---- local clients ----
    void accept_clients();
    void serve_client(asio::local::stream_protocol::socket sock);
    void on_client_frame(std::uint64_t id, wire::Frame&& f);
    void on_client_closed(std::uint64_t id);

    // ---- channel gateway (gateway/) ----
    /// The gateway's hooks: the links and the local clients it needs.
    GatewayHooks gateway_hooks();

    // ---- teardown ----
    void wait_signals();
    void begin_stop(bool force, std::uint32_t patience_ms, const char* why);
    void escalate();
    void maybe_finish();
    void finish();
    void finish_now();
    void kill_strays();
    /// Owners' connections drained: output and links held back for them go on.
    void resume_parked_output();

    asio::io_context io_;
    AgentOptions opts_;
    // Who may send what (routes.hpp), and the handlers: one table per kind of connection.
    Dispatcher<Owner> frontend_routes_;
    Dispatcher<std::uint64_t> client_routes_;
    Dispatcher<Owner> owner_routes_;  // node 0: clients' group requests, local or relayed
    Dispatcher<std::uint32_t> node_routes_;
    rt::NodeLock lock_;
    channels::Pool pool_;  // the node's pool: channels of this node live in it
    std::shared_ptr<rt::UnixConnection> frontend_;  // node 0 only
    bool frontend_lost_ = false;
    asio::local::stream_protocol::acceptor client_acceptor_;
    asio::signal_set signals_;
    asio::steady_timer escalation_;
    asio::steady_timer reserve_timer_;
    asio::steady_timer peers_done_timer_;
    std::string hostname_;

    std::unique_ptr<Executor> executor_;
    std::unique_ptr<GlobalServices> global_;  // node 0 only
    std::optional<pg::NodeResources> resources_;  // this node's (hwloc costs ~2 ms: discovered on need)
    bool self_held_back_ = false;  // node 0's own output waits for a full owner, as a held-back link does

    std::unique_ptr<Links> links_;

    // clients
    std::map<std::uint64_t, Client> clients_;
    std::uint64_t next_client_id_ = 1;

    std::unique_ptr<Gateway> gateway_;

    Phase phase_ = Phase::running;
    std::uint32_t patience_ms_ = 2000;
    std::uint32_t signalled_ = 0;
    std::uint32_t killed_ = 0;
    int exit_code_ = 0;
};

}  // namespace dragon::agent
