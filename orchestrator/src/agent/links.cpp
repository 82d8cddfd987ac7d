// Links between agents over the transport: joining (node k dials node 0,
// which hands out the node table; higher ids dial lower ones), heartbeats,
// loss of a node, and the one dispatcher for agent-to-agent messages.
#include <spdlog/spdlog.h>

#include "agent.hpp"

namespace dragon::agent {

namespace {
constexpr auto kDialRetry = std::chrono::milliseconds(100);
constexpr std::size_t kRelayHighWater = 8U << 20;
}  // namespace

void Agent::post_to_self(wire::Frame f) {
    asio::post(io_, [this, f = std::move(f)]() mutable { on_node_frame(opts_.node_id, std::move(f)); });
}

Status Agent::open_listener() {
    auto on_peer = [this](std::shared_ptr<tcp::Peer> peer) { on_peer_connected(std::move(peer), false); };
    Result<tcp::Listener> l = Error(Errc::internal, "no listener");
    if (opts_.listen_fd >= 0) {
        l = tcp::Listener::adopt(io_, sys::UniqueFd(opts_.listen_fd), *opts_.secret, opts_.node_id, on_peer);
        opts_.listen_fd = -1;
    } else {
        l = tcp::Listener::create(io_, opts_.address, 0, *opts_.secret, opts_.node_id, on_peer);
    }
    if (!l) return std::move(l).error().context(fmt::format("node {}", opts_.node_id));
    listener_ = std::move(*l);
    const auto ep = listener_->local_endpoint();
    if (opts_.address.empty()) opts_.address = ep.address().to_string();
    spdlog::info("node {} listening on {}:{}", opts_.node_id, ep.address().to_string(), ep.port());
    return ok();
}

void Agent::dial_head() {
    tcp::Options o;
    o.bind_address = opts_.address;
    tcp::connect(io_, opts_.head_address, opts_.head_port, *opts_.secret, opts_.node_id, 0,
                 [this](Result<std::shared_ptr<tcp::Peer>> r) {
                     if (phase_ != Phase::joining) return;
                     if (r) return on_peer_connected(std::move(*r), true);
                     // Node 0 may not listen yet (under a batch system): try again until the join deadline.
                     if (dial_failures_++ == 0) spdlog::info("node {}: {}; retrying", opts_.node_id, r.error().message());
                     auto t = std::make_shared<asio::steady_timer>(io_, kDialRetry);
                     t->async_wait([this, t](const asio::error_code& ec) {
                         if (!ec && phase_ == Phase::joining) dial_head();
                     });
                 },
                 o);
}

void Agent::dial_peer(std::uint32_t node) {
    tcp::Options o;
    o.bind_address = opts_.address;
    const Link& l = links_[node];
    tcp::connect(io_, l.address, l.port, *opts_.secret, opts_.node_id, node,
                 [this, node](Result<std::shared_ptr<tcp::Peer>> r) {
                     if (phase_ != Phase::joining) return;
                     if (r) return on_peer_connected(std::move(*r), true);
                     if (dial_failures_++ == 0) spdlog::info("node {}: {}; retrying", opts_.node_id, r.error().message());
                     auto t = std::make_shared<asio::steady_timer>(io_, kDialRetry);
                     t->async_wait([this, t, node](const asio::error_code& ec) {
                         if (!ec && phase_ == Phase::joining) dial_peer(node);
                     });
                 },
                 o);
}

void Agent::on_peer_connected(std::shared_ptr<tcp::Peer> peer, bool dialled) {
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
        const auto ep = listener_->local_endpoint();
        std::string resources;
        if (auto res = node_resources()) {
            resources = wire::body_of(**res);
        } else {
            spdlog::error("node {}: {}", opts_.node_id, res.error().message());
        }
        peer->send(msg::NodeHello{msg::kProtocolVersion, opts_.node_id, static_cast<std::int32_t>(::getpid()),
                                  hostname_, opts_.address, ep.port(), std::move(resources)});
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
    nodes_[from] = std::move(*res);
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
    nodes_[0] = **mine;
    msg::NodeTable table;
    table.nodes.push_back({0, hostname_, opts_.address, listener_->port()});
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
        fail_lost_node(node, why);
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

void Agent::on_node_frame(std::uint32_t from, wire::Frame&& f) {
    auto decoded = [&]<class M>(auto&& fn) {
        auto m = msg::decode_as<M>(f);
        if (!m) return spdlog::error("node {}: bad '{}' frame from node {}: {}", opts_.node_id, msg::type_name(f.type),
                                     from, m.error().message());
        fn(*m);
    };
    const bool from_head = from == 0;
    const auto type = static_cast<msg::Type>(f.type);
    if (type == msg::Type::heartbeat) return;  // hearing anything was the point
    // Channel operations, between any two nodes (gateway.cpp).
    switch (type) {
        case msg::Type::remote_send:
        case msg::Type::remote_recv:
        case msg::Type::remote_reply:
            gateway_busy_ = std::chrono::steady_clock::now();
            break;
        default: break;
    }
    switch (type) {
        case msg::Type::remote_send:
            return decoded.template operator()<msg::RemoteSend>(
                [&](auto& m) { serve_remote_send(from, std::move(m), 0, 0); });
        case msg::Type::remote_recv:
            return decoded.template operator()<msg::RemoteRecv>([&](auto& m) { serve_remote_recv(from, std::move(m)); });
        case msg::Type::remote_reply:
            return decoded.template operator()<msg::RemoteReply>([&](auto& m) { on_remote_reply(from, std::move(m)); });
        case msg::Type::remote_cancel:
            return decoded.template operator()<msg::RemoteCancel>([&](auto& m) { on_remote_cancel(from, m.op_id); });
        case msg::Type::pmi_fence:  // between the nodes of a PMI job (pmi.cpp, pmix.cpp)
            return decoded.template operator()<msg::PmiFence>([&](auto& m) { on_pmi_fence(from, std::move(m)); });
        case msg::Type::pmix_dmodex_request:
            return decoded.template operator()<msg::PmixDmodexRequest>([&](auto& m) { on_pmix_dmodex_request(from, m); });
        case msg::Type::pmix_dmodex_reply:
            return decoded.template operator()<msg::PmixDmodexReply>([&](auto& m) { on_pmix_dmodex_reply(m); });
        default: break;
    }
    // What node 0 tells every executor (its own included).
    if (from_head) {
        switch (type) {
            case msg::Type::exec_members:
                return decoded.template operator()<msg::ExecMembers>([&](auto& m) { exec_members(m); });
            case msg::Type::signal_members:
                return decoded.template operator()<msg::SignalMembers>([&](auto& m) { signal_members(m); });
            case msg::Type::respawn_member:
                return decoded.template operator()<msg::RespawnMember>([&](auto& m) { respawn_member(m); });
            case msg::Type::forget_group:
                return decoded.template operator()<msg::ForgetGroup>([&](auto& m) { forget_group(m.group_id); });
            case msg::Type::stdin_data:
                return decoded.template operator()<msg::StdinData>([&](auto& m) { handle_stdin(std::move(m)); });
            default: break;
        }
        if (!is_head()) {
            switch (type) {
                case msg::Type::node_table:
                    return decoded.template operator()<msg::NodeTable>([&](auto& m) { on_node_table(m); });
                case msg::Type::shutdown:
                    return decoded.template operator()<msg::Shutdown>(
                        [&](auto& m) { begin_stop(m.force, m.patience_ms, "shutdown from node 0"); });
                case msg::Type::client_relay:  // a reply or event for one of our clients
                    return decoded.template operator()<msg::ClientRelay>([&](auto& m) {
                        auto c = clients_.find(m.client);
                        if (c == clients_.end()) return;
                        c->second.conn->send_raw(m.type, m.body);
                        if (c->second.conn->queued_bytes() > kRelayHighWater && links_[0].peer &&
                            !links_[0].peer->reading_paused()) {
                            // A client that does not read its pipes holds up node 0's link
                            // until it drains (resume_parked_output), as a full pipe would.
                            links_[0].peer->pause_reading();
                            paused_links_.push_back(links_[0].peer);
                        }
                    });
                case msg::Type::heartbeat: return;
                default: break;
            }
        }
    }
    if (is_head()) {
        // What executors and other nodes tell the global services.
        switch (type) {
            case msg::Type::members_started:
                return decoded.template operator()<msg::MembersStarted>([&](auto& m) { on_members_started(from, m); });
            case msg::Type::members_exited:
                return decoded.template operator()<msg::MembersExited>([&](auto& m) { on_members_exited(from, m); });
            case msg::Type::pmi_abort:
                return decoded.template operator()<msg::PmiAbort>([&](auto& m) { on_pmi_abort(from, m); });
            case msg::Type::stdin_ack:
                return decoded.template operator()<msg::StdinAck>([&](auto& m) { route_stdin_ack(m); });
            case msg::Type::output:
                return decoded.template operator()<msg::Output>([&](auto& m) {
                    if (!route_output(m) && links_[from].peer) {  // its reader is full: stop reading that node
                        links_[from].peer->pause_reading();
                        paused_links_.push_back(links_[from].peer);
                    }
                });
            case msg::Type::client_relay:
                if (from_head) break;
                return decoded.template operator()<msg::ClientRelay>([&](auto& m) {
                    on_client_request(Owner{from, m.client}, wire::Frame{m.type, std::move(m.body)});
                });
            case msg::Type::client_gone:
                return decoded.template operator()<msg::ClientGone>([&](auto& m) { on_owner_gone(Owner{from, m.client}); });
            case msg::Type::node_hello:
                return decoded.template operator()<msg::NodeHello>([&](auto& m) { on_node_hello(from, m); });
            case msg::Type::node_ready:
                links_[from].ready = true;
                for (std::uint32_t k = 1; k < opts_.nnodes; ++k)
                    if (!links_[k].ready) return;
                if (phase_ != Phase::joining) return;
                phase_ = Phase::running;
                join_timer_.cancel();
                spdlog::info("all {} nodes joined", opts_.nnodes);
                return say_hello_to_frontend();
            case msg::Type::shutdown_done:
                links_[from].shutdown_done = true;
                if (phase_ == Phase::finishing) finish_now();
                return;
            case msg::Type::heartbeat: return;
            default: break;
        }
    }
    spdlog::error("node {}: unexpected message '{}' ({}) from node {}", opts_.node_id, msg::type_name(f.type), f.type,
                  from);
}

}  // namespace dragon::agent
