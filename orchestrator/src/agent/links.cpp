// Links between agents over the transport: joining (node k dials node 0,
// which hands out the node table; higher ids dial lower ones), heartbeats,
// loss of a node (their messages are dispatched by routing.cpp).
#include <spdlog/spdlog.h>

#include "agent.hpp"

namespace dragon::agent {

namespace {
constexpr auto kDialRetry = std::chrono::milliseconds(100);
}  // namespace

void Agent::post_to_self(wire::Frame f) {
    asio::post(io_, [this, f = std::move(f)]() mutable { on_node_frame(opts_.node_id, std::move(f)); });
}

Status Agent::open_listener() {
    auto t = transport::create_transport("tcp", io_, *opts_.secret, opts_.node_id, opts_.address);
    if (!t) return std::move(t).error().context(fmt::format("node {}", opts_.node_id));
    transport_ = std::move(*t);
    auto on_link = [this](std::shared_ptr<transport::Link> link) { on_peer_connected(std::move(link), false); };
    const int fd = std::exchange(opts_.listen_fd, -1);
    if (auto st = transport_->listen(opts_.address, fd, on_link); !st)
        return std::move(st).error().context(fmt::format("node {}", opts_.node_id));
    const auto ep = transport_->local_endpoint();
    if (opts_.address.empty()) opts_.address = ep.address;
    spdlog::info("node {} listening on {}:{}", opts_.node_id, ep.address, ep.port);
    return ok();
}

void Agent::dial_head() { dial_peer(0); }

void Agent::dial_peer(std::uint32_t node) {
    // Node 0's address comes from the launcher; the others' from node 0's table.
    const transport::Endpoint at = node == 0 ? transport::Endpoint{opts_.head_address, opts_.head_port}
                                             : transport::Endpoint{links_[node].address, links_[node].port};
    transport_->connect(at, node, [this, node](Result<std::shared_ptr<transport::Link>> r) {
        if (phase_ != Phase::joining) return;
        if (r) return on_peer_connected(std::move(*r), true);
        // The other node may not listen yet (node 0 under a batch system): try again until the join deadline.
        if (dial_failures_++ == 0) spdlog::info("node {}: {}; retrying", opts_.node_id, r.error().message());
        auto t = std::make_shared<asio::steady_timer>(io_, kDialRetry);
        t->async_wait([this, t, node](const asio::error_code& ec) {
            if (!ec && phase_ == Phase::joining) dial_peer(node);
        });
    });
}

void Agent::on_peer_connected(std::shared_ptr<transport::Link> peer, bool dialled) {
    const std::uint32_t n = peer->remote_node_id();
    auto refuse = [&](const char* why) {
        spdlog::warn("node {}: dropping {}: {}", opts_.node_id, peer->name(), why);
        peer->close();
    };
    if (n >= opts_.nnodes || n == opts_.node_id) return refuse("not a node of this run");
    // A second connection from a linked node, once the run is up: a process
    // of that node opening a lane (its agent authenticated it).
    if (!dialled && links_[n].peer && phase_ != Phase::joining && phase_ != Phase::finishing && phase_ != Phase::done)
        return accept_lane(std::move(peer));
    if (links_[n].peer || links_[n].lost) return refuse("that node is already connected (or was lost)");
    if (phase_ != Phase::joining) return refuse("the run has started (or is ending): no new nodes");
    // Node 0 accepts everyone; others accept only higher ids (they dial lower ones).
    if (!dialled && !is_head() && n < opts_.node_id) return refuse("lower ids are dialled, not accepted");
    Link& l = links_[n];
    l.peer = peer;
    l.last_heard = std::chrono::steady_clock::now();
    peer->start([this, n](wire::Frame&& f) {
                    links_[n].last_heard = std::chrono::steady_clock::now();
                    on_node_frame(n, std::move(f));
                },
                [this, n](const Error* e) { on_link_lost(n, e != nullptr ? e->message() : "it closed the connection"); },
                [this, n](wire::Frame&& header, std::uint64_t size) {
                    links_[n].last_heard = std::chrono::steady_clock::now();
                    return on_link_payload(n, std::move(header), size);
                });
    // A full link that drains lets parked output flow again (on node 0 that
    // is output for an owner on another node).
    peer->set_on_drained([this] { resume_parked_output(); });
    if (n == 0 && !is_head()) {
        const auto ep = transport_->local_endpoint();
        std::string resources;
        if (auto res = node_resources()) {
            resources = wire::body_of(**res);
        } else {
            spdlog::error("node {}: {}", opts_.node_id, res.error().message());
        }
        peer->send(msg::NodeHello{msg::kProtocolVersion, opts_.node_id, static_cast<std::int32_t>(::getpid()),
                                  hostname_, opts_.address, ep.port, std::move(resources)});
    }
    spdlog::debug("node {}: linked to node {} ({})", opts_.node_id, n, dialled ? "dialled" : "accepted");
    maybe_ready();
}

void Agent::on_node_hello(std::uint32_t from, const msg::NodeHello& h) {
    if (h.version != msg::kProtocolVersion || h.node_id != from) {
        spdlog::error("node {} says hello as node {} speaking protocol {}; dropping it", from, h.node_id, h.version);
        return on_link_lost(from, "bad hello");
    }
    auto res = wire::decode_exact<pg::NodeResources>(h.resources);
    if (!res || res->node_id != from || !res->validate()) {
        spdlog::error("node {} sent no usable resource description; dropping it", from);
        return on_link_lost(from, "bad resources");
    }
    global_->node_joined(from, std::move(*res));
    Link& l = links_[from];
    l.hostname = h.hostname;
    l.address = h.address;
    l.port = h.port;
    spdlog::info("node {} joined: {} at {}:{}, pid {}", from, h.hostname, h.address, h.port, h.pid);
    for (std::uint32_t k = 1; k < opts_.nnodes; ++k)
        if (links_[k].port == 0) return;  // more to come
    auto mine = node_resources();
    if (!mine) {
        spdlog::error("node 0: {}", mine.error().message());
        exit_code_ = 1;
        return begin_stop(true, 0, "no topology");
    }
    global_->node_joined(0, **mine);
    msg::NodeTable table;
    table.nodes.push_back({0, hostname_, opts_.address, transport_->local_endpoint().port});
    for (std::uint32_t k = 1; k < opts_.nnodes; ++k)
        table.nodes.push_back({k, links_[k].hostname, links_[k].address, links_[k].port});
    for (std::uint32_t k = 1; k < opts_.nnodes; ++k) links_[k].peer->send(table);
}

void Agent::on_node_table(const msg::NodeTable& t) {
    for (const auto& n : t.nodes) {
        if (n.node_id >= opts_.nnodes || n.node_id == opts_.node_id) continue;
        links_[n.node_id].hostname = n.hostname;
        links_[n.node_id].address = n.address;
        links_[n.node_id].port = n.port;
    }
    table_received_ = true;
    for (std::uint32_t j = 1; j < opts_.node_id; ++j)
        if (!links_[j].peer) dial_peer(j);
    maybe_ready();
}

void Agent::maybe_ready() {
    if (is_head() || !table_received_ || phase_ != Phase::joining) return;
    for (std::uint32_t j = 0; j < opts_.nnodes; ++j)
        if (j != opts_.node_id && !links_[j].peer) return;
    phase_ = Phase::running;
    join_timer_.cancel();
    links_[0].peer->send(msg::NodeReady{opts_.node_id});
    spdlog::info("node {} linked to all {} other nodes", opts_.node_id, opts_.nnodes - 1);
}

void Agent::heartbeat_tick() {
    if (phase_ == Phase::done) return;
    const auto timeout = std::chrono::milliseconds(opts_.config.heartbeat_timeout_ms());
    const auto now = std::chrono::steady_clock::now();
    ++heartbeat_seq_;
    for (std::uint32_t n = 0; n < opts_.nnodes; ++n) {
        Link& l = links_[n];
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
            on_link_lost(n, fmt::format("no word for {:.1f} s", std::chrono::duration<double>(now - l.last_heard).count()));
            continue;
        }
        l.peer->send(msg::Heartbeat{heartbeat_seq_});
    }
    heartbeat_timer_.expires_after(std::max(timeout / 4, std::chrono::milliseconds(10)));
    heartbeat_timer_.async_wait([this](const asio::error_code& ec) { if (!ec) heartbeat_tick(); });
}

