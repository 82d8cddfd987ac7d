// SyncBlock: a robust, process-shared counting semaphore with holder records (sync.hpp).
#include "dragon/channels/sync.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>

#include "futex.hpp"
#include "layout.hpp"
#include "pool_mapping.hpp"
#include "robust_lock.hpp"

namespace dragon::channels {
namespace detail {

inline constexpr std::uint64_t kSyncMagic = 0x434e5953474e5244ULL;  // "DRGNSYNC"

struct Holder {
    std::atomic<std::int32_t> pid;    // 0: free entry; claimed and freed under the lock
    std::atomic<std::int32_t> count;  // counts held (counting blocks); the owner adds and takes lock-free
    std::uint64_t start;              // process start time (pid reuse)
};

struct alignas(kCacheLine) SyncHeader {
    std::uint64_t magic;
    std::uint64_t id;
    std::uint64_t data_size;
    std::int32_t maximum;  // release() beyond it fails
    std::int32_t binary;   // 1: maximum 1, the word names the holder
    pthread_mutex_t lock;  // robust, process-shared: holder slots only
    // The hot line: what an acquire, a release and a waiter touch.
    alignas(kCacheLine) std::atomic<std::int32_t> word;  // count, or (binary) 0 free / holder pid / kUnowned
    std::atomic<std::uint32_t> seq;       // futex word: bumped by release() when someone sleeps
    std::atomic<std::uint32_t> sleepers;  // waiters between registering and leaving a wait
    alignas(kCacheLine) Holder holders[SyncBlock::kMaxHolders];
};
static_assert(std::atomic<std::int32_t>::is_always_lock_free);

inline constexpr std::size_t kDataOffset = (sizeof(SyncHeader) + kCacheLine - 1) / kCacheLine * kCacheLine;

namespace {

struct Self {
    int pid = 0;
    std::uint64_t start = 0;
};

// This process's identity, cached: getpid() is a system call, which an
// uncontended acquire should not make. A forked child drops the cache.
Self g_self;
std::atomic<bool> g_self_known{false};
std::mutex g_self_mu;

void forget_self() noexcept { g_self_known.store(false, std::memory_order_relaxed); }

Self self() noexcept {
    if (g_self_known.load(std::memory_order_acquire)) return g_self;
    std::lock_guard lk(g_self_mu);
    if (!g_self_known.load(std::memory_order_relaxed)) {
        static std::once_flag once;
        std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, forget_self); });
        int pid = static_cast<int>(::getpid());
        g_self = Self{pid, process_start_time(pid)};
        g_self_known.store(true, std::memory_order_release);
    }
    return g_self;
}

// After a process died under the lock: the lock guards only slot claims and
// frees, each a whole-field store, so there is nothing to mend.
Status repair(SyncHeader*) noexcept { return ok(); }

// Takes one count off `c` if it has any.
bool take_one(std::atomic<std::int32_t>& c) noexcept {
    std::int32_t v = c.load(std::memory_order_relaxed);
    while (v > 0)
        if (c.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) return true;
    return false;
}

// The start time recorded for `pid` in a slot, 0 when none.
std::uint64_t recorded_start(const SyncHeader* h, std::int32_t pid) noexcept {
    for (const auto& e : h->holders)
        if (e.pid.load(std::memory_order_relaxed) == pid) return e.start;
    return 0;
}

bool alive(std::int32_t pid, std::uint64_t start) noexcept {
    if (pid <= 0) return true;
    if (::kill(pid, 0) == -1 && errno == ESRCH) return false;
    std::uint64_t st = process_start_time(pid);
    // A different start time: the pid was reused by another process.
    return st == 0 || start == 0 || st == start;
}

}  // namespace
}  // namespace detail

std::uint64_t process_start_time(int pid) noexcept {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[1024];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    // Field 22 (starttime), counted after the ")" that ends the command name.
    const char* p = std::strrchr(buf, ')');
    if (p == nullptr) return 0;
    int field = 2;
    for (; *p != '\0' && field < 22; ++p)
        if (*p == ' ') ++field;
    return std::strtoull(p, nullptr, 10);
}

SyncBlock::SyncBlock(std::shared_ptr<detail::PoolMapping> pool, std::uint64_t offset) noexcept
    : pool_(std::move(pool)), offset_(offset) {}

detail::SyncHeader* SyncBlock::hdr() const noexcept {
    return reinterpret_cast<detail::SyncHeader*>(pool_->at(offset_));
}

