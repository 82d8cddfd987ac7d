// The links, on every node of a run of several: joining (node k dials node
// 0, which hands out the node table once every node said hello; higher ids
// dial lower ones), the node table, heartbeats, and the loss of a node. Owns
// the transport (made by the shell, by name) and every link, and reaches the
// rest only through the Router (who this node is) and the hooks the shell
// wires up: frames go to its dispatcher, payloads to its channel gateway,
// and it is told when the run is joined, when joining failed, and when a
// node was lost or finished its teardown (docs/runtime.md, "Several nodes").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>

#include "../dispatch.hpp"
#include "../router.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/procgroup/resources.hpp"
#include "dragon/transport/link.hpp"

namespace dragon::agent {
namespace pg = dragon::procgroup;

struct LinksOptions {
    std::string hostname;           // this node's, in its hello (node k) or the node table (node 0)
    transport::Endpoint head;       // node k > 0: where node 0 listens (from the launcher)
    std::uint32_t heartbeat_timeout_ms = 10000;  // a link silent this long is lost
};

/// What the links tell the shell, and ask of it. Each runs on the loop.
struct LinksHooks {
    /// A frame from node `from`: to the agent's node dispatcher.
    std::function<void(std::uint32_t from, wire::Frame&&)> frame;
    /// A payload message from node `from` began (the channel gateway's).
    std::function<Result<transport::PayloadSink>(std::uint32_t from, wire::Frame&& header, std::uint64_t size)> payload;
    /// A second connection from a linked node once the run is up: one of its
    /// processes opening a lane (its agent authenticated it).
    std::function<void(std::shared_ptr<transport::Link>)> lane;
    /// A link that was full drained (output parked for it may go on).
    std::function<void()> drained;
    /// This node's resources: node k's hello carries them, node 0 places on them.
    std::function<Result<const pg::NodeResources*>()> resources;
    /// (node 0) A node said hello with these resources (node 0 itself last, once all did).
    std::function<void(std::uint32_t node, pg::NodeResources)> node_joined;
    /// Every node is linked: node k to every other node, node 0 once all said node_ready.
    std::function<void()> joined;
    /// Joining failed (a node did not join in time, was lost while joining,
    /// or node 0 has no topology): the run cannot start.
    std::function<void(const char* why)> join_failed;
    /// A link ended (lost, or closed by its node): first, whatever comes next.
    std::function<void(std::uint32_t node, const std::string& why)> link_down;
    /// A node was lost while the run was up: at node 0 any other node, at
    /// node k node 0 (the others' losses are node 0's to judge).
    std::function<void(std::uint32_t node, const std::string& why)> node_lost;
    /// A node finished its teardown (it said shutdown_done, or its link
    /// closed after its or this node's teardown).
    std::function<void(std::uint32_t node)> node_finished;
};

class Links {
public:
    /// Where the links are: joining, up (the run runs, or stops: lanes are
    /// taken), finishing (this node's teardown: no lanes), closed.
    enum class State : std::uint8_t { joining, up, finishing, closed };

    /// Joining when the run has several nodes (router.nnodes() > 1), else up.
    Links(const Router& router, asio::io_context& io, LinksOptions opts, LinksHooks hooks);
    Links(const Links&) = delete;
    Links& operator=(const Links&) = delete;

    /// Its handlers: heartbeats, and the join (node_table at node k;
    /// node_hello, node_ready and shutdown_done at node 0).
    void bind(Dispatcher<std::uint32_t>& nodes);

    /// Takes the transport (the shell made it, by name) and listens on
    /// `address` (or on `listen_fd`, bound by a launcher, when >= 0). Returns
    /// where other nodes reach this one.
    Result<transport::Endpoint> listen(std::unique_ptr<transport::Transport> t, const std::string& address,
                                       int listen_fd);
    /// Starts the heartbeats and the join deadline; node k dials node 0.
    void start(std::chrono::milliseconds join_timeout);
    /// The run stops before it joined: no more dialling, no new nodes (lanes
    /// from linked nodes are still taken); node_ready no longer completes it.
    void end_join();
    /// This node's teardown began: no lanes any more.
    void begin_finish();
    /// Stops the heartbeats and the listener and closes every link (their
    /// loss is not reported). Idempotent.
    void close();

    [[nodiscard]] State state() const { return state_; }
    /// The live link to `node`, or null (not linked yet, lost, or this node).
    [[nodiscard]] transport::Link* link(std::uint32_t node) const;
    /// Sends to `node` over its link (Delivery::dropped without one).
    Delivery send_frame(std::uint32_t node, std::uint16_t type, std::string_view body);
    [[nodiscard]] bool lost(std::uint32_t node) const;
    /// The node's hostname as it said (empty when unknown).
    [[nodiscard]] std::string hostname(std::uint32_t node) const;
    /// Where the node listens (from its hello or the node table; port 0 when unknown).
    [[nodiscard]] transport::Endpoint endpoint(std::uint32_t node) const;
    [[nodiscard]] std::string_view transport_name() const;
    /// Stops reading the node's link until resume_held() (its reader is full).
    void hold_back(std::uint32_t node);
    void resume_held();
    /// (node 0) Linked nodes that have not finished their teardown.
    [[nodiscard]] std::uint32_t unfinished() const;
    /// (node 0) Gives up on the nodes that did not finish their teardown in
    /// time: their links close; returns how many.
    std::uint32_t give_up_unfinished();

private:
    /// Another node's agent, as this one sees it.
    struct Node {
        std::shared_ptr<transport::Link> peer;  // null until linked (and after loss)
        std::string hostname;
        std::string address;
        std::uint16_t port = 0;
        std::chrono::steady_clock::time_point last_heard;
        std::uint64_t bytes_heard = 0;  // peer->bytes_read() at the last heartbeat tick
        bool ready = false;          // (node 0) it said node_ready
        bool lost = false;
        bool finished = false;       // (node 0) it finished its teardown
    };

    [[nodiscard]] bool is_head() const { return self_ == 0; }
    void dial(std::uint32_t node);
    void on_connected(std::shared_ptr<transport::Link> peer, bool dialled);
    void on_hello(std::uint32_t from, const msg::NodeHello& h);
    void on_table(const msg::NodeTable& t);
    void on_ready(std::uint32_t from);
    void maybe_joined();
    void heartbeat_tick();
    void on_lost(std::uint32_t node, const std::string& why);

    asio::io_context& io_;
    LinksOptions opts_;
    LinksHooks hooks_;
    std::uint32_t self_;
    std::uint32_t nnodes_;
    std::unique_ptr<transport::Transport> transport_;
    std::string address_;  // where this node listens
    std::vector<Node> nodes_;  // by node id (this node's own entry unused)
    State state_;
    asio::steady_timer heartbeat_timer_;
    asio::steady_timer join_timer_;
    std::uint64_t heartbeat_seq_ = 0;
    bool table_received_ = false;  // (node k) the node table came
    std::uint32_t dial_failures_ = 0;  // logged once, then retried quietly
    std::vector<std::shared_ptr<transport::Link>> held_;  // not read while an owner is full
};

}  // namespace dragon::agent
