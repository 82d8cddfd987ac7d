// Channel: bounded MPMC ring in a pool; robust per-side locks, one-store commits, futex waits.
#include <sched.h>
#include "dragon/channels/channel.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "futex.hpp"
#include "layout.hpp"
#include "pool_mapping.hpp"
#include "robust_lock.hpp"

namespace dragon::channels {

using detail::ChannelHeader;
using detail::Deadline;
using detail::kSlotHeader;
using detail::RobustGuard;
using detail::SlotHeader;
using detail::WaitResult;

namespace {

constexpr std::uint32_t kMaxCapacity = 1U << 24;
constexpr std::uint32_t kMaxBlock = 1U << 20;
constexpr std::uint32_t kSpinMin = 32;
constexpr std::uint32_t kSpinMax = 4096;
constexpr std::uint32_t kSpinInit = 512;
constexpr std::uint32_t kSpinStepMax = 8;
constexpr auto kShortSleep = std::chrono::microseconds(50);  // a sleep this short: spin longer next time
constexpr std::uint32_t kYieldAfter = 32;   // spin steps (a few microseconds of pauses) before yielding between checks

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

Error closed_error() { return Error(Errc::closed, "channel handle is detached or destroyed"); }

Error gone_error(std::uint64_t id) {
    return make_error(Errc::closed, "channel {} was destroyed (by its creator, under this handle)", id);
}

// Another process's destroy() clears the magic under both locks and then
// frees the block. A handle checks before it locks and again once it holds
// the lock: using a channel after its creator destroyed it is a clean
// `closed` error instead of writes into memory the pool may have handed
// out again. (The narrow window between a check and the lock remains: the
// contract is still that a creator destroys only what nobody uses.)
bool live(const ChannelHeader* h, std::uint64_t id) {
    return h->magic.load(std::memory_order_acquire) == detail::kChannelMagic && h->id == id;
}

}  // namespace

// --- Message ----------------------------------------------------------------

Message::Message(Message&& o) noexcept
    : pool_(std::move(o.pool_)), offset_(std::exchange(o.offset_, 0)), size_(std::exchange(o.size_, 0)),
      inline_(std::move(o.inline_)) {}

Message& Message::operator=(Message&& o) noexcept {
    if (this != &o) {
        release();
        pool_ = std::move(o.pool_);
        offset_ = std::exchange(o.offset_, 0);
        size_ = std::exchange(o.size_, 0);
        inline_ = std::move(o.inline_);
    }
    return *this;
}

Message::~Message() { release(); }

void Message::release() noexcept {
    if (offset_ != 0 && pool_) (void)pool_->free(offset_);
    offset_ = 0;
}

Message Message::adopt(const Pool& pool, std::uint64_t offset, std::size_t size) {
    Message m;
    m.pool_ = pool.mapping();
    m.offset_ = offset;
    m.size_ = size;
    return m;
}

Message Message::of(std::vector<std::byte> bytes) {
    Message m;
    m.size_ = bytes.size();
    m.inline_ = std::move(bytes);
    return m;
}

std::span<const std::byte> Message::data() const noexcept {
    if (offset_ != 0) return {pool_->at(offset_), size_};
    return {inline_.data(), size_};
}

// --- Channel ----------------------------------------------------------------

Channel::Channel(std::shared_ptr<detail::PoolMapping> pool, std::uint64_t offset) noexcept
    : pool_(std::move(pool)),
      offset_(offset),
      h_(reinterpret_cast<ChannelHeader*>(pool_->at(offset))),
      slots_(pool_->at(offset) + h_->slots_offset),
      spin_(std::make_unique<std::atomic<std::uint32_t>>(kSpinInit)),
      id_(h_->id) {}

Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&&) noexcept = default;
Channel::~Channel() = default;

