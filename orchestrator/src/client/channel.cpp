// Channels on any node: local ones directly in shared memory, others through
// the agent's gateway (docs/channels.md). The gateway connection carries many
// threads' operations at once: each request has an id, one waiting thread at
// a time reads the socket and hands every reply to the thread it belongs to.
#include "dragon/orchestrator/channel.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "dragon/orchestrator/client.hpp"

namespace dragon::client {

namespace {

std::int64_t to_ns(channels::Timeout t) { return t == channels::kForever ? -1 : std::max<std::int64_t>(0, t.count()); }

std::string encoded(const channels::ChannelDescriptor& d) {
    auto e = d.encode();
    return {reinterpret_cast<const char*>(e.data()), e.size()};
}

Status reply_status(const msg::ChanReply& r) {
    if (r.code == 0) return ok();
    return Error(static_cast<Errc>(r.code), r.message);
}

}  // namespace

Gateway::Gateway(sys::UniqueFd fd, msg::ClientWelcome w, channels::Pool pool)
    : fd_(std::move(fd)), welcome_(std::move(w)), pool_(std::move(pool)) {}

Gateway::~Gateway() = default;

Result<std::shared_ptr<Gateway>> Gateway::connect_from_env() {
    auto s = DRAGON_TRY(Session::connect_from_env());
    auto pool = DRAGON_TRY(s.attach_pool());
    return std::shared_ptr<Gateway>(new Gateway(std::move(s.fd_), std::move(s.welcome_), std::move(pool)));
}

Result<std::shared_ptr<Gateway>> Gateway::connect(const std::string& socket_name, Puid self) {
    auto s = DRAGON_TRY(Session::connect(socket_name, self));
    auto pool = DRAGON_TRY(s.attach_pool());
    return std::shared_ptr<Gateway>(new Gateway(std::move(s.fd_), std::move(s.welcome_), std::move(pool)));
}

Status Gateway::post_request(const std::string& frame) {
    std::lock_guard wl(write_mu_);
    {
        std::lock_guard lk(mu_);
        if (broken_) return *broken_;
    }
    if (auto st = sys::send_all(fd_.get(), frame, "sending to the agent"); !st) {
        std::lock_guard lk(mu_);
        if (!broken_) broken_ = Error(Errc::closed, st.error().message());
        cv_.notify_all();
        return *broken_;
    }
    return ok();
}

template <class Pred>
Status Gateway::wait_for(std::unique_lock<std::mutex>& lk, Pred done) {
    for (;;) {
        if (done()) return ok();
        if (broken_) return *broken_;
        if (reading_) {
            cv_.wait(lk);
            continue;
        }
        // This thread reads for everyone until what it waits for is filed.
        reading_ = true;
        lk.unlock();
        std::vector<msg::ChanReply> got;
        std::optional<Error> failed;
        constexpr std::size_t kChunk = 64 * 1024;
        char* buf = decoder_.prepare(kChunk);
        // A bounded wait, so a deadline in done() is seen even when no reply comes.
        pollfd p{fd_.get(), POLLIN, 0};
        const ssize_t n = ::poll(&p, 1, 100) > 0 ? ::recv(fd_.get(), buf, kChunk, MSG_DONTWAIT) : (errno = EAGAIN, -1);
        if (n < 0 && errno != EINTR && errno != EAGAIN) failed = Error(Errc::closed, sys::error_from_errno("reading from the agent").message());
        if (n == 0) failed = Error(Errc::closed, "the agent closed the connection");
        if (n > 0) {
            decoder_.commit(static_cast<std::size_t>(n));
            for (;;) {
                auto f = decoder_.next();
                if (!f) {
                    failed = std::move(f).error().context("from the agent");
                    break;
                }
                if (!*f) break;
                wire::Frame& fr = **f;
                if (fr.type == static_cast<std::uint16_t>(msg::Type::error_reply)) {
                    auto e = msg::decode_as<msg::ErrorReply>(fr);
                    failed = e ? Error(static_cast<Errc>(e->code), "agent: " + e->message) : std::move(e).error();
                    break;
                }
                auto r = msg::decode_as<msg::ChanReply>(fr);
                if (!r) {
                    failed = std::move(r).error().context("from the agent");
                    break;
                }
                got.push_back(std::move(*r));
            }
        }
        lk.lock();
        reading_ = false;
        for (auto& r : got) {
            if (auto b = buffered_.find(r.request_id); b != buffered_.end()) {
                // A send nobody waits for: keep its failure for the next send to that channel.
                if (r.code != 0) deferred_.try_emplace(b->second.first, static_cast<Errc>(r.code), r.message);
                buffered_bytes_ -= b->second.second;
                buffered_.erase(b);
                continue;
            }
            replies_[r.request_id] = std::move(r);
        }
        if (failed && !broken_) broken_ = std::move(failed);
        cv_.notify_all();
    }
}

Result<msg::ChanReply> Gateway::wait_reply(std::uint64_t id) {
    std::unique_lock lk(mu_);
    DRAGON_CHECK(wait_for(lk, [&] { return replies_.contains(id); }));
    auto it = replies_.find(id);
    msg::ChanReply r = std::move(it->second);
    replies_.erase(it);
    return r;
}

void Gateway::forget_buffered(std::uint64_t id) {
    std::lock_guard lk(mu_);
    if (auto b = buffered_.find(id); b != buffered_.end()) {
        buffered_bytes_ -= b->second.second;
        buffered_.erase(b);
    }
    cv_.notify_all();
}

Status Gateway::flush(channels::Timeout timeout) {
    std::unique_lock lk(mu_);
    const auto deadline = timeout == channels::kForever ? std::chrono::steady_clock::time_point::max()
                                                        : std::chrono::steady_clock::now() + timeout;
    DRAGON_CHECK(wait_for(lk, [&] { return buffered_.empty() || std::chrono::steady_clock::now() >= deadline; }));
    if (!buffered_.empty())
        return make_error(Errc::timeout, "{} sends are still on their way", buffered_.size());
    if (deferred_.empty()) return ok();
    Error e = deferred_.begin()->second;
    deferred_.clear();
    return e;
}

Status Gateway::send(const channels::ChannelDescriptor& d, std::span<const std::byte> data, channels::Timeout timeout) {
    msg::ChanSend m;
    m.descriptor = encoded(d);
    const bool buffered = timeout == channels::kForever;
    {
        std::unique_lock lk(mu_);
        if (buffered) {
            // On its way without waiting for the remote channel, at most kMaxBuffered at once.
            DRAGON_CHECK(wait_for(lk, [&] {
                return buffered_.empty() || (buffered_.size() < kMaxBuffered && buffered_bytes_ + data.size() <= kMaxBufferedBytes);
            }));
        }
        if (auto it = deferred_.find(m.descriptor); it != deferred_.end()) {
            Error e = std::move(it->second);  // an earlier send to this channel failed: say so, send nothing
            deferred_.erase(it);
            return e;
        }
        m.request_id = next_id_++;
        if (buffered) {
            buffered_.emplace(m.request_id, std::make_pair(m.descriptor, data.size()));
            buffered_bytes_ += data.size();
        }
    }
    const auto start = std::chrono::steady_clock::now();
    if (data.size() <= kInlineMax) {
        m.data.assign(reinterpret_cast<const char*>(data.data()), data.size());
    } else {
        // Through the pool: the agent sends it from there (no copy through the socket).
        auto b = pool_.allocate(data.size(), timeout);
        if (!b) {
            if (buffered) forget_buffered(m.request_id);
            return std::move(b).error().context("sending a large message to another node");
        }
        std::memcpy(pool_.at(*b), data.data(), data.size());
        m.block = *b;
        m.size = data.size();
        if (timeout != channels::kForever && timeout.count() > 0)
            timeout = std::max(channels::Timeout(1), timeout - (std::chrono::steady_clock::now() - start));
    }
    m.timeout_ns = to_ns(timeout);
    if (auto st = post_request(wire::frame_of(m)); !st) {
        if (m.block != 0) (void)pool_.free(m.block);  // the agent never had it
        if (buffered) forget_buffered(m.request_id);
        return st;
    }
    if (buffered) return ok();
    // From here the block is the agent's, whatever happens.
    auto r = DRAGON_TRY(wait_reply(m.request_id));
    return reply_status(r);
}

Result<msg::ChanReply> Gateway::recv_reply(const channels::ChannelDescriptor& d, channels::Timeout timeout) {
    msg::ChanRecv m;
    {
        std::lock_guard lk(mu_);
        m.request_id = next_id_++;
    }
    m.descriptor = encoded(d);
    m.timeout_ns = to_ns(timeout);
    DRAGON_CHECK(post_request(wire::frame_of(m)));
    auto r = DRAGON_TRY(wait_reply(m.request_id));
    DRAGON_CHECK(reply_status(r));
    if (r.block != 0) {
        auto bs = pool_.block_size(r.block);
        if (!bs || *bs < r.size)
            return make_error(Errc::protocol, "the agent named block {} of {} bytes, which this pool has not", r.block,
                              r.size);
    }
    return r;
}

Status Gateway::recv(const channels::ChannelDescriptor& d, std::vector<std::byte>& out, channels::Timeout timeout) {
    auto r = DRAGON_TRY(recv_reply(d, timeout));
    if (r.block != 0) {
        auto m = channels::Message::adopt(pool_, r.block, r.size);  // freed when m goes
        out.resize(r.size);
        std::memcpy(out.data(), m.data().data(), r.size);
        return ok();
    }
    out.resize(r.data.size());
    if (!r.data.empty()) std::memcpy(out.data(), r.data.data(), r.data.size());
    return ok();
}

Result<channels::Message> Gateway::recv_message(const channels::ChannelDescriptor& d, channels::Timeout timeout) {
    auto r = DRAGON_TRY(recv_reply(d, timeout));
    if (r.block != 0) return channels::Message::adopt(pool_, r.block, r.size);
    std::vector<std::byte> v(r.data.size());
    if (!r.data.empty()) std::memcpy(v.data(), r.data.data(), r.data.size());
    return channels::Message::of(std::move(v));
}

Result<ChannelRef> ChannelRef::open(std::shared_ptr<Gateway> gateway, const channels::ChannelDescriptor& d) {
    if (!gateway) return make_error(Errc::invalid_argument, "ChannelRef::open: no gateway");
    auto parts = DRAGON_TRY(channels::parse_pool_name(d.pool_name));
    if (parts.run_id != gateway->run_id())
        return make_error(Errc::invalid_argument, "channel {} belongs to run {}, not this run ({})", d.channel_id,
                          parts.run_id, gateway->run_id());
    if (parts.node_id != d.node_id)
        return make_error(Errc::invalid_argument, "channel {}: descriptor names node {} but pool {}", d.channel_id,
                          d.node_id, d.pool_name);
    if (d.node_id != gateway->node_id()) return ChannelRef(std::move(gateway), d, std::nullopt);
    auto ch = DRAGON_TRY(channels::Channel::attach(gateway->pool(), d));
    return ChannelRef(std::move(gateway), d, std::move(ch));
}

Status ChannelRef::send(std::span<const std::byte> msg, channels::Timeout timeout) {
    if (local_) return local_->send(msg, timeout);
    return gw_->send(d_, msg, timeout);
}

Status ChannelRef::recv(std::vector<std::byte>& out, channels::Timeout timeout) {
    if (local_) return local_->recv(out, timeout);
    return gw_->recv(d_, out, timeout);
}

Result<channels::Message> ChannelRef::recv_message(channels::Timeout timeout) {
    if (local_) return local_->recv_message(timeout);
    return gw_->recv_message(d_, timeout);
}

}  // namespace dragon::client
