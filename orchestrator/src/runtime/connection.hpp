// A framed message connection on an Asio stream socket: frames in, frames
// out, with writes coalesced (one write in flight, later frames appended
// behind it) and the queued byte count exposed for back-pressure.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <asio.hpp>
#include <spdlog/spdlog.h>

#include "dragon/common/framing.hpp"
#include "dragon/common/result.hpp"

namespace dragon::rt {

template <class Socket>
class Connection : public std::enable_shared_from_this<Connection<Socket>> {
public:
    using FrameHandler = std::function<void(wire::Frame&&)>;
    /// Called once when the connection ends: nullptr on a clean EOF.
    using CloseHandler = std::function<void(const Error*)>;

    Connection(Socket socket, std::string name, std::size_t max_frame_body = wire::kDefaultMaxFrameBody)
        : socket_(std::move(socket)), name_(std::move(name)), decoder_(max_frame_body) {}

    /// Starts reading. Handlers run on the socket's executor.
    void start(FrameHandler on_frame, CloseHandler on_close) {
        on_frame_ = std::move(on_frame);
        on_close_ = std::move(on_close);
        read_more();
    }

    /// Queues one message; never blocks.
    template <class M>
    void send(const M& msg) {
        if (closed_) return;
        wire::append_frame(pending_, msg);
        if (!writing_active_) write_more();
    }

    /// Queues one frame whose body is already encoded (relayed frames).
    void send_raw(std::uint16_t type, std::string_view body) {
        if (closed_) return;
        wire::append_frame_header(pending_, type, body.size());
        pending_.append(body);
        if (!writing_active_) write_more();
    }

    /// Bytes queued and not yet written to the socket.
    [[nodiscard]] std::size_t queued_bytes() const { return pending_.size() + in_flight_.size(); }

    /// Called whenever the queue empties (for back-pressure resumption).
    void on_drained(std::function<void()> fn) { on_drained_ = std::move(fn); }

    /// Closes once everything queued has been written, then calls `done`.
    void close_after_flush(std::function<void()> done) {
        flush_then_ = std::move(done);
        flushing_ = true;
        if (!writing_active_) finish_flush();
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        asio::error_code ec;
        socket_.close(ec);
    }

    [[nodiscard]] const std::string& name() const { return name_; }
    Socket& socket() { return socket_; }

private:
    void read_more() {
        if (closed_) return;
        char* buf = decoder_.prepare(kReadChunk);
        socket_.async_read_some(
            asio::buffer(buf, kReadChunk),
            [self = this->shared_from_this()](const asio::error_code& ec, std::size_t n) { self->on_read(ec, n); });
    }

    void on_read(const asio::error_code& ec, std::size_t n) {
        if (closed_) return;
        if (ec) {
            if (ec == asio::error::eof || ec == asio::error::connection_reset) {
                fail(nullptr);
            } else {
                Error e(Errc::closed, fmt::format("{}: read: {}", name_, ec.message()),
                        ec.category() == asio::system_category() ? ec.value() : 0);
                fail(&e);
            }
            return;
        }
        decoder_.commit(n);
        for (;;) {
            auto f = decoder_.next();
            if (!f) {
                Error e = std::move(f).error().context(name_);
                fail(&e);
                return;
            }
            if (!*f) break;
            on_frame_(std::move(**f));
            if (closed_) return;
        }
        read_more();
    }

    void write_more() {
        if (closed_ || pending_.empty()) {
            writing_active_ = false;
            if (flushing_) finish_flush();
            else if (on_drained_ && pending_.empty()) on_drained_();
            return;
        }
        writing_active_ = true;
        in_flight_.swap(pending_);
        pending_.clear();
        asio::async_write(socket_, asio::buffer(in_flight_),
                          [self = this->shared_from_this()](const asio::error_code& ec, std::size_t) {
                              self->in_flight_.clear();
                              if (ec) {
                                  Error e(Errc::closed, fmt::format("{}: write: {}", self->name_, ec.message()),
                                          ec.category() == asio::system_category() ? ec.value() : 0);
                                  self->writing_active_ = false;
                                  self->fail(&e);
                                  return;
                              }
                              self->write_more();
                          });
    }

    void finish_flush() {
        flushing_ = false;
        auto done = std::move(flush_then_);
        flush_then_ = nullptr;
        close();
        if (done) done();
    }

    void fail(const Error* e) {
        if (closed_) return;
        close();
        pending_.clear();
        if (on_close_) {
            auto cb = std::move(on_close_);
            on_close_ = nullptr;
            cb(e);
        }
        if (flushing_) finish_flush();
    }

    static constexpr std::size_t kReadChunk = 64 * 1024;
    Socket socket_;
    std::string name_;
    wire::FrameDecoder decoder_;
    FrameHandler on_frame_;
    CloseHandler on_close_;
    std::function<void()> on_drained_;
    std::function<void()> flush_then_;
    bool flushing_ = false;  // close_after_flush was asked (with or without a callback)
    std::string pending_;
    std::string in_flight_;
    bool writing_active_ = false;
    bool closed_ = false;
};

using UnixConnection = Connection<asio::local::stream_protocol::socket>;

}  // namespace dragon::rt