Result<Channel> Channel::create(const Pool& pool, const ChannelAttrs& attrs, Timeout timeout) {
    if (attrs.capacity == 0 || attrs.capacity > kMaxCapacity)
        return make_error(Errc::invalid_argument, "channel capacity {} not in 1..{}", attrs.capacity, kMaxCapacity);
    if (attrs.block_size > kMaxBlock)
        return make_error(Errc::invalid_argument, "channel block size {} over {}", attrs.block_size, kMaxBlock);
    const auto& m = pool.mapping();
    std::size_t slot_size = round_up(kSlotHeader + attrs.block_size, detail::kCacheLine);
    std::size_t hdr_bytes = round_up(sizeof(ChannelHeader), detail::kCacheLine);
    std::size_t total = hdr_bytes + std::size_t{attrs.capacity} * slot_size;
    auto off = m->allocate(total, Deadline(timeout));
    if (!off) return std::move(off).error().context("creating channel");

    auto* h = new (m->at(*off)) ChannelHeader{};
    h->id = m->header()->next_channel_id.fetch_add(1);
    h->pool_generation = m->header()->generation;
    h->capacity = attrs.capacity;
    h->block_size = attrs.block_size;
    h->slot_size = static_cast<std::uint32_t>(slot_size);
    h->slots_offset = hdr_bytes;
    h->max_queued_bytes = attrs.max_queued_bytes;
    auto st = detail::init_robust_mutex(&h->send_lock);
    if (st) st = detail::init_robust_mutex(&h->recv_lock);
    if (!st) {
        (void)m->free(*off);
        return std::move(st).error().context("creating channel");
    }
    h->magic.store(detail::kChannelMagic, std::memory_order_release);
    return Channel(m, *off);
}

Result<Channel> Channel::attach(const Pool& pool, const ChannelDescriptor& d) {
    auto bad = [&](std::string_view why) {
        return make_error(Errc::invalid_argument, "channel descriptor {}@{}: {}", d.pool_name, d.channel_offset, why);
    };
    if (d.pool_name != pool.name()) return bad(fmt::format("names another pool than {}", pool.name()));
    if (d.node_id != pool.node_id()) return bad("names another node");
    if (d.pool_generation != pool.generation()) return bad("stale: the pool was re-created (generation mismatch)");
    auto block = pool.block_size(d.channel_offset);
    if (!block) return bad(block.error().message());
    if (*block < sizeof(ChannelHeader)) return bad("block too small for a channel");
    const auto* h = reinterpret_cast<const ChannelHeader*>(pool.at(d.channel_offset));
    if (h->magic.load(std::memory_order_acquire) != detail::kChannelMagic) return bad("no live channel there");
    if (h->id != d.channel_id) return bad("stale: channel id mismatch");
    if (h->pool_generation != pool.generation()) return bad("channel header from another pool generation");
    if (h->capacity == 0 || h->capacity > kMaxCapacity || h->block_size > kMaxBlock ||
        h->slot_size < kSlotHeader + h->block_size || h->slots_offset < sizeof(ChannelHeader) ||
        h->slots_offset > *block ||
        std::uint64_t{h->capacity} * h->slot_size > *block - h->slots_offset)
        return bad("channel header fails validation");
    return Channel(pool.mapping(), d.channel_offset);
}

Result<Channel> Channel::attach(const ChannelDescriptor& d) {
    auto pool = DRAGON_TRY(Pool::attach(d.pool_name));
    return attach(pool, d);
}

ChannelDescriptor Channel::descriptor() const {
    ChannelDescriptor d;
    if (h_ == nullptr) return d;
    d.node_id = pool_->header()->node_id;
    d.pool_name = pool_->name();
    d.pool_generation = pool_->header()->generation;
    d.channel_offset = offset_;
    d.channel_id = h_->id;
    return d;
}

