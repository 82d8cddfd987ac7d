// Pool tests: naming, create/attach/unlink, allocator, waiting when full, crash repair.
#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>

#include <chrono>
#include <random>

#include "../src/layout.hpp"
#include "test_util.hpp"

namespace dragon::channels {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::ScopedPool;
using test::wait_child;
using Clock = std::chrono::steady_clock;

TEST(PoolName, MakeAndParse) {
    auto n = make_pool_name("0123abcd", 7);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, "/dragon-0123abcd-n7-pool");
    auto p = parse_pool_name(*n);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->run_id, "0123abcd");
    EXPECT_EQ(p->node_id, 7U);
    EXPECT_TRUE(make_pool_name(std::string(32, 'f'), 4294967295U));
    auto tagged = make_pool_name("0123abcd", 2, "ddict7.m0");
    ASSERT_TRUE(tagged);
    EXPECT_EQ(*tagged, "/dragon-0123abcd-n2-pool.ddict7.m0");
    auto tp = parse_pool_name(*tagged);
    ASSERT_TRUE(tp);
    EXPECT_EQ(tp->node_id, 2U);
    EXPECT_FALSE(make_pool_name("0123abcd", 2, ""));
    EXPECT_FALSE(make_pool_name("0123abcd", 2, "Up"));
    EXPECT_FALSE(make_pool_name("0123abcd", 2, "a-b"));
    EXPECT_FALSE(parse_pool_name("/dragon-0123abcd-n2-pool."));
    EXPECT_FALSE(parse_pool_name("/dragon-0123abcd-n2-poolx"));
}

TEST(PoolName, RejectsBadNames) {
    EXPECT_FALSE(make_pool_name("", 0));
    EXPECT_FALSE(make_pool_name(std::string(33, 'a'), 0));
    EXPECT_FALSE(make_pool_name("ABC", 0));
    EXPECT_FALSE(make_pool_name("xyz", 0));
    for (const char* bad : {"/dragon-abc-n1", "dragon-abc-n1-pool", "/dragon--n1-pool", "/dragon-abc-n-pool",
                            "/dragon-abc-n01-pool", "/dragon-abc-n4294967296-pool", "/dragon-ABC-n1-pool",
                            "/dragon-abc-x1-pool", "/dragon-abc-n1-pool/", "/dragon-abc-n1x-pool"}) {
        auto r = parse_pool_name(bad);
        EXPECT_FALSE(r) << bad;
        if (!r) {
            EXPECT_EQ(r.error().code(), Errc::invalid_argument);
        }
    }
    auto r = Pool::create("/not-a-dragon-pool", 1 << 20);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
}

TEST(Pool, CreateAttachAtDifferentAddressesAndUnlink) {
    ScopedPool sp(4 << 20, 3);
    ASSERT_TRUE(sp.ok());
    EXPECT_EQ(sp->node_id(), 3U);
    EXPECT_NE(sp->generation(), 0U);
    auto other = Pool::attach(sp.name());
    ASSERT_TRUE(other) << other.error().message();
    EXPECT_NE(sp->at(0), other->at(0));  // two mappings, two addresses, same offsets
    EXPECT_EQ(other->generation(), sp->generation());
    auto off = sp->allocate(1000);
    ASSERT_TRUE(off) << off.error().message();
    std::memcpy(sp->at(*off), "hello", 6);
    EXPECT_STREQ(reinterpret_cast<const char*>(other->at(*off)), "hello");
    EXPECT_EQ(*other->block_size(*off), 1024U);

    auto dup = Pool::create(sp.name(), 4 << 20);
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().code(), Errc::already_exists);

    // Destruction unmaps only: the segment is still there to attach.
    { Pool gone = std::move(other).value(); }
    EXPECT_TRUE(Pool::attach(sp.name()));
    ASSERT_TRUE(Pool::unlink(sp.name()));
    auto after = Pool::attach(sp.name());
    ASSERT_FALSE(after);
    EXPECT_EQ(after.error().code(), Errc::not_found);
    // The creator's mapping is still usable after unlink.
    EXPECT_STREQ(reinterpret_cast<const char*>(sp->at(*off)), "hello");
    EXPECT_EQ(Pool::unlink(sp.name()).error().code(), Errc::not_found);
}

TEST(Pool, TooSmallDevShmIsAClearErrorAndLeavesNothing) {
    struct statvfs vfs{};
    ASSERT_EQ(::statvfs("/dev/shm", &vfs), 0);
    std::size_t avail = vfs.f_bavail * vfs.f_frsize;
    auto name = *make_pool_name(fmt::format("7e57{:x}ff", ::getpid()), 0);
    auto r = Pool::create(name, avail + (std::size_t{1} << 30));
    if (r) (void)Pool::unlink(name);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::no_space);
    EXPECT_NE(r.error().message().find("/dev/shm"), std::string::npos) << r.error().message();
    EXPECT_EQ(Pool::attach(name).error().code(), Errc::not_found);
}

