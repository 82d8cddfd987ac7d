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
    : socket_(std::move(socket)), remote_node_id_(remote_node_id), opts_(std::move(opts)) {
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
    wire::append_frame_header(tail, static_cast<std::uint16_t>(MsgType::payload_begin), 0);
    wire::Writer w(tail);
    w.scalar(type);
    w.scalar(static_cast<std::uint64_t>(payload.size()));
    w.bytes(header);
    const std::size_t len = tail.size() - before - wire::kFrameHeaderSize;
    for (std::size_t i = 0; i < 4; ++i) tail[before + 4 + i] = static_cast<char>((len >> (8 * i)) & 0xffU);
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
            std::string hdr;
            wire::append_frame_header(hdr, static_cast<std::uint16_t>(MsgType::payload_chunk), n);
            std::memcpy(h.data(), hdr.data(), h.size());
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
    auto prepare = [this](std::size_t n) -> char* {
        if (rbeg_ > 0 && (rbeg_ == rend_ || rcap_ - rend_ < n)) {
            std::memmove(rbuf_.get(), rbuf_.get() + rbeg_, rend_ - rbeg_);
            rend_ -= rbeg_;
            rbeg_ = 0;
        }
        if (rcap_ - rend_ < n) {
            const std::size_t cap = std::max(rend_ + n, rcap_ * 2);
            auto bigger = std::make_unique_for_overwrite<char[]>(cap);
            if (rend_ > 0) std::memcpy(bigger.get(), rbuf_.get(), rend_);
            rbuf_ = std::move(bigger);
            rcap_ = cap;
        }
        return rbuf_.get() + rend_;
    };
    auto handler = [self = shared_from_this()](const asio::error_code& ec, std::size_t n) { self->on_read(ec, n); };

    if (in_payload_ && chunk_left_ > 0 && !sink_.destination.empty() && rbeg_ == rend_) {
        // Payload bytes go straight into the destination; only the next
        // frame header (or, after the last chunk, ordinary frames) lands in rbuf_.
        const std::size_t tail = payload_left_ > 0 ? wire::kFrameHeaderSize : kReadSize;
        char* t = prepare(tail);
        direct_len_ = chunk_left_;
        const std::array<asio::mutable_buffer, 2> bufs{
            asio::buffer(sink_.destination.data() + dest_off_, chunk_left_), asio::buffer(t, tail)};
        socket_.async_read_some(bufs, std::move(handler));
        return;
    }
    direct_len_ = 0;
    std::size_t want = kReadSize;
    // A frame bigger than the read size: room for all of it at once.
    if (rend_ - rbeg_ >= wire::kFrameHeaderSize && chunk_left_ == 0) {
        auto h = parse_frame_header(rbuf_.get() + rbeg_, SIZE_MAX);
        if (h && h->type != static_cast<std::uint16_t>(MsgType::payload_chunk))
            want = std::max(want, wire::kFrameHeaderSize + h->length - (rend_ - rbeg_));
    }
    char* p = prepare(want);
    socket_.async_read_some(asio::buffer(p, want), std::move(handler));
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
    const std::size_t direct = std::min(n, direct_len_);
    dest_off_ += direct;
    chunk_left_ -= direct;
    rend_ += n - direct;
    direct_len_ = 0;
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
    if (in_payload_ || rend_ != rbeg_)
        fail(make_error(Errc::closed, "{}: the peer closed the connection in the middle of a {}", name_,
                        in_payload_ ? "payload" : "frame"),
             false);
    else
        fail(make_error(Errc::closed, "{}: closed by the peer", name_), true);
}

