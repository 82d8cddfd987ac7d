// Who may send what to an agent, as data: one table per kind of connection
// (the front end, a local client, another node's agent, a lane), checked in
// one place (dispatch.hpp) before any handler runs, and unit-tested
// (tests/agent/routes_test.cpp). docs/protocol.md lists the same rules.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>

#include "dragon/common/messages.hpp"

namespace dragon::agent {

/// Where a frame came from, as the receiving agent knows it.
enum class Sender : std::uint8_t {
    front_end = 0,  // node 0's control connection
    client = 1,     // a greeted local client (or, at node 0's global services, one relayed from its node)
    self = 2,       // this agent's own services (node 0's executor to its global services)
    head = 3,       // node 0's agent, at node k > 0
    node = 4,       // another node's agent that is not node 0 (at node 0: any other node)
    lane = 5,       // another node's process on its own connection (docs/channels.md, "Lanes")
};

constexpr const char* name_of(Sender s) {
    switch (s) {
        case Sender::front_end: return "the front end";
        case Sender::client: return "a client";
        case Sender::self: return "this agent";
        case Sender::head: return "node 0";
        case Sender::node: return "another node";
        case Sender::lane: return "a lane";
    }
    return "?";
}

/// A set of senders.
class Senders {
public:
    constexpr Senders() = default;
    constexpr Senders(std::initializer_list<Sender> l) {
        for (Sender s : l) bits_ |= bit(s);
    }
    [[nodiscard]] constexpr bool contains(Sender s) const { return (bits_ & bit(s)) != 0; }
    [[nodiscard]] constexpr bool empty() const { return bits_ == 0; }

private:
    static constexpr std::uint8_t bit(Sender s) { return static_cast<std::uint8_t>(1U << static_cast<unsigned>(s)); }
    std::uint8_t bits_ = 0;
};

/// Which agents take a message: every agent, node 0 only, or the others only.
enum class Role : std::uint8_t { every, head, others };

struct Route {
    msg::Type type;
    Senders senders;
    Role role = Role::every;
};

/// Frames from the front end, on node 0's control connection.
inline constexpr Route kFrontEndRoutes[] = {
    {msg::Type::group_start, {Sender::front_end}, Role::head},
    {msg::Type::stdin_data, {Sender::front_end}, Role::head},
    {msg::Type::shutdown, {Sender::front_end}, Role::head},
};

/// Frames from a greeted local client, at its own agent.
inline constexpr Route kClientRoutes[] = {
    {msg::Type::proc_query, {Sender::client}},
    // Groups are the global services' business: node 0 answers, wherever the client is.
    {msg::Type::group_start, {Sender::client}},
    {msg::Type::group_signal, {Sender::client}},
    {msg::Type::group_stop, {Sender::client}},
    {msg::Type::group_close, {Sender::client}},
    {msg::Type::group_query, {Sender::client}},
    {msg::Type::machine_query, {Sender::client}},
    {msg::Type::stdin_data, {Sender::client}},
    // Its operations on other nodes' channels (the channel gateway).
    {msg::Type::chan_send, {Sender::client}},
    {msg::Type::chan_recv, {Sender::client}},
    {msg::Type::chan_count, {Sender::client}},
    {msg::Type::chan_sync, {Sender::client}},
};

/// A client's group request at node 0's global services (from node 0's own
/// clients, or relayed by the client's agent in a client_relay).
inline constexpr Route kOwnerRoutes[] = {
    {msg::Type::group_start, {Sender::client}, Role::head},
    {msg::Type::stdin_data, {Sender::client}, Role::head},
    {msg::Type::group_query, {Sender::client}, Role::head},
    {msg::Type::machine_query, {Sender::client}, Role::head},
    {msg::Type::group_signal, {Sender::client}, Role::head},
    {msg::Type::group_stop, {Sender::client}, Role::head},
    {msg::Type::group_close, {Sender::client}, Role::head},
};

inline constexpr Senders kAnyNode{Sender::self, Sender::head, Sender::node};
inline constexpr Senders kFromHead{Sender::self, Sender::head};  // node 0, including node 0's own executor
inline constexpr Senders kToHead{Sender::self, Sender::node};    // at node 0: any node, itself included

/// Frames between agents (over the links, or posted by an agent to itself).
inline constexpr Route kNodeRoutes[] = {
    {msg::Type::heartbeat, {Sender::head, Sender::node}},
    // Channel operations between any two nodes (the channel gateway).
    {msg::Type::remote_send, kAnyNode},
    {msg::Type::remote_recv, kAnyNode},
    {msg::Type::remote_count, kAnyNode},
    {msg::Type::remote_sync, kAnyNode},
    {msg::Type::remote_reply, kAnyNode},
    {msg::Type::remote_cancel, kAnyNode},
    // Between the nodes of a PMI job.
    {msg::Type::pmi_fence, kAnyNode},
    {msg::Type::pmix_dmodex_request, kAnyNode},
    {msg::Type::pmix_dmodex_reply, kAnyNode},
    // What node 0 tells every executor, its own included.
    {msg::Type::exec_members, kFromHead},
    {msg::Type::signal_members, kFromHead},
    {msg::Type::respawn_member, kFromHead},
    {msg::Type::forget_group, kFromHead},
    {msg::Type::stdin_data, kFromHead},
    // What node 0 tells the other agents.
    {msg::Type::node_table, {Sender::head}, Role::others},
    {msg::Type::shutdown, {Sender::head}, Role::others},
    {msg::Type::client_relay, {Sender::head}, Role::others},  // a reply or event for a local client
    // What executors and other agents tell the global services.
    {msg::Type::members_started, kToHead, Role::head},
    {msg::Type::members_exited, kToHead, Role::head},
    {msg::Type::pmi_abort, kToHead, Role::head},
    {msg::Type::stdin_ack, kToHead, Role::head},
    {msg::Type::output, kToHead, Role::head},
    {msg::Type::client_relay, {Sender::node}, Role::head},  // a request of a client of that node
    {msg::Type::client_gone, {Sender::node}, Role::head},
    {msg::Type::node_hello, {Sender::node}, Role::head},
    {msg::Type::node_ready, {Sender::node}, Role::head},
    {msg::Type::shutdown_done, {Sender::node}, Role::head},
};

/// Frames on a lane, once its lane_hello was taken.
inline constexpr Route kLaneRoutes[] = {
    {msg::Type::remote_send, {Sender::lane}},
    {msg::Type::remote_recv, {Sender::lane}},
    {msg::Type::remote_count, {Sender::lane}},
    {msg::Type::remote_sync, {Sender::lane}},
    {msg::Type::remote_cancel, {Sender::lane}},
};

/// Whether an agent in `role` (head: node 0) takes a route at all.
constexpr bool takes(Role route, bool head) {
    return route == Role::every || (route == Role::head) == head;
}

/// The route of `type` in `table` for an agent of that role, or null.
constexpr const Route* find_route(std::span<const Route> table, std::uint16_t type, bool head) {
    for (const Route& r : table)
        if (static_cast<std::uint16_t>(r.type) == type && takes(r.role, head)) return &r;
    return nullptr;
}

}  // namespace dragon::agent
