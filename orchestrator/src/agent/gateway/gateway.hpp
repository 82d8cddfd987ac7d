// The channel gateway, on every node of a run of several: local clients'
// operations on other nodes' channels (origin), other nodes' operations on
// this node's channels (serving, waiting in worker threads when a channel
// is full or empty), and lanes, the connections a process holds to another
// node's agent for its channel operations there (docs/channels.md). Owns
// that state; reaches the rest only through the Router and the hooks the
// shell wires up (the links, the local clients).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "../../runtime/connection.hpp"
#include "../dispatch.hpp"
#include "../router.hpp"
#include "dragon/channels/channel.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/sys.hpp"
#include "dragon/transport/link.hpp"
#include "dragon/transport/run_secret.hpp"

namespace dragon::agent {

/// Sources of lanes (another node's process on its own connection) are
/// numbered from here; below are node ids.
inline constexpr std::uint32_t kFirstLaneSource = 0x80000000U;
inline constexpr bool is_lane_source(std::uint32_t from) { return from >= kFirstLaneSource; }
/// A request's timeout_ns as a wait: negative for ever, 0 once.
inline channels::Timeout wire_timeout(std::int64_t ns) { return ns < 0 ? channels::kForever : channels::Timeout(ns); }

struct GatewayOptions {
    const transport::RunSecret* secret = nullptr;  // the run's (lanes are authenticated with it); several nodes only
    std::uint32_t heartbeat_timeout_ms = 10000;     // a lane's keepalive gives up on a silent peer about this fast
};

/// What the gateway asks of the shell. Each runs on the loop.
struct GatewayHooks {
    /// The live link to a node, or null (the links').
    std::function<transport::Link*(std::uint32_t node)> link;
    /// Where a node listens (lanes dial it), and the transport's name (lanes need tcp).
    std::function<transport::Endpoint(std::uint32_t node)> endpoint;
    std::function<std::string_view()> transport_name;
    /// A local client's connection, or null once it is gone.
    std::function<std::shared_ptr<rt::UnixConnection>(std::uint64_t client)> client;
    /// A client that only asked for a lane got its answer: forget it.
    std::function<void(std::uint64_t client)> forget_client;
};

class Gateway {
public:
    Gateway(Router& router, asio::io_context& io, channels::Pool& pool, GatewayOptions opts, GatewayHooks hooks);
    Gateway(const Gateway&) = delete;
    Gateway& operator=(const Gateway&) = delete;
    ~Gateway();

    /// Its handlers: clients' chan_send/chan_recv, other nodes' remote_*
    /// operations and replies, and (its own table) lanes' operations.
    void bind(Dispatcher<std::uint64_t>& clients, Dispatcher<std::uint32_t>& nodes);
    /// Its lanes' table (the shell checks every route has a handler).
    [[nodiscard]] const Dispatcher<std::uint32_t>& lane_routes() const { return lane_routes_; }

    /// Where lanes are dialled from (this node's listen address, once known).
    void set_lane_address(std::string address) { lane_address_ = std::move(address); }
    /// A local client asks for a lane (its first frame, lane_open); it gets
    /// the socket or why not, and is forgotten then.
    void open_lane(std::uint64_t client, int pid, wire::Frame&& f);
    /// Another node's process connected (the links saw a second connection from its node).
    void accept_lane(std::shared_ptr<transport::Link> peer);
    /// A payload message from a node's link began.
    Result<transport::PayloadSink> on_payload(std::uint32_t from, wire::Frame&& header, std::uint64_t size);
    /// A node's link ended: our operations there fail, its operations and lanes here end.
    void link_down(std::uint32_t node, const std::string& why);
    /// A local client went away: its operations' replies are dropped (cancelled where they wait).
    void client_gone(std::uint64_t client);
    /// This node's teardown began: waiting operations end, lanes close, nothing more is served.
    void finish();
    /// The node is done: no more operations of local clients go out.
    void close() {
        closed_ = true;
        finishing_ = true;
    }
    /// Waiting workers stop and are joined (teardown, destruction).
    void stop_waiting_all();
    /// The last gateway event (the loop keeps polling for a while after it).
    [[nodiscard]] std::chrono::steady_clock::time_point last_busy() const { return busy_; }

private:
    /// A local client's channel operation on another node, until its reply.
    struct Op {
        std::uint64_t client = 0;  // 0 once the client went away
        std::uint64_t request_id = 0;
        std::uint32_t node = 0;
        bool cancellable = true;  // false: a send without a timeout (its client was told it is on its way)
    };
    /// Another node's sends to one of our channels, while one of them waits
    /// for room: the later ones queue here, so one sender's messages stay in order.
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
        bool carries_on = false;  // a send without a timeout: it goes on when a lane's process leaves
        std::function<void(Status)> finish;  // on the loop, with the result
        std::thread thread;
    };
    /// A process of another node that operates on this node's channels over
    /// a connection of its own, served as a link is under a source id of its own.
    struct LaneIn {
        std::shared_ptr<transport::Link> peer;
        std::uint32_t node = 0;  // the process's node (its local agent authenticated the connection)
        Puid puid = 0;
        bool greeted = false;    // its lane_hello came
        std::uint64_t incoming_block = 0;  // a pool block a payload from it is being read into
    };
    /// Lanes handed to local processes, by pid: a duplicate of each socket
    /// (by remote node), and the process's pidfd, readable when it exits.
    struct LanesOut {
        std::unique_ptr<asio::posix::stream_descriptor> pidfd;
        std::vector<std::pair<std::uint32_t, sys::UniqueFd>> lanes;
    };

