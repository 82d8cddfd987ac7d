// The accepting side: close-on-exec accepts, bounded concurrent handshakes,
// failures logged and dropped while the listener keeps serving.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>

#include <spdlog/spdlog.h>

#include "dragon/common/sys.hpp"
#include "handshake_io.hpp"

namespace dragon::transport::tcp {

struct Listener::Core : std::enable_shared_from_this<Core> {
    Core(asio::io_context& io_, RunSecret secret_, std::uint32_t node_id_, PeerHandler on_peer_, Options opts_)
        : io(io_),
          acceptor(io_),
          retry_timer(io_),
          secret(std::move(secret_)),
          node_id(node_id_),
          on_peer(std::move(on_peer_)),
          opts(std::move(opts_)) {}

    void wait_accept();
    void on_readable(const asio::error_code& ec);
    void handshake(asio::ip::tcp::socket sock, const asio::ip::tcp::endpoint& from);
    void close();

    asio::io_context& io;
    asio::ip::tcp::acceptor acceptor;
    asio::steady_timer retry_timer;
    RunSecret secret;
    std::uint32_t node_id;
    PeerHandler on_peer;
    Options opts;
    std::map<HandshakeIo*, std::weak_ptr<HandshakeIo>> pending;
    bool closed = false;
};

void Listener::Core::wait_accept() {
    if (closed) return;
    acceptor.async_wait(asio::ip::tcp::acceptor::wait_read,
                        [self = shared_from_this()](const asio::error_code& ec) { self->on_readable(ec); });
}

void Listener::Core::on_readable(const asio::error_code& ec) {
    if (closed || ec == asio::error::operation_aborted) return;
    if (ec) {
        spdlog::error("transport: listener on {}: wait: {}", to_string(acceptor.local_endpoint()), ec.message());
        return;
    }
    // accept4 rather than Asio's accept: the socket is close-on-exec from birth.
    for (int i = 0; i < 64 && !closed; ++i) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        const int fd = ::accept4(acceptor.native_handle(), reinterpret_cast<sockaddr*>(&ss), &len,
                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            const int err = errno;
            if (err == EAGAIN) break;  // (EWOULDBLOCK is the same value on Linux)
            if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
            // Out of fds (or worse): say so once per episode, and wait a
            // little instead of spinning on a listening socket that stays readable.
            spdlog::warn("transport: listener on {}: {}", to_string(acceptor.local_endpoint()),
                         sys::error_from_errno("accept", err).message());
            retry_timer.expires_after(std::chrono::milliseconds(100));
            retry_timer.async_wait([self = shared_from_this()](const asio::error_code& tec) {
                if (!tec) self->wait_accept();
            });
            return;
        }
        asio::ip::tcp::endpoint from;
        std::memcpy(from.data(), &ss, std::min<std::size_t>(len, from.capacity()));
        from.resize(len);
        asio::ip::tcp::socket sock(io);
        asio::error_code aec;
        sock.assign(from.protocol(), fd, aec);
        if (aec) {
            ::close(fd);
            continue;
        }
        if (pending.size() >= opts.max_pending_handshakes) {
            spdlog::warn("transport: refusing {}: {} handshakes already in progress", to_string(from),
                         pending.size());
            continue;  // sock closes here
        }
        handshake(std::move(sock), from);
    }
    wait_accept();
}

void Listener::Core::handshake(asio::ip::tcp::socket sock, const asio::ip::tcp::endpoint& from) {
    auto hs = Handshake::acceptor(secret, node_id);
    if (!hs) {
        spdlog::error("transport: accepting {}: {}", to_string(from), hs.error().message());
        return;
    }
    std::weak_ptr<Core> weak = weak_from_this();
    auto io_ptr = std::make_shared<HandshakeIo*>(nullptr);
    auto session = std::make_shared<HandshakeIo>(
        std::move(sock), std::move(hs).value(), opts, to_string(from),
        [weak, io_ptr](Result<std::shared_ptr<Peer>> r) {
            auto self = weak.lock();
            if (!self) return;
            self->pending.erase(*io_ptr);
            if (!r || self->closed) return;  // failures were logged where understood
            if (self->on_peer) self->on_peer(std::move(r).value());
        });
    *io_ptr = session.get();
    pending.emplace(session.get(), session);
    session->start();
}

void Listener::Core::close() {
    if (closed) return;
    closed = true;
    asio::error_code ec;
    acceptor.close(ec);
    retry_timer.cancel();
    auto abandoned = std::move(pending);
    pending.clear();
    for (auto& [ptr, weak] : abandoned)
        if (auto s = weak.lock()) s->cancel();
}

