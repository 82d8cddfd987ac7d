// The blocking frame reader: poll and read under a deadline, decoding through PayloadDecoder.
#include "dragon/common/frame_reader.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <new>

namespace dragon::wire {

FrameReader::FrameReader(int fd, std::string name, Options opts)
    : fd_(fd), name_(std::move(name)), opts_(opts),
      dec_(PayloadDecoder::Options{.max_frame_body = opts.max_frame_body,
                                   .payloads = opts.max_payload.has_value() && !opts.exact && !opts.receive_fds,
                                   .read_size = opts.read_size}) {}

Error FrameReader::with_name(Error e) const { return std::move(e).context("from " + name_); }

Result<std::optional<Received>> FrameReader::decode() {
    for (;;) {
        auto ev = dec_.next();
        if (!ev) return with_name(std::move(ev).error());
        switch (ev->kind) {
            case PayloadDecoder::Kind::need_more:
                return std::optional<Received>{};
            case PayloadDecoder::Kind::frame:
                return std::optional<Received>(Received{ev->type, ev->body, std::nullopt});
            case PayloadDecoder::Kind::payload_begin: {
                if (ev->size > *opts_.max_payload)
                    return with_name(make_error(Errc::too_large, "a payload of {} bytes exceeds the limit of {}",
                                                ev->size, *opts_.max_payload));
                payload_type_ = ev->type;
                payload_header_.assign(ev->body);
                try {
                    payload_.emplace(static_cast<std::size_t>(ev->size));
                } catch (const std::bad_alloc&) {
                    return make_error(Errc::no_space, "no memory for a payload of {} bytes from {}", ev->size, name_);
                }
                if (auto st = dec_.set_destination(*payload_); !st) return with_name(std::move(st).error());
                continue;
            }
            case PayloadDecoder::Kind::payload_bytes:
                continue;  // never: the destination takes every byte
            case PayloadDecoder::Kind::payload_end: {
                Received r{payload_type_, payload_header_, std::move(payload_)};
                payload_.reset();
                return std::optional<Received>(std::move(r));
            }
        }
    }
}

Result<bool> FrameReader::read_once() {
    auto space = dec_.read_space();
    std::span<char> buf = space.buffer;
    if (opts_.exact) buf = buf.first(std::min(buf.size(), dec_.frame_bytes_missing()));
    const std::size_t asked = space.direct.size() + buf.size();
    if (asked == 0) return make_error(Errc::internal, "reading from {}: no room to read into", name_);
    ssize_t n = 0;
    if (opts_.receive_fds) {
        auto got = sys::recv_with_fd(fd_, buf.data(), buf.size(), fd_received_, "reading from " + name_);
        if (!got) {
            if (got.error().sys_errno() == EAGAIN) return false;
            return Error(Errc::closed, got.error().message(), got.error().sys_errno());
        }
        n = static_cast<ssize_t>(*got);
    } else {
        iovec iov[2];
        std::size_t k = 0;
        if (!space.direct.empty()) iov[k++] = iovec{space.direct.data(), space.direct.size()};
        if (!buf.empty()) iov[k++] = iovec{buf.data(), buf.size()};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = k;
        do {
            n = ::recvmsg(fd_, &m, MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN) return false;
        if (n < 0) {
            Error e = sys::error_from_errno("reading from " + name_);
            return Error(Errc::closed, e.message(), e.sys_errno());
        }
    }
    if (n == 0) {
        peer_closed_ = true;
        if (dec_.mid_message())
            return make_error(Errc::closed, "{} closed the connection in the middle of a {}", name_,
                              dec_.in_payload() ? "payload" : "frame");
        return make_error(Errc::closed, "{} closed the connection", name_);
    }
    dec_.commit(static_cast<std::size_t>(n));
    // A read that filled all it was offered likely left more behind: read
    // again before polling (a stream saves a poll per read; a reply that is
    // not there yet still costs only the poll it always did).
    last_read_full_ = static_cast<std::size_t>(n) == asked && !opts_.receive_fds;
    return true;
}

Result<std::optional<Received>> FrameReader::next_buffered() { return decode(); }

Result<Received> FrameReader::next(Deadline deadline) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        auto m = DRAGON_TRY(decode());
        if (m) return std::move(*m);
        if (!last_read_full_) {
            int timeout_ms = -1;
            if (deadline != kNoDeadline) {
                const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
                timeout_ms = static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
            }
            pollfd p{fd_, POLLIN, 0};
            const int r = ::poll(&p, 1, timeout_ms);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return sys::error_from_errno("waiting for " + name_);
            if (r == 0) {
                if (std::chrono::steady_clock::now() < deadline) continue;  // woke early (rounding)
                const auto waited = std::chrono::ceil<std::chrono::milliseconds>(std::max(deadline - start, Deadline::duration{}));
                return make_error(Errc::timeout, "no answer from {} within {} ms", name_, waited.count());
            }
        }
        if (!DRAGON_TRY(read_once())) last_read_full_ = false;
    }
}

}  // namespace dragon::wire