    void touch() { busy_ = std::chrono::steady_clock::now(); }
    void on_chan_request(std::uint64_t client, wire::Frame&& f);
    void reply_to_client(std::uint64_t op, msg::ChanReply r);
    void on_remote_reply(std::uint32_t from, msg::RemoteReply&& m);
    Result<transport::PayloadSink> on_remote_reply_payload(std::uint32_t from, msg::RemoteReply&& m, std::uint64_t size);
    void send_remote_reply(std::uint32_t to, std::uint64_t op, Status st);
    void send_remote_message(std::uint32_t to, std::uint64_t op, channels::Message&& m);
    void serve_remote_send(std::uint32_t from, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size);
    void attempt_remote_send(SendKey key, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size,
                             std::chrono::steady_clock::time_point deadline);
    void next_in_queue(const SendKey& key);
    void expire_queued_send(const SendKey& key, std::uint64_t op);
    void serve_remote_recv(std::uint32_t from, msg::RemoteRecv&& m);
    /// Answers how many messages one of our channels holds (remote_reply, data in decimal).
    void serve_remote_count(std::uint32_t from, msg::RemoteCount&& m);
    /// Runs `attempt` in slices of kWaitSlice until it succeeds, fails for
    /// real, the timeout passes or the source goes; then `finish` on the loop.
    /// capped: counted against kMaxWaiting (all but sends); carries_on: a send without a timeout.
    void wait_in_worker(std::uint32_t from, std::uint64_t op, channels::Timeout timeout,
                        std::function<Status(channels::Timeout)> attempt,
                        std::function<void(Status)> finish, bool capped, bool carries_on);
    // ---- sync objects whose home is this node (gateway_sync.cpp) ----
    /// A local client's chan_sync on another node's block: forwarded as remote_sync.
    void on_chan_sync(std::uint64_t client, wire::Frame&& f);
    /// Another node's (or a lane's) operation on one of our sync blocks.
    void serve_remote_sync(std::uint32_t from, msg::RemoteSync&& m);
    /// A source took a count (or a binary block) of ours / gave one back.
    void note_taken(std::uint32_t from, std::pair<std::uint64_t, std::uint64_t> key, bool binary);
    void note_given(std::uint32_t from, std::pair<std::uint64_t, std::uint64_t> key, bool binary);
    /// A source is gone without saying it exits normally (a killed process's
    /// lane, a lost node): what it holds of our sync objects is released.
    void give_back_holds(std::uint32_t from);
    void end_waiting(std::pair<std::uint32_t, std::uint64_t> key, Status st);
    void on_remote_cancel(std::uint32_t from, std::uint64_t op);
    /// Where replies to a source (a node, or a lane) go; null once it is gone.
    transport::Link* source_peer(std::uint32_t from);
    /// The slot of the pool block a payload from that source is being read into.
    std::uint64_t* incoming_block_of(std::uint32_t from);
    /// A source is gone: a half-read payload is dropped, and its waiting
    /// operations stop and its queued sends are dropped, except (keep_sends:
    /// a lane's process left) sends without a timeout, which the process was
    /// told were on their way and so carry on, as a gateway client's do.
    void drop_source(std::uint32_t from, bool keep_sends);
    void on_lane_frame(std::uint32_t src, wire::Frame&& f);
    void close_lane(std::uint32_t src, const std::string& why, bool keep_sends);
    void close_all_lanes();
    /// Keeps a duplicate of a lane handed to local process `pid`, so the loss
    /// of its node can end it (shutdown), until the process exits (pidfd).
    void keep_lane_out(int pid, std::uint32_t node, int fd);
    void end_lanes_out(std::uint32_t node);

    Router& router_;
    asio::io_context& io_;
    channels::Pool& pool_;
    GatewayOptions opts_;
    GatewayHooks hooks_;
    std::uint32_t self_;
    std::uint32_t nnodes_;
    std::string lane_address_;
    Dispatcher<std::uint32_t> lane_routes_;  // frames on a lane, once greeted
    bool finishing_ = false;  // this node's teardown began: nothing more is served
    bool closed_ = false;     // the node is done: nothing more goes out
    std::chrono::steady_clock::time_point busy_{};

    std::unordered_map<std::uint64_t, Op> ops_;  // by op id: ours on other nodes
    std::uint64_t next_op_id_ = 1;
    std::vector<std::uint64_t> node_incoming_block_;  // by node: a pool block a payload from it is being read into
    std::map<std::pair<std::uint32_t, std::uint64_t>, Waiting> waiting_;  // (node, op id): theirs on ours
    std::map<SendKey, SendQueue> send_queues_;
    std::map<std::uint32_t, LaneIn> lanes_in_;  // by source id: other nodes' processes using lanes to us
    std::uint32_t next_lane_source_ = kFirstLaneSource;
    std::map<int, LanesOut> lanes_out_;
    // What other nodes' processes hold of our sync blocks (by (offset, id)):
    // a binary block's taker, and each source's counts of counting blocks.
    std::map<std::pair<std::uint64_t, std::uint64_t>, std::uint32_t> sync_binary_;
    std::map<std::uint32_t, std::map<std::pair<std::uint64_t, std::uint64_t>, int>> sync_counts_;
};

}  // namespace dragon::agent
