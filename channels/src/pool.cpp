// Pool: POSIX shm segment creation/attachment and the crash-tolerant buddy allocator.
#include "dragon/channels/pool.hpp"
#include "dragon/common/names.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "dragon/common/sys.hpp"
#include "futex.hpp"
#include "pool_mapping.hpp"
#include "robust_lock.hpp"

namespace dragon::channels {

using detail::kFreeBit;
using detail::kMaxOrder;
using detail::kNil;
using detail::kNotStart;
using detail::kOrderMask;
using detail::kUnit;
using detail::kUnitShift;

namespace {

constexpr std::size_t kMinPoolSize = 64 * 1024;
constexpr std::size_t kPage = 4096;
constexpr std::string_view kShmDir = "/dev/shm";

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

// The compiler must not reorder order-map stores: a process can die between
// any two of them and the map must describe a valid partition at every step.
inline void crash_order_fence() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

}  // namespace

// Pool names are the runtime's resource names (common/names.hpp) with a
// leading slash for shm_open: one format, so cleanup of dead runs sees pools.
Result<std::string> make_pool_name(std::string_view run_id, std::uint32_t node_id) {
    auto run = DRAGON_TRY(RunId::parse(run_id));
    return "/" + names::shm_name(run, node_id, "pool");
}

Result<std::string> make_pool_name(std::string_view run_id, std::uint32_t node_id, std::string_view tag) {
    auto run = DRAGON_TRY(RunId::parse(run_id));
    auto name = "/" + names::shm_name(run, node_id, fmt::format("pool.{}", tag));
    if (tag.empty() || !names::parse_shm_name(std::string_view(name).substr(1)))
        return make_error(Errc::invalid_argument, "pool tag '{}' is not 1 or more of [a-z0-9_.]", tag);
    return name;
}

Result<PoolNameParts> parse_pool_name(std::string_view name) {
    auto parts = name.starts_with('/') ? names::parse_shm_name(name.substr(1)) : std::nullopt;
    if (!parts || (parts->what != "pool" && !(parts->what.starts_with("pool.") && parts->what.size() > 5)))
        return make_error(Errc::invalid_argument, "pool name '{}' is not /dragon-<runid>-n<nodeid>-pool[.<tag>]", name);
    return PoolNameParts{std::move(parts->run_id), parts->node};
}

namespace detail {

PoolMapping::~PoolMapping() { ::munmap(base_, size_); }

unsigned PoolMapping::max_order() const noexcept {
    auto units = hdr_->units;
    unsigned k = static_cast<unsigned>(std::bit_width(units)) - 1;
    return std::min(k, kMaxOrder);
}

void PoolMapping::push(std::uint64_t u, unsigned k) noexcept {
    FreeNode* n = node(u);
    n->next = hdr_->free_head[k];
    n->prev = kNil;
    if (n->next != kNil) node(n->next)->prev = u;
    hdr_->free_head[k] = u;
}

void PoolMapping::remove(std::uint64_t u, unsigned k) noexcept {
    FreeNode* n = node(u);
    if (n->prev != kNil) node(n->prev)->next = n->next;
    else hdr_->free_head[k] = n->next;
    if (n->next != kNil) node(n->next)->prev = n->prev;
}

void PoolMapping::insert_free(std::uint64_t u, unsigned k) noexcept {
    std::uint8_t* m = map();
    m[u] = static_cast<std::uint8_t>(kFreeBit | k);
    hdr_->free_units += std::uint64_t{1} << k;
    while (k < kMaxOrder) {
        std::uint64_t b = u ^ (std::uint64_t{1} << k);
        if (b + (std::uint64_t{1} << k) > hdr_->units || m[b] != (kFreeBit | k)) break;
        remove(b, k);
        std::uint64_t lo = std::min(u, b), hi = std::max(u, b);
        // Grow the lower entry first: it then covers the upper one, which a
        // crash-time rebuild ignores; only then retire the upper entry.
        m[lo] = static_cast<std::uint8_t>(kFreeBit | (k + 1));
        crash_order_fence();
        m[hi] = kNotStart;
        crash_order_fence();
        u = lo;
        ++k;
    }
    push(u, k);
}

bool PoolMapping::try_allocate(unsigned k, std::uint64_t& unit) noexcept {
    unsigned j = k;
    while (j <= kMaxOrder && hdr_->free_head[j] == kNil) ++j;
    if (j > kMaxOrder) return false;
    std::uint64_t u = hdr_->free_head[j];
    remove(u, j);
    std::uint8_t* m = map();
    while (j > k) {
        --j;
        std::uint64_t b = u + (std::uint64_t{1} << j);
        // The upper half's entry is written while the lower entry still covers it.
        m[b] = static_cast<std::uint8_t>(kFreeBit | j);
        crash_order_fence();
        push(b, j);
    }
    m[u] = static_cast<std::uint8_t>(k);  // allocated, order k: the commit
    crash_order_fence();
    hdr_->free_units -= std::uint64_t{1} << k;
    unit = u;
    return true;
}

Status PoolMapping::rebuild() noexcept {
    // After a process died holding the lock: the order map is authoritative,
    // the free lists and counters are recomputed from it.
    for (auto& h : hdr_->free_head) h = kNil;
    hdr_->free_units = 0;
    std::uint8_t* m = map();
    std::uint64_t units = hdr_->units;
    for (std::uint64_t u = 0; u < units;) {
        std::uint8_t e = m[u];
        unsigned k = e & kOrderMask;
        std::uint64_t len = std::uint64_t{1} << k;
        if (e == kNotStart || k > kMaxOrder || (u & (len - 1)) != 0 || u + len > units)
            return make_error(Errc::internal, "pool {}: order map corrupt at unit {}", name_, u);
        if (len > 1) std::memset(m + u + 1, kNotStart, len - 1);
        if ((e & kFreeBit) != 0) insert_free(u, k);
        u += len;
    }
    return ok();
}

Status PoolMapping::format(std::uint32_t node_id, std::uint64_t generation) {
    std::size_t hdr_bytes = round_up(sizeof(PoolHeader), kPage);
    std::size_t units = (size_ - hdr_bytes) / (kUnit + 1);
    std::size_t heap_offset = round_up(hdr_bytes + units, kPage);
    if (heap_offset >= size_) return make_error(Errc::invalid_argument, "pool size {} too small", size_);
    units = (size_ - heap_offset) / kUnit;

    auto* h = new (base_) PoolHeader{};
    h->version = kPoolVersion;
    h->node_id = node_id;
    h->generation = generation;
    h->size = size_;
    h->map_offset = hdr_bytes;
    h->heap_offset = heap_offset;
    h->units = units;
    std::snprintf(h->name, sizeof h->name, "%s", name_.c_str());
    DRAGON_CHECK(init_robust_mutex(&h->lock));
    for (auto& f : h->free_head) f = kNil;
    h->free_units = 0;
    h->next_channel_id.store(1);
    h->free_seq.store(0);
    h->alloc_waiters.store(0);
    std::memset(map(), kNotStart, units);
    // Carve the heap greedily into the largest aligned power-of-two blocks.
    for (std::uint64_t u = 0; u < units;) {
        unsigned k = std::min<unsigned>(kMaxOrder, static_cast<unsigned>(std::bit_width(units - u)) - 1);
        while (k > 0 && (u & ((std::uint64_t{1} << k) - 1)) != 0) --k;
        map()[u] = static_cast<std::uint8_t>(kFreeBit | k);
        push(u, k);
        h->free_units += std::uint64_t{1} << k;
        u += std::uint64_t{1} << k;
    }
    h->magic.store(kPoolMagic, std::memory_order_release);
    return ok();
}

Status PoolMapping::validate() const {
    auto bad = [&](std::string_view why) {
        return make_error(Errc::protocol, "{} is not an initialised Dragon pool ({})", name_, why);
    };
    if (size_ < sizeof(PoolHeader)) return bad("too small");
    if (hdr_->magic.load(std::memory_order_acquire) != kPoolMagic) return bad("bad magic");
    if (hdr_->version != kPoolVersion) return bad("unsupported version");
    if (hdr_->size != size_) return bad("size mismatch");
    if (hdr_->map_offset < sizeof(PoolHeader) || hdr_->units == 0 || hdr_->units > size_ ||
        hdr_->map_offset + hdr_->units > hdr_->heap_offset || hdr_->heap_offset > size_ ||
        hdr_->units > (size_ - hdr_->heap_offset) / kUnit)
        return bad("bad layout");
    if (std::strncmp(hdr_->name, name_.c_str(), sizeof hdr_->name) != 0) return bad("name mismatch");
    return ok();
}

Result<std::uint64_t> PoolMapping::allocate(std::size_t bytes, const Deadline& deadline) {
    std::uint64_t want_units = std::max<std::uint64_t>(1, (bytes + kUnit - 1) >> kUnitShift);
    unsigned k = static_cast<unsigned>(std::bit_width(want_units - 1));
    if (bytes > (std::size_t{1} << 62) || k > max_order())
        return make_error(Errc::too_large, "pool {}: {} bytes can never fit (largest block {} bytes)", name_, bytes,
                          kUnit << max_order());
    for (;;) {
        std::uint32_t seq = 0;
        {
            auto g = DRAGON_TRY(RobustGuard::lock(&hdr_->lock, [this] { return rebuild(); }));
            std::uint64_t u = 0;
            if (try_allocate(k, u)) return hdr_->heap_offset + (u << kUnitShift);
            if (deadline.try_once())
                return make_error(Errc::would_block, "pool {}: no free block of {} bytes", name_, kUnit << k);
            // Registered under the lock, so a free() after this point sees us and bumps free_seq.
            hdr_->alloc_waiters.fetch_add(1);
            seq = hdr_->free_seq.load();
        }
        auto r = futex_wait(hdr_->free_seq, seq, deadline);
        hdr_->alloc_waiters.fetch_sub(1);
        if (r == WaitResult::timed_out)
            return make_error(Errc::timeout, "pool {}: timed out waiting for a free block of {} bytes", name_,
                              kUnit << k);
    }
}

Status PoolMapping::free(std::uint64_t offset) {
    bool wake = false;
    {
        auto g = DRAGON_TRY(RobustGuard::lock(&hdr_->lock, [this] { return rebuild(); }));
        std::uint64_t rel = offset - hdr_->heap_offset;
        if (offset < hdr_->heap_offset || (rel & (kUnit - 1)) != 0 || (rel >> kUnitShift) >= hdr_->units)
            return make_error(Errc::invalid_argument, "pool {}: offset {} is not a block", name_, offset);
        std::uint64_t u = rel >> kUnitShift;
        std::uint8_t e = map()[u];
        if (e == kNotStart || (e & kFreeBit) != 0)
            return make_error(Errc::invalid_argument, "pool {}: offset {} is not an allocated block", name_, offset);
        insert_free(u, e & kOrderMask);
        if (hdr_->alloc_waiters.load() > 0) {
            hdr_->free_seq.fetch_add(1);
            wake = true;
        }
    }
    if (wake) futex_wake(hdr_->free_seq);
    return ok();
}

Result<std::size_t> PoolMapping::block_size(std::uint64_t offset) const {
    // Read without the lock: a racing allocator may change the entry, but the
    // caller asks about a block it (or a descriptor) claims is allocated.
    std::uint64_t rel = offset - hdr_->heap_offset;
    if (offset < hdr_->heap_offset || (rel & (kUnit - 1)) != 0 || (rel >> kUnitShift) >= hdr_->units)
        return make_error(Errc::invalid_argument, "pool {}: offset {} is not a block", name_, offset);
    std::uint8_t e = std::atomic_ref<std::uint8_t>(map()[rel >> kUnitShift]).load(std::memory_order_relaxed);
    if (e == kNotStart || (e & kFreeBit) != 0 || (e & kOrderMask) > kMaxOrder)
        return make_error(Errc::invalid_argument, "pool {}: offset {} is not an allocated block", name_, offset);
    return std::size_t{kUnit} << (e & kOrderMask);
}

PoolStats PoolMapping::stats() const {
    PoolStats s;
    s.heap_bytes = hdr_->units << kUnitShift;
    auto g = RobustGuard::lock(&hdr_->lock, [this] { return const_cast<PoolMapping*>(this)->rebuild(); });
    if (!g) return s;
    s.free_bytes = hdr_->free_units << kUnitShift;
    for (unsigned k = 0; k <= kMaxOrder; ++k)
        if (hdr_->free_head[k] != kNil) s.largest_free = std::size_t{kUnit} << k;
    return s;
}

}  // namespace detail

Pool::Pool(std::shared_ptr<detail::PoolMapping> m) noexcept : m_(std::move(m)) {}
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&&) noexcept = default;
Pool::~Pool() = default;