Result<SyncBlock> SyncBlock::create(const Pool& pool, std::int32_t value, std::int32_t maximum,
                                    std::size_t data_bytes) {
    if (value < 0) return make_error(Errc::invalid_argument, "semaphore initial value must be >= 0 (got {})", value);
    if (value > maximum)
        return make_error(Errc::invalid_argument, "semaphore maximum {} below its initial value {}", maximum, value);
    if (data_bytes > (std::size_t{1} << 40))
        return make_error(Errc::too_large, "shared data of {} bytes", data_bytes);
    const auto& m = pool.mapping();
    std::uint64_t off = DRAGON_TRY(m->allocate(detail::kDataOffset + data_bytes, detail::Deadline(std::chrono::seconds(1))));
    std::uint64_t id = 0;
    while (id == 0)
        if (::getrandom(&id, sizeof id, 0) != sizeof id) id = off ^ static_cast<std::uint64_t>(::getpid()) << 32;
    auto* raw = m->at(off);
    std::memset(raw, 0, detail::kDataOffset + data_bytes);
    auto* h = new (raw) detail::SyncHeader{};
    h->id = id;
    h->data_size = data_bytes;
    h->maximum = maximum;
    h->binary = maximum == 1 ? 1 : 0;
    h->word.store(h->binary != 0 ? (value == 1 ? 0 : SyncBlock::kUnowned) : value, std::memory_order_relaxed);
    if (Status st = detail::init_robust_mutex(&h->lock); !st) {
        (void)m->free(off);
        return std::move(st).error();
    }
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = detail::kSyncMagic;
    return SyncBlock(m, off);
}

Result<SyncBlock> SyncBlock::attach(const Pool& pool, std::uint64_t offset, std::uint64_t id) {
    const auto& m = pool.mapping();
    std::size_t size = DRAGON_TRY(m->block_size(offset));
    if (size < detail::kDataOffset) return make_error(Errc::protocol, "block at {} is too small for a sync object", offset);
    auto* h = reinterpret_cast<detail::SyncHeader*>(m->at(offset));
    if (h->magic != detail::kSyncMagic || h->id != id || h->data_size > size - detail::kDataOffset)
        return make_error(Errc::protocol, "block at {} of {} is not the sync object {:#x} (freed or foreign)", offset,
                          m->name(), id);
    return SyncBlock(m, offset);
}

int SyncBlock::my_slot() noexcept {
    auto me = detail::self();
    if (int c = cache_.get(me.pid); c != -2) return c;
    auto* h = hdr();
    int idx = -1;
    {
        auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
        if (!g) return -1;  // unrecorded, as when the slots are full
        int free_idx = -1;
        for (int i = 0; i < kMaxHolders; ++i) {
            auto& e = h->holders[i];
            std::int32_t pid = e.pid.load(std::memory_order_relaxed);
            if (pid == me.pid && e.start == me.start) {
                idx = i;
                break;
            }
            if (pid == 0 && free_idx < 0) free_idx = i;
        }
        if (idx < 0 && free_idx >= 0) {
            idx = free_idx;
            auto& e = h->holders[idx];
            e.count.store(0, std::memory_order_relaxed);
            e.start = me.start;
            e.pid.store(me.pid, std::memory_order_release);
        }
    }
    cache_.set(idx, me.pid);
    return idx;
}

bool SyncBlock::try_acquire() noexcept {
    auto* h = hdr();
    if (h->binary != 0) {
        std::int32_t free_word = 0;
        const auto me = detail::self();
        if (!h->word.compare_exchange_strong(free_word, me.pid, std::memory_order_seq_cst)) return false;
        // The pid alone names the holder; the slot adds its start time (pid reuse), once per process.
        if (cache_.get(me.pid) == -2) (void)my_slot();
        return true;
    }
    std::int32_t c = h->word.load(std::memory_order_relaxed);
    while (c > 0) {
        if (h->word.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst)) {
            if (int s = my_slot(); s >= 0) h->holders[s].count.fetch_add(1, std::memory_order_relaxed);
            return true;
        }
    }
    return false;
}

