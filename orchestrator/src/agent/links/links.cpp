// The links between agents: joining, the node table, heartbeats, loss.
#include "links.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

namespace dragon::agent {

namespace {

constexpr auto kDialRetry = std::chrono::milliseconds(100);

Delivery delivery_of(transport::SendState s) {
    switch (s) {
        case transport::SendState::ok: return Delivery::ok;
        case transport::SendState::above_high_water: return Delivery::above_high_water;
        case transport::SendState::closed: return Delivery::dropped;
    }
    return Delivery::dropped;
}

}  // namespace

Links::Links(const Router& router, asio::io_context& io, LinksOptions opts, LinksHooks hooks)
    : io_(io),
      opts_(std::move(opts)),
      hooks_(std::move(hooks)),
      self_(router.node_id()),
      nnodes_(router.nnodes()),
      nodes_(nnodes_),
      state_(nnodes_ > 1 ? State::joining : State::up),
      heartbeat_timer_(io),
      join_timer_(io) {}

void Links::bind(Dispatcher<std::uint32_t>& nodes) {
    nodes.on<msg::Heartbeat>([](std::uint32_t, msg::Heartbeat&&) {});  // hearing anything was the point
    if (!is_head()) {
        nodes.on<msg::NodeTable>([this](std::uint32_t, msg::NodeTable&& m) { on_table(m); });
        return;
    }
    nodes.on<msg::NodeHello>([this](std::uint32_t from, msg::NodeHello&& m) { on_hello(from, m); });
    nodes.on<msg::NodeReady>([this](std::uint32_t from, msg::NodeReady&&) { on_ready(from); });
    nodes.on<msg::ShutdownDone>([this](std::uint32_t from, msg::ShutdownDone&&) {
        nodes_[from].finished = true;
        hooks_.node_finished(from);
    });
}

Result<transport::Endpoint> Links::listen(std::unique_ptr<transport::Transport> t, const std::string& address,
                                          int listen_fd) {
    transport_ = std::move(t);
    auto on_link = [this](std::shared_ptr<transport::Link> link) { on_connected(std::move(link), false); };
    if (auto st = transport_->listen(address, listen_fd, on_link); !st)
        return std::move(st).error().context(fmt::format("node {}", self_));
    auto ep = transport_->local_endpoint();
    address_ = address.empty() ? ep.address : address;
    spdlog::info("node {} listening on {}:{}", self_, ep.address, ep.port);
    return ep;
}

void Links::start(std::chrono::milliseconds join_timeout) {
    heartbeat_tick();
    join_timer_.expires_after(join_timeout);
    join_timer_.async_wait([this, join_timeout](const asio::error_code& ec) {
        if (ec || state_ != State::joining) return;
        std::string missing;
        for (std::uint32_t n = 0; n < nnodes_; ++n)
            if (n != self_ && !(nodes_[n].peer && (!is_head() || nodes_[n].ready)))
                missing += fmt::format("{}{}", missing.empty() ? "" : ", ", n);
        spdlog::error("node {}: nodes {} did not join within {} s; giving up", self_, missing,
                      std::chrono::duration_cast<std::chrono::seconds>(join_timeout).count());
        hooks_.join_failed("join timeout");
    });
    if (!is_head()) dial(0);
}

void Links::end_join() {
    join_timer_.cancel();
    if (state_ == State::joining) state_ = State::up;
}

void Links::begin_finish() {
    join_timer_.cancel();
    if (state_ != State::closed) state_ = State::finishing;
}

void Links::close() {
    heartbeat_timer_.cancel();
    join_timer_.cancel();
    if (transport_) transport_->stop_listening();
    for (auto& l : nodes_)
        if (l.peer) l.peer->close();
    state_ = State::closed;
}

transport::Link* Links::link(std::uint32_t node) const {
    return node < nodes_.size() ? nodes_[node].peer.get() : nullptr;
}

Delivery Links::send_frame(std::uint32_t node, std::uint16_t type, std::string_view body) {
    transport::Link* l = link(node);
    if (l == nullptr) return Delivery::dropped;
    return delivery_of(l->send_frame(type, body));
}

bool Links::lost(std::uint32_t node) const { return node < nodes_.size() && nodes_[node].lost; }

std::string Links::hostname(std::uint32_t node) const { return node < nodes_.size() ? nodes_[node].hostname : ""; }

transport::Endpoint Links::endpoint(std::uint32_t node) const {
    if (node >= nodes_.size()) return {};
    return {nodes_[node].address, nodes_[node].port};
}

std::string_view Links::transport_name() const { return transport_ ? transport_->name() : std::string_view{}; }

void Links::hold_back(std::uint32_t node) {
    transport::Link* l = link(node);
    if (l == nullptr || l->reading_paused()) return;
    l->pause_reading();
    held_.push_back(nodes_[node].peer);
}

void Links::resume_held() {
    auto paused = std::move(held_);
    held_.clear();
    for (auto& peer : paused)
        if (peer->is_open()) peer->resume_reading();
}

std::uint32_t Links::unfinished() const {
    std::uint32_t n = 0;
    for (std::uint32_t k = 1; k < nnodes_; ++k) n += nodes_[k].peer && !nodes_[k].finished ? 1U : 0U;
    return n;
}

std::uint32_t Links::give_up_unfinished() {
    std::uint32_t n = 0;
    for (std::uint32_t k = 1; k < nnodes_; ++k) {
        Node& l = nodes_[k];
        if (!l.peer || l.finished) continue;
        spdlog::error("node {} did not finish its teardown in time; giving up on it", k);
        ++n;
        l.finished = true;  // given up: the front end kills what is left of it
        l.peer->close();
        l.peer.reset();
    }
    return n;
}

void Links::dial(std::uint32_t node) {
    // Node 0's address comes from the launcher; the others' from node 0's table.
    const transport::Endpoint at = node == 0 ? opts_.head : endpoint(node);
    transport_->connect(at, node, [this, node](Result<std::shared_ptr<transport::Link>> r) {
        if (state_ != State::joining) return;
        if (r) return on_connected(std::move(*r), true);
        // The other node may not listen yet (node 0 under a batch system): try again until the join deadline.
        if (dial_failures_++ == 0) spdlog::info("node {}: {}; retrying", self_, r.error().message());
        auto t = std::make_shared<asio::steady_timer>(io_, kDialRetry);
        t->async_wait([this, t, node](const asio::error_code& ec) {
            if (!ec && state_ == State::joining) dial(node);
        });
    });
}

void Links::on_connected(std::shared_ptr<transport::Link> peer, bool dialled) {
    const std::uint32_t n = peer->remote_node_id();
    auto refuse = [&](const char* why) {
        spdlog::warn("node {}: dropping {}: {}", self_, peer->name(), why);
        peer->close();
    };
    if (n >= nnodes_ || n == self_) return refuse("not a node of this run");
    // A second connection from a linked node, once the run is up: a process
    // of that node opening a lane (its agent authenticated it).
    if (!dialled && nodes_[n].peer && state_ == State::up) return hooks_.lane(std::move(peer));
    if (nodes_[n].peer || nodes_[n].lost) return refuse("that node is already connected (or was lost)");
    if (state_ != State::joining) return refuse("the run has started (or is ending): no new nodes");
    // Node 0 accepts everyone; others accept only higher ids (they dial lower ones).
    if (!dialled && !is_head() && n < self_) return refuse("lower ids are dialled, not accepted");
    Node& l = nodes_[n];
    l.peer = peer;
    l.last_heard = std::chrono::steady_clock::now();
    peer->start([this, n](wire::Frame&& f) {
                    nodes_[n].last_heard = std::chrono::steady_clock::now();
                    hooks_.frame(n, std::move(f));
                },
                [this, n](const Error* e) { on_lost(n, e != nullptr ? e->message() : "it closed the connection"); },
                [this, n](wire::Frame&& header, std::uint64_t size) {
                    nodes_[n].last_heard = std::chrono::steady_clock::now();
                    return hooks_.payload(n, std::move(header), size);
                });
    // A full link that drains lets parked output flow again (on node 0 that
    // is output for an owner on another node).
    peer->set_on_drained([this] { hooks_.drained(); });
    if (n == 0 && !is_head()) {
        const auto ep = transport_->local_endpoint();
        std::string resources;
        if (auto res = hooks_.resources()) {
            resources = wire::body_of(**res);
        } else {
            spdlog::error("node {}: {}", self_, res.error().message());
        }
        peer->send(msg::NodeHello{msg::kProtocolVersion, self_, static_cast<std::int32_t>(::getpid()), opts_.hostname,
                                  address_, ep.port, std::move(resources)});
    }
    spdlog::debug("node {}: linked to node {} ({})", self_, n, dialled ? "dialled" : "accepted");
    maybe_joined();
}

void Links::on_hello(std::uint32_t from, const msg::NodeHello& h) {
    if (h.version != msg::kProtocolVersion || h.node_id != from) {
        spdlog::error("node {} says hello as node {} speaking protocol {}; dropping it", from, h.node_id, h.version);
        return on_lost(from, "bad hello");
    }
    auto res = wire::decode_exact<pg::NodeResources>(h.resources);
    if (!res || res->node_id != from || !res->validate()) {
        spdlog::error("node {} sent no usable resource description; dropping it", from);
        return on_lost(from, "bad resources");
    }
    hooks_.node_joined(from, std::move(*res));
    Node& l = nodes_[from];
    l.hostname = h.hostname;
    l.address = h.address;
    l.port = h.port;
    spdlog::info("node {} joined: {} at {}:{}, pid {}", from, h.hostname, h.address, h.port, h.pid);
    for (std::uint32_t k = 1; k < nnodes_; ++k)
        if (nodes_[k].port == 0) return;  // more to come
    auto mine = hooks_.resources();
    if (!mine) {
        spdlog::error("node 0: {}", mine.error().message());
        return hooks_.join_failed("no topology");
    }
    hooks_.node_joined(0, **mine);
    msg::NodeTable table;
    table.nodes.push_back({0, opts_.hostname, address_, transport_->local_endpoint().port});
    for (std::uint32_t k = 1; k < nnodes_; ++k)
        table.nodes.push_back({k, nodes_[k].hostname, nodes_[k].address, nodes_[k].port});
    for (std::uint32_t k = 1; k < nnodes_; ++k) nodes_[k].peer->send(table);
}

void Links::on_table(const msg::NodeTable& t) {
    for (const auto& n : t.nodes) {
        if (n.node_id >= nnodes_ || n.node_id == self_) continue;
        nodes_[n.node_id].hostname = n.hostname;
        nodes_[n.node_id].address = n.address;
        nodes_[n.node_id].port = n.port;
    }
    table_received_ = true;
    for (std::uint32_t j = 1; j < self_; ++j)
        if (!nodes_[j].peer) dial(j);
    maybe_joined();
}

void Links::maybe_joined() {
    if (is_head() || !table_received_ || state_ != State::joining) return;
    for (std::uint32_t j = 0; j < nnodes_; ++j)
        if (j != self_ && !nodes_[j].peer) return;
    state_ = State::up;
    join_timer_.cancel();
    nodes_[0].peer->send(msg::NodeReady{self_});
    spdlog::info("node {} linked to all {} other nodes", self_, nnodes_ - 1);
    hooks_.joined();
}

void Links::on_ready(std::uint32_t from) {
    nodes_[from].ready = true;
    for (std::uint32_t k = 1; k < nnodes_; ++k)
        if (!nodes_[k].ready) return;
    if (state_ != State::joining) return;
    state_ = State::up;
    join_timer_.cancel();
    spdlog::info("all {} nodes joined", nnodes_);
    hooks_.joined();
}

void Links::heartbeat_tick() {
    if (state_ == State::closed) return;
    const auto timeout = std::chrono::milliseconds(opts_.heartbeat_timeout_ms);
    const auto now = std::chrono::steady_clock::now();
    ++heartbeat_seq_;
    for (std::uint32_t n = 0; n < nnodes_; ++n) {
        Node& l = nodes_[n];
        if (!l.peer) continue;
        // A link we stopped reading (its output's reader is full) is silent
        // by our choice, not its node's: it is not judged until read again.
        if (l.peer->reading_paused()) l.last_heard = now;
        // Bytes of a long payload (a large channel message) count as word from it.
        if (l.peer->bytes_read() != l.bytes_heard) {
            l.bytes_heard = l.peer->bytes_read();
            l.last_heard = now;
        }
        if (now - l.last_heard > timeout) {
            on_lost(n, fmt::format("no word for {:.1f} s", std::chrono::duration<double>(now - l.last_heard).count()));
            continue;
        }
        l.peer->send(msg::Heartbeat{heartbeat_seq_});
    }
    heartbeat_timer_.expires_after(std::max(timeout / 4, std::chrono::milliseconds(10)));
    heartbeat_timer_.async_wait([this](const asio::error_code& ec) { if (!ec) heartbeat_tick(); });
}

void Links::on_lost(std::uint32_t node, const std::string& why) {
    Node& l = nodes_[node];
    if (l.lost) return;
    l.lost = true;
    if (l.peer) {
        l.peer->close();
        l.peer.reset();
    }
    hooks_.link_down(node, why);
    if (state_ == State::closed) {
        spdlog::debug("node {}: link to node {} closed after its teardown", self_, node);
        return;
    }
    if (l.finished) {
        spdlog::debug("node {}: link to node {} closed after its teardown", self_, node);
        return hooks_.node_finished(node);
    }
    if (is_head()) {
        spdlog::error("node {} ({}) lost: {}", node, l.hostname.empty() ? "?" : l.hostname, why);
        if (state_ == State::joining) return hooks_.join_failed("a node was lost while joining");
        return hooks_.node_lost(node, why);
    }
    if (node == 0) {
        spdlog::warn("node {}: lost node 0 ({}); stopping", self_, why);
        return hooks_.node_lost(node, why);
    }
    // Node 0 is the judge of lost nodes (and says so); here it is only news,
    // and a peer that finished its teardown first closes the same way.
    spdlog::info("node {}: link to node {} closed ({})", self_, node, why);
}

}  // namespace dragon::agent
