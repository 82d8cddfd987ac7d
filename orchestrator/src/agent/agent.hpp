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
// and, still members of this class: the channel gateway with its lanes.
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

/// A process of another node that operates on this node's channels over a
/// connection of its own (a lane, docs/channels.md): served as a link is,
/// under a source id of its own (kFirstLaneSource and up) instead of a node id.
struct LaneIn {
    std::shared_ptr<transport::Link> peer;
    std::uint32_t node = 0;  // the process's node (its local agent authenticated the connection)
    Puid puid = 0;
    bool greeted = false;    // its lane_hello came
    std::uint64_t incoming_block = 0;  // a pool block a payload from it is being read into
};
inline constexpr std::uint32_t kFirstLaneSource = 0x80000000U;
inline constexpr bool is_lane_source(std::uint32_t from) { return from >= kFirstLaneSource; }

/// A local client's channel operation on another node, until its reply.
struct GatewayOp {
    std::uint64_t client = 0;  // 0 once the client went away
    std::uint64_t request_id = 0;
    std::uint32_t node = 0;
    bool cancellable = true;  // false: a send without a timeout (its client was told it is on its way)
};

/// Another node's sends to one of our channels, while one of them waits for
/// room: the later ones queue here, so one sender's messages stay in order.
using SendKey = std::pair<std::uint32_t, std::string>;  // (node, encoded descriptor)
struct QueuedSend {
    msg::RemoteSend m;
    std::uint64_t block = 0;
    std::uint64_t size = 0;
    std::chrono::steady_clock::time_point deadline;
    std::shared_ptr<asio::steady_timer> timer;  // a finite timeout that may pass in the queue
};
struct SendQueue {
    bool waiting = false;  // its head waits in a worker
    std::deque<QueuedSend> queue;
};

/// Another node's channel operation waiting on one of ours in a worker thread.
struct Waiting {
    std::shared_ptr<std::atomic<bool>> cancel;
    bool carries_on = false;  // a send without a timeout: it goes on when a lane's process leaves (it was on its way)
    std::function<void(Status)> finish;  // on the loop, with the result
    std::thread thread;
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

    // ---- channel gateway (gateway.cpp) ----
    void on_chan_request(std::uint64_t client, wire::Frame&& f);
    void reply_to_client(std::uint64_t op, msg::ChanReply r);
    void on_remote_reply(std::uint32_t from, msg::RemoteReply&& m);
    Result<transport::PayloadSink> on_remote_reply_payload(std::uint32_t from, msg::RemoteReply&& m, std::uint64_t size);
    void gateway_client_gone(std::uint64_t client);
    void gateway_link_lost(std::uint32_t node, const std::string& why);
    void send_remote_reply(std::uint32_t to, std::uint64_t op, Status st);
    void send_remote_message(std::uint32_t to, std::uint64_t op, channels::Message&& m);
    void serve_remote_send(std::uint32_t from, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size);
    void attempt_remote_send(SendKey key, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size,
                             std::chrono::steady_clock::time_point deadline);
    void next_in_queue(const SendKey& key);
    void expire_queued_send(const SendKey& key, std::uint64_t op);
    void serve_remote_recv(std::uint32_t from, msg::RemoteRecv&& m);
    /// capped: a receive (counted against kMaxWaiting); carries_on: a send without a timeout.
    void wait_in_worker(std::uint32_t from, std::uint64_t op, channels::Channel ch, channels::Timeout timeout,
                        std::function<Status(channels::Channel&, channels::Timeout)> attempt,
                        std::function<void(Status)> finish, bool capped, bool carries_on);
    void end_waiting(std::pair<std::uint32_t, std::uint64_t> key, Status st);
    void on_remote_cancel(std::uint32_t from, std::uint64_t op);
    Result<transport::PayloadSink> on_link_payload(std::uint32_t from, wire::Frame&& header, std::uint64_t size);
    void stop_waiting_all();
    /// Where replies to a source (a node, or a lane) go; null once it is gone.
    transport::Link* source_peer(std::uint32_t from);
    /// The slot of the pool block a payload from that source is being read into.
    std::uint64_t* incoming_block_of(std::uint32_t from);
    /// A source is gone: a half-read payload is dropped, and its waiting
    /// operations stop and its queued sends are dropped, except (keep_sends:
    /// a lane's process left) sends without a timeout, which the process was
    /// told were on their way and so carry on, as a gateway client's do.
    void drop_source(std::uint32_t from, bool keep_sends);
    // lanes (gateway.cpp): a local client asks for one; another node's process uses one
    void open_lane(std::uint64_t client, wire::Frame&& f);
    void accept_lane(std::shared_ptr<transport::Link> peer);
    void on_lane_frame(std::uint32_t src, wire::Frame&& f);
    void close_lane(std::uint32_t src, const std::string& why, bool keep_sends);
    void close_all_lanes();
    /// Keeps a duplicate of a lane handed to local process `pid`, so the loss
    /// of its node can end it (shutdown), until the process exits (pidfd).
    void keep_lane_out(int pid, std::uint32_t node, int fd);
    void end_lanes_out(std::uint32_t node);

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
    Dispatcher<std::uint32_t> lane_routes_;
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

    // channel gateway
    std::unordered_map<std::uint64_t, GatewayOp> gateway_ops_;  // by op id: ours on other nodes
    std::vector<std::uint64_t> node_incoming_block_;  // by node: a pool block a payload from it is being read into
    std::uint64_t next_op_id_ = 1;
    std::map<std::pair<std::uint32_t, std::uint64_t>, Waiting> waiting_;  // (node, op id): theirs on ours
    std::map<SendKey, SendQueue> send_queues_;
    std::map<std::uint32_t, LaneIn> lanes_in_;  // by source id: other nodes' processes using lanes to us
    std::uint32_t next_lane_source_ = kFirstLaneSource;
    /// Lanes handed to local processes, by pid: a duplicate of each socket
    /// (by remote node), and the process's pidfd, readable when it exits.
    struct LanesOut {
        std::unique_ptr<asio::posix::stream_descriptor> pidfd;
        std::vector<std::pair<std::uint32_t, sys::UniqueFd>> lanes;
    };
    std::map<int, LanesOut> lanes_out_;

    std::chrono::steady_clock::time_point gateway_busy_{};  // the last channel-gateway event (the loop spins after it)
    Phase phase_ = Phase::running;
    std::uint32_t patience_ms_ = 2000;
    std::uint32_t signalled_ = 0;
    std::uint32_t killed_ = 0;
    int exit_code_ = 0;
};

}  // namespace dragon::agent