namespace {

// Lock repair for both sides: every ring mutation commits with one store, so
// a dead owner can only have left an unpublished slot; check the indices.
enum class Side { send, recv };

Status check_ring(ChannelHeader* h, Side side) {
    std::uint64_t head = h->head.load(), tail = h->tail.load();
    if (tail - head > h->capacity)
        return make_error(Errc::internal, "channel {} ring indices corrupt (head {}, tail {})", h->id, head, tail);
    // The dead owner may have been refreshing this side's cached index.
    if (side == Side::send) {
        h->send_cached_head = head;
        h->send_tail = tail;
    } else {
        h->recv_cached_tail = tail;
        h->recv_head = head;
    }
    return ok();
}

std::byte* slot(std::byte* slots, const ChannelHeader* h, std::uint64_t index) {
    return slots + (index % h->capacity) * h->slot_size;
}

// Announces a sleeper on `word`; returns the value to sleep on.
std::uint32_t announce(std::atomic<std::uint32_t>& word) {
    // seq_cst RMW; the caller's re-check uses seq_cst loads (plain movs on x86),
    // which cannot be ordered before it.
    return word.fetch_or(1) | 1U;
}

// Spins (adaptively) and then sleeps on `word` until pred() holds or the deadline.
template <class Pred>
WaitResult wait_until(Pred&& pred, std::atomic<std::uint32_t>& word, const Deadline& dl,
                      std::atomic<std::uint32_t>& spin) {
    // Back off between checks: polling the other side's index on every pause
    // keeps stealing its cache line and slows the very side we wait for.
    std::uint32_t budget = spin.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0, step = 1; i < budget; i += step, step = std::min(step * 2, kSpinStepMax)) {
        if (pred()) {
            spin.store(std::min(kSpinMax, budget * 2), std::memory_order_relaxed);
            return WaitResult::woken;
        }
        if (i >= kYieldAfter) {
            // Spun a while: if the side we wait for shares our cpu (unpinned
            // processes often do), let it run now instead of burning the
            // budget; with nothing else runnable this returns at once.
            ::sched_yield();
        } else {
            for (std::uint32_t j = 0; j < step; ++j) detail::cpu_relax();
        }
    }
    spin.store(std::max(kSpinMin, budget / 2), std::memory_order_relaxed);
    // Dekker with the other side: we announce (seq_cst RMW) then re-check; it
    // commits (seq_cst store) then looks for the announcement. One of us sees the other.
    std::uint32_t v = announce(word);
    if (pred()) return WaitResult::woken;
    const auto slept = std::chrono::steady_clock::now();
    WaitResult r = detail::futex_wait(word, v, dl);
    // Woken soon after giving up: the other side answers in about the time
    // a sleep and a wake-up cost, so a longer spin would have caught it.
    // Without this the budget only shrinks once a wait overruns it (the
    // start of a conversation, a slow first message), and a ping-pong whose
    // other side needs a few microseconds more than the smallest budget
    // then sleeps on every message for good (a pickled Pipe round trip
    // went from ~9 us to ~70 us, one run in two).
    if (r == WaitResult::woken && std::chrono::steady_clock::now() - slept < kShortSleep)
        spin.store(std::min(kSpinMax, budget * 2), std::memory_order_relaxed);
    return r;
}

// After a commit: wakes sleepers only if one announced itself (no syscall otherwise).
void notify(std::atomic<std::uint32_t>& word) {
    std::uint32_t v = word.load();
    while ((v & 1U) != 0) {
        if (word.compare_exchange_weak(v, v + 1)) {  // clears the flag and bumps the sequence
            detail::futex_wake(word);
            return;
        }
    }
}

}  // namespace

