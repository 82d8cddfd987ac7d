// Channel tests: sizes, try-once and timeouts, blocking across processes, poll, MPMC, crashes under the locks.
#include <signal.h>

#include <chrono>
#include <thread>

#include "../src/layout.hpp"
#include "test_util.hpp"

namespace dragon::channels {
namespace {

using namespace std::chrono_literals;
using test::bytes_of;
using test::fork_child;
using test::ScopedPool;
using test::wait_child;
using Clock = std::chrono::steady_clock;

TEST(Channel, EverySizeRoundTripsThroughEveryRecvFlavour) {
    ScopedPool sp(16 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 8, .block_size = 200});
    ASSERT_TRUE(ch) << ch.error().message();
    const PoolStats before = sp->stats();
    for (std::size_t size : {0UL, 1UL, 199UL, 200UL, 201UL, 1000UL, 65536UL, 3UL << 20}) {
        std::vector<std::byte> msg(size);
        for (std::size_t i = 0; i < size; ++i) msg[i] = static_cast<std::byte>(i * 7 + size);
        for (int flavour = 0; flavour < 3; ++flavour) {
            ASSERT_TRUE(ch->send(msg, kTryOnce)) << size;
            if (flavour == 0) {
                std::vector<std::byte> out(1);
                ASSERT_TRUE(ch->recv(out, kTryOnce));
                EXPECT_EQ(out, msg) << size;
            } else if (flavour == 1) {
                std::vector<std::byte> buf(size + 5);
                auto n = ch->recv(std::span<std::byte>(buf), kTryOnce);
                ASSERT_TRUE(n);
                ASSERT_EQ(*n, size);
                EXPECT_TRUE(std::equal(msg.begin(), msg.end(), buf.begin())) << size;
            } else {
                auto m = ch->recv_message(kTryOnce);
                ASSERT_TRUE(m);
                ASSERT_EQ(m->size(), size);
                EXPECT_TRUE(std::equal(msg.begin(), msg.end(), m->data().begin())) << size;
            }
        }
    }
    EXPECT_EQ(sp->stats().free_bytes, before.free_bytes);  // large-message blocks all returned
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, SendBlockLinksLargeCopiesSmallAndLeavesFailuresToTheCaller) {
    ScopedPool sp(16 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 2, .block_size = 200});
    ASSERT_TRUE(ch);
    const PoolStats before = sp->stats();
    auto filled = [&](std::size_t size) {
        auto b = sp->allocate(size);
        EXPECT_TRUE(b);
        for (std::size_t i = 0; i < size; ++i) sp->at(*b)[i] = static_cast<std::byte>(i * 3 + size);
        return *b;
    };
    // Large: linked without a copy, so the received message lives in that very block.
    const std::uint64_t big = filled(100000);
    ASSERT_TRUE(ch->send_block(big, 100000, kTryOnce));
    // Small: copied into its slot, the block freed at once.
    ASSERT_TRUE(ch->send_block(filled(150), 150, kTryOnce));
    // Full: the caller keeps its block.
    const std::uint64_t third = filled(5000);
    EXPECT_EQ(ch->send_block(third, 5000, kTryOnce).error().code(), Errc::would_block);
    EXPECT_TRUE(sp->block_size(third));
    ASSERT_TRUE(sp->free(third));
    // Not a block, or a block too small for the size claimed.
    EXPECT_EQ(ch->send_block(12345, 10, kTryOnce).error().code(), Errc::invalid_argument);
    const std::uint64_t small = filled(300);
    EXPECT_EQ(ch->send_block(small, 1 << 20, kTryOnce).error().code(), Errc::invalid_argument);
    ASSERT_TRUE(sp->free(small));

