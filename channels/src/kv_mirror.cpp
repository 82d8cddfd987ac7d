#include "dragon/channels/kv_mirror.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <utility>
#include <cstddef>
#include <cstring>

namespace dragon::channels {

namespace {

constexpr std::uint64_t kMagic = 0x31524f5252494d4bULL;  // "KMIRROR1"
constexpr std::uint64_t kEmpty = 0;                      // a bucket never used
constexpr std::uint64_t kGone = 1;                       // a bucket whose key was removed
constexpr int kMaxTries = 64;                            // a reader's retries before it says unknown

struct Bucket {
    std::atomic<std::uint32_t> seq;  // odd while the writer changes the bucket
    std::uint32_t pad;
    std::atomic<std::uint64_t> hash;
    std::atomic<std::uint64_t> entry;  // kEmpty, kGone or the pool offset of an Entry
};

struct Entry {
    std::uint64_t hash;
    std::uint32_t klen;
    std::uint32_t pad;
    std::uint64_t vlen;
    // key bytes, then value bytes
};

bool same_key(const std::byte* entry_key, std::size_t klen, std::span<const std::byte> key) {
    return klen == key.size() && (klen == 0 || std::memcmp(entry_key, key.data(), klen) == 0);
}

}  // namespace

struct KvMirror::Header {
    std::uint64_t magic;
    std::uint32_t nbuckets;  // a power of two
    std::uint32_t pad;
    std::atomic<std::int64_t> checkpoint;  // the checkpoint mirrored; -1: none
    std::atomic<std::uint64_t> epoch;      // bumped by every reset (a reader that saw two epochs says unknown)
    std::atomic<std::uint32_t> complete;   // 1: every key of the checkpoint is here
    std::atomic<std::uint32_t> used;       // buckets not empty (entries and removed ones)
    std::atomic<std::uint32_t> live;       // entries
    std::uint32_t pad2;
    // Held by the writer's thread for its whole life: a robust mutex, so the
    // kernel marks it (FUTEX_OWNER_DIED, the owner's tid cleared) when that
    // thread ends however it ends, and a reader sees a dead writer in one load.
    pthread_mutex_t alive;
    Bucket buckets[1];  // nbuckets of them
};

std::uint64_t mirror_hash(std::span<const std::byte> key) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::byte b : key) {
        h ^= static_cast<std::uint8_t>(b);
        h *= 0x100000001b3ULL;
    }
    return h < 2 ? h + 2 : h;  // (0 is the hash an emptied bucket is left with)
}

KvMirror::KvMirror(Pool pool, std::uint64_t offset) noexcept : pool_(std::move(pool)), offset_(offset) {}
KvMirror::KvMirror(KvMirror&& o) noexcept
    : pool_(std::move(o.pool_)), offset_(std::exchange(o.offset_, 0)), writer_(std::exchange(o.writer_, false)) {}
KvMirror& KvMirror::operator=(KvMirror&& o) noexcept {
    if (this != &o) {
        let_go();
        pool_ = std::move(o.pool_);
        offset_ = std::exchange(o.offset_, 0);
        writer_ = std::exchange(o.writer_, false);
    }
    return *this;
}
KvMirror::~KvMirror() { let_go(); }

void KvMirror::let_go() noexcept {
    // A robust mutex a thread holds is on that thread's robust list, which
    // glibc walks on every later robust lock and unlock: it must come off
    // before its memory is freed or unmapped.
    if (writer_ && offset_ != 0) (void)pthread_mutex_unlock(&hdr()->alive);
    writer_ = false;
}

KvMirror::Header* KvMirror::hdr() const noexcept { return reinterpret_cast<Header*>(pool_.at(offset_)); }

Result<KvMirror> KvMirror::create(Pool pool, std::uint32_t buckets) {
    const std::uint32_t n = std::bit_ceil(std::max<std::uint32_t>(buckets, 16));
    if (n == 0 || n > (1U << 26))
        return make_error(Errc::invalid_argument, "mirror of {} buckets: 16 to 2^26 allowed", buckets);
    const std::size_t bytes = offsetof(Header, buckets) + std::size_t{n} * sizeof(Bucket);
    auto off = DRAGON_TRY(pool.allocate(bytes));
    if (auto st = pool.reserve(off, bytes); !st) {
        (void)pool.free(off);
        return std::move(st).error();
    }
    auto* h = reinterpret_cast<Header*>(pool.at(off));
    std::memset(static_cast<void*>(h), 0, bytes);
    h->nbuckets = n;
    h->checkpoint.store(-1);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    const int rc = pthread_mutex_init(&h->alive, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0 || pthread_mutex_lock(&h->alive) != 0) {
        (void)pool.free(off);
        return make_error(Errc::system, "mirror: cannot set up its writer's liveness lock");
    }
    h->magic = kMagic;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    KvMirror m(std::move(pool), off);
    m.writer_ = true;
    return m;
}