Status Peer::deliver_chunk_bytes(std::size_t n) {
    const auto* p = reinterpret_cast<const std::byte*>(rbuf_.get() + rbeg_);
    rbeg_ += n;
    chunk_left_ -= n;
    if (!sink_.destination.empty()) {
        std::memcpy(sink_.destination.data() + dest_off_, p, n);
        dest_off_ += n;
    } else if (sink_.on_bytes) {
        dest_off_ += n;
        sink_.on_bytes(std::span<const std::byte>(p, n));  // no realloc of rbuf_ can happen during the call
    }
    if (rbeg_ == rend_) rbeg_ = rend_ = 0;
    return ok();
}

Status Peer::dispatch_one(bool& need_more) {
    if (in_payload_ && chunk_left_ == 0 && payload_left_ == 0) {
        in_payload_ = false;
        PayloadSink sink = std::move(sink_);
        sink_ = {};
        dest_off_ = 0;
        if (sink.on_complete) sink.on_complete();
        return ok();
    }
    const std::size_t avail = rend_ - rbeg_;
    if (chunk_left_ > 0) {
        if (avail == 0) {
            need_more = true;
            return ok();
        }
        return deliver_chunk_bytes(std::min(avail, chunk_left_));
    }
    if (avail < wire::kFrameHeaderSize) {
        need_more = true;
        return ok();
    }
    const char* h = rbuf_.get() + rbeg_;
    auto hdr = DRAGON_TRY(parse_frame_header(h, SIZE_MAX));
    if (hdr.type == static_cast<std::uint16_t>(MsgType::payload_chunk)) {
        if (!in_payload_) return Error(Errc::protocol, "payload_chunk outside a payload");
        if (hdr.length == 0 || hdr.length > kChunkSize || hdr.length > payload_left_)
            return make_error(Errc::protocol, "payload_chunk of {} bytes ({} payload bytes due, chunks at most {})",
                              hdr.length, payload_left_, kChunkSize);
        rbeg_ += wire::kFrameHeaderSize;
        if (rbeg_ == rend_) rbeg_ = rend_ = 0;
        chunk_left_ = hdr.length;
        payload_left_ -= hdr.length;
        return ok();
    }
    if (in_payload_)
        return make_error(Errc::protocol, "frame of type {} inside a payload ({} bytes still due)", hdr.type,
                          payload_left_);
    if (hdr.length > opts_.max_frame_body)
        return make_error(Errc::too_large, "frame of type {} with a body of {} bytes exceeds the limit of {}",
                          hdr.type, hdr.length, opts_.max_frame_body);
    if (avail < wire::kFrameHeaderSize + hdr.length) {
        need_more = true;
        return ok();
    }
    wire::Frame f;
    f.type = hdr.type;
    f.body.assign(h + wire::kFrameHeaderSize, hdr.length);
    rbeg_ += wire::kFrameHeaderSize + hdr.length;
    if (rbeg_ == rend_) rbeg_ = rend_ = 0;

    if (f.type == static_cast<std::uint16_t>(MsgType::payload_begin)) {
        auto pb = DRAGON_TRY(wire::decode_exact<PayloadBegin>(f.body));
        if (is_transport_type(pb.type))
            return make_error(Errc::protocol, "payload header of reserved type {}", pb.type);
        if (!on_payload_) return Error(Errc::protocol, "a payload message arrived but no payload handler is set");
        const std::uint64_t size = pb.size;
        auto sink = DRAGON_TRY(on_payload_(wire::Frame{pb.type, std::move(pb.header)}, size));
        if (closed_) return ok();
        if (!sink.destination.empty() && sink.destination.size() < size)
            return make_error(Errc::invalid_argument, "payload of {} bytes does not fit its destination of {}",
                              size, sink.destination.size());
        sink_ = std::move(sink);
        in_payload_ = true;
        payload_left_ = size;
        chunk_left_ = 0;
        dest_off_ = 0;
        return ok();  // an empty payload completes on the next step
    }
    if (is_transport_type(f.type))
        return make_error(Errc::protocol, "unexpected transport message type {} after the handshake", f.type);
    if (on_frame_) on_frame_(std::move(f));
    return ok();
}

}  // namespace dragon::transport::tcp
