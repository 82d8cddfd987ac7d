// An authenticated peer connection: coalesced frames and chunked payloads out
// (gather I/O from the caller's memory), frames and payload chunks in (straight
// into the caller's destination when it gives one), bounded on both sides.
#include <cstring>

#include <spdlog/spdlog.h>

#include "handshake_io.hpp"

namespace dragon::transport::tcp {

namespace {

constexpr std::size_t kMaxIov = 64;                 // Asio gathers at most this many buffers per writev
constexpr std::size_t kMaxWriteBytes = 4U << 20;    // per gathered write
constexpr std::size_t kMaxChunksPerWrite = kMaxWriteBytes / kChunkSize;
constexpr std::size_t kCoalesceLimit = 256U << 10;  // small frames are appended to one buffer up to this
constexpr std::size_t kReadSize = 256U << 10;

Error closed_error(const std::string& name) { return {Errc::closed, fmt::format("{}: connection closed", name)}; }

}  // namespace

Peer::Peer(const Private& /*unused*/, asio::ip::tcp::socket socket, std::uint32_t remote_node_id, Options opts)
    : socket_(std::move(socket)), remote_node_id_(remote_node_id), opts_(std::move(opts)),
      dec_(wire::PayloadDecoder::Options{.max_frame_body = opts_.max_frame_body, .payloads = true, .read_size = kReadSize}) {
    asio::error_code ec;
    remote_ = socket_.remote_endpoint(ec);
    name_ = fmt::format("node {} ({})", remote_node_id_, to_string(remote_));
    iov_.reserve(kMaxIov);
    inflight_owned_.reserve(kMaxIov);
    chunk_headers_.resize(kMaxChunksPerWrite);
}

Peer::~Peer() {
    // Nothing is normally queued here (a write in flight keeps the Peer
    // alive), but a payload's owner must always hear back.
    if (!queue_.empty() || !inflight_done_.empty()) drop_queue(closed_error(name_));
}

Result<sys::UniqueFd> Peer::release_socket() {
    if (started_ || closed_ || !queue_.empty() || writing_)
        return make_error(Errc::invalid_argument, "{}: only a fresh, unused connection can be handed over", name_);
    asio::error_code ec;
    const int fd = socket_.release(ec);
    if (ec) return make_error(Errc::system, "{}: releasing the socket: {}", name_, ec.message());
    closed_ = true;
    return sys::UniqueFd(fd);
}

// ---- sending ---------------------------------------------------------------

std::string& Peer::append_target() {
    // Payload segments carry a done handler; frames are appended to the last frame segment.
    if (queue_.empty() || queue_.back().done || queue_.back().owned.size() >= kCoalesceLimit)
        queue_.emplace_back();
    return queue_.back().owned;
}

SendState Peer::after_append(std::size_t bytes) {
    queued_bytes_ += bytes;
    if (queued_bytes_ > opts_.high_water) above_high_ = true;
    if (!writing_) write_more();
    return above_high_ ? SendState::above_high_water : SendState::ok;
}

SendState Peer::send_encoded(Encoder encode, const void* msg) {
    if (!can_send()) return SendState::closed;
    std::string& tail = append_target();
    const std::size_t before = tail.size();
    encode(msg, tail);
    return after_append(tail.size() - before);
}

SendState Peer::send_frame(std::uint16_t type, std::string_view body) {
    if (!can_send() || is_transport_type(type)) return SendState::closed;
    std::string& tail = append_target();
    const std::size_t before = tail.size();
    wire::append_frame_header(tail, type, body.size());
    tail.append(body);
    return after_append(tail.size() - before);
}

SendState Peer::send_payload(std::uint16_t type, std::string_view header, std::span<const std::byte> payload,
                             DoneHandler done) {
    if (!can_send() || is_transport_type(type)) {
        Error e = is_transport_type(type)
                      ? make_error(Errc::invalid_argument, "message type {} is reserved for the transport", type)
                      : closed_error(name_);
        asio::post(socket_.get_executor(),
                   [done = std::move(done), e = std::move(e)]() mutable {
                       if (done) done(std::move(e));
                   });
        return SendState::closed;
    }
    std::string& tail = append_target();
    const std::size_t before = tail.size();
    wire::append_payload_begin(tail, type, payload.size(), header);
    const std::size_t begin_bytes = tail.size() - before;

    Segment s;
    s.payload = payload.data();
    s.payload_size = payload.size();
    s.done = done ? std::move(done) : DoneHandler([](const Status&) {});  // marks it a payload even when empty
    queue_.push_back(std::move(s));
    const std::size_t chunks = (payload.size() + kChunkSize - 1) / kChunkSize;
    return after_append(begin_bytes + payload.size() + chunks * wire::kFrameHeaderSize);
}

void Peer::write_more() {
    if (writing_ || closed_) return;
    if (queue_.empty()) {
        if (flushing_) finish_flush();
        return;
    }
    iov_.clear();
    inflight_owned_.clear();
    inflight_done_.clear();
    std::size_t bytes = 0;
    std::size_t chunks = 0;
    while (!queue_.empty() && iov_.size() + 2 <= kMaxIov && bytes < kMaxWriteBytes) {
        Segment& s = queue_.front();
        if (!s.done) {  // encoded frames
            inflight_owned_.push_back(std::move(s.owned));
            iov_.emplace_back(asio::buffer(inflight_owned_.back()));
            bytes += inflight_owned_.back().size();
            queue_.pop_front();
            continue;
        }
        while (s.scheduled < s.payload_size && iov_.size() + 2 <= kMaxIov && bytes < kMaxWriteBytes &&
               chunks < chunk_headers_.size()) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunkSize, s.payload_size - s.scheduled));
            auto& h = chunk_headers_[chunks++];
            h = wire::payload_chunk_header(n);
            iov_.emplace_back(asio::buffer(h));
            iov_.emplace_back(asio::buffer(s.payload + s.scheduled, n));
            s.scheduled += n;
            bytes += wire::kFrameHeaderSize + n;
        }
        if (s.scheduled < s.payload_size) break;
        inflight_done_.push_back(std::move(s.done));
        queue_.pop_front();
    }
    inflight_bytes_ = bytes;
    writing_ = true;
    asio::async_write(socket_, iov_, [self = shared_from_this()](const asio::error_code& ec, std::size_t) {
        self->on_written(ec);
    });
}