    auto m = ch->recv_message(kTryOnce);
    ASSERT_TRUE(m);
    ASSERT_EQ(m->size(), 100000U);
    EXPECT_EQ(m->data().data(), sp->at(big));
    for (std::size_t i = 0; i < 100000; i += 997) EXPECT_EQ(m->data()[i], static_cast<std::byte>(i * 3 + 100000));
    *m = Message{};
    std::vector<std::byte> out;
    ASSERT_TRUE(ch->recv(out, kTryOnce));
    ASSERT_EQ(out.size(), 150U);
    EXPECT_EQ(out[149], static_cast<std::byte>((149 * 3 + 150) & 0xff));
    EXPECT_EQ(sp->stats().free_bytes, before.free_bytes);
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, TryOnceTimeoutsAndTooSmallBuffers) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 4, .block_size = 64});
    ASSERT_TRUE(ch);
    std::vector<std::byte> out;
    EXPECT_EQ(ch->recv(out, kTryOnce).error().code(), Errc::would_block);
    auto t0 = Clock::now();
    EXPECT_EQ(ch->recv(out, 100ms).error().code(), Errc::timeout);
    auto waited = Clock::now() - t0;
    EXPECT_GE(waited, 100ms);
    EXPECT_LT(waited, 2s);

    for (int i = 0; i < 4; ++i) ASSERT_TRUE(ch->send(bytes_of("0123456789"), kTryOnce));
    EXPECT_FALSE(ch->writable());
    EXPECT_EQ(ch->send(bytes_of("x"), kTryOnce).error().code(), Errc::would_block);
    t0 = Clock::now();
    EXPECT_EQ(ch->send(bytes_of("x"), 50ms).error().code(), Errc::timeout);
    EXPECT_GE(Clock::now() - t0, 50ms);
    // A timed-out large send gives its pool block back.
    const PoolStats before = sp->stats();
    std::vector<std::byte> big(100000);
    EXPECT_EQ(ch->send(big, 20ms).error().code(), Errc::timeout);
    EXPECT_EQ(sp->stats().free_bytes, before.free_bytes);

    std::byte small[4];
    auto r = ch->recv(std::span<std::byte>(small), kTryOnce);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::too_large);
    EXPECT_EQ(ch->queued(), 4U);  // the message stayed
    ASSERT_TRUE(ch->recv(out, kTryOnce));
    EXPECT_EQ(out.size(), 10U);
    ASSERT_TRUE(ch->destroy());
    EXPECT_EQ(ch->send(bytes_of("x"), kTryOnce).error().code(), Errc::closed);
}

TEST(Channel, AHandleOfAnotherProcessSeesTheChannelDestroyed) {
    // The creator destroys while a process sleeps in recv on its own handle:
    // the sleeper wakes with `closed`, and its later sends and receives are
    // `closed` too, also once the pool handed the block to a new channel.
    ScopedPool sp(16 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 4, .block_size = 64});
    ASSERT_TRUE(ch);
    const std::string hex = ch->descriptor().to_hex();
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t child = fork_child([&] {
        auto d = ChannelDescriptor::from_hex(hex);
        if (!d) return 1;
        auto c = Channel::attach(*d);
        if (!c) return 2;
        (void)!::write(ready[1], "r", 1);
        std::vector<std::byte> out;
        auto r = c->recv(out, 20s);  // woken by destroy, not by the timeout
        if (r || r.error().code() != Errc::closed) return 3;
        // the parent re-creates a channel in the same block, then says so
        char go;
        if (::read(ready[0], &go, 1) != 1) return 4;
        auto s = c->send(bytes_of("late"), kTryOnce);
        if (s || s.error().code() != Errc::closed) return 5;
        r = c->recv(out, kTryOnce);
        if (r || r.error().code() != Errc::closed) return 6;
        return 0;
    });
    char got;
    ASSERT_EQ(::read(ready[0], &got, 1), 1);
    ::usleep(100'000);  // (long enough for the child to be asleep in recv)
    const std::uint64_t offset = ch->descriptor().channel_offset;
    ASSERT_TRUE(ch->destroy());
    ::usleep(100'000);
    auto again = Channel::create(*sp, {.capacity = 4, .block_size = 64});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->descriptor().channel_offset, offset);  // (the block the child's handle names)
    ASSERT_EQ(::write(ready[1], "g", 1), 1);
    EXPECT_EQ(wait_child(child), 0);
    EXPECT_EQ(again->queued(), 0U);  // the late send did not land in the new channel
    ::close(ready[0]);
    ::close(ready[1]);
}