Result<bool> SyncBlock::acquire(Timeout timeout) {
    if (try_acquire()) return true;
    detail::Deadline deadline(timeout);
    if (deadline.try_once() || deadline.passed()) return false;
    auto* h = hdr();
    for (;;) {
        // Registered as a sleeper before the last look: a release after that
        // look sees the sleeper and bumps seq, so the wait below returns.
        h->sleepers.fetch_add(1, std::memory_order_seq_cst);
        const std::uint32_t seq = h->seq.load(std::memory_order_seq_cst);
        if (try_acquire()) {
            h->sleepers.fetch_sub(1, std::memory_order_relaxed);
            return true;
        }
        // One slice, then look again (and for dead holders).
        detail::Deadline slice(kReapSlice);
        const detail::Deadline& d = (!deadline.forever() && deadline.abs() != nullptr &&
                                     (deadline.abs()->tv_sec < slice.abs()->tv_sec ||
                                      (deadline.abs()->tv_sec == slice.abs()->tv_sec &&
                                       deadline.abs()->tv_nsec < slice.abs()->tv_nsec)))
                                        ? deadline
                                        : slice;
        auto r = detail::futex_wait(h->seq, seq, d);
        h->sleepers.fetch_sub(1, std::memory_order_relaxed);
        if (r == detail::WaitResult::timed_out) {
            if (auto n = reap(); !n) return std::move(n).error();
        }
        // A count given back at the deadline is still taken.
        if (try_acquire()) return true;
        if (!deadline.forever() && deadline.passed()) return false;
    }
}

Status SyncBlock::release() {
    auto* h = hdr();
    if (h->binary != 0) {
        std::int32_t w = h->word.load(std::memory_order_relaxed);
        do {
            if (w == 0) return make_error(Errc::invalid_argument, "semaphore or lock released too many times");
        } while (!h->word.compare_exchange_weak(w, 0, std::memory_order_seq_cst));
    } else {
        // Off the caller's slot, or (a signal, a count handed over) off another's.
        detail::Holder* from = nullptr;
        const auto me = detail::self();
        if (int mine = cache_.get(me.pid); mine >= 0 && detail::take_one(h->holders[mine].count)) {
            from = &h->holders[mine];
        } else {
            for (auto& e : h->holders) {
                if (e.pid.load(std::memory_order_relaxed) == 0) continue;
                if (detail::take_one(e.count)) {
                    from = &e;
                    break;
                }
            }
        }
        std::int32_t c = h->word.load(std::memory_order_relaxed);
        do {
            if (c >= h->maximum) {
                if (from != nullptr) from->count.fetch_add(1, std::memory_order_relaxed);
                return make_error(Errc::invalid_argument, "semaphore or lock released too many times");
            }
        } while (!h->word.compare_exchange_weak(c, c + 1, std::memory_order_seq_cst));
    }
    if (h->sleepers.load(std::memory_order_seq_cst) > 0) {
        h->seq.fetch_add(1, std::memory_order_release);
        detail::futex_wake(h->seq, 1);
    }
    return ok();
}

Status SyncBlock::store(std::int32_t v) {
    auto* h = hdr();
    if (h->binary != 0) return make_error(Errc::invalid_argument, "store() on a binary sync block");
    if (v < 0 || v > h->maximum) return make_error(Errc::invalid_argument, "store({}) outside 0..{}", v, h->maximum);
    h->word.store(v, std::memory_order_seq_cst);
    if (v > 0 && h->sleepers.load(std::memory_order_seq_cst) > 0) {
        h->seq.fetch_add(1, std::memory_order_release);
        detail::futex_wake(h->seq);
    }
    return ok();
}

Result<bool> SyncBlock::wait_positive(Timeout timeout) {
    auto* h = hdr();
    if (h->binary != 0) return make_error(Errc::invalid_argument, "wait_positive() on a binary sync block");
    if (h->word.load(std::memory_order_acquire) > 0) return true;
    detail::Deadline deadline(timeout);
    if (deadline.try_once() || deadline.passed()) return false;
    for (;;) {
        h->sleepers.fetch_add(1, std::memory_order_seq_cst);
        const std::uint32_t seq = h->seq.load(std::memory_order_seq_cst);
        bool set = h->word.load(std::memory_order_seq_cst) > 0;
        if (!set) {
            (void)detail::futex_wait(h->seq, seq, deadline);
            set = h->word.load(std::memory_order_acquire) > 0;
        }
        h->sleepers.fetch_sub(1, std::memory_order_relaxed);
        if (set) return true;
        if (!deadline.forever() && deadline.passed()) return false;
    }
}

Result<std::int32_t> SyncBlock::bump() {
    auto* h = hdr();
    if (h->binary != 0) return make_error(Errc::invalid_argument, "bump() on a binary sync block");
    std::int32_t v = h->word.load(std::memory_order_relaxed);
    std::int32_t next = 0;
    do {
        next = v >= h->maximum ? 1 : v + 1;
    } while (!h->word.compare_exchange_weak(v, next, std::memory_order_seq_cst));
    if (h->sleepers.load(std::memory_order_seq_cst) > 0) {
        h->seq.fetch_add(1, std::memory_order_release);
        detail::futex_wake(h->seq);
    }
    return next;
}