Result<KvMirror> KvMirror::attach(Pool pool, std::uint64_t offset) {
    auto size = pool.block_size(offset);
    if (!size || *size < offsetof(Header, buckets))
        return make_error(Errc::protocol, "pool {}: no mirror table at offset {}", pool.name(), offset);
    auto* h = reinterpret_cast<Header*>(pool.at(offset));
    if (h->magic != kMagic || h->nbuckets == 0 || !std::has_single_bit(h->nbuckets) ||
        offsetof(Header, buckets) + std::size_t{h->nbuckets} * sizeof(Bucket) > *size)
        return make_error(Errc::protocol, "pool {}: the block at offset {} is not a mirror table", pool.name(), offset);
    return KvMirror(std::move(pool), offset);
}

void KvMirror::free_entry(std::uint64_t e) {
    if (e != kEmpty && e != kGone) (void)pool_.free(e);
}

Status KvMirror::put(std::span<const std::byte> key, std::span<const std::byte> value) {
    Header* h = hdr();
    const std::uint64_t hash = mirror_hash(key);
    auto not_mirrored = [&](std::string why) {
        remove(key);
        set_complete(false);
        return Error(Errc::no_space, std::move(why));
    };
    if (key.size() + value.size() > kMaxEntry || key.size() > UINT32_MAX)
        return not_mirrored(fmt::format("{} bytes: larger than a mirror entry", key.size() + value.size()));
    const std::size_t bytes = sizeof(Entry) + key.size() + value.size();
    auto off = pool_.allocate(bytes);
    if (!off) return not_mirrored(off.error().message());
    if (auto st = pool_.reserve(*off, bytes); !st) {
        (void)pool_.free(*off);
        return not_mirrored(st.error().message());
    }
    auto* e = reinterpret_cast<Entry*>(pool_.at(*off));
    e->hash = hash;
    e->klen = static_cast<std::uint32_t>(key.size());
    e->pad = 0;
    e->vlen = value.size();
    auto* data = reinterpret_cast<std::byte*>(e + 1);
    if (!key.empty()) std::memcpy(data, key.data(), key.size());
    if (!value.empty()) std::memcpy(data + key.size(), value.data(), value.size());

    const std::uint32_t mask = h->nbuckets - 1;
    Bucket* target = nullptr;
    Bucket* first_gone = nullptr;
    for (std::uint32_t i = 0, b = static_cast<std::uint32_t>(hash) & mask; i < h->nbuckets; ++i, b = (b + 1) & mask) {
        Bucket& bk = h->buckets[b];
        const std::uint64_t cur = bk.entry.load(std::memory_order_relaxed);
        if (cur == kEmpty) {
            target = first_gone != nullptr ? first_gone : &bk;
            break;
        }
        if (cur == kGone) {
            if (first_gone == nullptr) first_gone = &bk;
            continue;
        }
        const auto* ce = reinterpret_cast<const Entry*>(pool_.at(cur));
        if (bk.hash.load(std::memory_order_relaxed) == hash &&
            same_key(reinterpret_cast<const std::byte*>(ce + 1), ce->klen, key)) {
            target = &bk;
            break;
        }
    }
    if (target == nullptr) target = first_gone;
    const std::uint64_t old = target != nullptr ? target->entry.load(std::memory_order_relaxed) : kEmpty;
    if (target == nullptr || (old == kEmpty && (h->used.load() + 1) * 4 > std::uint64_t{h->nbuckets} * 3)) {
        (void)pool_.free(*off);
        return not_mirrored(fmt::format("the mirror's {} buckets are three quarters used", h->nbuckets));
    }
    target->seq.fetch_add(1, std::memory_order_relaxed);  // odd: readers of this bucket retry
    std::atomic_thread_fence(std::memory_order_release);
    target->hash.store(hash, std::memory_order_relaxed);
    target->entry.store(*off, std::memory_order_relaxed);
    target->seq.fetch_add(1, std::memory_order_release);
    if (old == kEmpty) h->used.fetch_add(1, std::memory_order_relaxed);
    if (old == kEmpty || old == kGone) h->live.fetch_add(1, std::memory_order_relaxed);
    free_entry(old);  // (after the bucket moved on: a reader of the old entry sees the sequence change)
    return ok();
}

