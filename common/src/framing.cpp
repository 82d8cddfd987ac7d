// Frame header encoding and the streaming frame splitter.
#include "dragon/common/framing.hpp"

#include <algorithm>
#include <cstring>

namespace dragon::wire {

void append_frame_header(std::string& out, std::uint16_t type, std::size_t body_len) {
    out.push_back(static_cast<char>(kFrameMagic));
    out.push_back(static_cast<char>(kFrameVersion));
    Writer w(out);
    w.scalar(type);
    w.scalar(static_cast<std::uint32_t>(body_len));
}

char* RecvBuffer::reserve(std::size_t n) {
    if (begin_ == end_) {
        begin_ = end_ = 0;
    } else if (begin_ > 0 && cap_ - end_ < n) {
        // Reclaim consumed space before growing.
        std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    if (cap_ - end_ < n) {
        const std::size_t cap = std::max(end_ + n, cap_ * 2);
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (end_ > 0) std::memcpy(bigger.get(), buf_.get(), end_);
        buf_ = std::move(bigger);
        cap_ = cap;
    }
    return buf_.get() + end_;
}

void RecvBuffer::append(std::string_view bytes) {
    if (bytes.empty()) return;  // data() may be null: memcpy from null is undefined even for 0 bytes
    std::memcpy(reserve(bytes.size()), bytes.data(), bytes.size());
    commit(bytes.size());
}

Result<FrameHeader> parse_frame_header(const char* h, std::size_t max_body) {
    const auto magic = static_cast<std::uint8_t>(h[0]);
    const auto version = static_cast<std::uint8_t>(h[1]);
    if (magic != kFrameMagic) return make_error(Errc::protocol, "bad frame magic 0x{:02x}", magic);
    if (version != kFrameVersion)
        return make_error(Errc::protocol, "unsupported frame version {} (this side speaks {})", version,
                          kFrameVersion);
    Reader r(h + 2, 6);
    FrameHeader fh;
    fh.type = r.scalar<std::uint16_t>();
    fh.length = r.scalar<std::uint32_t>();
    if (fh.length > max_body)
        return make_error(Errc::too_large, "frame of type {} with a body of {} bytes exceeds the limit of {}",
                          fh.type, fh.length, max_body);
    return fh;
}

Result<std::optional<Frame>> FrameDecoder::next() {
    if (buf_.size() < kFrameHeaderSize) return std::optional<Frame>{};
    const char* h = buf_.data();
    const auto [type, len] = DRAGON_TRY(parse_frame_header(h, max_body_));
    if (buf_.size() < kFrameHeaderSize + len) return std::optional<Frame>{};
    Frame f;
    f.type = type;
    f.body.assign(h + kFrameHeaderSize, len);
    buf_.consume(kFrameHeaderSize + len);
    if (buf_.empty()) buf_.clear();
    return std::optional<Frame>(std::move(f));
}

}  // namespace dragon::wire
