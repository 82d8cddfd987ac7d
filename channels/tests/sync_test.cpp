// SyncBlock tests: counts and bounds, waits woken from another process,
// timeouts, an exact counter under the lock from forked processes, and a
// holder SIGKILLed while holding the lock (its count comes back).
#include <signal.h>

#include <sched.h>

#include <chrono>
#include <vector>

#include "dragon/channels/sync.hpp"
#include "test_util.hpp"

namespace dragon::channels {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::ScopedPool;
using test::wait_child;

TEST(SyncBlock, CountsBoundsAndTryOnce) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 2, 3, 0);
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(s->value(), 2);
    EXPECT_TRUE(*s->acquire(kTryOnce));
    EXPECT_TRUE(*s->acquire(kTryOnce));
    EXPECT_FALSE(*s->acquire(kTryOnce));
    EXPECT_FALSE(*s->acquire(20ms));  // times out, nothing taken
    EXPECT_EQ(s->value(), 0);
    ASSERT_TRUE(s->release());
    ASSERT_TRUE(s->release());
    ASSERT_TRUE(s->release());
    auto over = s->release();
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error().code(), Errc::invalid_argument);
    EXPECT_EQ(s->value(), 3);
    EXPECT_FALSE(SyncBlock::create(*pool, -1, 1, 0));
    EXPECT_FALSE(SyncBlock::create(*pool, 4, 3, 0));
}

TEST(SyncBlock, AttachChecksIdAndDataIsZeroed) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 1, 1, 100);
    ASSERT_TRUE(s);
    ASSERT_EQ(s->data_size(), 100U);
    for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(s->data()[i], std::byte{0});
    auto a = SyncBlock::attach(*pool, s->offset(), s->id());
    ASSERT_TRUE(a) << a.error().message();
    EXPECT_EQ(a->data(), s->data());
    EXPECT_FALSE(SyncBlock::attach(*pool, s->offset(), s->id() + 1));
    EXPECT_FALSE(SyncBlock::attach(*pool, s->offset() + 8, s->id()));
}

TEST(SyncBlock, WaiterInAnotherProcessIsWoken) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 0, SyncBlock::kUnbounded, 0);
    ASSERT_TRUE(s);
    std::string name = pool.name();
    auto off = s->offset();
    auto id = s->id();
    pid_t c = fork_child([&] {
        auto p = Pool::attach(name);
        if (!p) return test::report_child_error(p.error());
        auto b = SyncBlock::attach(*p, off, id);
        if (!b) return test::report_child_error(b.error());
        auto r = b->acquire(kForever);  // sleeps until the parent releases
        return r && *r ? 0 : 1;
    });
    ::usleep(50'000);
    ASSERT_TRUE(s->release());
    EXPECT_EQ(wait_child(c), 0);
    EXPECT_EQ(s->value(), 0);
}

TEST(SyncBlock, CounterUnderTheLockIsExact) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 1, 1, sizeof(std::int64_t));
    ASSERT_TRUE(s);
    constexpr int kProcs = 4, kIters = 20000;
    std::vector<pid_t> kids;
    for (int i = 0; i < kProcs; ++i)
        kids.push_back(fork_child([&] {
            for (int n = 0; n < kIters; ++n) {
                auto r = s->acquire(kForever);
                if (!r || !*r) return 1;
                auto* v = reinterpret_cast<volatile std::int64_t*>(s->data());
                *v = *v + 1;
                if (!s->release()) return 2;
            }
            return 0;
        }));
    for (pid_t k : kids) EXPECT_EQ(wait_child(k), 0);
    EXPECT_EQ(*reinterpret_cast<std::int64_t*>(s->data()), std::int64_t{kProcs} * kIters);
    EXPECT_EQ(s->value(), 1);
}

TEST(SyncBlock, HolderKilledGivesItsCountsBack) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 3, 3, 0);
    ASSERT_TRUE(s);
    test::SharedArray<int> flag(1);
    pid_t c = fork_child([&] {
        for (int i = 0; i < 2; ++i)
            if (auto r = s->acquire(kTryOnce); !r || !*r) return 1;
        __atomic_store_n(&flag[0], 1, __ATOMIC_RELEASE);
        ::pause();  // holds two counts until killed
        return 0;
    });
    while (__atomic_load_n(&flag[0], __ATOMIC_ACQUIRE) == 0) ::usleep(1000);
    EXPECT_EQ(s->value(), 1);
    ASSERT_TRUE(*s->acquire(kTryOnce));
    ::kill(c, SIGKILL);
    EXPECT_EQ(wait_child(c), 128 + SIGKILL);
    // Waits past a reap slice: the dead child's two counts come back.
    auto r = s->acquire(10s);
    ASSERT_TRUE(r);
    EXPECT_TRUE(*r);
    EXPECT_EQ(s->value(), 1);
    ASSERT_TRUE(s->release());
    ASSERT_TRUE(s->release());
    EXPECT_EQ(s->value(), 3);
}