TEST(Channel, QueuedLargeBytesAreBounded) {
    ScopedPool sp(16 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 8, .block_size = 64, .max_queued_bytes = 300000});
    ASSERT_TRUE(ch);
    std::vector<std::byte> big(200000);
    ASSERT_TRUE(ch->send(big, kTryOnce));  // an empty channel always admits one
    EXPECT_EQ(ch->send(big, kTryOnce).error().code(), Errc::would_block);
    EXPECT_EQ(ch->send(big, 20ms).error().code(), Errc::timeout);
    ASSERT_TRUE(ch->send(bytes_of("small messages do not count"), kTryOnce));
    std::vector<std::byte> out;
    ASSERT_TRUE(ch->recv(out, kTryOnce));
    EXPECT_EQ(out.size(), big.size());
    ASSERT_TRUE(ch->send(big, kTryOnce));
    EXPECT_EQ(ch->queued(), 2U);
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, BlockedReceiverInOneProcessIsWokenBySenderInAnother) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp);
    ASSERT_TRUE(ch);
    std::string hex = ch->descriptor().to_hex();
    pid_t child = fork_child([&] {
        auto d = ChannelDescriptor::from_hex(hex);
        if (!d) return 1;
        auto c = Channel::attach(*d);  // attaches the pool by name: a fresh mapping
        if (!c) return 2;
        ::usleep(150'000);
        return c->send(bytes_of("wake up"), 5s) ? 0 : 3;
    });
    std::vector<std::byte> out;
    auto t0 = Clock::now();
    auto st = ch->recv(out, 10s);
    auto waited = Clock::now() - t0;
    EXPECT_EQ(wait_child(child), 0);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), out.size()), "wake up");
    EXPECT_GE(waited, 100ms);
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, BlockedSenderIsWokenByReceiverInAnotherProcess) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 2, .block_size = 64});
    ASSERT_TRUE(ch);
    ASSERT_TRUE(ch->send(bytes_of("a"), kTryOnce));
    ASSERT_TRUE(ch->send(bytes_of("b"), kTryOnce));
    auto d = ch->descriptor();
    pid_t child = fork_child([&] {
        auto c = Channel::attach(d);
        if (!c) return 1;
        ::usleep(150'000);
        std::vector<std::byte> out;
        return c->recv(out, 5s) && out.size() == 1 && out[0] == std::byte{'a'} ? 0 : 2;
    });
    auto t0 = Clock::now();
    EXPECT_TRUE(ch->send(bytes_of("c"), 10s));
    EXPECT_GE(Clock::now() - t0, 100ms);
    EXPECT_EQ(wait_child(child), 0);
    std::vector<std::byte> out;
    ASSERT_TRUE(ch->recv(out, kTryOnce));
    EXPECT_EQ(out[0], std::byte{'b'});
    ASSERT_TRUE(ch->recv(out, kTryOnce));
    EXPECT_EQ(out[0], std::byte{'c'});
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, PollReportsReadableAndWritableAcrossChannels) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto a = Channel::create(*sp, {.capacity = 1, .block_size = 64});
    auto b = Channel::create(*sp, {.capacity = 1, .block_size = 64});
    ASSERT_TRUE(a && b);
    PollItem items[2] = {{&*a, kReadable, 0}, {&*b, kReadable, 0}};
    EXPECT_EQ(poll(items, kTryOnce).error().code(), Errc::would_block);
    auto t0 = Clock::now();
    EXPECT_EQ(poll(items, 50ms).error().code(), Errc::timeout);
    EXPECT_GE(Clock::now() - t0, 50ms);

    auto db = b->descriptor();
    pid_t child = fork_child([&] {
        auto c = Channel::attach(db);
        if (!c) return 1;
        ::usleep(100'000);
        return c->send(bytes_of("hi"), 5s) ? 0 : 2;
    });
    t0 = Clock::now();
    auto n = poll(items, 10s);
    EXPECT_LT(Clock::now() - t0, 5s);  // woken by the send, not by the deadline
    EXPECT_EQ(wait_child(child), 0);
    ASSERT_TRUE(n) << n.error().message();
    EXPECT_EQ(*n, 1U);
    EXPECT_EQ(items[0].revents, 0);
    EXPECT_EQ(items[1].revents, kReadable);

    PollItem w[2] = {{&*a, kWritable, 0}, {&*b, kWritable, 0}};
    n = poll(w, kTryOnce);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 1U);  // b is full (capacity 1)
    EXPECT_EQ(w[0].revents, kWritable);
    EXPECT_EQ(w[1].revents, 0);

    // A full channel becomes writable when another process receives.
    PollItem wb[1] = {{&*b, kWritable | kReadable, 0}};
    n = poll(wb, kTryOnce);
    ASSERT_TRUE(n);
    EXPECT_EQ(wb[0].revents, kReadable);
    PollItem only_w[1] = {{&*b, kWritable, 0}};
    child = fork_child([&] {
        auto c = Channel::attach(db);
        if (!c) return 1;
        ::usleep(100'000);
        std::vector<std::byte> out;
        return c->recv(out, 5s) ? 0 : 2;
    });
    t0 = Clock::now();
    n = poll(only_w, 10s);
    EXPECT_LT(Clock::now() - t0, 5s);
    EXPECT_EQ(wait_child(child), 0);
    ASSERT_TRUE(n);
    EXPECT_EQ(only_w[0].revents, kWritable);
    EXPECT_EQ(poll(std::span<PollItem>{}, kTryOnce).error().code(), Errc::invalid_argument);
    ASSERT_TRUE(a->destroy());
    ASSERT_TRUE(b->destroy());
}