TEST(Pool, AttachRejectsForeignSegment) {
    auto name = *make_pool_name(fmt::format("7e57{:x}fe", ::getpid()), 0);
    int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    std::vector<char> junk(1 << 16);
    std::mt19937 rng(1);
    for (auto& c : junk) c = static_cast<char>(rng());
    EXPECT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    ::close(fd);
    auto r = Pool::attach(name);
    (void)Pool::unlink(name);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::protocol);
}

TEST(Pool, AllocateFreeCoalescesBackToWhole) {
    ScopedPool sp(8 << 20);
    ASSERT_TRUE(sp.ok());
    const PoolStats before = sp->stats();
    EXPECT_GT(before.free_bytes, 7U << 20);
    std::mt19937 rng(42);
    std::vector<std::uint64_t> offs;
    for (;;) {
        auto off = sp->allocate(1 + rng() % 70000);
        if (!off) {
            EXPECT_EQ(off.error().code(), Errc::would_block);
            break;
        }
        auto* p = sp->at(*off);
        std::memset(p, 0xab, *sp->block_size(*off));  // blocks must not overlap the allocator's own data
        offs.push_back(*off);
    }
    EXPECT_GT(offs.size(), 100U);
    std::shuffle(offs.begin(), offs.end(), rng);
    for (auto o : offs) ASSERT_TRUE(sp->free(o));
    const PoolStats after = sp->stats();
    EXPECT_EQ(after.free_bytes, before.free_bytes);
    EXPECT_EQ(after.largest_free, before.largest_free);
}

TEST(Pool, BadFreesAndOversizeAreRejected) {
    ScopedPool sp(1 << 20);
    ASSERT_TRUE(sp.ok());
    auto off = sp->allocate(300);
    ASSERT_TRUE(off);
    EXPECT_EQ(sp->free(*off + 256).error().code(), Errc::invalid_argument);
    EXPECT_EQ(sp->free(*off + 1).error().code(), Errc::invalid_argument);
    EXPECT_EQ(sp->free(0).error().code(), Errc::invalid_argument);
    EXPECT_EQ(sp->free(~0ULL).error().code(), Errc::invalid_argument);
    ASSERT_TRUE(sp->free(*off));
    EXPECT_EQ(sp->free(*off).error().code(), Errc::invalid_argument);  // double free
    EXPECT_EQ(sp->allocate(2 << 20).error().code(), Errc::too_large);
}

TEST(Pool, AllocationWaitsForAFreeInAnotherProcess) {
    ScopedPool sp(1 << 20);
    ASSERT_TRUE(sp.ok());
    std::vector<std::uint64_t> offs;
    while (auto off = sp->allocate(4096)) offs.push_back(*off);
    ASSERT_FALSE(offs.empty());

    auto t0 = Clock::now();
    auto r = sp->allocate(4096, 100ms);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::timeout);
    EXPECT_GE(Clock::now() - t0, 100ms);

    std::uint64_t victim = offs.back();
    std::string name = sp.name();
    pid_t child = fork_child([&] {
        auto p = Pool::attach(name);  // its own mapping, at its own address
        if (!p) return 1;
        ::usleep(200'000);
        return p->free(victim) ? 0 : 2;
    });
    t0 = Clock::now();
    auto got = sp->allocate(4096, 10s);
    auto waited = Clock::now() - t0;
    EXPECT_EQ(wait_child(child), 0);
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_EQ(*got, victim);
    EXPECT_GE(waited, 150ms);
    EXPECT_LT(waited, 5s);
}

TEST(Pool, OwnerDyingInsideTheAllocatorIsRepaired) {
    ScopedPool sp(2 << 20);
    ASSERT_TRUE(sp.ok());
    auto keep = sp->allocate(5000);
    ASSERT_TRUE(keep);
    const PoolStats before = sp->stats();
    std::string name = sp.name();
    pid_t child = fork_child([&] {
        auto p = Pool::attach(name);
        if (!p) return 1;
        auto* h = reinterpret_cast<detail::PoolHeader*>(p->at(0));
        if (::pthread_mutex_lock(&h->lock) != 0) return 2;
        // Die half-way through an update: free lists point at garbage.
        for (auto& f : h->free_head) f = 12345;
        h->free_units = 1;
        ::raise(SIGKILL);
        return 3;
    });
    EXPECT_EQ(wait_child(child), 128 + SIGKILL);
    const PoolStats after = sp->stats();  // repairs on EOWNERDEAD
    EXPECT_EQ(after.free_bytes, before.free_bytes);
    EXPECT_EQ(after.largest_free, before.largest_free);
    std::vector<std::uint64_t> offs;
    while (auto off = sp->allocate(256)) offs.push_back(*off);
    EXPECT_EQ(offs.size() * 256, before.free_bytes);
    for (auto o : offs) ASSERT_TRUE(sp->free(o));
    ASSERT_TRUE(sp->free(*keep));
}

}  // namespace
}  // namespace dragon::channels