Result<Pool> Pool::create(std::string_view name, std::size_t size) { return create_impl(name, size, true); }

Result<Pool> Pool::create_unreserved(std::string_view name, std::size_t size) {
    return create_impl(name, size, false);
}

Status Pool::reserve(std::size_t offset, std::size_t len) const {
    if (offset > m_->size() || len > m_->size() - offset)
        return make_error(Errc::invalid_argument, "reserve [{}, +{}) outside pool {} of {} bytes", offset, len,
                          m_->name(), m_->size());
    const std::size_t start = offset & ~(kPage - 1);
    const std::size_t end = round_up(offset + len, kPage);
    if (::madvise(m_->at(start), end - start, MADV_POPULATE_WRITE) != 0) {
        const int err = errno;
        if (err == ENOMEM || err == EFAULT)  // tmpfs full: the page could not be allocated
            return Error(Errc::no_space, fmt::format("pool {}: /dev/shm has no room left for its pages", m_->name()), err);
        return sys::error_from_errno(fmt::format("reserving pool {}", m_->name()), err);
    }
    return ok();
}

Result<Pool> Pool::create_impl(std::string_view name, std::size_t size, bool reserve_now) {
    auto parts = DRAGON_TRY(parse_pool_name(name));
    if (size < kMinPoolSize)
        return make_error(Errc::invalid_argument, "pool {}: size {} below the minimum {}", name, size, kMinPoolSize);
    size = round_up(size, kPage);

    struct statvfs vfs{};
    DRAGON_CHECK(sys::call("statvfs(/dev/shm)", [&] { return ::statvfs(kShmDir.data(), &vfs); }));
    std::uint64_t avail = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
    if (avail < size)
        return make_error(Errc::no_space,
                          "pool {} needs {} MiB but /dev/shm has only {} MiB free; enlarge /dev/shm "
                          "(e.g. docker --shm-size) or lower the pool size",
                          name, size >> 20, avail >> 20);

    std::string n(name);
    sys::UniqueFd fd(DRAGON_TRY(sys::call("shm_open", [&] {
        return ::shm_open(n.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    })));
    // From here on a failure must not leave the name behind.
    struct Unlinker {
        const std::string& name;
        bool armed = true;
        ~Unlinker() { if (armed) ::shm_unlink(name.c_str()); }
    } unlinker{n};

    // Reserve real pages now: a sparse tmpfs file would SIGBUS on first touch
    // when /dev/shm fills up later.
    if (!reserve_now) {
        DRAGON_CHECK(sys::call(fmt::format("sizing pool {}", name),
                               [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }));
    } else if (int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size)); rc != 0) {
        auto e = sys::error_from_errno("posix_fallocate", rc);
        if (rc == ENOSPC)
            return Error(Errc::no_space, fmt::format("pool {}: /dev/shm has no room for {} MiB ({})", name,
                                                     size >> 20, e.message()), rc);
        return std::move(e).context(fmt::format("pool {}", name));
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return sys::error_from_errno(fmt::format("mmap pool {}", name));
    auto m = std::make_shared<detail::PoolMapping>(static_cast<std::byte*>(p), size, n);

    std::uint64_t gen = 0;
    while (gen == 0)
        DRAGON_CHECK(sys::call("getrandom", [&] { return ::getrandom(&gen, sizeof gen, 0); }));
    DRAGON_CHECK(m->format(parts.node_id, gen));
    unlinker.armed = false;
    return Pool(std::move(m));
}

