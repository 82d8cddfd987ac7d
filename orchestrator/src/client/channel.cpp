// Channels on any node: local ones directly in shared memory, others through
// a lane (this process's own TCP connection to the channel's node's agent,
// which the local agent opens and authenticates) or, without one, through
// the local agent's gateway (docs/channels.md). Each connection carries many
// threads' operations at once: each request has an id, one waiting thread at
// a time reads a connection and hands every reply to the thread it belongs to.
#include "dragon/orchestrator/channel.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "dragon/common/frame_reader.hpp"
#include "dragon/common/payload.hpp"
#include "dragon/orchestrator/client.hpp"

namespace dragon::client {

namespace {

std::int64_t to_ns(channels::Timeout t) { return t == channels::kForever ? -1 : std::max<std::int64_t>(0, t.count()); }

std::string encoded(const channels::ChannelDescriptor& d) {
    auto e = d.encode();
    return {reinterpret_cast<const char*>(e.data()), e.size()};
}

/// A payload on a lane larger than this is refused (no channel message is
/// larger than a pool; this only bounds what a broken peer can make us allocate).
constexpr std::uint64_t kMaxLanePayload = std::uint64_t{1} << 36;

/// Sends every byte of `parts` with gather I/O (MSG_NOSIGNAL), retrying short writes.
Status send_parts(int fd, std::span<const std::string_view> parts, std::string_view what) {
    constexpr std::size_t kMaxIov = 64;
    std::size_t first = 0;
    std::size_t skip = 0;  // bytes of parts[first] already sent
    while (first < parts.size()) {
        iovec iov[kMaxIov];
        std::size_t n = 0;
        for (std::size_t i = first; i < parts.size() && n < kMaxIov; ++i) {
            const std::size_t off = i == first ? skip : 0;
            if (parts[i].size() == off) continue;
            iov[n++] = iovec{const_cast<char*>(parts[i].data() + off), parts[i].size() - off};
        }
        if (n == 0) break;
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = n;
        ssize_t w = ::sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return sys::error_from_errno(what);
        auto left = static_cast<std::size_t>(w);
        while (first < parts.size() && left >= parts[first].size() - skip) {
            left -= parts[first].size() - skip;
            skip = 0;
            ++first;
        }
        skip += left;
    }
    return ok();
}

}  // namespace

struct Gateway::Conn {
    /// The agent's connection, with the reader that greeted it (nothing it
    /// has read is lost).
    Conn(sys::UniqueFd f, wire::FrameReader r) : fd(std::move(f)), reader(std::move(r)) {}
    /// A lane to `n`.
    Conn(sys::UniqueFd f, std::uint32_t n)
        : fd(std::move(f)), lane(true), node(n),
          reader(fd.get(), fmt::format("node {}'s lane", n),
                 {.max_frame_body = wire::kDefaultMaxFrameBody, .max_payload = kMaxLanePayload}) {}

