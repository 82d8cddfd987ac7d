// Message dispatch as tables: a handler per message type, bound to the
// route that says who may send it (routes.hpp). A frame whose type has no
// route here, whose sender may not send it, or whose body does not decode is
// refused here, in one place, before any handler runs.
#pragma once

#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "dragon/common/messages.hpp"
#include "routes.hpp"

namespace dragon::agent {

/// One kind of connection's table. Ctx is what the handlers are told of the
/// sender besides its kind (a node id, a client id, an owner).
template <class Ctx>
class Dispatcher {
public:
    using Handler = std::function<void(const Ctx&, wire::Frame&&)>;

    /// A table for an agent of that role (head: node 0) over `routes`.
    Dispatcher(std::span<const Route> routes, bool head) : routes_(routes), head_(head) {}

    /// The handler of M, called with the decoded message. M must have a route
    /// for this role: binding one without is a programming error.
    template <class M, class F>
    void on(F&& fn) {
        bind(M::kType, [fn = std::forward<F>(fn)](const Ctx& c, wire::Frame&& f) -> Status {
            auto m = msg::decode_as<M>(f);
            if (!m) return std::move(m).error();
            fn(c, std::move(*m));
            return ok();
        });
    }

    /// A handler that takes the frame as it came (it relays it, or decodes it
    /// itself to answer a bad body in its own way).
    void on_frame(msg::Type type, Handler fn) {
        bind(type, [fn = std::move(fn)](const Ctx& c, wire::Frame&& f) -> Status {
            fn(c, std::move(f));
            return ok();
        });
    }

    /// The routes of this role that have no handler (empty once the agent has
    /// bound them all; checked when it starts).
    [[nodiscard]] std::vector<msg::Type> unhandled() const {
        std::vector<msg::Type> out;
        for (const Route& r : routes_) {
            if (!takes(r.role, head_)) continue;
            const auto t = static_cast<std::size_t>(r.type);
            if (t >= entries_.size() || !entries_[t].run) out.push_back(r.type);
        }
        return out;
    }

    /// Whether `sender` may send a frame of `type` to this agent.
    [[nodiscard]] bool allows(std::uint16_t type, Sender sender) const {
        const Route* r = find_route(routes_, type, head_);
        return r != nullptr && r->senders.contains(sender);
    }

    /// Runs the frame's handler. Errc::protocol, naming the message, when its
    /// type has no route here, `sender` may not send it, or its body does not
    /// decode; the handler has not run then.
    Status dispatch(Sender sender, const Ctx& ctx, wire::Frame&& f) const {
        const Route* r = find_route(routes_, f.type, head_);
        if (r == nullptr || f.type >= entries_.size() || !entries_[f.type].run)
            return make_error(Errc::protocol, "unexpected message '{}' ({})", msg::type_name(f.type), f.type);
        if (!r->senders.contains(sender))
            return make_error(Errc::protocol, "'{}' ({}) may not come from {}", msg::type_name(f.type), f.type,
                              name_of(sender));
        const std::uint16_t type = f.type;
        if (auto st = entries_[type].run(ctx, std::move(f)); !st)
            return make_error(Errc::protocol, "bad '{}' frame: {}", msg::type_name(type), st.error().message());
        return ok();
    }

private:
    struct Entry {
        std::function<Status(const Ctx&, wire::Frame&&)> run;
    };

    void bind(msg::Type type, std::function<Status(const Ctx&, wire::Frame&&)> run) {
        if (find_route(routes_, static_cast<std::uint16_t>(type), head_) == nullptr)
            throw std::logic_error(fmt::format("no route for '{}' here: add it to routes.hpp first",
                                               msg::type_name(static_cast<std::uint16_t>(type))));
        const auto t = static_cast<std::size_t>(type);
        if (entries_.size() <= t) entries_.resize(t + 1);
        if (entries_[t].run)
            throw std::logic_error(fmt::format("two handlers for '{}'", msg::type_name(static_cast<std::uint16_t>(type))));
        entries_[t].run = std::move(run);
    }

    std::span<const Route> routes_;
    bool head_;
    std::vector<Entry> entries_;  // by type number
};

}  // namespace dragon::agent
