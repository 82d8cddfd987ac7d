// The handshake over a socket (both roles) and connect(), the initiating side.
#include <netinet/in.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "dragon/common/sys.hpp"
#include "handshake_io.hpp"

namespace dragon::transport::tcp {

std::string to_string(const asio::ip::tcp::endpoint& ep) {
    if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
    return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

Result<asio::ip::address> parse_address(std::string_view address) {
    asio::error_code ec;
    auto addr = asio::ip::make_address(std::string(address), ec);
    if (ec) return make_error(Errc::invalid_argument, "'{}' is not an IP address: {}", address, ec.message());
    return addr;
}

Result<asio::ip::tcp::socket> open_socket(asio::io_context& io, const asio::ip::tcp& protocol) {
    auto fd = sys::call("socket",
                        [&] { return ::socket(protocol.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); });
    if (!fd) return std::move(fd).error();
    asio::ip::tcp::socket s(io);
    asio::error_code ec;
    s.assign(protocol, *fd, ec);
    if (ec) {
        ::close(*fd);
        return make_error(Errc::system, "socket: {}", ec.message());
    }
    return s;
}

HandshakeIo::HandshakeIo(asio::ip::tcp::socket socket, Handshake hs, Options opts, std::string peer_name, Done done)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      hs_(std::move(hs)),
      opts_(std::move(opts)),
      peer_name_(std::move(peer_name)),
      done_(std::move(done)) {}

void HandshakeIo::arm_timer() {
    if (timer_armed_) return;
    timer_armed_ = true;
    timer_.expires_after(opts_.handshake_timeout);
    timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
        if (ec || self->finished_) return;
        if (self->rejecting_) {  // the peer does not even read our reject
            self->finish(std::move(*self->reject_error_));
            return;
        }
        self->fail(make_error(Errc::timeout, "no complete handshake within {} ms",
                              self->opts_.handshake_timeout.count()),
                   false);
    });
}

void HandshakeIo::start() {
    arm_timer();
    run();
}

void HandshakeIo::connect_to(const asio::ip::tcp::endpoint& ep) {
    arm_timer();
    socket_.async_connect(ep, [self = shared_from_this()](const asio::error_code& ec) {
        if (self->over()) return;
        if (ec) {
            self->fail(Error(ec == asio::error::connection_refused ? Errc::closed : Errc::system,
                             fmt::format("connect: {}", ec.message())),
                       false);
            return;
        }
        self->run();
    });
}

void HandshakeIo::cancel() {
    if (finished_) return;
    fail(Error(Errc::closed, "abandoned: the listener closed"), false, false);
}

void HandshakeIo::run() {
    asio::error_code ec;
    socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    std::string first = hs_.initial_output();
    if (first.empty()) read_header();
    else write(std::move(first), [this] { read_header(); });
}

void HandshakeIo::write(std::string bytes, std::function<void()> next) {
    out_ = std::move(bytes);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), next = std::move(next)](const asio::error_code& ec, std::size_t) {
                          if (self->over()) return;
                          if (ec) {
                              self->fail(Error(Errc::closed, fmt::format("write: {}", ec.message())), false);
                              return;
                          }
                          next();
                      });
}

void HandshakeIo::read_header() {
    // Exactly one header, then exactly its body: nothing past the handshake's
    // last frame is read here, so the Peer starts on a frame boundary.
    asio::async_read(socket_, asio::buffer(hdr_), [self = shared_from_this()](const asio::error_code& ec, std::size_t) {
        if (self->over()) return;
        if (ec) {
            self->fail(Error(Errc::closed, ec == asio::error::eof
                                               ? std::string("the peer closed the connection during the handshake")
                                               : fmt::format("read: {}", ec.message())),
                       false);
            return;
        }
        auto h = parse_frame_header(self->hdr_.data(), kHandshakeMaxBody);
        if (!h) {
            self->fail(std::move(h).error(), false);
            return;
        }
        self->frame_.type = h->type;
        self->frame_.body.assign(h->length, '\0');
        if (h->length == 0) {
            self->on_body();
            return;
        }
        asio::async_read(self->socket_, asio::buffer(self->frame_.body),
                         [self](const asio::error_code& ec2, std::size_t) {
                             if (self->over()) return;
                             if (ec2) {
                                 self->fail(Error(Errc::closed, "the peer closed the connection mid-frame during "
                                                                "the handshake"),
                                            false);
                                 return;
                             }
                             self->on_body();
                         });
    });
}