// N producer processes x M consumer processes; every message exactly once, per-sender order kept.
void run_mpmc(int producers, int consumers, std::uint32_t per_producer, std::size_t pool_size,
              ChannelAttrs attrs, std::size_t big_every) {
    ScopedPool sp(pool_size);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, attrs);
    ASSERT_TRUE(ch);
    auto d = ch->descriptor();
    const std::uint32_t total = per_producer * static_cast<std::uint32_t>(producers);
    test::SharedArray<std::atomic<std::uint32_t>> seen(total);
    test::SharedArray<std::atomic<std::uint32_t>> received(1);
    const std::size_t sizes[] = {0, 8, 60, attrs.block_size, attrs.block_size + 1, 1000, 3000};

    std::vector<pid_t> kids;
    for (int c = 0; c < consumers; ++c) {
        kids.push_back(fork_child([&] {
            auto chan = Channel::attach(d);
            if (!chan) return test::report_child_error(chan.error());
            std::vector<std::int64_t> last(static_cast<std::size_t>(producers), -1);
            std::vector<std::byte> buf;
            for (;;) {
                auto st = chan->recv(buf, 20s);
                if (!st) return 2;
                if (buf.size() == 1) return 0;  // stop token
                test::MsgHead h{};
                if (!test::check_message(buf, h)) return 3;
                if (h.sender >= static_cast<std::uint32_t>(producers) || h.seq >= per_producer) return 4;
                if (static_cast<std::int64_t>(h.seq) <= last[h.sender]) return 5;  // per-sender FIFO
                last[h.sender] = h.seq;
                seen[h.sender * per_producer + h.seq].fetch_add(1);
                received[0].fetch_add(1);
            }
        }));
    }
    std::vector<pid_t> prods;
    for (int p = 0; p < producers; ++p) {
        prods.push_back(fork_child([&, p] {
            auto chan = Channel::attach(d);
            if (!chan) return test::report_child_error(chan.error());
            std::vector<std::byte> buf;
            for (std::uint32_t s = 0; s < per_producer; ++s) {
                std::size_t size = sizes[(s + static_cast<std::uint32_t>(p)) % std::size(sizes)];
                if (big_every != 0 && s % big_every == big_every - 1) size = 200000 + s;
                test::fill_message(buf, static_cast<std::uint32_t>(p), s, size);
                if (!chan->send(buf, 20s)) return 2;
            }
            return 0;
        }));
    }
    for (pid_t pid : prods) EXPECT_EQ(wait_child(pid), 0);
    for (int c = 0; c < consumers; ++c) ASSERT_TRUE(ch->send(bytes_of("."), 20s));
    for (pid_t pid : kids) EXPECT_EQ(wait_child(pid), 0);
    EXPECT_EQ(received[0].load(), total);
    std::uint32_t wrong = 0;
    for (std::uint32_t i = 0; i < total; ++i) wrong += seen[i].load() != 1 ? 1U : 0U;
    EXPECT_EQ(wrong, 0U) << "messages not delivered exactly once";
    EXPECT_EQ(ch->queued(), 0U);
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, ManyProducersManyConsumersExactlyOnceInOrder) {
    run_mpmc(3, 2, 4000, 32 << 20, {.capacity = 64, .block_size = 256}, 97);
}