void Agent::on_link_lost(std::uint32_t node, const std::string& why) {
    Link& l = links_[node];
    if (l.lost) return;
    l.lost = true;
    if (l.peer) {
        l.peer->close();
        l.peer.reset();
    }
    gateway_link_lost(node, why);
    if (l.shutdown_done || phase_ == Phase::done) {
        spdlog::debug("node {}: link to node {} closed after its teardown", opts_.node_id, node);
        if (phase_ == Phase::finishing) finish_now();
        return;
    }
    if (is_head()) {
        spdlog::error("node {} ({}) lost: {}", node, l.hostname.empty() ? "?" : l.hostname, why);
        if (phase_ == Phase::joining) {
            exit_code_ = 1;
            return begin_stop(true, 0, "a node was lost while joining");
        }
        global_->node_lost(node, why);
        if (phase_ == Phase::finishing) finish_now();
        return;
    }
    if (node == 0) {
        spdlog::warn("node {}: lost node 0 ({}); stopping", opts_.node_id, why);
        begin_stop(false, opts_.config.patience_ms(), "lost node 0");
        if (phase_ == Phase::finishing) finish_now();
        return;
    }
    // Node 0 is the judge of lost nodes (and says so); here it is only news,
    // and a peer that finished its teardown first closes the same way.
    spdlog::info("node {}: link to node {} closed ({})", opts_.node_id, node, why);
}

}  // namespace dragon::agent
