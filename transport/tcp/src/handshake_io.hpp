// Internals shared by the listener and connect(): close-on-exec sockets, and
// the handshake driven over a socket under a deadline.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <asio.hpp>

#include "dragon/transport/handshake.hpp"
#include "dragon/transport/tcp.hpp"

namespace dragon::transport::tcp {

struct Peer::Private {};

/// "127.0.0.3:40123".
std::string to_string(const asio::ip::tcp::endpoint& ep);

/// Parses a literal IP address; the message names it.
Result<asio::ip::address> parse_address(std::string_view address);

/// A TCP socket made with SOCK_CLOEXEC | SOCK_NONBLOCK (Asio would make it
/// without close-on-exec, and the agent forks).
Result<asio::ip::tcp::socket> open_socket(asio::io_context& io, const asio::ip::tcp& protocol);

/// Runs a Handshake over a connected (or, with connect_to(), connecting)
/// socket: one frame at a time, each at most kHandshakeMaxBody, all of it
/// within opts.handshake_timeout. `done` runs once, with the Peer or the
/// Error (already logged, with the peer's address).
class HandshakeIo : public std::enable_shared_from_this<HandshakeIo> {
public:
    using Done = std::function<void(Result<std::shared_ptr<Peer>>)>;

    HandshakeIo(asio::ip::tcp::socket socket, Handshake hs, Options opts, std::string peer_name, Done done);

    /// Starts the handshake on a connected socket.
    void start();
    /// Connects first (the deadline covers the connect too).
    void connect_to(const asio::ip::tcp::endpoint& ep);
    /// Abandons the handshake: `done` gets Errc::closed, nothing is logged.
    void cancel();

private:
    void arm_timer();
    void run();
    void write(std::string bytes, std::function<void()> next);
    void read_header();
    void on_body();
    void succeed();
    void fail(Error e, bool send_reject, bool log = true);
    void finish(Result<std::shared_ptr<Peer>> r);
    [[nodiscard]] bool over() const { return finished_ || rejecting_; }

    asio::ip::tcp::socket socket_;
    asio::steady_timer timer_;
    Handshake hs_;
    Options opts_;
    std::string peer_name_;
    Done done_;
    std::string out_;
    std::array<char, wire::kFrameHeaderSize> hdr_{};
    wire::Frame frame_;
    bool timer_armed_ = false;
    bool finished_ = false;
    bool rejecting_ = false;  // writing a peer_reject; the deadline still closes
    std::optional<Error> reject_error_;
};

}  // namespace dragon::transport::tcp