TEST(SyncBlock, CountsOfAHolderThatExitedCleanlyAreConsumed) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 1, SyncBlock::kUnbounded, 0);
    ASSERT_TRUE(s);
    pid_t c = fork_child([&] {
        auto r = s->acquire(kTryOnce);
        if (!r || !*r) return 1;
        return s->drop_mine() ? 0 : 2;  // a normal exit: the count was used, not held
    });
    EXPECT_EQ(wait_child(c), 0);
    EXPECT_FALSE(*s->acquire(300ms));  // past a reap slice: nothing given back
    EXPECT_EQ(s->value(), 0);
}

// The fast path under contention: workers hammer the block (a Lock, then a
// Semaphore of 2) while victims, working the same loop, are SIGKILLed. A
// Lock victim is killed at a random moment, held or not (taking and naming
// the holder are one CAS); a Semaphore victim while it holds a count, since
// one killed between its count CAS and its slot update loses that count (the
// documented window). Either way the workers finish, the occupancy never
// passed the maximum, a counter of the workers' under the block is exact,
// and every count comes back.
void contended_with_kills(std::int32_t maximum, bool random_kills) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, maximum, maximum, sizeof(std::int64_t));
    ASSERT_TRUE(s);
    constexpr int kWorkers = 3, kMinIters = 2000, kVictims = 8;
    // [0] occupancy, [1] most seen inside, [2] the victim holds now, [3] the victim is running,
    // [4] stop (the workers run until every victim is dead, and at least kMinIters rounds)
    test::SharedArray<int> g(5);
    test::SharedArray<std::int64_t> rounds(1);  // the workers' rounds, all told
    auto body = [&](bool victim) -> int {
        int n = 0;
        for (; victim || n < kMinIters || __atomic_load_n(&g[4], __ATOMIC_ACQUIRE) == 0; ++n) {
            auto r = s->acquire(20s);
            if (!r || !*r) return 1;
            if (victim && random_kills) {
                // Killed anywhere in this loop, inside or out.
                __atomic_store_n(&g[3], 1, __ATOMIC_RELEASE);
                if (!s->release()) return 2;
                continue;
            }
            int in = __atomic_add_fetch(&g[0], 1, __ATOMIC_SEQ_CST);
            int seen = __atomic_load_n(&g[1], __ATOMIC_RELAXED);
            while (in > seen && !__atomic_compare_exchange_n(&g[1], &seen, in, false, __ATOMIC_SEQ_CST,
                                                             __ATOMIC_RELAXED)) {
            }
            if (victim) {
                // Held: say so, then wait to be killed (the parent takes the
                // occupancy off just before the kill).
                __atomic_store_n(&g[3], 1, __ATOMIC_RELEASE);
                __atomic_store_n(&g[2], 1, __ATOMIC_RELEASE);
                ::pause();
                return 3;
            }
            if (maximum == 1) {
                auto* v = reinterpret_cast<volatile std::int64_t*>(s->data());
                std::int64_t x = *v;
                if ((n & 63) == 0) ::sched_yield();
                *v = x + 1;
            }
            __atomic_sub_fetch(&g[0], 1, __ATOMIC_SEQ_CST);
            if (!s->release()) return 2;
        }
        __atomic_add_fetch(&rounds[0], n, __ATOMIC_SEQ_CST);
        return 0;
    };
    std::vector<pid_t> kids;
    for (int i = 0; i < kWorkers; ++i) kids.push_back(fork_child([&] { return body(false); }));
    std::uint64_t rnd = static_cast<std::uint64_t>(::getpid()) * std::uint64_t{0x9E3779B97F4A7C15};
    for (int v = 0; v < kVictims; ++v) {
        __atomic_store_n(&g[2], 0, __ATOMIC_RELEASE);
        __atomic_store_n(&g[3], 0, __ATOMIC_RELEASE);
        pid_t victim = fork_child([&] { return body(true); });
        const auto until = std::chrono::steady_clock::now() + 20s;
        while (__atomic_load_n(&g[3], __ATOMIC_ACQUIRE) == 0 && std::chrono::steady_clock::now() < until)
            ::usleep(200);
        if (random_kills) {
            rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
            ::usleep(static_cast<useconds_t>(rnd % 3000));
        } else {
            while (__atomic_load_n(&g[2], __ATOMIC_ACQUIRE) == 0 && std::chrono::steady_clock::now() < until)
                ::usleep(200);
        }
        if (!random_kills) __atomic_sub_fetch(&g[0], 1, __ATOMIC_SEQ_CST);  // it holds until killed
        ::kill(victim, SIGKILL);
        EXPECT_EQ(wait_child(victim), 128 + SIGKILL);
    }
    __atomic_store_n(&g[4], 1, __ATOMIC_RELEASE);
    for (pid_t k : kids) EXPECT_EQ(wait_child(k), 0);
    EXPECT_GE(rounds[0], std::int64_t{kWorkers} * kMinIters);
    EXPECT_LE(g[1], maximum);
    EXPECT_EQ(g[1], maximum);  // the workers did contend
    if (maximum == 1) {
        EXPECT_EQ(*reinterpret_cast<std::int64_t*>(s->data()), rounds[0]);
    }
    // A victim killed while holding is reaped by the next waiter, or by this look.
    auto r = s->acquire(5s);
    ASSERT_TRUE(r);
    EXPECT_TRUE(*r);
    ASSERT_TRUE(s->release());
    (void)s->reap();
    EXPECT_EQ(s->value(), maximum);
}

