// A Router for the agent's services under test: it records what they send
// (to nodes and to owners), runs what they post when asked, and can play a
// lost node or a full reader. No agent, no sockets.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "agent/router.hpp"
#include "dragon/common/messages.hpp"

namespace dragon::agent {

struct Sent {
    std::uint32_t node;  // for owner messages: the owner's node
    Owner owner;
    bool to_owner;
    wire::Frame frame;
};

class FakeRouter final : public Router {
public:
    explicit FakeRouter(std::uint32_t nnodes, std::uint32_t self = 0) : nnodes_(nnodes), self_(self), lost_(nnodes, false) {}
    std::uint32_t node_id() const override { return self_; }
    std::uint32_t nnodes() const override { return nnodes_; }
    bool accepting_work() const override { return accepting; }
    Delivery send_frame(std::uint32_t node, std::uint16_t type, std::string body) override {
        sent.push_back({node, {}, false, {type, std::move(body)}});
        return type == static_cast<std::uint16_t>(msg::Type::output) && output_full ? Delivery::above_high_water
                                                                                 : Delivery::ok;
    }
    Delivery send_frame_to_owner(Owner who, std::uint16_t type, std::string body) override {
        sent.push_back({who.node, who, true, {type, std::move(body)}});
        return owners_full ? Delivery::above_high_water : Delivery::ok;
    }
    void hold_back(std::uint32_t node) override { held.push_back(node); }
    void post(std::function<void()> fn) override { posted.push_back(std::move(fn)); }
    bool node_lost(std::uint32_t node) const override { return lost_.at(node); }
    bool node_reachable(std::uint32_t node) const override { return !lost_.at(node); }
    std::string node_hostname(std::uint32_t node) const override { return "host" + std::to_string(node); }

    void lose(std::uint32_t node) { lost_.at(node) = true; }
    void run_posted() {
        while (!posted.empty()) {
            auto fn = std::move(posted.front());
            posted.pop_front();
            fn();
        }
    }
    /// The messages of type M sent so far (to nodes or owners), decoded, and forgets them.
    template <class M>
    std::vector<std::pair<Sent, M>> take() {
        std::vector<std::pair<Sent, M>> out;
        std::erase_if(sent, [&](const Sent& s) {
            if (s.frame.type != static_cast<std::uint16_t>(M::kType)) return false;
            auto m = msg::decode_as<M>(s.frame);
            EXPECT_TRUE(m) << m.error().message();
            if (m) out.emplace_back(s, std::move(*m));
            return true;
        });
        return out;
    }

    bool accepting = true;
    bool owners_full = false;
    bool output_full = false;  // output sent to a node is above high water (its reader is full)
    std::vector<Sent> sent;
    std::vector<std::uint32_t> held;
    std::deque<std::function<void()>> posted;

private:
    std::uint32_t nnodes_;
    std::uint32_t self_;
    std::vector<bool> lost_;
};

}  // namespace dragon::agent