    sys::UniqueFd fd;
    bool lane = false;
    std::uint32_t node = 0;  // a lane's node
    std::mutex write_mu;
    // Guarded by the gateway's mu_:
    bool reading = false;  // one thread reads for all; the others wait on cv_
    std::optional<Error> broken;
    std::map<std::uint64_t, std::pair<std::string, std::size_t>> buffered;  // on their way: id -> (descriptor, size)
    std::size_t buffered_bytes = 0;
    // Only the reading thread touches it: frames from the agent, or a lane's
    // frames and payload messages (a payload read straight into the vector
    // its Reply hands out).
    wire::FrameReader reader;
};

Gateway::Gateway(sys::UniqueFd fd, wire::FrameReader reader, msg::ClientWelcome w, channels::Pool pool, std::string socket_name, Puid self)
    : welcome_(std::move(w)), pool_(std::move(pool)), socket_name_(std::move(socket_name)), self_(self),
      agent_(std::make_shared<Conn>(std::move(fd), std::move(reader))) {
    // A message received while the pool is full comes inline and may be as large as a pool.
    agent_->reader.set_max_frame_body(std::size_t{1} << 32);
    const char* v = std::getenv("DRAGON_CHANNEL_LANES");
    lanes_enabled_ = v == nullptr || std::strcmp(v, "0") != 0;
}

Gateway::~Gateway() = default;

Result<std::shared_ptr<Gateway>> Gateway::connect_from_env() {
    auto [sock, self] = DRAGON_TRY(agent_from_env());
    return connect(sock, self);
}

Result<std::shared_ptr<Gateway>> Gateway::connect(const std::string& socket_name, Puid self) {
    auto s = DRAGON_TRY(Session::connect(socket_name, self));
    auto pool = DRAGON_TRY(s.attach_pool());
    return std::shared_ptr<Gateway>(
        new Gateway(std::move(s.fd_), std::move(s.reader_), std::move(s.welcome_), std::move(pool), socket_name, self));
}

std::vector<std::uint32_t> Gateway::lane_nodes() {
    std::lock_guard lk(mu_);
    std::vector<std::uint32_t> out;
    for (const auto& [node, c] : lanes_)
        if (c && !c->broken) out.push_back(node);
    return out;
}

// ---- lanes ---------------------------------------------------------------------

std::shared_ptr<Gateway::Conn> Gateway::lane_for(std::uint32_t node) {
    if (!lanes_enabled_) return nullptr;
    auto known = [&]() -> std::optional<std::shared_ptr<Conn>> {
        std::lock_guard lk(mu_);
        if (auto it = lanes_.find(node); it != lanes_.end()) return it->second;
        return std::nullopt;
    };
    if (auto c = known()) return *c;
    // The first operation on that node opens it; the others on that node
    // wait, so none goes through the agent while a lane opens (one sender's
    // messages stay in order). Other nodes' lanes open meanwhile.
    std::shared_ptr<std::mutex> opening;
    {
        std::lock_guard lk(mu_);
        auto& m = lane_opening_[node];
        if (!m) m = std::make_shared<std::mutex>();
        opening = m;
    }
    std::lock_guard ol(*opening);
    if (auto c = known()) return *c;
    auto lane = open_lane(node);
    std::lock_guard lk(mu_);
    if (!lane) {
        spdlog::debug("no lane to node {} (its channels are reached through the agent): {}", node,
                      lane.error().message());
        lanes_[node] = nullptr;
        return nullptr;
    }
    lanes_[node] = *lane;
    return *lane;
}

Result<std::shared_ptr<Gateway::Conn>> Gateway::open_lane(std::uint32_t node) {
    const auto what = fmt::format("opening a lane to node {}", node);
    const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(kLaneOpenTimeout);
    // The local agent connects and authenticates as this node, then hands the socket over.
    auto u = DRAGON_TRY(dial_agent(socket_name_));
    DRAGON_CHECK(sys::send_all(u.get(), wire::frame_of(msg::LaneOpen{node}), what));
    wire::FrameReader agent(u.get(), "the agent", {.max_frame_body = 64U << 10, .receive_fds = true});
    auto f = agent.next(limit);
    if (!f) return std::move(f).error().context(what);
    auto opened = DRAGON_TRY(msg::decode_as<msg::LaneOpened>(f->frame()));
    if (opened.code != 0) return Error(static_cast<Errc>(opened.code), opened.message);
    sys::UniqueFd sock = agent.take_fd();
    if (!sock) return make_error(Errc::protocol, "{}: the agent sent no socket", what);
    DRAGON_CHECK(sys::set_nonblocking(sock.get(), false));
    DRAGON_CHECK(sys::send_all(sock.get(), wire::frame_of(msg::LaneHello{msg::kProtocolVersion, node_id(), self_}), what));
    // The lane's own reader reads the welcome: whatever follows it stays with the lane.
    auto c = std::make_shared<Conn>(std::move(sock), node);
    auto wf = c->reader.next(limit);
    if (!wf) return std::move(wf).error().context(what);
    auto welcome = DRAGON_TRY(msg::decode_as<msg::LaneWelcome>(wf->frame()));
    if (welcome.code != 0) return Error(static_cast<Errc>(welcome.code), welcome.message);
    return c;
}

// ---- both kinds of connection ----------------------------------------------------

Status Gateway::post_request(Conn& c, std::span<const std::string_view> parts) {
    std::lock_guard wl(c.write_mu);
    {
        std::lock_guard lk(mu_);
        if (c.broken) return *c.broken;
    }
    const auto what = c.lane ? fmt::format("sending to node {}", c.node) : std::string("sending to the agent");
    if (auto st = send_parts(c.fd.get(), parts, what); !st) {
        std::lock_guard lk(mu_);
        if (!c.broken) c.broken = Error(Errc::closed, st.error().message());
        cv_.notify_all();
        return *c.broken;
    }
    return ok();
}

Status Gateway::read_some(Conn& c, std::vector<std::pair<std::uint64_t, Reply>>& got) {
    // A bounded wait, so a deadline in the caller's predicate is seen even
    // when no reply comes (a message cut by the timeout is finished next time).
    auto m = c.reader.next(std::chrono::milliseconds(100));
    if (!m) return m.error().code() == Errc::timeout ? ok() : conn_error(c, std::move(m).error());
    DRAGON_CHECK(file_reply(c, *m, got));
    // Then what has arrived in full meanwhile, without waiting.
    for (;;) {
        auto more = c.reader.next_buffered();
        if (!more) return conn_error(c, std::move(more).error());
        if (!*more) return ok();
        DRAGON_CHECK(file_reply(c, **more, got));
    }
}

Error Gateway::conn_error(const Conn& c, Error e) {
    if (c.lane && c.reader.peer_closed())
        return make_error(Errc::closed, "the lane to node {} closed: the node was lost or is shutting down "
                                        "(a message may or may not have arrived)", c.node);
    return e;
}

Status Gateway::file_reply(const Conn& c, wire::Received& m, std::vector<std::pair<std::uint64_t, Reply>>& got) {
    if (!c.lane) {
        if (m.type == static_cast<std::uint16_t>(msg::Type::error_reply)) {
            auto e = wire::decode_exact<msg::ErrorReply>(m.body);
            return e ? Error(static_cast<Errc>(e->code), "agent: " + e->message) : std::move(e).error();
        }
        if (m.type != static_cast<std::uint16_t>(msg::Type::chan_reply))
            return make_error(Errc::protocol, "from the agent: expected message type {}, got {}",
                              static_cast<unsigned>(msg::Type::chan_reply), m.type);
        auto r = wire::decode_exact<msg::ChanReply>(m.body);
        if (!r) return std::move(r).error().context("from the agent");
        got.emplace_back(r->request_id, Reply{r->code, std::move(r->message), std::move(r->data), r->block, r->size, {}});
        return ok();
    }
    if (m.type != static_cast<std::uint16_t>(msg::Type::remote_reply))
        return make_error(Errc::protocol, "from {}: unexpected message type {}{}", c.reader.name(), m.type,
                          m.payload ? " with a payload" : "");
    auto r = wire::decode_exact<msg::RemoteReply>(m.body);
    if (!r) return std::move(r).error().context("from " + c.reader.name());
    if (m.payload) got.emplace_back(r->op_id, Reply{r->code, std::move(r->message), {}, 0, 0, std::move(m.payload)});
    else got.emplace_back(r->op_id, Reply{r->code, std::move(r->message), std::move(r->data), 0, 0, {}});
    return ok();
}

template <class Pred>
Status Gateway::wait_for(std::unique_lock<std::mutex>& lk, Conn& c, Pred done) {
    for (;;) {
        if (done()) return ok();
        if (c.broken) return *c.broken;
        if (c.reading) {
            cv_.wait(lk);
            continue;
        }
        // This thread reads for everyone until what it waits for is filed.
        c.reading = true;
        lk.unlock();
        std::vector<std::pair<std::uint64_t, Reply>> got;
        Status st = read_some(c, got);
        lk.lock();
        c.reading = false;
        for (auto& [id, r] : got) {
            if (auto b = c.buffered.find(id); b != c.buffered.end()) {
                // A send nobody waits for: keep its failure for the next send to that channel.
                if (r.code != 0) deferred_.try_emplace(b->second.first, static_cast<Errc>(r.code), r.message);
                c.buffered_bytes -= b->second.second;
                c.buffered.erase(b);
                continue;
            }
            replies_[id] = std::move(r);
        }
        if (!st && !c.broken) c.broken = std::move(st).error();
        cv_.notify_all();
    }
}

Result<Gateway::Reply> Gateway::wait_reply(Conn& c, std::uint64_t id) {
    std::unique_lock lk(mu_);
    DRAGON_CHECK(wait_for(lk, c, [&] { return replies_.contains(id); }));
    auto it = replies_.find(id);
    Reply r = std::move(it->second);
    replies_.erase(it);
    if (r.code != 0) return Error(static_cast<Errc>(r.code), r.message);
    return r;
}

void Gateway::forget_buffered(Conn& c, std::uint64_t id) {
    std::lock_guard lk(mu_);
    if (auto b = c.buffered.find(id); b != c.buffered.end()) {
        c.buffered_bytes -= b->second.second;
        c.buffered.erase(b);
    }
    cv_.notify_all();
}

Status Gateway::flush(channels::Timeout timeout) {
    const auto deadline = timeout == channels::kForever ? std::chrono::steady_clock::time_point::max()
                                                        : std::chrono::steady_clock::now() + timeout;
    std::unique_lock lk(mu_);
    std::vector<std::shared_ptr<Conn>> conns{agent_};
    for (const auto& [node, c] : lanes_)
        if (c) conns.push_back(c);
    std::size_t left = 0;
    for (const auto& c : conns) {
        DRAGON_CHECK(wait_for(lk, *c, [&] { return c->buffered.empty() || std::chrono::steady_clock::now() >= deadline; }));
        left += c->buffered.size();
    }
    if (left > 0) return make_error(Errc::timeout, "{} sends are still on their way", left);
    if (deferred_.empty()) return ok();
    Error e = deferred_.begin()->second;
    deferred_.clear();
    return e;
}

Status Gateway::send(const channels::ChannelDescriptor& d, std::span<const std::byte> data, channels::Timeout timeout) {
    const std::string desc = encoded(d);
    std::shared_ptr<Conn> lane = lane_for(d.node_id);
    Conn& c = lane ? *lane : *agent_;
    const bool buffered = timeout == channels::kForever;
    std::uint64_t id = 0;
    {
        std::unique_lock lk(mu_);
        if (buffered) {
            // On its way without waiting for the remote channel, at most kMaxBuffered at once.
            DRAGON_CHECK(wait_for(lk, c, [&] {
                return c.buffered.empty() ||
                       (c.buffered.size() < kMaxBuffered && c.buffered_bytes + data.size() <= kMaxBufferedBytes);
            }));
        }
        if (auto it = deferred_.find(desc); it != deferred_.end()) {
            Error e = std::move(it->second);  // an earlier send to this channel failed: say so, send nothing
            deferred_.erase(it);
            return e;
        }
        id = next_id_++;
        if (buffered) {
            c.buffered.emplace(id, std::make_pair(desc, data.size()));
            c.buffered_bytes += data.size();
        }
    }
    const std::string_view bytes(reinterpret_cast<const char*>(data.data()), data.size());
    if (lane) {
        // Straight from the caller's memory to the socket: small messages in
        // the frame, larger ones as a payload in chunk frames (docs/transport.md).
        if (data.size() <= kInlineMax) {
            const std::string frame = wire::frame_of(msg::RemoteSend{id, desc, to_ns(timeout), std::string(bytes)});
            const std::string_view parts[] = {frame};
            if (auto st = post_request(c, parts); !st) {
                if (buffered) forget_buffered(c, id);
                return st;
            }
        } else {
            std::string head;
            wire::append_payload_begin(head, static_cast<std::uint16_t>(msg::Type::remote_send), data.size(),
                                       wire::body_of(msg::RemoteSend{id, desc, to_ns(timeout), {}}));
            const auto chunks = static_cast<std::size_t>(wire::payload_chunks(data.size()));
            std::string chunk_heads;
            chunk_heads.reserve(chunks * wire::kFrameHeaderSize);
            std::vector<std::string_view> parts{head};
            for (std::size_t i = 0; i < chunks; ++i) {
                const auto h = wire::payload_chunk_header(std::min(wire::kPayloadChunkSize, data.size() - i * wire::kPayloadChunkSize));
                chunk_heads.append(h.data(), h.size());
            }
            for (std::size_t i = 0; i < chunks; ++i) {
                const std::size_t n = std::min(wire::kPayloadChunkSize, data.size() - i * wire::kPayloadChunkSize);
                parts.emplace_back(chunk_heads.data() + i * wire::kFrameHeaderSize, wire::kFrameHeaderSize);
                parts.push_back(bytes.substr(i * wire::kPayloadChunkSize, n));
            }
            if (auto st = post_request(c, parts); !st) {
                if (buffered) forget_buffered(c, id);
                return st;
            }
        }
        if (buffered) return ok();
        if (auto r = wait_reply(c, id); !r) return std::move(r).error();
        return ok();
    }
    msg::ChanSend m;
    m.request_id = id;
    m.descriptor = desc;
    const auto start = std::chrono::steady_clock::now();
    if (data.size() <= kInlineMax) {
        m.data.assign(bytes);
    } else {
        // Through the pool: the agent sends it from there (no copy through the socket).
        auto b = pool_.allocate(data.size(), timeout);
        if (!b) {
            if (buffered) forget_buffered(c, id);
            return std::move(b).error().context("sending a large message to another node");
        }
        std::memcpy(pool_.at(*b), data.data(), data.size());
        m.block = *b;
        m.size = data.size();
        if (timeout != channels::kForever && timeout.count() > 0)
            timeout = std::max(channels::Timeout(1), timeout - (std::chrono::steady_clock::now() - start));
    }
    m.timeout_ns = to_ns(timeout);
    const std::string frame = wire::frame_of(m);
    const std::string_view parts[] = {frame};
    if (auto st = post_request(c, parts); !st) {
        if (m.block != 0) (void)pool_.free(m.block);  // the agent never had it
        if (buffered) forget_buffered(c, id);
        return st;
    }
    if (buffered) return ok();
    // From here the block is the agent's, whatever happens.
    if (auto r = wait_reply(c, id); !r) return std::move(r).error();
    return ok();
}

Result<Gateway::Reply> Gateway::recv_reply(const channels::ChannelDescriptor& d, channels::Timeout timeout) {
    std::shared_ptr<Conn> lane = lane_for(d.node_id);
    Conn& c = lane ? *lane : *agent_;
    std::uint64_t id = 0;
    {
        std::lock_guard lk(mu_);
        id = next_id_++;
    }
    const std::string frame = lane ? wire::frame_of(msg::RemoteRecv{id, encoded(d), to_ns(timeout)})
                                   : wire::frame_of(msg::ChanRecv{id, encoded(d), to_ns(timeout)});
    const std::string_view parts[] = {frame};
    DRAGON_CHECK(post_request(c, parts));
    auto r = DRAGON_TRY(wait_reply(c, id));
    if (r.block != 0) {
        auto bs = pool_.block_size(r.block);
        if (!bs || *bs < r.size)
            return make_error(Errc::protocol, "the agent named block {} of {} bytes, which this pool has not", r.block,
                              r.size);
    }
    return r;
}

Status Gateway::recv(const channels::ChannelDescriptor& d, std::vector<std::byte>& out, channels::Timeout timeout) {
    auto r = DRAGON_TRY(recv_reply(d, timeout));
    if (r.payload) {
        out.swap(*r.payload);
        return ok();
    }
    if (r.block != 0) {
        auto m = channels::Message::adopt(pool_, r.block, r.size);  // freed when m goes
        out.resize(r.size);
        std::memcpy(out.data(), m.data().data(), r.size);
        return ok();
    }
    out.resize(r.data.size());
    if (!r.data.empty()) std::memcpy(out.data(), r.data.data(), r.data.size());
    return ok();
}

Result<channels::Message> Gateway::recv_message(const channels::ChannelDescriptor& d, channels::Timeout timeout) {
    auto r = DRAGON_TRY(recv_reply(d, timeout));
    if (r.payload) return channels::Message::of(std::move(*r.payload));
    if (r.block != 0) return channels::Message::adopt(pool_, r.block, r.size);
    std::vector<std::byte> v(r.data.size());
    if (!r.data.empty()) std::memcpy(v.data(), r.data.data(), r.data.size());
    return channels::Message::of(std::move(v));
}

Result<std::size_t> Gateway::queued(const channels::ChannelDescriptor& d) {
    std::shared_ptr<Conn> lane = lane_for(d.node_id);
    Conn& c = lane ? *lane : *agent_;
    std::uint64_t id = 0;
    {
        std::lock_guard lk(mu_);
        id = next_id_++;
    }
    const std::string frame = lane ? wire::frame_of(msg::RemoteCount{id, encoded(d)})
                                   : wire::frame_of(msg::ChanCount{id, encoded(d)});
    const std::string_view parts[] = {frame};
    DRAGON_CHECK(post_request(c, parts));
    auto r = DRAGON_TRY(wait_reply(c, id));
    std::size_t n = 0;
    const char* end = r.data.data() + r.data.size();
    auto [p, ec] = std::from_chars(r.data.data(), end, n);
    if (ec != std::errc() || p != end || r.data.empty())
        return make_error(Errc::protocol, "node {} answered the count of channel {} with {:?}", d.node_id, d.channel_id,
                          r.data);
    return n;
}

Result<std::string> Gateway::sync(msg::ChanSync request) {
    auto parts = DRAGON_TRY(channels::parse_pool_name(request.pool_name));
    if (parts.run_id != run_id())
        return make_error(Errc::invalid_argument, "sync object of {} belongs to run {}, not this run ({})",
                          request.pool_name, parts.run_id, run_id());
    std::shared_ptr<Conn> lane = lane_for(parts.node_id);
    Conn& c = lane ? *lane : *agent_;
    {
        std::lock_guard lk(mu_);
        request.request_id = next_id_++;
    }
    const std::uint64_t id = request.request_id;
    const std::string frame =
        lane ? wire::frame_of(msg::RemoteSync{id, std::move(request.pool_name), request.generation, request.offset,
                                              request.id, request.op, request.arg, request.length, request.timeout_ns,
                                              std::move(request.data)})
             : wire::frame_of(request);
    const std::string_view parts_out[] = {frame};
    DRAGON_CHECK(post_request(c, parts_out));
    auto r = DRAGON_TRY(wait_reply(c, id));
    return std::move(r.data);
}

Result<ChannelRef> ChannelRef::open(std::shared_ptr<Gateway> gateway, const channels::ChannelDescriptor& d) {
    if (!gateway) return make_error(Errc::invalid_argument, "ChannelRef::open: no gateway");
    auto parts = DRAGON_TRY(channels::parse_pool_name(d.pool_name));
    if (parts.run_id != gateway->run_id())
        return make_error(Errc::invalid_argument, "channel {} belongs to run {}, not this run ({})", d.channel_id,
                          parts.run_id, gateway->run_id());
    if (parts.node_id != d.node_id)
        return make_error(Errc::invalid_argument, "channel {}: descriptor names node {} but pool {}", d.channel_id,
                          d.node_id, d.pool_name);
    if (d.node_id != gateway->node_id()) return ChannelRef(std::move(gateway), d, std::nullopt);
    auto ch = DRAGON_TRY(channels::Channel::attach(gateway->pool(), d));
    return ChannelRef(std::move(gateway), d, std::move(ch));
}

Status ChannelRef::send(std::span<const std::byte> msg, channels::Timeout timeout) {
    if (local_) return local_->send(msg, timeout);
    return gw_->send(d_, msg, timeout);
}

Status ChannelRef::recv(std::vector<std::byte>& out, channels::Timeout timeout) {
    if (local_) return local_->recv(out, timeout);
    return gw_->recv(d_, out, timeout);
}

Result<channels::Message> ChannelRef::recv_message(channels::Timeout timeout) {
    if (local_) return local_->recv_message(timeout);
    return gw_->recv_message(d_, timeout);
}

Result<std::size_t> ChannelRef::queued() {
    if (local_) return local_->queued();
    return gw_->queued(d_);
}

}  // namespace dragon::client