void Peer::on_written(const asio::error_code& ec) {
    writing_ = false;
    if (closed_) return;  // close() already answered the payloads in flight
    if (ec) {
        fail(Error(Errc::closed, fmt::format("{}: write: {}", name_, ec.message())), false);
        return;
    }
    queued_bytes_ -= inflight_bytes_;
    inflight_bytes_ = 0;
    inflight_owned_.clear();
    auto done = std::move(inflight_done_);
    inflight_done_ = {};
    const bool drained = above_high_ && queued_bytes_ <= opts_.low_water;
    if (drained) above_high_ = false;
    write_more();  // keep the socket busy before running callbacks
    for (auto& d : done) d(ok());
    if (drained && on_drained_ && !closed_) on_drained_();
}

void Peer::close_after_flush(std::function<void()> done) {
    if (closed_ || flushing_) {
        if (done) asio::post(socket_.get_executor(), std::move(done));
        return;
    }
    flushing_ = true;
    flush_then_ = std::move(done);
    if (!writing_ && queue_.empty()) {
        // Finish on the next turn: never call back from inside the call.
        asio::post(socket_.get_executor(), [self = shared_from_this()] {
            if (!self->closed_) self->finish_flush();
        });
    }
}

void Peer::finish_flush() {
    asio::error_code ec;
    socket_.shutdown(asio::socket_base::shutdown_send, ec);  // a FIN after the last byte
    closed_ = true;
    socket_.close(ec);
    drop_queue(closed_error(name_));
    auto done = std::move(flush_then_);
    flush_then_ = nullptr;
    if (done) done();
}

void Peer::close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    socket_.close(ec);
    drop_queue(closed_error(name_));
    auto done = std::move(flush_then_);
    flush_then_ = nullptr;
    if (done) asio::post(socket_.get_executor(), std::move(done));
}

void Peer::drop_queue(const Error& why) {
    std::vector<DoneHandler> handlers = std::move(inflight_done_);
    inflight_done_ = {};
    for (auto& s : queue_)
        if (s.done) handlers.push_back(std::move(s.done));
    queue_.clear();
    queued_bytes_ = 0;
    inflight_bytes_ = 0;
    for (auto& h : handlers) h(Error(why));
}

void Peer::fail(Error e, bool clean) {
    if (closed_) return;
    close();
    auto cb = std::move(on_close_);
    on_close_ = nullptr;
    if (cb) cb(clean ? nullptr : &e);
}

// ---- receiving ---------------------------------------------------------------

