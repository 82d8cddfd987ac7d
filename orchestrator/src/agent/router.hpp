// The one way the agent's services reach anything outside themselves: send
// a message to a node's agent (this one's own included) or to an owner of
// groups, post work to the loop, and read what the links know of the nodes.
// The agent's shell implements it; unit tests put a fake behind it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "dragon/common/framing.hpp"

namespace dragon::agent {

/// Who owns a group: the front end (node 0, client 0) or a local client of
/// some node's agent.
struct Owner {
    std::uint32_t node = 0;
    std::uint64_t client = 0;  // 0: the front end
    bool operator==(const Owner&) const = default;
};
inline constexpr Owner kFrontEnd{0, 0};

/// What became of a message handed to the router.
enum class Delivery : std::uint8_t {
    ok,                // on its way
    above_high_water,  // on its way, but its path is full: hold back until it drains
    dropped,           // nowhere to go (the node or the owner is gone)
};

class Router {
public:
    virtual ~Router() = default;

    [[nodiscard]] virtual std::uint32_t node_id() const = 0;
    [[nodiscard]] virtual std::uint32_t nnodes() const = 0;
    /// The run is up and not stopping: new groups, starts and restarts are taken.
    [[nodiscard]] virtual bool accepting_work() const = 0;

    /// To node `node`'s agent; to this node, onto its own dispatcher on a
    /// later loop turn (never inside this call).
    virtual Delivery send_frame(std::uint32_t node, std::uint16_t type, std::string body) = 0;
    /// To an owner of groups: the front end, or a client of any node (relayed by its agent).
    virtual Delivery send_frame_to_owner(Owner who, std::uint16_t type, std::string body) = 0;
    /// Stops reading node `node`'s messages until the owners' connections
    /// drain (its output's reader is full).
    virtual void hold_back(std::uint32_t node) = 0;
    /// Runs fn on the loop, after the current handler.
    virtual void post(std::function<void()> fn) = 0;

    /// The node was declared lost (it gets no new work, and is never back).
    [[nodiscard]] virtual bool node_lost(std::uint32_t node) const = 0;
    /// A message sent to the node now can arrive: it is this node, or it has a live link.
    [[nodiscard]] virtual bool node_reachable(std::uint32_t node) const = 0;
    /// The node's hostname as it said when it joined ("?" when unknown).
    [[nodiscard]] virtual std::string node_hostname(std::uint32_t node) const = 0;

    template <class M>
    Delivery send(std::uint32_t node, const M& m) {
        return send_frame(node, static_cast<std::uint16_t>(M::kType), wire::body_of(m));
    }
    template <class M>
    Delivery send_to_owner(Owner who, const M& m) {
        return send_frame_to_owner(who, static_cast<std::uint16_t>(M::kType), wire::body_of(m));
    }
};

}  // namespace dragon::agent