void KvMirror::remove(std::span<const std::byte> key) {
    Header* h = hdr();
    const std::uint64_t hash = mirror_hash(key);
    const std::uint32_t mask = h->nbuckets - 1;
    for (std::uint32_t i = 0, b = static_cast<std::uint32_t>(hash) & mask; i < h->nbuckets; ++i, b = (b + 1) & mask) {
        Bucket& bk = h->buckets[b];
        const std::uint64_t cur = bk.entry.load(std::memory_order_relaxed);
        if (cur == kEmpty) return;
        if (cur == kGone || bk.hash.load(std::memory_order_relaxed) != hash) continue;
        const auto* ce = reinterpret_cast<const Entry*>(pool_.at(cur));
        if (!same_key(reinterpret_cast<const std::byte*>(ce + 1), ce->klen, key)) continue;
        bk.seq.fetch_add(1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        bk.entry.store(kGone, std::memory_order_relaxed);
        bk.seq.fetch_add(1, std::memory_order_release);
        h->live.fetch_sub(1, std::memory_order_relaxed);
        free_entry(cur);
        return;
    }
}

void KvMirror::reset(std::int64_t checkpoint, bool complete) {
    Header* h = hdr();
    h->checkpoint.store(-1);  // readers from here on: unknown
    h->epoch.fetch_add(1);    // readers in the middle of a lookup: unknown at their end
    for (std::uint32_t b = 0; b < h->nbuckets; ++b) {
        Bucket& bk = h->buckets[b];
        const std::uint64_t cur = bk.entry.load(std::memory_order_relaxed);
        if (cur == kEmpty) continue;
        bk.seq.fetch_add(1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        bk.entry.store(kEmpty, std::memory_order_relaxed);
        bk.hash.store(0, std::memory_order_relaxed);
        bk.seq.fetch_add(1, std::memory_order_release);
        free_entry(cur);
    }
    h->used.store(0);
    h->live.store(0);
    h->complete.store(complete ? 1 : 0);
    h->epoch.fetch_add(1);
    h->checkpoint.store(checkpoint);
}

void KvMirror::set_complete(bool complete) noexcept { hdr()->complete.store(complete ? 1 : 0); }

void KvMirror::destroy() {
    if (offset_ == 0) return;
    reset(-1, false);
    let_go();  // (readers from here on: the writer is gone)
    hdr()->magic = 0;
    (void)pool_.free(offset_);
    offset_ = 0;
}

std::uint32_t KvMirror::size() const noexcept { return hdr()->live.load(std::memory_order_relaxed); }

bool KvMirror::writer_alive() const noexcept {
    // glibc's robust mutex word: the owner's tid, FUTEX_WAITERS, FUTEX_OWNER_DIED.
    constexpr int kOwnerDied = 0x40000000, kTidMask = 0x3fffffff;
    auto* h = hdr();
    const int word = __atomic_load_n(&h->alive.__data.__lock, __ATOMIC_ACQUIRE);
    return (word & kTidMask) != 0 && (word & kOwnerDied) == 0;
}

MirrorLookup KvMirror::lookup(std::span<const std::byte> key, std::int64_t checkpoint, std::string& out) const {
    const Header* h = hdr();
    if (!writer_alive()) return MirrorLookup::unknown;  // (the writer answers, or says it is dead)
    const std::uint64_t epoch = h->epoch.load();
    if ((epoch & 1) != 0 || h->checkpoint.load() != checkpoint || checkpoint < 0) return MirrorLookup::unknown;
    const bool complete = h->complete.load() != 0;
    const std::uint64_t hash = mirror_hash(key);
    const std::uint32_t mask = h->nbuckets - 1;
    const std::size_t pool_size = pool_.size();
    auto same_epoch = [&] {
        std::atomic_thread_fence(std::memory_order_acquire);
        return h->epoch.load() == epoch && h->checkpoint.load() == checkpoint;
    };
    for (std::uint32_t i = 0, b = static_cast<std::uint32_t>(hash) & mask; i < h->nbuckets; ++i, b = (b + 1) & mask) {
        const Bucket& bk = h->buckets[b];
        for (int tries = 0;; ++tries) {
            if (tries == kMaxTries) return MirrorLookup::unknown;
            const std::uint32_t s1 = bk.seq.load(std::memory_order_acquire);
            if ((s1 & 1) != 0) continue;
            const std::uint64_t cur = bk.entry.load(std::memory_order_relaxed);
            const std::uint64_t bh = bk.hash.load(std::memory_order_relaxed);
            bool match = false;
            bool torn = false;
            if (cur != kEmpty && cur != kGone && bh == hash) {
                // The entry may be freed and reused under us: every length is
                // checked against the mapping before it is used, and the copy
                // counts only if the bucket did not change meanwhile.
                if (cur < sizeof(Entry) || cur > pool_size - sizeof(Entry)) {
                    torn = true;
                } else {
                    const auto* e = reinterpret_cast<const Entry*>(pool_.at(cur));
                    const std::uint64_t klen = e->klen, vlen = e->vlen;
                    if (klen + vlen > kMaxEntry || cur + sizeof(Entry) + klen + vlen > pool_size) {
                        torn = true;
                    } else if (same_key(reinterpret_cast<const std::byte*>(e + 1), klen, key)) {
                        match = true;
                        out.resize(vlen);
                        if (vlen != 0) std::memcpy(out.data(), reinterpret_cast<const std::byte*>(e + 1) + klen, vlen);
                    }
                }
            }
            std::atomic_thread_fence(std::memory_order_acquire);
            if (bk.seq.load(std::memory_order_relaxed) != s1 || torn) continue;  // changed under us: again
            if (match) return same_epoch() ? MirrorLookup::hit : MirrorLookup::unknown;
            if (cur == kEmpty) return complete && same_epoch() ? MirrorLookup::absent : MirrorLookup::unknown;
            break;  // another key or a removed one: the next bucket
        }
    }
    return complete && same_epoch() ? MirrorLookup::absent : MirrorLookup::unknown;
}

}  // namespace dragon::channels