Result<bool> SyncBlock::wait_change(std::int32_t seen, Timeout timeout) {
    auto* h = hdr();
    if (h->binary != 0) return make_error(Errc::invalid_argument, "wait_change() on a binary sync block");
    if (h->word.load(std::memory_order_acquire) != seen) return true;
    detail::Deadline deadline(timeout);
    if (deadline.try_once() || deadline.passed()) return false;
    for (;;) {
        h->sleepers.fetch_add(1, std::memory_order_seq_cst);
        const std::uint32_t seq = h->seq.load(std::memory_order_seq_cst);
        bool changed = h->word.load(std::memory_order_seq_cst) != seen;
        if (!changed) {
            (void)detail::futex_wait(h->seq, seq, deadline);
            changed = h->word.load(std::memory_order_acquire) != seen;
        }
        h->sleepers.fetch_sub(1, std::memory_order_relaxed);
        if (changed) return true;
        if (!deadline.forever() && deadline.passed()) return false;
    }
}

Result<int> SyncBlock::reap() {
    auto* h = hdr();
    int given = 0;
    {
        auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
        if (!g) return std::move(g).error();
        if (h->binary != 0) {
            std::int32_t w = h->word.load(std::memory_order_acquire);
            if (w > 0 && !detail::alive(w, detail::recorded_start(h, w)) &&
                h->word.compare_exchange_strong(w, 0, std::memory_order_seq_cst))
                given = 1;
        }
        for (auto& e : h->holders) {
            std::int32_t pid = e.pid.load(std::memory_order_relaxed);
            if (pid == 0 || detail::alive(pid, e.start)) continue;
            std::int32_t c = e.count.exchange(0, std::memory_order_relaxed);
            if (h->binary == 0 && c > 0) {
                std::int32_t v = h->word.load(std::memory_order_relaxed);
                std::int32_t add = 0;
                do {
                    add = std::min(c, h->maximum - v);
                    if (add <= 0) break;
                } while (!h->word.compare_exchange_weak(v, v + add, std::memory_order_seq_cst));
                if (add > 0) given += add;
            }
            e.start = 0;
            e.pid.store(0, std::memory_order_release);
        }
    }
    if (given > 0) {
        h->seq.fetch_add(1, std::memory_order_release);
        detail::futex_wake(h->seq, given);
    }
    return given;
}

Status SyncBlock::drop_mine() {
    auto* h = hdr();
    auto me = detail::self();
    if (h->binary != 0) {
        // A Lock it still holds stays locked, held by nobody recorded.
        std::int32_t w = me.pid;
        (void)h->word.compare_exchange_strong(w, kUnowned, std::memory_order_seq_cst);
    }
    auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
    if (!g) return std::move(g).error();
    for (auto& e : h->holders)
        if (e.pid.load(std::memory_order_relaxed) == me.pid && e.start == me.start) {
            e.count.store(0, std::memory_order_relaxed);
            e.start = 0;
            e.pid.store(0, std::memory_order_release);
        }
    cache_.set(-1, 0);
    return ok();
}

std::int32_t SyncBlock::value() const noexcept {
    const auto* h = hdr();
    std::int32_t w = h->word.load(std::memory_order_acquire);
    if (h->binary != 0) return w == 0 ? 1 : 0;
    return w;
}
std::int32_t SyncBlock::held_by_me() const noexcept {
    const auto* h = hdr();
    const auto me = detail::self();
    if (h->binary != 0) return h->word.load(std::memory_order_acquire) == me.pid ? 1 : 0;
    for (const auto& e : h->holders)
        if (e.pid.load(std::memory_order_acquire) == me.pid && e.start == me.start)
            return e.count.load(std::memory_order_relaxed);
    return 0;
}
bool SyncBlock::binary() const noexcept { return hdr()->binary != 0; }
std::int32_t SyncBlock::maximum() const noexcept { return hdr()->maximum; }
std::byte* SyncBlock::data() const noexcept { return pool_->at(offset_) + detail::kDataOffset; }
std::size_t SyncBlock::data_size() const noexcept { return hdr()->data_size; }
std::uint64_t SyncBlock::id() const noexcept { return hdr()->id; }
std::uint64_t SyncBlock::pool_generation() const noexcept { return pool_->header()->generation; }
const std::string& SyncBlock::pool_name() const noexcept { return pool_->name(); }

}  // namespace dragon::channels
