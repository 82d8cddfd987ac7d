// SyncBlock tests: counts and bounds, waits woken from another process,
// timeouts, an exact counter under the lock from forked processes, and a
// holder SIGKILLed while holding the lock (its count comes back).
#include <signal.h>

#include <chrono>

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

TEST(SyncBlock, StartTimeOfThisProcessIsKnown) {
    EXPECT_NE(process_start_time(static_cast<int>(::getpid())), 0U);
    EXPECT_EQ(process_start_time(-5), 0U);
}

}  // namespace
}  // namespace dragon::channels