Status Channel::destroy() {
    if (h_ == nullptr) return closed_error();
    if (!live(h_, id_)) return gone_error(id_);
    {
        auto sg = DRAGON_TRY(RobustGuard::lock(&h_->send_lock, [this] { return check_ring(h_, Side::send); }));
        auto rg = DRAGON_TRY(RobustGuard::lock(&h_->recv_lock, [this] { return check_ring(h_, Side::recv); }));
        h_->magic.store(0, std::memory_order_release);
        // Sleepers in other processes wake, see the channel gone and return
        // `closed` (not wait forever on memory that is no longer a channel).
        for (auto* word : {&h_->data_seq, &h_->space_seq}) {
            word->fetch_add(2);
            detail::futex_wake(*word);
        }
        for (std::uint64_t i = h_->head.load(); i != h_->tail.load(); ++i) {
            SlotHeader sh;
            std::memcpy(&sh, slot(slots_, h_, i), sizeof sh);
            if (sh.pool_offset != 0) (void)pool_->free(sh.pool_offset);
        }
    }
    Status st = pool_->free(offset_);
    h_ = nullptr;
    slots_ = nullptr;
    return st;
}

Status Channel::send(std::span<const std::byte> msg, Timeout timeout) {
    if (h_ == nullptr) return closed_error();
    Deadline dl(timeout);
    if (msg.size() <= h_->block_size) return enqueue(msg.data(), msg.size(), 0, dl);
    // Copy outside the ring lock: a sender dying here leaks the block but
    // never exposes a half-written message.
    auto b = pool_->allocate(msg.size(), dl);
    if (!b) return std::move(b).error().context("sending a large message");
    std::memcpy(pool_->at(*b), msg.data(), msg.size());
    Status st = enqueue(nullptr, msg.size(), *b, dl);
    if (!st) (void)pool_->free(*b);
    return st;
}

Status Channel::send_block(std::uint64_t block, std::size_t size, Timeout timeout) {
    if (h_ == nullptr) return closed_error();
    auto bs = pool_->block_size(block);
    if (!bs || *bs < size)
        return make_error(Errc::invalid_argument, "channel {}: offset {} is not a block of {} bytes or more in {}",
                          h_->id, block, size, pool_->name());
    Deadline dl(timeout);
    if (size > h_->block_size) return enqueue(nullptr, size, block, dl);
    DRAGON_CHECK(enqueue(pool_->at(block), size, 0, dl));
    (void)pool_->free(block);
    return ok();
}

Status Channel::enqueue(const std::byte* data, std::size_t size, std::uint64_t block, const Deadline& dl) {
    const bool big = block != 0;
    const std::uint64_t cap = h_->capacity;
    auto budget_allows = [this](std::uint64_t n, std::uint64_t t) {
        std::uint64_t limit = h_->max_queued_bytes;
        return limit == 0 || t == h_->head.load() || h_->queued_bytes.load() + n <= limit;
    };
    for (;;) {
        if (!live(h_, id_)) return gone_error(id_);
        {
            auto g = DRAGON_TRY(RobustGuard::lock(&h_->send_lock, [this] { return check_ring(h_, Side::send); }));
            if (!live(h_, id_)) return gone_error(id_);
            std::uint64_t t = h_->send_tail;
            if (t - h_->send_cached_head >= cap) h_->send_cached_head = h_->head.load(std::memory_order_acquire);
            if (t - h_->send_cached_head < cap && (!big || budget_allows(size, t))) {
                std::byte* s = slot(slots_, h_, t);
                SlotHeader sh{size, block};
                std::memcpy(s, &sh, sizeof sh);
                if (!big && size != 0) std::memcpy(s + kSlotHeader, data, size);
                if (big) h_->queued_bytes.fetch_add(size);
                h_->tail.store(t + 1);  // the commit (seq_cst: also orders the waiter check below)
                h_->send_tail = t + 1;
                g.unlock();
                notify(h_->data_seq);
                return ok();
            }
        }
        if (dl.try_once()) return make_error(Errc::would_block, "channel {} is full", h_->id);
        auto space = [this, cap, big, &budget_allows, size] {
            std::uint64_t t = h_->tail.load(std::memory_order_relaxed);
            return t - h_->head.load() < cap && (!big || budget_allows(size, t));
        };
        if (wait_until(space, h_->space_seq, dl, *spin_) == WaitResult::timed_out)
            return make_error(Errc::timeout, "channel {}: send timed out (full)", h_->id);
    }
}

