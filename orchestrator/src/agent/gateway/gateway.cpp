// The channel gateway: channel operations of local clients on other nodes'
// channels, and other nodes' operations on this node's channels.
//
// Origin (node j): a client's chan_send/chan_recv/chan_count becomes a
// remote_send, remote_recv or remote_count to the channel's node, and its
// remote_reply becomes the client's chan_reply. Large messages stay in pool
// blocks at both ends: the transport writes them from the sender's block
// and reads them into a block of the receiving node's pool (docs/channels.md).
//
// Serving (node k): the loop tries the operation once; if the channel is
// full (send) or empty (recv) and the caller allows waiting, a worker thread
// waits on the channel's futex in slices (so it can be cancelled) and posts
// the result back to the loop. One sender has one operation in flight, so
// its messages arrive in the order sent.
//
// Lanes: a local client asks for one (lane_open): this agent dials the
// other node's agent, authenticates, and hands the socket to the process;
// the other agent serves it like a link, under a source id of its own.
#include "gateway.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "dragon/channels/descriptor.hpp"
#include "dragon/transport/tcp.hpp"

namespace dragon::agent {

namespace {

using Clock = std::chrono::steady_clock;

/// Messages up to this size travel inside the agent-to-agent frame; larger
/// ones as transport payloads (no copy into a frame).
constexpr std::size_t kRemoteInlineMax = 32U << 10;
/// A waiting worker looks at its cancel flag at least this often.
constexpr auto kWaitSlice = std::chrono::milliseconds(100);
/// Operations waiting at once on this node's channels; beyond, callers get Errc::no_space.
constexpr std::size_t kMaxWaiting = 1024;
/// Lanes served at once (each is a socket); beyond, processes use the gateway.
constexpr std::size_t kMaxLanesIn = 4096;

/// A lane lives in a process, where no heartbeat watches it: the kernel gives
/// up on a silent peer within about the runtime's heartbeat timeout instead.
void watch_like_a_link(int fd, std::uint32_t heartbeat_timeout_ms) {
    const int on = 1;
    const int idle = std::max(1, static_cast<int>(heartbeat_timeout_ms / 3000));
    const int interval = idle;
    const int count = 3;
    const unsigned user_timeout = heartbeat_timeout_ms;
    (void)::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}


std::span<const std::byte> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string as_string(std::span<const std::byte> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

Result<channels::ChannelDescriptor> decode_descriptor(const std::string& bytes) {
    auto d = channels::ChannelDescriptor::decode(as_bytes(bytes));
    if (!d) return std::move(d).error().context("channel descriptor");
    return d;
}

}  // namespace

Gateway::Gateway(Router& router, asio::io_context& io, channels::Pool& pool, GatewayOptions opts, GatewayHooks hooks)
    : router_(router),
      io_(io),
      pool_(pool),
      opts_(opts),
      hooks_(std::move(hooks)),
      self_(router.node_id()),
      nnodes_(router.nnodes()),
      lane_routes_(kLaneRoutes, router.node_id() == 0),
      node_incoming_block_(router.nnodes(), 0) {}

Gateway::~Gateway() { stop_waiting_all(); }

void Gateway::bind(Dispatcher<std::uint64_t>& clients, Dispatcher<std::uint32_t>& nodes) {
    // A bad body is answered with a chan_reply, not by closing the client.
    clients.on_frame(msg::Type::chan_send, [this](std::uint64_t id, wire::Frame&& f) { on_chan_request(id, std::move(f)); });
    clients.on_frame(msg::Type::chan_recv, [this](std::uint64_t id, wire::Frame&& f) { on_chan_request(id, std::move(f)); });
    clients.on_frame(msg::Type::chan_count, [this](std::uint64_t id, wire::Frame&& f) { on_chan_request(id, std::move(f)); });
    clients.on_frame(msg::Type::chan_sync, [this](std::uint64_t id, wire::Frame&& f) { on_chan_sync(id, std::move(f)); });
    // Another node's operations on our channels, from its agent or from one of its processes' lanes.
    auto serve_channel_ops = [this](Dispatcher<std::uint32_t>& d) {
        d.on<msg::RemoteSend>([this](std::uint32_t src, msg::RemoteSend&& m) {
            touch();
            serve_remote_send(src, std::move(m), 0, 0);
        });
        d.on<msg::RemoteRecv>([this](std::uint32_t src, msg::RemoteRecv&& m) {
            touch();
            serve_remote_recv(src, std::move(m));
        });
        d.on<msg::RemoteCount>([this](std::uint32_t src, msg::RemoteCount&& m) {
            touch();
            serve_remote_count(src, std::move(m));
        });
        d.on<msg::RemoteSync>([this](std::uint32_t src, msg::RemoteSync&& m) {
            touch();
            serve_remote_sync(src, std::move(m));
        });
        d.on<msg::RemoteCancel>([this](std::uint32_t src, msg::RemoteCancel&& m) { on_remote_cancel(src, m.op_id); });
    };
    serve_channel_ops(nodes);
    nodes.on<msg::RemoteReply>([this](std::uint32_t from, msg::RemoteReply&& m) {
        touch();
        on_remote_reply(from, std::move(m));
    });
    serve_channel_ops(lane_routes_);
}

void Gateway::finish() {
    finishing_ = true;
    stop_waiting_all();  // other nodes' channel operations waiting here end now
    close_all_lanes();
}

// ---- origin: a local client's operation on another node's channel ----------------

void Gateway::on_chan_request(std::uint64_t client, wire::Frame&& f) {
    touch();
    auto conn = hooks_.client(client);
    if (!conn) return;
    const bool is_send = f.type == static_cast<std::uint16_t>(msg::Type::chan_send);
    const bool is_count = f.type == static_cast<std::uint16_t>(msg::Type::chan_count);
    std::uint64_t request_id = 0;
    std::uint64_t block = 0;  // ours from the moment the request is read
    auto fail = [&](Errc code, std::string why) {
        if (block != 0) (void)pool_.free(block);
        conn->send(msg::ChanReply{request_id, static_cast<std::uint16_t>(code), std::move(why), {}, 0, 0});
    };
    msg::ChanSend send;
    msg::ChanRecv recv;
    if (is_count) {
        auto m = msg::decode_as<msg::ChanCount>(f);
        if (!m) return fail(Errc::protocol, m.error().message());
        request_id = m->request_id;
        recv.request_id = m->request_id;
        recv.descriptor = std::move(m->descriptor);
    } else if (is_send) {
        auto m = msg::decode_as<msg::ChanSend>(f);
        if (!m) return fail(Errc::protocol, m.error().message());
        send = std::move(*m);
        request_id = send.request_id;
        if (send.block != 0) {
            auto bs = pool_.block_size(send.block);
            if (!bs || *bs < send.size)
                return fail(Errc::invalid_argument,
                            fmt::format("offset {} is not a block of {} bytes in this node's pool", send.block, send.size));
            block = send.block;
        }
    } else {
        auto m = msg::decode_as<msg::ChanRecv>(f);
        if (!m) return fail(Errc::protocol, m.error().message());
        recv = std::move(*m);
        request_id = recv.request_id;
    }
    const std::string& desc_bytes = is_send ? send.descriptor : recv.descriptor;
    auto d = decode_descriptor(desc_bytes);
    if (!d) return fail(d.error().code(), d.error().message());
    const std::uint32_t node = d->node_id;
    if (node == self_)
        return fail(Errc::invalid_argument, fmt::format("channel {} is on this node ({}): attach it directly",
                                                        d->channel_id, node));
    if (node >= nnodes_)
        return fail(Errc::invalid_argument,
                    fmt::format("channel {} names node {}, but the run has {} nodes", d->channel_id, node, nnodes_));
    transport::Link* link = hooks_.link(node);
    if (closed_ || link == nullptr)
        return fail(Errc::closed, fmt::format("node {} is not reachable{}", node,
                                              router_.node_lost(node) ? " (it was lost)" : ""));
    const std::uint64_t op = next_op_id_++;
    // A send without a timeout was "on its way" for the client when it returned:
    // it is carried out even if the client goes away.
    ops_[op] = Op{client, request_id, node, !(is_send && send.timeout_ns < 0)};
    transport::Link& peer = *link;
    if (is_count) {
        peer.send(msg::RemoteCount{op, desc_bytes});
        return;
    }
    if (!is_send) {
        peer.send(msg::RemoteRecv{op, desc_bytes, recv.timeout_ns});
        return;
    }
    if (block == 0) {
        peer.send(msg::RemoteSend{op, desc_bytes, send.timeout_ns, std::move(send.data)});
        return;
    }
    // Written to the socket straight from the client's block, freed once the kernel has it.
    std::span<const std::byte> payload(pool_.at(block), send.size);
    peer.send_with_payload(msg::RemoteSend{op, desc_bytes, send.timeout_ns, {}}, payload,
                           [this, block](const Status&) { (void)pool_.free(block); });
}

void Gateway::reply_to_client(std::uint64_t op, msg::ChanReply r) {
    auto it = ops_.find(op);
    if (it == ops_.end()) {
        if (r.block != 0) (void)pool_.free(r.block);
        return;
    }
    const std::uint64_t client = it->second.client;
    r.request_id = it->second.request_id;
    ops_.erase(it);
    auto conn = client == 0 ? nullptr : hooks_.client(client);
    if (!conn) {  // the client went away meanwhile
        if (r.block != 0) (void)pool_.free(r.block);
        return;
    }
    conn->send(r);
}

void Gateway::on_remote_reply(std::uint32_t from, msg::RemoteReply&& m) {
    auto it = ops_.find(m.op_id);
    if (it == ops_.end() || it->second.node != from) return;  // not an operation of ours on that node
    reply_to_client(m.op_id, msg::ChanReply{0, m.code, std::move(m.message), std::move(m.data), 0, 0});
}

Result<transport::PayloadSink> Gateway::on_remote_reply_payload(std::uint32_t from, msg::RemoteReply&& m, std::uint64_t size) {
    auto it = ops_.find(m.op_id);
    if (it == ops_.end() || it->second.node != from) return transport::PayloadSink{};  // not ours: discard
    if (it->second.client == 0) {
        return transport::PayloadSink{{}, {}, [this, op = m.op_id] { ops_.erase(op); }};  // nobody waits: discard
    }
    // Into a block of our pool, which the client takes over with the reply.
    if (auto b = pool_.allocate(size, channels::kTryOnce)) {
        const std::uint64_t block = *b;
        node_incoming_block_[from] = block;
        return transport::PayloadSink{{pool_.at(block), size}, {}, [this, from, op = m.op_id, block, size] {
                                    node_incoming_block_[from] = 0;
                                    reply_to_client(op, msg::ChanReply{0, 0, {}, {}, block, size});
                                }};
    }
    // The pool is full: the message comes through the socket instead (never dropped:
    // a failed receive must not have consumed it).
    auto buf = std::make_shared<std::string>();
    buf->reserve(size);
    return transport::PayloadSink{{},
                            [buf](std::span<const std::byte> piece) { buf->append(as_string(piece)); },
                            [this, op = m.op_id, buf] { reply_to_client(op, msg::ChanReply{0, 0, {}, std::move(*buf), 0, 0}); }};
}

void Gateway::client_gone(std::uint64_t client) {
    for (auto& [op, g] : ops_) {
        if (g.client != client) continue;
        g.client = 0;  // the reply is dropped when it comes
        if (transport::Link* link = hooks_.link(g.node); g.cancellable && link != nullptr)
            link->send(msg::RemoteCancel{op});
    }
}

void Gateway::link_down(std::uint32_t node, const std::string& why) {
    // Our clients' operations on that node's channels end now.
    std::vector<std::uint64_t> ops;
    for (const auto& [op, g] : ops_)
        if (g.node == node) ops.push_back(op);
    for (std::uint64_t op : ops)
        reply_to_client(op, msg::ChanReply{0, static_cast<std::uint16_t>(Errc::closed),
                                           fmt::format("node {} was lost ({}); the message may or may not have arrived",
                                                       node, why),
                                           {}, 0, 0});
    drop_source(node, false);
    // Its processes' lanes to us end with it (what they sent may or may not arrive).
    std::vector<std::uint32_t> lanes;
    for (const auto& [src, l] : lanes_in_)
        if (l.node == node) lanes.push_back(src);
    for (std::uint32_t src : lanes) close_lane(src, fmt::format("its node {} was lost", node), false);
    // Our processes' lanes to it end now, even if its agent is only silent
    // (a stopped agent's kernel would keep their sockets open).
    end_lanes_out(node);
}

void Gateway::drop_source(std::uint32_t from, bool keep_sends) {
    if (std::uint64_t* b = incoming_block_of(from); b != nullptr && *b != 0) {
        (void)pool_.free(*b);
        *b = 0;
    }
    // Its operations on our channels stop waiting.
    for (auto& [key, w] : waiting_)
        if (key.first == from && !(keep_sends && w.carries_on)) w.cancel->store(true);
    // Its sends queued behind a waiting one are dropped.
    for (auto& [key, sq] : send_queues_) {
        if (key.first != from) continue;
        std::erase_if(sq.queue, [&](QueuedSend& q) {
            if (keep_sends && q.m.timeout_ns < 0) return false;
            if (q.timer) q.timer->cancel();
            if (q.block != 0) (void)pool_.free(q.block);
            return true;
        });
    }
    std::erase_if(send_queues_, [](const auto& kv) { return !kv.second.waiting && kv.second.queue.empty(); });
    // What its processes took of our sync objects and still hold comes back.
    give_back_holds(from);
}

transport::Link* Gateway::source_peer(std::uint32_t from) {
    if (is_lane_source(from)) {
        auto it = lanes_in_.find(from);
        return it == lanes_in_.end() ? nullptr : it->second.peer.get();
    }
    return hooks_.link(from);
}

std::uint64_t* Gateway::incoming_block_of(std::uint32_t from) {
    if (is_lane_source(from)) {
        auto it = lanes_in_.find(from);
        return it == lanes_in_.end() ? nullptr : &it->second.incoming_block;
    }
    return from < node_incoming_block_.size() ? &node_incoming_block_[from] : nullptr;
}

// ---- serving: another node's operation on one of our channels ----------------------

void Gateway::send_remote_reply(std::uint32_t to, std::uint64_t op, Status st) {
    transport::Link* peer = source_peer(to);
    if (peer == nullptr) return;
    msg::RemoteReply r{op, 0, {}, {}};
    if (!st) {
        r.code = static_cast<std::uint16_t>(st.error().code());
        r.message = st.error().message();
    }
    peer->send(r);
}

void Gateway::send_remote_message(std::uint32_t to, std::uint64_t op, channels::Message&& m) {
    transport::Link* peer = source_peer(to);
    if (peer == nullptr) {
        spdlog::warn("node {}: a message received for {} {} is dropped: its connection is gone", self_,
                     is_lane_source(to) ? "lane" : "node", to);
        return;
    }
    if (m.size() <= kRemoteInlineMax) {
        peer->send(msg::RemoteReply{op, 0, {}, as_string(m.data())});
        return;
    }
    // Written from the pool block; the block is freed once the kernel has it.
    auto held = std::make_shared<channels::Message>(std::move(m));
    peer->send_with_payload(msg::RemoteReply{op, 0, {}, {}}, held->data(), [held](const Status&) {});
}

void Gateway::serve_remote_send(std::uint32_t from, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size) {
    if (finishing_) {
        if (block != 0) (void)pool_.free(block);
        return send_remote_reply(from, m.op_id, make_error(Errc::closed, "node {} is shutting down", self_));
    }
    const auto deadline = m.timeout_ns < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::nanoseconds(m.timeout_ns);
    SendKey key{from, m.descriptor};
    auto sq = send_queues_.find(key);
    if (sq != send_queues_.end()) {
        // An earlier send of that node to this channel is waiting for room:
        // this one goes after it (one sender's messages stay in order).
        if (m.timeout_ns == 0) {
            if (block != 0) (void)pool_.free(block);
            return send_remote_reply(from, m.op_id, make_error(Errc::would_block, "the channel is full"));
        }
        QueuedSend q{std::move(m), block, size, deadline, nullptr};
        if (deadline != Clock::time_point::max()) {
            q.timer = std::make_shared<asio::steady_timer>(io_, deadline);
            q.timer->async_wait([this, key, op = q.m.op_id](const asio::error_code& ec) {
                if (!ec) expire_queued_send(key, op);
            });
        }
        sq->second.queue.push_back(std::move(q));
        return;
    }
    attempt_remote_send(key, std::move(m), block, size, deadline);
}

void Gateway::attempt_remote_send(SendKey key, msg::RemoteSend&& m, std::uint64_t block, std::uint64_t size,
                                Clock::time_point deadline) {
    const std::uint32_t from = key.first;
    auto give_back = [&] {
        if (block != 0) (void)pool_.free(block);
    };
    auto d = decode_descriptor(m.descriptor);
    if (!d) {
        give_back();
        return send_remote_reply(from, m.op_id, std::move(d).error());
    }
    auto ch = channels::Channel::attach(pool_, *d);
    if (!ch) {
        give_back();
        return send_remote_reply(from, m.op_id, std::move(ch).error());
    }
    Status st = block != 0 ? ch->send_block(block, size, channels::kTryOnce) : ch->send(as_bytes(m.data), channels::kTryOnce);
    const auto now = Clock::now();
    if (st || st.error().code() != Errc::would_block || m.timeout_ns == 0 || now >= deadline) {
        if (!st) give_back();
        if (!st && st.error().code() == Errc::would_block && m.timeout_ns != 0)
            st = make_error(Errc::timeout, "channel {}: send timed out (full)", d->channel_id);
        return send_remote_reply(from, m.op_id, std::move(st));
    }
    // Full: wait in a worker; later sends of that node to this channel queue behind it.
    send_queues_[key].waiting = true;
    auto finish = [this, key, op = m.op_id, block](Status r) {
        if (!r && block != 0) (void)pool_.free(block);
        send_remote_reply(key.first, op, std::move(r));
        if (auto sq = send_queues_.find(key); sq != send_queues_.end()) sq->second.waiting = false;
        next_in_queue(key);
    };
    const auto left = deadline == Clock::time_point::max() ? channels::kForever
                                                           : channels::Timeout(deadline - now);
    auto c = std::make_shared<channels::Channel>(std::move(*ch));
    wait_in_worker(from, m.op_id, left,
                   [c, block, size, data = std::move(m.data)](channels::Timeout t) {
                       return block != 0 ? c->send_block(block, size, t) : c->send(as_bytes(data), t);
                   },
                   std::move(finish), false, m.timeout_ns < 0);
}

void Gateway::next_in_queue(const SendKey& key) {
    for (;;) {
        auto sq = send_queues_.find(key);
        if (sq == send_queues_.end()) return;
        if (sq->second.waiting) return;
        if (sq->second.queue.empty()) {
            send_queues_.erase(sq);
            return;
        }
        QueuedSend q = std::move(sq->second.queue.front());
        sq->second.queue.pop_front();
        if (q.timer) q.timer->cancel();
        attempt_remote_send(key, std::move(q.m), q.block, q.size, q.deadline);  // may wait again
    }
}

void Gateway::expire_queued_send(const SendKey& key, std::uint64_t op) {
    auto sq = send_queues_.find(key);
    if (sq == send_queues_.end()) return;
    auto& q = sq->second.queue;
    for (auto it = q.begin(); it != q.end(); ++it) {
        if (it->m.op_id != op) continue;
        if (it->block != 0) (void)pool_.free(it->block);
        q.erase(it);
        return send_remote_reply(key.first, op, make_error(Errc::timeout, "send timed out (the channel stayed full)"));
    }
}

void Gateway::serve_remote_recv(std::uint32_t from, msg::RemoteRecv&& m) {
    if (finishing_)
        return send_remote_reply(from, m.op_id, make_error(Errc::closed, "node {} is shutting down", self_));
    auto d = decode_descriptor(m.descriptor);
    if (!d) return send_remote_reply(from, m.op_id, std::move(d).error());
    auto ch = channels::Channel::attach(pool_, *d);
    if (!ch) return send_remote_reply(from, m.op_id, std::move(ch).error());
    auto got = ch->recv_message(channels::kTryOnce);
    if (got) return send_remote_message(from, m.op_id, std::move(*got));
    if (got.error().code() != Errc::would_block || m.timeout_ns == 0)
        return send_remote_reply(from, m.op_id, std::move(got).error());
    auto message = std::make_shared<channels::Message>();
    auto finish = [this, from, op = m.op_id, message](Status r) {
        if (!r) return send_remote_reply(from, op, std::move(r));
        send_remote_message(from, op, std::move(*message));
    };
    auto c = std::make_shared<channels::Channel>(std::move(*ch));
    wait_in_worker(from, m.op_id, wire_timeout(m.timeout_ns),
                   [c, message](channels::Timeout t) -> Status {
                       auto r = c->recv_message(t);
                       if (!r) return std::move(r).error();
                       *message = std::move(*r);
                       return ok();
                   },
                   std::move(finish), true, false);
}

void Gateway::serve_remote_count(std::uint32_t from, msg::RemoteCount&& m) {
    transport::Link* peer = source_peer(from);
    if (peer == nullptr) return;
    auto d = decode_descriptor(m.descriptor);
    if (!d) return send_remote_reply(from, m.op_id, std::move(d).error());
    auto ch = channels::Channel::attach(pool_, *d);
    if (!ch) return send_remote_reply(from, m.op_id, std::move(ch).error());
    peer->send(msg::RemoteReply{m.op_id, 0, {}, std::to_string(ch->queued())});
}

void Gateway::wait_in_worker(std::uint32_t from, std::uint64_t op, channels::Timeout timeout,
                           std::function<Status(channels::Timeout)> attempt,
                           std::function<void(Status)> finish, bool capped, bool carries_on) {
    const std::pair<std::uint32_t, std::uint64_t> key{from, op};
    // Receives are capped; sends are not: at most one per (node, channel)
    // waits (the rest queue behind it), and one that returned to its
    // sender must not be dropped.
    if ((capped && waiting_.size() >= kMaxWaiting) || waiting_.contains(key)) {
        Error e = make_error(Errc::no_space, "node {}: {} operations are already waiting here", self_,
                             waiting_.size());
        asio::post(io_, [finish = std::move(finish), e = std::move(e)]() mutable { finish(std::move(e)); });
        return;
    }
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    const auto deadline = timeout == channels::kForever ? std::chrono::steady_clock::time_point::max()
                                                        : std::chrono::steady_clock::now() + timeout;
    Waiting& w = waiting_[key];
    w.cancel = cancel;
    w.carries_on = carries_on;
    w.finish = std::move(finish);
    w.thread = std::thread([this, key, cancel, deadline, attempt = std::move(attempt)]() mutable {
        Status st = ok();
        for (;;) {
            if (cancel->load()) {
                st = make_error(Errc::closed, "cancelled: the caller went away");
                break;
            }
            const auto now = std::chrono::steady_clock::now();
            const auto left = deadline - now;
            const auto slice = deadline == std::chrono::steady_clock::time_point::max()
                                   ? channels::Timeout(kWaitSlice)
                                   : std::clamp(channels::Timeout(left), channels::Timeout(0), channels::Timeout(kWaitSlice));
            st = attempt(slice);
            if (st) break;
            const Errc e = st.error().code();
            if (e != Errc::timeout && e != Errc::would_block) break;  // a real failure
            if (std::chrono::steady_clock::now() >= deadline) {
                st = make_error(Errc::timeout, "{} (after waiting the full timeout on node {})", st.error().message(),
                                self_);
                break;
            }
        }
        asio::post(io_, [this, key, st = std::move(st)]() mutable { end_waiting(key, std::move(st)); });
    });
}

void Gateway::end_waiting(std::pair<std::uint32_t, std::uint64_t> key, Status st) {
    auto it = waiting_.find(key);
    if (it == waiting_.end()) return;
    Waiting w = std::move(it->second);
    waiting_.erase(it);
    if (w.thread.joinable()) w.thread.join();  // it has posted this and is returning
    if (w.cancel->load() && st) {
        // Done just as its caller went away: a received message has nobody to go to.
        spdlog::warn("node {}: a channel operation of node {} finished after its caller went away", self_,
                     key.first);
    }
    w.finish(std::move(st));
}

void Gateway::on_remote_cancel(std::uint32_t from, std::uint64_t op) {
    if (auto it = waiting_.find({from, op}); it != waiting_.end()) it->second.cancel->store(true);
}

Result<transport::PayloadSink> Gateway::on_payload(std::uint32_t from, wire::Frame&& header, std::uint64_t size) {
    // No channel message is larger than a pool (every node's is the same size).
    if (size > pool_.size())
        return make_error(Errc::protocol, "a payload of {} bytes from node {}: larger than any pool", size, from);
    if (is_lane_source(from) && header.type != static_cast<std::uint16_t>(msg::Type::remote_send))
        return make_error(Errc::protocol, "unexpected payload message '{}' ({}) on a lane", msg::type_name(header.type),
                          header.type);
    switch (static_cast<msg::Type>(header.type)) {
        case msg::Type::remote_send: {
            auto m = DRAGON_TRY(msg::decode_as<msg::RemoteSend>(header));
            std::uint64_t* slot = incoming_block_of(from);
            if (slot == nullptr) return make_error(Errc::closed, "source {} is gone", from);
            if (auto b = pool_.allocate(size, channels::kTryOnce)) {
                // Straight into a block of our pool, then linked into the channel without a copy.
                const std::uint64_t block = *b;
                *slot = block;
                auto held = std::make_shared<msg::RemoteSend>(std::move(m));
                return transport::PayloadSink{{pool_.at(block), size}, {}, [this, from, held, block, size] {
                                            if (std::uint64_t* s = incoming_block_of(from)) *s = 0;
                                            serve_remote_send(from, std::move(*held), block, size);
                                        }};
            }
            // The pool is full now: keep the bytes aside; the send waits for room as any send does.
            auto held = std::make_shared<msg::RemoteSend>(std::move(m));
            held->data.reserve(size);
            return transport::PayloadSink{{},
                                    [held](std::span<const std::byte> piece) { held->data.append(as_string(piece)); },
                                    [this, from, held] { serve_remote_send(from, std::move(*held), 0, 0); }};
        }
        case msg::Type::remote_reply: {
            auto m = DRAGON_TRY(msg::decode_as<msg::RemoteReply>(header));
            return on_remote_reply_payload(from, std::move(m), size);
        }
        default:
            return make_error(Errc::protocol, "unexpected payload message '{}' ({}) from node {}",
                              msg::type_name(header.type), header.type, from);
    }
}

// ---- lanes: a process's own connection to another node's agent -------------------

void Gateway::open_lane(std::uint64_t client, int pid, wire::Frame&& f) {
    auto conn = hooks_.client(client);
    if (!conn) return;
    auto answer = [this, client, conn](Errc code, const std::string& why) {
        spdlog::debug("node {}: no lane for client {}: {}", self_, client, why);
        conn->send(msg::LaneOpened{static_cast<std::uint16_t>(code), why});
        conn->close_after_flush([this, client] { hooks_.forget_client(client); });
    };
    auto m = msg::decode_as<msg::LaneOpen>(f);
    if (!m) return answer(Errc::protocol, m.error().message());
    const std::uint32_t node = m->node;
    if (node == self_ || node >= nnodes_)
        return answer(Errc::invalid_argument, fmt::format("no lane to node {}: the run has nodes 0-{} and this is node {}",
                                                          node, nnodes_ - 1, self_));
    if (!router_.accepting_work() || hooks_.link(node) == nullptr)
        return answer(Errc::closed, fmt::format("node {} is not reachable", node));
    // A lane is a TCP socket handed to the process: with another transport
    // the process keeps using this gateway for that node.
    if (hooks_.transport_name() != "tcp") return answer(Errc::unsupported, "lanes need the tcp transport");
    transport::tcp::Options o;
    o.bind_address = lane_address_;
    const transport::Endpoint at = hooks_.endpoint(node);
    transport::tcp::connect(io_, at.address, at.port, *opts_.secret, self_, node,
                 [this, client, pid, node, answer](Result<std::shared_ptr<transport::tcp::Peer>> r) {
                     auto opener = hooks_.client(client);
                     if (!opener) return;  // it went away: the Peer closes the socket
                     if (!r) return answer(r.error().code(), r.error().message());
                     if (!router_.accepting_work() || hooks_.link(node) == nullptr)
                         return answer(Errc::closed, fmt::format("node {} is not reachable", node));
                     auto fd = (*r)->release_socket();
                     if (!fd) return answer(fd.error().code(), fd.error().message());
                     watch_like_a_link(fd->get(), opts_.heartbeat_timeout_ms);
                     // Nothing else was ever sent on this connection: the frame and the socket go together now.
                     if (auto st = sys::send_with_fd(opener->socket().native_handle(), wire::frame_of(msg::LaneOpened{}),
                                                     fd->get(), "handing a lane to a client");
                         !st)
                         spdlog::warn("node {}: {}", self_, st.error().message());
                     else {
                         spdlog::debug("node {}: client {} has a lane to node {}", self_, client, node);
                         keep_lane_out(pid, node, fd->get());
                     }
                     opener->close();
                     hooks_.forget_client(client);
                 },
                 o);
}

void Gateway::accept_lane(std::shared_ptr<transport::Link> peer) {
    const std::uint32_t node = peer->remote_node_id();
    if (lanes_in_.size() >= kMaxLanesIn) {
        peer->start([](wire::Frame&&) {}, [](const Error*) {});
        peer->send(msg::LaneWelcome{static_cast<std::uint16_t>(Errc::no_space),
                                    fmt::format("node {} serves {} lanes already", self_, lanes_in_.size())});
        peer->close_after_flush();
        return;
    }
    const std::uint32_t src = next_lane_source_++;
    if (next_lane_source_ < kFirstLaneSource) next_lane_source_ = kFirstLaneSource;
    lanes_in_[src] = LaneIn{peer, node, 0, false, 0};
    peer->start([this, src](wire::Frame&& f) { on_lane_frame(src, std::move(f)); },
                [this, src](const Error* e) {
                    close_lane(src, e != nullptr ? e->message() : "closed by its process", true);
                },
                [this, src](wire::Frame&& header, std::uint64_t size) -> Result<transport::PayloadSink> {
                    auto it = lanes_in_.find(src);
                    if (it == lanes_in_.end() || !it->second.greeted)
                        return make_error(Errc::protocol, "a payload before lane_hello");
                    // No polling after a large message (unlike a frame): a
                    // wake-up is small against its transfer, and the cpu is
                    // what the receiver needs to take it (docs/runtime.md).
                    return on_payload(src, std::move(header), size);
                });
}

void Gateway::on_lane_frame(std::uint32_t src, wire::Frame&& f) {
    auto it = lanes_in_.find(src);
    if (it == lanes_in_.end()) return;
    LaneIn& l = it->second;
    auto bad = [&](const std::string& why) {
        spdlog::warn("node {}: dropping a lane from node {} (puid {}): {}", self_, l.node, l.puid, why);
        close_lane(src, why, true);
    };
    if (!l.greeted) {
        auto h = msg::decode_as<msg::LaneHello>(f);
        if (!h) return bad("expected lane_hello: " + h.error().message());
        if (h->version != msg::kProtocolVersion || h->node_id != l.node)
            return bad(fmt::format("lane_hello of node {} speaking protocol {} on a connection of node {}", h->node_id,
                                   h->version, l.node));
        l.greeted = true;
        l.puid = h->puid;
        l.peer->send(msg::LaneWelcome{});
        spdlog::debug("node {}: lane {} from node {} (puid {})", self_, src, l.node, l.puid);
        return;
    }
    if (auto st = lane_routes_.dispatch(Sender::lane, src, std::move(f)); !st) bad(st.error().message());
}

void Gateway::close_lane(std::uint32_t src, const std::string& why, bool keep_sends) {
    auto it = lanes_in_.find(src);
    if (it == lanes_in_.end()) return;
    spdlog::debug("node {}: lane {} from node {} (puid {}) closed: {}", self_, src, it->second.node,
                  it->second.puid, why);
    drop_source(src, keep_sends);
    auto peer = std::move(it->second.peer);
    lanes_in_.erase(it);
    if (peer) peer->close();
}

void Gateway::close_all_lanes() {
    while (!lanes_in_.empty()) close_lane(lanes_in_.begin()->first, "this node is shutting down", false);
    lanes_out_.clear();  // our duplicates only: the processes' lanes end with the other agents
}

void Gateway::keep_lane_out(int pid, std::uint32_t node, int fd) {
    const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return;
    sys::UniqueFd copy(dup);
    auto it = lanes_out_.find(pid);
    if (it == lanes_out_.end()) {
        const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (pfd < 0) return;  // gone already (or no pidfd): its lane ends with its socket alone
        auto sd = std::make_unique<asio::posix::stream_descriptor>(io_, pfd);
        sd->async_wait(asio::posix::descriptor_base::wait_read, [this, pid](const asio::error_code& ec) {
            if (!ec) lanes_out_.erase(pid);  // it exited: drop our duplicates
        });
        it = lanes_out_.emplace(pid, LanesOut{std::move(sd), {}}).first;
    }
    it->second.lanes.emplace_back(node, std::move(copy));
}

void Gateway::end_lanes_out(std::uint32_t node) {
    for (auto& [pid, out] : lanes_out_) {
        std::erase_if(out.lanes, [&](auto& l) {
            if (l.first != node) return false;
            (void)::shutdown(l.second.get(), SHUT_RDWR);  // the process's reads end, its writes fail
            return true;
        });
    }
}

void Gateway::stop_waiting_all() {
    for (auto& [key, w] : waiting_) w.cancel->store(true);
    for (auto& [key, w] : waiting_)
        if (w.thread.joinable()) w.thread.join();
    waiting_.clear();
}

}  // namespace dragon::agent