Result<Listener> Listener::create(asio::io_context& io, std::string_view address, std::uint16_t port,
                                  const RunSecret& secret, std::uint32_t node_id, PeerHandler on_peer, Options opts) {
    auto addr = parse_address(address);
    if (!addr) return std::move(addr).error().context("transport: listen address");
    if (addr->is_unspecified() && !opts.allow_wildcard_address)
        return make_error(Errc::invalid_argument,
                          "transport: refusing to listen on the wildcard address {}: give this node's own address",
                          address);
    if (opts.low_water > opts.high_water)
        return make_error(Errc::invalid_argument, "transport: low water ({}) above high water ({})", opts.low_water,
                          opts.high_water);
    const asio::ip::tcp::endpoint ep(*addr, port);
    auto core = std::make_shared<Core>(io, secret, node_id, std::move(on_peer), std::move(opts));
    auto fd = sys::call("socket", [&] {
        return ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    });
    if (!fd) return std::move(fd).error().context("transport: listening");
    asio::error_code ec;
    core->acceptor.assign(ep.protocol(), *fd, ec);
    if (ec) {
        ::close(*fd);
        return make_error(Errc::system, "transport: listening socket: {}", ec.message());
    }
    core->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    core->acceptor.bind(ep, ec);
    if (ec) {
        return Error(ec == asio::error::address_in_use ? Errc::already_exists : Errc::system,
                     fmt::format("transport: binding {}: {}", to_string(ep), ec.message()));
    }
    core->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error(Errc::system, "transport: listen on {}: {}", to_string(ep), ec.message());
    core->wait_accept();
    return Listener(std::move(core));
}

Result<sys::UniqueFd> bind_listening_socket(std::string_view address, std::uint16_t port, bool allow_wildcard) {
    auto addr = parse_address(address);
    if (!addr) return std::move(addr).error().context("transport: listen address");
    if (addr->is_unspecified() && !allow_wildcard)
        return make_error(Errc::invalid_argument,
                          "transport: refusing to listen on the wildcard address {}: give this node's own address",
                          address);
    const asio::ip::tcp::endpoint ep(*addr, port);
    auto fd = sys::call("socket", [&] { return ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0); });
    if (!fd) return std::move(fd).error().context("transport: listening");
    sys::UniqueFd sock(*fd);
    const int one = 1;
    ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    DRAGON_CHECK(sys::call(fmt::format("transport: binding {}", to_string(ep)),
                           [&] { return ::bind(sock.get(), ep.data(), static_cast<socklen_t>(ep.size())); }));
    DRAGON_CHECK(sys::call(fmt::format("transport: listen on {}", to_string(ep)),
                           [&] { return ::listen(sock.get(), SOMAXCONN); }));
    return sock;
}

Result<Listener> Listener::adopt(asio::io_context& io, sys::UniqueFd fd, const RunSecret& secret, std::uint32_t node_id,
                                 PeerHandler on_peer, Options opts) {
    if (opts.low_water > opts.high_water)
        return make_error(Errc::invalid_argument, "transport: low water ({}) above high water ({})", opts.low_water,
                          opts.high_water);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    DRAGON_CHECK(sys::call("transport: getsockname", [&] {
        return ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    }));
    int accepting = 0;
    socklen_t alen = sizeof accepting;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &alen) != 0 || accepting == 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return Error(Errc::invalid_argument, "transport: the inherited fd is not a listening TCP socket");
    const auto family = ss.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
    DRAGON_CHECK(sys::call("transport: fcntl", [&] { return ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC); }));
    auto core = std::make_shared<Core>(io, secret, node_id, std::move(on_peer), std::move(opts));
    asio::error_code ec;
    core->acceptor.assign(family, fd.get(), ec);
    if (ec) return make_error(Errc::system, "transport: adopting a listening socket: {}", ec.message());
    (void)fd.release();
    core->acceptor.non_blocking(true, ec);
    core->wait_accept();
    return Listener(std::move(core));
}

Listener::Listener(std::shared_ptr<Core> core) : core_(std::move(core)) {}
Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&& o) noexcept {
    if (this != &o) {
        close_quietly();
        core_ = std::move(o.core_);
    }
    return *this;
}
Listener::~Listener() { close_quietly(); }

void Listener::close_quietly() noexcept {
    // Closing only releases resources; an allocation failure while logging
    // an abandoned handshake must not escape a destructor.
    try {
        close();
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing better to do in a destructor
    }
}

void Listener::close() {
    if (core_) core_->close();
}

asio::ip::tcp::endpoint Listener::local_endpoint() const {
    asio::error_code ec;
    if (!core_) return {};
    return core_->acceptor.local_endpoint(ec);
}

}  // namespace dragon::transport::tcp