Result<Pool> Pool::attach(std::string_view name) {
    DRAGON_CHECK(parse_pool_name(name));
    std::string n(name);
    auto opened = sys::call("shm_open", [&] { return ::shm_open(n.c_str(), O_RDWR | O_CLOEXEC, 0); });
    if (!opened) return std::move(opened).error().context(fmt::format("attaching pool {}", name));
    sys::UniqueFd fd(*opened);
    struct stat st{};
    DRAGON_CHECK(sys::call("fstat", [&] { return ::fstat(fd.get(), &st); }));
    auto size = static_cast<std::size_t>(st.st_size);
    if (size < sizeof(detail::PoolHeader))
        return make_error(Errc::protocol, "{} is not an initialised Dragon pool (size {})", name, size);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return sys::error_from_errno(fmt::format("mmap pool {}", name));
    auto m = std::make_shared<detail::PoolMapping>(static_cast<std::byte*>(p), size, n);
    DRAGON_CHECK(m->validate());
    return Pool(std::move(m));
}

Status Pool::unlink(std::string_view name) {
    std::string n(name);
    DRAGON_CHECK(sys::call(fmt::format("shm_unlink {}", name), [&] { return ::shm_unlink(n.c_str()); }));
    return ok();
}

Result<std::uint64_t> Pool::allocate(std::size_t bytes, Timeout timeout) { return m_->allocate(bytes, detail::Deadline(timeout)); }
Status Pool::free(std::uint64_t offset) { return m_->free(offset); }
Result<std::size_t> Pool::block_size(std::uint64_t offset) const { return m_->block_size(offset); }
std::byte* Pool::at(std::uint64_t offset) const noexcept { return m_->at(offset); }
PoolStats Pool::stats() const { return m_->stats(); }
const std::string& Pool::name() const noexcept { return m_->name(); }
std::size_t Pool::size() const noexcept { return m_->size(); }
std::uint64_t Pool::generation() const noexcept { return m_->header()->generation; }
std::uint32_t Pool::node_id() const noexcept { return m_->header()->node_id; }

}  // namespace dragon::channels
