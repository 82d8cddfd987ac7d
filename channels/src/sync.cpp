// SyncBlock: a robust, process-shared counting semaphore with holder records (sync.hpp).
#include "dragon/channels/sync.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
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
    std::int32_t pid;     // 0: free entry
    std::int32_t count;
    std::uint64_t start;  // process start time (pid reuse)
};

struct alignas(kCacheLine) SyncHeader {
    std::uint64_t magic;
    std::uint64_t id;
    std::uint64_t data_size;
    std::int32_t maximum;  // release() beyond it fails
    std::int32_t value;    // under lock
    pthread_mutex_t lock;  // robust, process-shared
    std::atomic<std::uint32_t> seq;      // futex word: bumped by release() when someone sleeps
    std::atomic<std::uint32_t> sleepers; // processes between registering and leaving a wait
    Holder holders[SyncBlock::kMaxHolders];
};

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

bool alive(const Holder& h) noexcept {
    if (::kill(h.pid, 0) == -1 && errno == ESRCH) return false;
    std::uint64_t st = process_start_time(h.pid);
    // A different start time: the pid was reused by another process.
    return st == 0 || h.start == 0 || st == h.start;
}

// After a holder died under the lock: every store below is a whole field, so
// the state is consistent; only keep the count within its bounds.
Status repair(SyncHeader* h) noexcept {
    if (h->value < 0) h->value = 0;
    if (h->value > h->maximum) h->value = h->maximum;
    return ok();
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
    h->value = value;
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

Result<bool> SyncBlock::acquire(Timeout timeout) {
    auto* h = hdr();
    detail::Deadline deadline(timeout);
    auto me = detail::self();
    for (;;) {
        std::uint32_t seq = 0;
        {
            auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
            if (!g) return std::move(g).error();
            if (h->value > 0) {
                h->value -= 1;
                detail::Holder* free_entry = nullptr;
                for (auto& e : h->holders) {
                    if (e.pid == me.pid && e.start == me.start) {
                        e.count += 1;
                        return true;
                    }
                    if (e.pid == 0 && free_entry == nullptr) free_entry = &e;
                }
                if (free_entry != nullptr) *free_entry = detail::Holder{me.pid, 1, me.start};
                return true;
            }
            if (deadline.try_once() || deadline.passed()) return false;
            seq = h->seq.load(std::memory_order_relaxed);
            h->sleepers.fetch_add(1, std::memory_order_relaxed);
        }
        // One slice, then look again (and for dead holders).
        detail::Deadline slice(kReapSlice);
        const detail::Deadline& d = (!deadline.forever() && !slice.forever() && deadline.abs() != nullptr &&
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
        if (!deadline.forever() && deadline.passed()) {
            return acquire(kTryOnce);  // last look: a count given back at the deadline is still taken
        }
    }
}

Status SyncBlock::release() {
    auto* h = hdr();
    auto me = detail::self();
    bool wake = false;
    {
        auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
        if (!g) return std::move(g).error();
        if (h->value >= h->maximum)
            return make_error(Errc::invalid_argument, "semaphore or lock released too many times");
        h->value += 1;
        detail::Holder* mine = nullptr;
        detail::Holder* other = nullptr;
        for (auto& e : h->holders) {
            if (e.pid == 0 || e.count <= 0) continue;
            if (e.pid == me.pid && e.start == me.start) {
                mine = &e;
                break;
            }
            if (other == nullptr) other = &e;
        }
        if (detail::Holder* e = mine != nullptr ? mine : other; e != nullptr && --e->count == 0) *e = detail::Holder{};
        if (h->sleepers.load(std::memory_order_relaxed) > 0) {
            h->seq.fetch_add(1, std::memory_order_release);
            wake = true;
        }
    }
    if (wake) detail::futex_wake(h->seq, 1);
    return ok();
}

Result<int> SyncBlock::reap() {
    auto* h = hdr();
    int given = 0;
    {
        auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
        if (!g) return std::move(g).error();
        for (auto& e : h->holders) {
            if (e.pid == 0 || detail::alive(e)) continue;
            int c = e.count;
            e = detail::Holder{};
            if (h->value + c > h->maximum) c = h->maximum - h->value;
            if (c > 0) {
                h->value += c;
                given += c;
            }
        }
        if (given > 0) h->seq.fetch_add(1, std::memory_order_release);
    }
    if (given > 0) detail::futex_wake(h->seq, given);
    return given;
}

Status SyncBlock::drop_mine() {
    auto* h = hdr();
    auto me = detail::self();
    auto g = detail::RobustGuard::lock(&h->lock, [&] { return detail::repair(h); });
    if (!g) return std::move(g).error();
    for (auto& e : h->holders)
        if (e.pid == me.pid && e.start == me.start) e = detail::Holder{};
    return ok();
}

std::int32_t SyncBlock::value() const noexcept {
    return __atomic_load_n(&hdr()->value, __ATOMIC_ACQUIRE);
}
std::int32_t SyncBlock::maximum() const noexcept { return hdr()->maximum; }
std::byte* SyncBlock::data() const noexcept { return pool_->at(offset_) + detail::kDataOffset; }
std::size_t SyncBlock::data_size() const noexcept { return hdr()->data_size; }
std::uint64_t SyncBlock::id() const noexcept { return hdr()->id; }
std::uint64_t SyncBlock::pool_generation() const noexcept { return pool_->header()->generation; }
const std::string& SyncBlock::pool_name() const noexcept { return pool_->name(); }

}  // namespace dragon::channels