// The same in threads of one process, so ThreadSanitizer sees both sides.
TEST(Channel, ThreadsExactlyOnceInOrder) {
    ScopedPool sp(16 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 16, .block_size = 128});
    ASSERT_TRUE(ch);
    constexpr std::uint32_t kPer = 3000;
    constexpr int kProducers = 2, kConsumers = 2;
    std::vector<std::atomic<int>> seen(kProducers * kPer);
    std::atomic<int> errors{0};
    std::vector<std::thread> ts;
    for (int c = 0; c < kConsumers; ++c)
        ts.emplace_back([&] {
            std::int64_t last[kProducers] = {-1, -1};
            std::vector<std::byte> buf;
            while (ch->recv(buf, 5s)) {
                if (buf.size() == 1) return;
                test::MsgHead h{};
                if (!test::check_message(buf, h) || h.sender >= kProducers || h.seq >= kPer ||
                    static_cast<std::int64_t>(h.seq) <= last[h.sender]) {
                    ++errors;
                    return;
                }
                last[h.sender] = h.seq;
                seen[h.sender * kPer + h.seq]++;
            }
            ++errors;
        });
    for (int p = 0; p < kProducers; ++p)
        ts.emplace_back([&, p] {
            std::vector<std::byte> buf;
            for (std::uint32_t s = 0; s < kPer; ++s) {
                test::fill_message(buf, static_cast<std::uint32_t>(p), s, s % 50 == 0 ? 5000 : 16 + s % 200);
                if (!ch->send(buf, 5s)) {
                    ++errors;
                    return;
                }
            }
        });
    for (std::size_t i = kConsumers; i < ts.size(); ++i) ts[i].join();
    for (int c = 0; c < kConsumers; ++c) EXPECT_TRUE(ch->send(bytes_of("."), 5s));
    for (int c = 0; c < kConsumers; ++c) ts[static_cast<std::size_t>(c)].join();  // they also stop on a 5 s silence
    EXPECT_EQ(errors.load(), 0);
    int wrong = 0;
    for (auto& s : seen) wrong += s.load() != 1 ? 1 : 0;
    EXPECT_EQ(wrong, 0);
    ASSERT_TRUE(ch->destroy());
}

// A sender killed while holding the send lock, half-way through writing a slot.
TEST(Channel, SenderKilledHoldingTheLockLeavesChannelUsable) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 4, .block_size = 64});
    ASSERT_TRUE(ch);
    ASSERT_TRUE(ch->send(bytes_of("before"), kTryOnce));
    auto d = ch->descriptor();
    pid_t child = fork_child([&] {
        auto p = Pool::attach(d.pool_name);
        if (!p) return 1;
        auto* h = reinterpret_cast<detail::ChannelHeader*>(p->at(d.channel_offset));
        if (::pthread_mutex_lock(&h->send_lock) != 0) return 2;
        std::byte* slot = p->at(d.channel_offset) + h->slots_offset + (h->tail.load() % h->capacity) * h->slot_size;
        std::memset(slot, 0x5a, 20);  // a torn slot: header garbage, not published
        ::raise(SIGKILL);
        return 3;
    });
    EXPECT_EQ(wait_child(child), 128 + SIGKILL);
    ASSERT_TRUE(ch->send(bytes_of("after"), 1s));
    std::vector<std::byte> out;
    ASSERT_TRUE(ch->recv(out, 1s));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), out.size()), "before");
    ASSERT_TRUE(ch->recv(out, 1s));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), out.size()), "after");
    EXPECT_EQ(ch->recv(out, kTryOnce).error().code(), Errc::would_block);
    ASSERT_TRUE(ch->destroy());
}

TEST(Channel, ReceiverKilledHoldingTheLockLosesNothing) {
    ScopedPool sp(4 << 20);
    ASSERT_TRUE(sp.ok());
    auto ch = Channel::create(*sp, {.capacity = 4, .block_size = 64});
    ASSERT_TRUE(ch);
    ASSERT_TRUE(ch->send(bytes_of("keep me"), kTryOnce));
    auto d = ch->descriptor();
    pid_t child = fork_child([&] {
        auto p = Pool::attach(d.pool_name);
        if (!p) return 1;
        auto* h = reinterpret_cast<detail::ChannelHeader*>(p->at(d.channel_offset));
        if (::pthread_mutex_lock(&h->recv_lock) != 0) return 2;
        ::raise(SIGKILL);  // died mid-receive, before the commit
        return 3;
    });
    EXPECT_EQ(wait_child(child), 128 + SIGKILL);
    std::vector<std::byte> out;
    ASSERT_TRUE(ch->recv(out, 1s));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), out.size()), "keep me");
    ASSERT_TRUE(ch->send(bytes_of("more"), 1s));
    ASSERT_TRUE(ch->recv(out, 1s));
    EXPECT_EQ(out.size(), 4U);
    ASSERT_TRUE(ch->destroy());
}

}  // namespace
}  // namespace dragon::channels
