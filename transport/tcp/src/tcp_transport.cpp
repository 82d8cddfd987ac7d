// The TCP transport behind the Transport interface (link.hpp): a Listener
// and connect() with the run's secret, and create_transport() choosing a
// transport by name.
#include <fmt/format.h>

#include <optional>

#include "dragon/transport/link.hpp"
#include "dragon/transport/tcp.hpp"

namespace dragon::transport {
namespace tcp {
namespace {

class TcpTransport final : public Transport {
public:
    TcpTransport(asio::io_context& io, const RunSecret& secret, std::uint32_t node_id, std::string bind_address)
        : io_(io), secret_(secret), node_id_(node_id), bind_address_(std::move(bind_address)) {}

    [[nodiscard]] std::string_view name() const override { return "tcp"; }

    Status listen(std::string_view address, int listen_fd, LinkHandler on_link) override {
        auto on_peer = [on_link = std::move(on_link)](std::shared_ptr<Peer> p) { on_link(std::move(p)); };
        auto l = listen_fd >= 0 ? Listener::adopt(io_, sys::UniqueFd(listen_fd), secret_, node_id_, std::move(on_peer))
                                : Listener::create(io_, address, 0, secret_, node_id_, std::move(on_peer));
        if (!l) return std::move(l).error();
        listener_ = std::move(*l);
        // Links leave from the address they are taken on, unless told otherwise.
        if (bind_address_.empty()) bind_address_ = local_endpoint().address;
        return ok();
    }

    [[nodiscard]] Endpoint local_endpoint() const override {
        if (!listener_) return {};
        const auto ep = listener_->local_endpoint();
        return {ep.address().to_string(), ep.port()};
    }

    void stop_listening() override { listener_.reset(); }

    void connect(const Endpoint& at, std::uint32_t node, ConnectHandler done) override {
        Options o;
        o.bind_address = bind_address_;
        tcp::connect(io_, at.address, at.port, secret_, node_id_, node,
                     [done = std::move(done)](Result<std::shared_ptr<Peer>> r) {
                         if (!r) return done(std::move(r).error());
                         done(std::shared_ptr<Link>(std::move(*r)));
                     },
                     o);
    }

private:
    asio::io_context& io_;
    const RunSecret& secret_;
    std::uint32_t node_id_;
    std::string bind_address_;
    std::optional<Listener> listener_;
};

}  // namespace
}  // namespace tcp

Result<std::unique_ptr<Transport>> create_transport(std::string_view name, asio::io_context& io,
                                                    const RunSecret& secret, std::uint32_t node_id,
                                                    std::string bind_address) {
    if (name == "tcp")
        return std::unique_ptr<Transport>(
            std::make_unique<tcp::TcpTransport>(io, secret, node_id, std::move(bind_address)));
    return make_error(Errc::invalid_argument, "transport '{}' is not available (tcp)", name);
}

}  // namespace dragon::transport