void HandshakeIo::on_body() {
    auto step = hs_.on_frame(frame_);
    if (!step) {
        // Tell a dragon peer why (wrong secret, node id, version); a stream
        // of garbage or the peer's own refusal gets no answer.
        const bool reply = step.error().code() != Errc::protocol &&
                           frame_.type != static_cast<std::uint16_t>(MsgType::peer_reject);
        fail(std::move(step).error(), reply);
        return;
    }
    if (step->done) {
        if (step->out.empty()) succeed();
        else write(std::move(step->out), [this] { succeed(); });
        return;
    }
    if (step->out.empty()) read_header();
    else write(std::move(step->out), [this] { read_header(); });
}

void HandshakeIo::succeed() {
    auto peer = std::make_shared<Peer>(Peer::Private{}, std::move(socket_), hs_.peer_node_id().value_or(0), opts_);
    finish(std::shared_ptr<Peer>(std::move(peer)));
}

void HandshakeIo::fail(Error e, bool send_reject, bool log) {
    if (over()) return;
    const char* role = hs_.role() == Role::initiator ? "connecting to" : "accepting";
    e = std::move(e).context(fmt::format("transport: {} {}", role, peer_name_));
    // The dialling side hands the error to its caller, who knows whether it
    // matters (a peer not listening yet is retried); the accepting side is
    // the only one that hears of a stranger.
    if (log && hs_.role() == Role::initiator) spdlog::debug("{}", e.message());
    else if (log) spdlog::warn("{}", e.message());
    if (send_reject) {
        // Best effort, bounded by the timer still armed: then close.
        rejecting_ = true;
        reject_error_ = e;
        out_ = Handshake::reject_frame(e);
        asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](const asio::error_code&, std::size_t) {
            if (!self->finished_) self->finish(std::move(*self->reject_error_));
        });
        return;
    }
    finish(std::move(e));
}

void HandshakeIo::finish(Result<std::shared_ptr<Peer>> r) {
    if (finished_) return;
    finished_ = true;
    timer_.cancel();
    if (!r) {
        asio::error_code ec;
        socket_.close(ec);
    }
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(r));
}

void connect(asio::io_context& io, std::string_view address, std::uint16_t port, const RunSecret& secret,
             std::uint32_t my_node_id, std::uint32_t expected_peer_node_id, ConnectHandler on_done, Options opts) {
    const std::string what = fmt::format("node {} at {}:{}", expected_peer_node_id, address, port);
    auto prepared = [&]() -> Result<std::shared_ptr<HandshakeIo>> {
        auto addr = DRAGON_TRY(parse_address(address));
        const asio::ip::tcp::endpoint ep(addr, port);
        auto sock = DRAGON_TRY(open_socket(io, ep.protocol()));
        if (!opts.bind_address.empty()) {
            auto local = DRAGON_TRY(parse_address(opts.bind_address));
            asio::error_code ec;
            sock.bind(asio::ip::tcp::endpoint(local, 0), ec);
            if (ec) return make_error(Errc::system, "binding to {}: {}", opts.bind_address, ec.message());
        }
        auto hs = DRAGON_TRY(Handshake::initiator(secret, my_node_id, expected_peer_node_id));
        return std::make_shared<HandshakeIo>(std::move(sock), std::move(hs), std::move(opts), what,
                                             std::move(on_done));
    }();
    if (!prepared) {
        // Keep the contract: on_done runs later, never inside connect().
        Error e = std::move(prepared).error().context(fmt::format("transport: connecting to {}", what));
        spdlog::warn("{}", e.message());
        asio::post(io, [on_done = std::move(on_done), e = std::move(e)]() mutable { on_done(std::move(e)); });
        return;
    }
    auto addr = parse_address(address);
    (*prepared)->connect_to(asio::ip::tcp::endpoint(*addr, port));
}

}  // namespace dragon::transport::tcp
