// The agent's dispatch tables: which handler takes each routed message
// (routes.hpp says who may send it), and the entry points that feed each
// kind of connection's frames to its table.
#include <spdlog/spdlog.h>

#include "agent.hpp"

namespace dragon::agent {

namespace {
constexpr std::size_t kRelayHighWater = 8U << 20;
constexpr std::size_t kOwnerHighWater = 8U << 20;
}  // namespace

// ---- the Router ---------------------------------------------------------------

Delivery Agent::send_frame(std::uint32_t node, std::uint16_t type, std::string body) {
    if (node == opts_.node_id) {
        post_to_self(wire::Frame{type, std::move(body)});
        return self_held_back_ ? Delivery::above_high_water : Delivery::ok;
    }
    return links_->send_frame(node, type, body);
}

Delivery Agent::send_frame_to_owner(Owner who, std::uint16_t type, std::string body) {
    if (who.node != opts_.node_id) return send(who.node, msg::ClientRelay{who.client, type, std::move(body)});
    auto* c = local_owner_conn(who.client);
    if (c == nullptr) return Delivery::dropped;
    c->send_raw(type, body);
    return c->queued_bytes() > kOwnerHighWater ? Delivery::above_high_water : Delivery::ok;
}

void Agent::hold_back(std::uint32_t node) {
    // Until an owner's connection drains (resume_parked_output).
    if (node == opts_.node_id) {
        self_held_back_ = true;
        return;
    }
    links_->hold_back(node);
}

void Agent::post(std::function<void()> fn) { asio::post(io_, std::move(fn)); }

bool Agent::node_lost(std::uint32_t node) const { return links_->lost(node); }

bool Agent::node_reachable(std::uint32_t node) const {
    return node == opts_.node_id || links_->link(node) != nullptr;
}

std::string Agent::node_hostname(std::uint32_t node) const {
    if (node == opts_.node_id) return hostname_;
    std::string h = links_->hostname(node);
    return h.empty() ? "?" : h;
}

rt::UnixConnection* Agent::local_owner_conn(std::uint64_t client) {
    if (client == 0) return frontend_ && !frontend_lost_ ? frontend_.get() : nullptr;
    auto it = clients_.find(client);
    return it == clients_.end() ? nullptr : it->second.conn.get();
}

void Agent::bind_routes() {
    // ---- the front end (node 0) ----
    if (is_head()) {
        global_->bind(frontend_routes_, owner_routes_, node_routes_);
        frontend_routes_.on<msg::Shutdown>([this](Owner, msg::Shutdown&& m) {
            begin_stop(m.force, m.patience_ms, m.force ? "forced shutdown" : "shutdown");
        });
    }

    // ---- local clients ----
    client_routes_.on<msg::ProcQuery>([this](std::uint64_t id, msg::ProcQuery&&) {
        clients_.at(id).conn->send(executor_->process_table());
    });
    auto to_global = [this](std::uint64_t id, wire::Frame&& f) {
        // Checked here, so a bad request is refused by its own agent, not relayed.
        if (auto st = msg::validate(f); !st) return refuse_client(id, Errc::protocol, st.error().message());
        if (is_head()) return on_client_request(Owner{0, id}, std::move(f));
        if (links_->link(0) == nullptr || !accepting_work())
            return clients_.at(id).conn->send(msg::ErrorReply{static_cast<std::uint16_t>(Errc::closed),
                                                              "node 0 is not reachable: the run is ending"});
        send(0, msg::ClientRelay{id, f.type, std::move(f.body)});
    };
    for (auto t : {msg::Type::group_start, msg::Type::group_signal, msg::Type::group_stop, msg::Type::group_close,
                   msg::Type::group_query, msg::Type::machine_query, msg::Type::stdin_data})
        client_routes_.on_frame(t, to_global);
    gateway_->bind(client_routes_, node_routes_);  // channel operations of clients, other nodes and lanes

    // ---- other agents (and this one's own services) ----
    links_->bind(node_routes_);  // heartbeats and the join
    executor_->bind(node_routes_);  // node 0's orders, and PMI between nodes
    if (!is_head()) {
        node_routes_.on<msg::Shutdown>([this](std::uint32_t, msg::Shutdown&& m) {
            begin_stop(m.force, m.patience_ms, "shutdown from node 0");
        });
        node_routes_.on<msg::ClientRelay>([this](std::uint32_t, msg::ClientRelay&& m) { relay_to_client(m); });
    } else {
        // (global_->bind took what the executors report)
        node_routes_.on<msg::ClientRelay>([this](std::uint32_t from, msg::ClientRelay&& m) {
            on_client_request(Owner{from, m.client}, wire::Frame{m.type, std::move(m.body)});
        });
    }
}

Status Agent::check_routes() const {
    std::vector<msg::Type> missing;
    for (const auto& t : {frontend_routes_.unhandled(), client_routes_.unhandled(), owner_routes_.unhandled(),
                          node_routes_.unhandled(), gateway_->lane_routes().unhandled()})
        missing.insert(missing.end(), t.begin(), t.end());
    if (missing.empty()) return ok();
    std::string names;
    for (auto t : missing) names += fmt::format("{}'{}'", names.empty() ? "" : ", ", msg::type_name(static_cast<std::uint16_t>(t)));
    return make_error(Errc::internal, "routed messages without a handler: {}", names);
}

// ---- entry points ---------------------------------------------------------------

void Agent::on_frontend_frame(wire::Frame&& f) {
    const std::uint16_t type = f.type;
    if (auto st = frontend_routes_.dispatch(Sender::front_end, Owner{0, 0}, std::move(f)); !st) {
        spdlog::error("from the front end: {}", st.error().message());
        // A shutdown that cannot be read is still a shutdown.
        if (type == static_cast<std::uint16_t>(msg::Type::shutdown))
            begin_stop(false, opts_.config.patience_ms(), "bad shutdown frame");
    }
}

void Agent::on_node_frame(std::uint32_t from, wire::Frame&& f) {
    if (auto st = node_routes_.dispatch(node_sender(from), from, std::move(f)); !st)
        spdlog::error("node {}: from node {}: {}", opts_.node_id, from, st.error().message());
}

void Agent::on_client_request(Owner who, wire::Frame&& f) {
    if (auto st = owner_routes_.dispatch(Sender::client, who, std::move(f)); !st) {
        spdlog::warn("client {} of node {}: {}", who.client, who.node, st.error().message());
        send_to_owner(who, msg::ErrorReply{static_cast<std::uint16_t>(st.error().code()), st.error().message()});
    }
}

void Agent::refuse_client(std::uint64_t id, Errc code, std::string why) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    auto c = it->second.conn;
    spdlog::warn("{}: {}", c->name(), why);
    c->send(msg::ErrorReply{static_cast<std::uint16_t>(code), std::move(why)});
    c->close_after_flush([this, id] { on_client_closed(id); });  // its groups are orphaned as on any close
}

void Agent::relay_to_client(const msg::ClientRelay& m) {
    auto c = clients_.find(m.client);
    if (c == clients_.end()) return;
    c->second.conn->send_raw(m.type, m.body);
    // A client that does not read its pipes holds up node 0's link until
    // it drains, as a full pipe would.
    if (c->second.conn->queued_bytes() > kRelayHighWater) hold_back(0);
}

}  // namespace dragon::agent