void Peer::start(FrameHandler on_frame, CloseHandler on_close, PayloadHandler on_payload) {
    if (started_) return;
    started_ = true;
    on_frame_ = std::move(on_frame);
    on_close_ = std::move(on_close);
    on_payload_ = std::move(on_payload);
    read_more();
}

void Peer::pause_reading() { paused_ = true; }

void Peer::resume_reading() {
    if (!paused_ || closed_) return;
    paused_ = false;
    if (!dispatching_) asio::post(socket_.get_executor(), [self = shared_from_this()] { self->dispatch(); });
}

void Peer::read_more() {
    if (closed_ || paused_ || reading_ || !started_ || eof_) return;
    reading_ = true;
    auto handler = [self = shared_from_this()](const asio::error_code& ec, std::size_t n) { self->on_read(ec, n); };
    // Payload bytes go straight into the destination when the decoder says
    // so; only frame headers (or, after the last chunk, ordinary frames) land
    // in its buffer.
    const auto space = dec_.read_space();
    if (!space.direct.empty()) {
        const std::array<asio::mutable_buffer, 2> bufs{asio::buffer(space.direct.data(), space.direct.size()),
                                                       asio::buffer(space.buffer.data(), space.buffer.size())};
        socket_.async_read_some(bufs, std::move(handler));
        return;
    }
    socket_.async_read_some(asio::buffer(space.buffer.data(), space.buffer.size()), std::move(handler));
}

void Peer::on_read(const asio::error_code& ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
        if (ec == asio::error::operation_aborted) return;
        if (ec == asio::error::eof) {
            eof_ = true;  // deliver what is buffered first (even if paused now: on resume)
            dispatch();
            return;
        }
        fail(Error(Errc::closed, fmt::format("{}: read: {}", name_, ec.message())), false);
        return;
    }
    bytes_read_ += n;
    dec_.commit(n);
    dispatch();
}

void Peer::dispatch() {
    if (dispatching_) return;
    dispatching_ = true;
    auto keep = shared_from_this();  // a handler may drop the last outside reference
    while (!closed_ && !paused_) {
        bool need_more = false;
        Status st = dispatch_one(need_more);
        if (!st) {
            Error e = std::move(st).error();
            if (e.message().find(name_) == std::string::npos) e = std::move(e).context(name_);
            fail(std::move(e), false);
            break;
        }
        if (need_more) break;
    }
    dispatching_ = false;
    if (closed_ || paused_) return;
    if (!eof_) {
        read_more();
        return;
    }
    // Everything complete was delivered: a clean end only on a frame boundary.
    if (dec_.mid_message())
        fail(make_error(Errc::closed, "{}: the peer closed the connection in the middle of a {}", name_,
                        dec_.in_payload() ? "payload" : "frame"),
             false);
    else
        fail(make_error(Errc::closed, "{}: closed by the peer", name_), true);
}

Status Peer::dispatch_one(bool& need_more) {
    const auto ev = DRAGON_TRY(dec_.next());
    switch (ev.kind) {
        case wire::PayloadDecoder::Kind::need_more:
            need_more = true;
            return ok();
        case wire::PayloadDecoder::Kind::payload_bytes:
            // Without a destination: each piece to the sink's callback (a view
            // into the decoder's buffer, which no call can move), or dropped.
            if (sink_.on_bytes) sink_.on_bytes(std::as_bytes(std::span(ev.body.data(), ev.body.size())));
            return ok();
        case wire::PayloadDecoder::Kind::payload_end: {
            PayloadSink sink = std::move(sink_);
            sink_ = {};
            if (sink.on_complete) sink.on_complete();
            return ok();
        }
        case wire::PayloadDecoder::Kind::payload_begin: {
            if (!on_payload_) return Error(Errc::protocol, "a payload message arrived but no payload handler is set");
            auto sink = DRAGON_TRY(on_payload_(wire::Frame{ev.type, std::string(ev.body)}, ev.size));
            if (closed_) return ok();
            DRAGON_CHECK(dec_.set_destination(sink.destination));
            sink_ = std::move(sink);
            return ok();  // an empty payload completes on the next step
        }
        case wire::PayloadDecoder::Kind::frame:
            break;
    }
    if (is_transport_type(ev.type))
        return make_error(Errc::protocol, "unexpected transport message type {} after the handshake", ev.type);
    if (on_frame_) on_frame_(wire::Frame{ev.type, std::string(ev.body)});
    return ok();
}

}  // namespace dragon::transport::tcp