TEST(SyncBlock, LockFastPathUnderContentionWithVictimsKilledAnywhere) { contended_with_kills(1, true); }
TEST(SyncBlock, LockFastPathUnderContentionWithHoldersKilled) { contended_with_kills(1, false); }
TEST(SyncBlock, SemaphoreFastPathUnderContentionWithHoldersKilled) { contended_with_kills(2, false); }

TEST(SyncBlock, LockReleasedByAnotherProcessAndHeldAfterACleanExit) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 1, 1, 0);
    ASSERT_TRUE(s);
    ASSERT_TRUE(*s->acquire(kTryOnce));
    EXPECT_EQ(s->value(), 0);
    pid_t c = fork_child([&] { return s->release() ? 0 : 1; });  // a Lock is released by anyone
    EXPECT_EQ(wait_child(c), 0);
    EXPECT_EQ(s->value(), 1);
    EXPECT_FALSE(s->release());  // released too many times
    c = fork_child([&] {
        auto r = s->acquire(kTryOnce);
        if (!r || !*r) return 1;
        return s->drop_mine() ? 0 : 2;  // exits normally still holding it
    });
    EXPECT_EQ(wait_child(c), 0);
    EXPECT_FALSE(*s->acquire(300ms));  // past a reap slice: still held, as the standard library's
    ASSERT_TRUE(s->release());
    EXPECT_EQ(s->value(), 1);
}

TEST(SyncBlock, EventStoreWakesEveryWaiterAndTakesNothing) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 0, SyncBlock::kUnbounded, 0);
    ASSERT_TRUE(s);
    EXPECT_FALSE(*s->wait_positive(kTryOnce));
    EXPECT_FALSE(*s->wait_positive(20ms));  // times out
    std::vector<pid_t> kids;
    for (int i = 0; i < 3; ++i)
        kids.push_back(fork_child([&] {
            auto r = s->wait_positive(20s);  // sleeps until the parent stores 1
            return r && *r ? 0 : 1;
        }));
    ::usleep(50'000);
    ASSERT_TRUE(s->store(1));
    for (pid_t k : kids) EXPECT_EQ(wait_child(k), 0);
    EXPECT_EQ(s->value(), 1);  // nobody took it
    EXPECT_TRUE(*s->wait_positive(kTryOnce));
    ASSERT_TRUE(s->store(0));
    EXPECT_FALSE(*s->wait_positive(kTryOnce));
    EXPECT_FALSE(s->store(-1));
    auto lock = SyncBlock::create(*pool, 1, 1, 0);
    ASSERT_TRUE(lock);
    EXPECT_FALSE(lock->store(1));  // not on a binary block
}

TEST(SyncBlock, EpochBumpWakesEveryWaiterOfTheOldEpoch) {
    ScopedPool pool(1 << 20);
    ASSERT_TRUE(pool.ok());
    auto s = SyncBlock::create(*pool, 0, 3, 0);
    ASSERT_TRUE(s);
    EXPECT_TRUE(*s->wait_change(5, kTryOnce));  // already another epoch
    EXPECT_FALSE(*s->wait_change(0, 20ms));     // times out
    std::vector<pid_t> kids;
    for (int i = 0; i < 3; ++i)
        kids.push_back(fork_child([&] {
            auto r = s->wait_change(0, 20s);  // sleeps until the parent bumps
            return r && *r ? 0 : 1;
        }));
    ::usleep(50'000);
    EXPECT_EQ(*s->bump(), 1);
    for (pid_t k : kids) EXPECT_EQ(wait_child(k), 0);
    EXPECT_EQ(*s->bump(), 2);
    EXPECT_EQ(*s->bump(), 3);
    EXPECT_EQ(*s->bump(), 1);  // past the maximum: back to 1, never 0
}

TEST(SyncBlock, StartTimeOfThisProcessIsKnown) {
    EXPECT_NE(process_start_time(static_cast<int>(::getpid())), 0U);
    EXPECT_EQ(process_start_time(-5), 0U);
}

}  // namespace
}  // namespace dragon::channels
