// Payload framing: encoding its frames, and the incremental decoder of frames and payloads.
#include "dragon/common/payload.hpp"

#include <algorithm>
#include <cstring>

namespace dragon::wire {

void append_payload_begin(std::string& out, std::uint16_t type, std::uint64_t size, std::string_view header) {
    const std::size_t start = out.size();
    append_frame_header(out, kPayloadBeginType, 0);
    Writer w(out);
    w.scalar(type);
    w.scalar(size);
    w.bytes(header);
    const std::size_t len = out.size() - start - kFrameHeaderSize;
    for (std::size_t i = 0; i < 4; ++i) out[start + 4 + i] = static_cast<char>((len >> (8 * i)) & 0xffU);
}

std::array<char, kFrameHeaderSize> payload_chunk_header(std::size_t n) {
    std::array<char, kFrameHeaderSize> h{};
    h[0] = static_cast<char>(kFrameMagic);
    h[1] = static_cast<char>(kFrameVersion);
    h[2] = static_cast<char>(kPayloadChunkType & 0xffU);
    h[3] = static_cast<char>(kPayloadChunkType >> 8);
    for (std::size_t i = 0; i < 4; ++i) h[4 + i] = static_cast<char>((n >> (8 * i)) & 0xffU);
    return h;
}

PayloadDecoder::ReadSpace PayloadDecoder::read_space() {
    if (in_payload_ && chunk_left_ > 0 && !dest_.empty() && buf_.empty()) {
        // Payload bytes straight into the destination; after them only the
        // next chunk header (or, after the last chunk, ordinary frames).
        const std::size_t tail = payload_left_ > 0 ? kFrameHeaderSize : opts_.read_size;
        char* t = buf_.reserve(tail);
        direct_len_ = chunk_left_;
        return {dest_.subspan(static_cast<std::size_t>(dest_off_), chunk_left_), {t, tail}};
    }
    direct_len_ = 0;
    std::size_t want = opts_.read_size;
    // A frame bigger than the read size: room for all of it at once.
    if (chunk_left_ == 0 && buf_.size() >= kFrameHeaderSize) {
        auto h = parse_frame_header(buf_.data(), opts_.max_frame_body);
        if (h && !(opts_.payloads && h->type == kPayloadChunkType))
            want = std::max(want, kFrameHeaderSize + h->length - buf_.size());
    }
    char* p = buf_.reserve(want);
    return {{}, {p, want}};
}

void PayloadDecoder::commit(std::size_t n) {
    const std::size_t direct = std::min(n, direct_len_);
    dest_off_ += direct;
    chunk_left_ -= direct;
    buf_.commit(n - direct);
    direct_len_ = 0;
}

void PayloadDecoder::feed(std::string_view bytes) {
    if (bytes.empty()) return;
    direct_len_ = 0;
    buf_.append(bytes);
}

std::size_t PayloadDecoder::frame_bytes_missing() const {
    const std::size_t avail = buf_.size();
    if (avail < kFrameHeaderSize) return kFrameHeaderSize - avail;
    auto h = parse_frame_header(buf_.data(), opts_.max_frame_body);
    if (!h) return 0;  // next() reports it
    return kFrameHeaderSize + h->length > avail ? kFrameHeaderSize + h->length - avail : 0;
}

Status PayloadDecoder::set_destination(std::span<std::byte> dest) {
    if (!in_payload_ || dest_off_ != 0 || chunk_left_ != 0)
        return make_error(Errc::internal, "a payload destination set outside the start of a payload");
    if (dest.empty()) return ok();
    if (dest.size() < payload_left_)
        return make_error(Errc::invalid_argument, "payload of {} bytes does not fit its destination of {}",
                          payload_left_, dest.size());
    dest_ = dest;
    return ok();
}

Result<PayloadDecoder::Event> PayloadDecoder::next() {
    for (;;) {
        if (in_payload_ && chunk_left_ == 0 && payload_left_ == 0) {
            in_payload_ = false;
            dest_ = {};
            dest_off_ = 0;
            return Event{Kind::payload_end};
        }
        const std::size_t avail = buf_.size();
        const char* h = buf_.data();
        if (chunk_left_ > 0) {
            if (avail == 0) return Event{};
            const std::size_t k = std::min(avail, chunk_left_);
            buf_.consume(k);
            chunk_left_ -= k;
            if (dest_.empty()) return Event{Kind::payload_bytes, 0, {h, k}};
            std::memcpy(dest_.data() + dest_off_, h, k);
            dest_off_ += k;
            continue;
        }
        if (avail < kFrameHeaderSize) return Event{};
        // The body limit is checked below, after the chunk and in-payload rules.
        const auto hdr = DRAGON_TRY(parse_frame_header(h, SIZE_MAX));
        if (opts_.payloads && hdr.type == kPayloadChunkType) {
            if (!in_payload_) return Error(Errc::protocol, "payload_chunk outside a payload");
            if (hdr.length == 0 || hdr.length > kPayloadChunkSize || hdr.length > payload_left_)
                return make_error(Errc::protocol, "payload_chunk of {} bytes ({} payload bytes due, chunks at most {})",
                                  hdr.length, payload_left_, kPayloadChunkSize);
            buf_.consume(kFrameHeaderSize);
            chunk_left_ = hdr.length;
            payload_left_ -= hdr.length;
            continue;
        }
        if (in_payload_)
            return make_error(Errc::protocol, "frame of type {} inside a payload ({} bytes still due)", hdr.type,
                              payload_left_);
        if (hdr.length > opts_.max_frame_body)
            return make_error(Errc::too_large, "frame of type {} with a body of {} bytes exceeds the limit of {}",
                              hdr.type, hdr.length, opts_.max_frame_body);
        if (avail < kFrameHeaderSize + hdr.length) return Event{};
        const std::string_view body(h + kFrameHeaderSize, hdr.length);
        buf_.consume(kFrameHeaderSize + hdr.length);
        if (!opts_.payloads || hdr.type != kPayloadBeginType) return Event{Kind::frame, hdr.type, body};
        auto pb = DRAGON_TRY(decode_exact<PayloadBegin>(body));
        if (is_transport_type(pb.type))
            return make_error(Errc::protocol, "payload header of reserved type {}", pb.type);
        in_payload_ = true;
        payload_left_ = pb.size;
        chunk_left_ = 0;
        dest_ = {};
        dest_off_ = 0;
        header_ = std::move(pb.header);
        return Event{Kind::payload_begin, pb.type, header_, pb.size};  // an empty payload ends on the next call
    }
}

}  // namespace dragon::wire