template <class Sink>
Status Channel::recv_impl(Timeout timeout, Sink&& sink) {
    if (h_ == nullptr) return closed_error();
    Deadline dl(timeout);
    for (;;) {
        std::uint64_t block = 0, size = 0;
        bool got = false;
        if (!live(h_, id_)) return gone_error(id_);
        {
            auto g = DRAGON_TRY(RobustGuard::lock(&h_->recv_lock, [this] { return check_ring(h_, Side::recv); }));
            if (!live(h_, id_)) return gone_error(id_);
            std::uint64_t hd = h_->recv_head;
            if (hd == h_->recv_cached_tail) h_->recv_cached_tail = h_->tail.load(std::memory_order_acquire);
            if (hd != h_->recv_cached_tail) {
                const std::byte* s = slot(slots_, h_, hd);
                SlotHeader sh;
                std::memcpy(&sh, s, sizeof sh);
                bool valid = sh.pool_offset == 0 ? sh.size <= h_->block_size : [&] {
                    auto bs = pool_->block_size(sh.pool_offset);
                    return bs && *bs >= sh.size;
                }();
                if (!valid) {
                    h_->head.store(hd + 1);  // drop it rather than wedge every receiver
                    h_->recv_head = hd + 1;
                    return make_error(Errc::protocol, "channel {}: corrupt slot {} dropped", h_->id, hd);
                }
                if (!sink.fits(sh.size))
                    return make_error(Errc::too_large, "channel {}: message of {} bytes does not fit the buffer",
                                      h_->id, sh.size);
                if (sh.pool_offset == 0) sink.take_inline(s + kSlotHeader, sh.size);
                block = sh.pool_offset;
                size = sh.size;
                h_->head.store(hd + 1);  // the commit
                h_->recv_head = hd + 1;
                got = true;
            }
        }
        if (got) {
            if (block != 0) h_->queued_bytes.fetch_sub(size);
            notify(h_->space_seq);
            if (block != 0) return sink.take_block(block, size);
            return ok();
        }
        if (dl.try_once()) return make_error(Errc::would_block, "channel {} is empty", h_->id);
        auto data = [this] { return h_->tail.load() != h_->head.load(std::memory_order_relaxed); };
        if (wait_until(data, h_->data_seq, dl, *spin_) == WaitResult::timed_out)
            return make_error(Errc::timeout, "channel {}: recv timed out (empty)", h_->id);
    }
}

Result<std::size_t> Channel::recv(std::span<std::byte> buffer, Timeout timeout) {
    struct Sink {
        std::span<std::byte> buf;
        detail::PoolMapping* pool;
        std::size_t n = 0;
        bool fits(std::uint64_t size) const { return size <= buf.size(); }
        void take_inline(const std::byte* p, std::uint64_t size) {
            if (size != 0) std::memcpy(buf.data(), p, size);
            n = size;
        }
        Status take_block(std::uint64_t off, std::uint64_t size) {
            std::memcpy(buf.data(), pool->at(off), size);
            n = size;
            return pool->free(off);
        }
    } sink{buffer, pool_.get()};
    DRAGON_CHECK(recv_impl(timeout, sink));
    return sink.n;
}

Status Channel::recv(std::vector<std::byte>& out, Timeout timeout) {
    struct Sink {
        std::vector<std::byte>& out;
        detail::PoolMapping* pool;
        static bool fits(std::uint64_t) { return true; }
        void take_inline(const std::byte* p, std::uint64_t size) {
            out.resize(size);
            if (size != 0) std::memcpy(out.data(), p, size);
        }
        Status take_block(std::uint64_t off, std::uint64_t size) {
            out.resize(size);
            std::memcpy(out.data(), pool->at(off), size);
            return pool->free(off);
        }
    } sink{out, pool_.get()};
    return recv_impl(timeout, sink);
}

Result<Message> Channel::recv_message(Timeout timeout) {
    Message m;
    struct Sink {
        Message& m;
        const std::shared_ptr<detail::PoolMapping>& pool;
        static bool fits(std::uint64_t) { return true; }
        void take_inline(const std::byte* p, std::uint64_t size) {
            m.inline_.assign(p, p + size);
            m.size_ = size;
        }
        Status take_block(std::uint64_t off, std::uint64_t size) {
            m.pool_ = pool;
            m.offset_ = off;
            m.size_ = size;
            return ok();
        }
    } sink{m, pool_};
    DRAGON_CHECK(recv_impl(timeout, sink));
    return m;
}

// seq_cst loads: poll() re-checks with these after announcing itself.
bool Channel::readable() const noexcept { return h_ != nullptr && h_->tail.load() != h_->head.load(); }

bool Channel::writable() const noexcept {
    return h_ != nullptr && h_->tail.load() - h_->head.load() < h_->capacity;
}

std::size_t Channel::queued() const noexcept {
    if (h_ == nullptr) return 0;
    std::uint64_t hd = h_->head.load(std::memory_order_acquire);
    return h_->tail.load(std::memory_order_acquire) - hd;
}

std::uint32_t Channel::capacity() const noexcept { return h_ != nullptr ? h_->capacity : 0; }
std::uint32_t Channel::block_size() const noexcept { return h_ != nullptr ? h_->block_size : 0; }

// --- poll -------------------------------------------------------------------

Result<std::size_t> poll(std::span<PollItem> items, Timeout timeout) {
    constexpr std::size_t kMaxItems = 64;  // two futex words each, futex_waitv takes 128
    if (items.empty() || items.size() > kMaxItems)
        return make_error(Errc::invalid_argument, "poll: {} items (1..{} allowed)", items.size(), kMaxItems);
    for (auto& it : items)
        if (it.channel == nullptr || it.channel->h_ == nullptr || (it.events & (kReadable | kWritable)) == 0)
            return make_error(Errc::invalid_argument, "poll: null or detached channel, or no events");
    auto scan = [&] {
        std::size_t n = 0;
        for (auto& it : items) {
            it.revents = 0;
            if ((it.events & kReadable) != 0 && it.channel->readable()) it.revents |= kReadable;
            if ((it.events & kWritable) != 0 && it.channel->writable()) it.revents |= kWritable;
            n += it.revents != 0 ? 1 : 0;
        }
        return n;
    };
    Deadline dl(timeout);
    std::atomic<std::uint32_t>& spin = *items[0].channel->spin_;
    for (;;) {
        std::uint32_t budget = spin.load(std::memory_order_relaxed) / 8 + 1;
        for (std::uint32_t i = 0; i < budget; ++i) {
            if (std::size_t n = scan()) return n;
            detail::cpu_relax();
        }
        if (dl.try_once()) return make_error(Errc::would_block, "poll: nothing ready");
        detail::WaitItem w[2 * kMaxItems];
        std::size_t k = 0;
        for (auto& it : items) {
            ChannelHeader* h = it.channel->h_;
            if ((it.events & kReadable) != 0) w[k++] = {&h->data_seq, announce(h->data_seq)};
            if ((it.events & kWritable) != 0) w[k++] = {&h->space_seq, announce(h->space_seq)};
        }
        std::size_t n = scan();
        WaitResult r = WaitResult::woken;
        if (n == 0) r = detail::futex_waitv({w, k}, dl);
        if (n != 0) return n;
        if (r == WaitResult::timed_out) {
            if (std::size_t n2 = scan()) return n2;
            return make_error(Errc::timeout, "poll: timed out");
        }
    }
}

}  // namespace dragon::channels
