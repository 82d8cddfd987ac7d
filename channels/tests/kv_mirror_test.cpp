// The read mirror (kv_mirror.hpp): what readers learn, and readers in other
// processes never seeing a torn or freed value while the writer replaces,
// removes and resets under them.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "dragon/channels/kv_mirror.hpp"
#include "test_util.hpp"

namespace dragon::channels {
namespace {

using test::fork_child;
using test::ScopedPool;
using test::SharedArray;
using test::wait_child;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

TEST(KvMirror, WhatAReaderLearns) {
    ScopedPool p(8 << 20);
    ASSERT_TRUE(p.ok());
    auto pool = Pool::attach(p.name());
    ASSERT_TRUE(pool);
    auto m = KvMirror::create(std::move(*pool), 64);
    ASSERT_TRUE(m) << m.error().message();
    std::string out;
    // Nothing mirrored yet: every lookup is unknown.
    EXPECT_EQ(m->lookup(bytes_of("k"), 0, out), MirrorLookup::unknown);
    m->reset(3, true);
    EXPECT_EQ(m->lookup(bytes_of("k"), 3, out), MirrorLookup::absent);
    EXPECT_EQ(m->lookup(bytes_of("k"), 2, out), MirrorLookup::unknown);  // another checkpoint
    ASSERT_TRUE(m->put(bytes_of("k"), bytes_of("value one")));
    ASSERT_TRUE(m->put(bytes_of(""), bytes_of("")));  // empty key and value
    EXPECT_EQ(m->lookup(bytes_of("k"), 3, out), MirrorLookup::hit);
    EXPECT_EQ(out, "value one");
    EXPECT_EQ(m->lookup(bytes_of(""), 3, out), MirrorLookup::hit);
    EXPECT_EQ(out, "");
    ASSERT_TRUE(m->put(bytes_of("k"), bytes_of("two")));
    EXPECT_EQ(m->lookup(bytes_of("k"), 3, out), MirrorLookup::hit);
    EXPECT_EQ(out, "two");
    EXPECT_EQ(m->size(), 2U);
    m->remove(bytes_of("k"));
    EXPECT_EQ(m->lookup(bytes_of("k"), 3, out), MirrorLookup::absent);
    EXPECT_EQ(m->size(), 1U);
    // A value too large for the mirror: out of it, and the mirror incomplete.
    ASSERT_TRUE(m->put(bytes_of("big"), bytes_of("small first")));
    std::string big(KvMirror::kMaxEntry, 'b');
    auto st = m->put(bytes_of("big"), bytes_of(big));
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code(), Errc::no_space);
    EXPECT_EQ(m->lookup(bytes_of("big"), 3, out), MirrorLookup::unknown);
    EXPECT_EQ(m->lookup(bytes_of("never"), 3, out), MirrorLookup::unknown);  // a miss is no answer now
    m->set_complete(true);
    EXPECT_EQ(m->lookup(bytes_of("never"), 3, out), MirrorLookup::absent);
    // Three quarters of the buckets used: further keys are refused, known ones still replaced.
    m->reset(4, true);
    int refused = 0;
    for (int i = 0; i < 64; ++i) {
        if (!m->put(bytes_of("key" + std::to_string(i)), bytes_of("v" + std::to_string(i)))) ++refused;
    }
    EXPECT_EQ(refused, 64 - 48);
    EXPECT_EQ(m->lookup(bytes_of("key5"), 4, out), MirrorLookup::hit);
    EXPECT_EQ(out, "v5");
    EXPECT_EQ(m->lookup(bytes_of("key60"), 4, out), MirrorLookup::unknown);
    ASSERT_TRUE(m->put(bytes_of("key5"), bytes_of("again")));
    // Another process attaches by offset; a wrong offset is refused.
    auto p2 = Pool::attach(p.name());
    ASSERT_TRUE(p2);
    auto bad = KvMirror::attach(std::move(*p2), m->offset() + 256);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), Errc::protocol);
    pid_t c = fork_child([&] {
        auto pa = Pool::attach(p.name());
        if (!pa) return test::report_child_error(pa.error());
        auto r = KvMirror::attach(std::move(*pa), m->offset());
        if (!r) return test::report_child_error(r.error());
        std::string v;
        if (r->lookup(bytes_of("key5"), 4, v) != MirrorLookup::hit || v != "again") return 2;
        return 0;
    });
    EXPECT_EQ(wait_child(c), 0);
    // destroy() gives every block back to the pool.
    const auto free_before = (*p).stats().free_bytes;
    m->destroy();
    EXPECT_GT((*p).stats().free_bytes, free_before);
    EXPECT_EQ((*p).stats().free_bytes, (*p).stats().heap_bytes);
}

// A value of `key`'s version n: its length and every byte derive from (key, n),
// so a reader can tell a whole value from a torn or reused one.
std::string value_of(int key, std::uint32_t n) {
    std::string v(16 + (n * 37 + static_cast<std::uint32_t>(key) * 11) % 2000, '\0');
    std::memcpy(v.data(), &n, 4);
    std::memcpy(v.data() + 4, &key, 4);
    for (std::size_t i = 8; i < v.size(); ++i)
        v[i] = static_cast<char>((n * 131 + static_cast<std::uint32_t>(key) * 7 + i) & 0xff);
    return v;
}

bool whole(int key, const std::string& v) {
    if (v.size() < 16) return false;
    std::uint32_t n = 0;
    int k = 0;
    std::memcpy(&n, v.data(), 4);
    std::memcpy(&k, v.data() + 4, 4);
    return k == key && v == value_of(key, n);
}

TEST(KvMirror, ReadersInOtherProcessesNeverSeeATornValue) {
    ScopedPool p(16 << 20);
    ASSERT_TRUE(p.ok());
    auto pool = Pool::attach(p.name());
    ASSERT_TRUE(pool);
    auto m = KvMirror::create(std::move(*pool), 256);
    ASSERT_TRUE(m);
    constexpr int kKeys = 40;
    constexpr std::size_t kReaders = 3;
    m->reset(1, true);
    for (int k = 0; k < kKeys; ++k) ASSERT_TRUE(m->put(bytes_of("k" + std::to_string(k)), bytes_of(value_of(k, 0))));
    SharedArray<std::uint64_t> stats(4 * kReaders + 1);  // per reader: hits, absent, unknown, bad; then "stop"
    std::vector<pid_t> readers;
    for (std::size_t r = 0; r < kReaders; ++r) {
        readers.push_back(fork_child([&, r] {
            auto pa = Pool::attach(p.name());
            if (!pa) return test::report_child_error(pa.error());
            auto mm = KvMirror::attach(std::move(*pa), m->offset());
            if (!mm) return test::report_child_error(mm.error());
            std::string v;
            for (std::uint64_t i = 0; __atomic_load_n(&stats[4 * kReaders], __ATOMIC_ACQUIRE) == 0; ++i) {
                const int k = static_cast<int>((i * 7 + r) % kKeys);
                switch (mm->lookup(bytes_of("k" + std::to_string(k)), 1, v)) {
                case MirrorLookup::hit: ++stats[4 * r]; if (!whole(k, v)) ++stats[4 * r + 3]; break;
                case MirrorLookup::absent: ++stats[4 * r + 1]; break;
                case MirrorLookup::unknown: ++stats[4 * r + 2]; break;
                }
            }
            return 0;
        }));
    }
    // The writer: replaces values (other sizes, so blocks are freed and
    // reused), removes and puts back keys, and resets now and then.
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    std::uint32_t n = 1;
    while (std::chrono::steady_clock::now() < end) {
        for (int k = 0; k < kKeys; ++k, ++n) {
            if (n % 5 == 0) m->remove(bytes_of("k" + std::to_string(k)));
            else ASSERT_TRUE(m->put(bytes_of("k" + std::to_string(k)), bytes_of(value_of(k, n))));
        }
        if (n % 400 == 0) {
            m->reset(1, true);
            for (int k = 0; k < kKeys; ++k) ASSERT_TRUE(m->put(bytes_of("k" + std::to_string(k)), bytes_of(value_of(k, n))));
        }
    }
    __atomic_store_n(&stats[4 * kReaders], 1, __ATOMIC_RELEASE);
    std::uint64_t hits = 0, absent = 0, bad = 0;
    for (std::size_t r = 0; r < kReaders; ++r) {
        EXPECT_EQ(wait_child(readers[r]), 0);
        hits += stats[4 * r];
        absent += stats[4 * r + 1];
        bad += stats[4 * r + 3];
    }
    EXPECT_EQ(bad, 0U) << "torn values seen";
    EXPECT_GT(hits, 1000U);   // the readers did read, and the checks ran
    EXPECT_GT(absent, 0U);    // removed keys were seen removed
    m->destroy();
    EXPECT_EQ((*p).stats().free_bytes, (*p).stats().heap_bytes);
}

TEST(KvMirror, AWriterThatDiedMakesItsMirrorAnswerUnknown) {
    ScopedPool p(4 << 20);
    ASSERT_TRUE(p.ok());
    SharedArray<std::uint64_t> offset(1);
    // The writer is a child: it makes the mirror, fills it, says where, then dies (SIGKILL).
    pid_t w = fork_child([&] {
        auto pa = Pool::attach(p.name());
        if (!pa) return test::report_child_error(pa.error());
        auto m = KvMirror::create(std::move(*pa), 64);
        if (!m) return test::report_child_error(m.error());
        m->reset(0, true);
        if (!m->put(bytes_of("k"), bytes_of("v"))) return 2;
        __atomic_store_n(&offset[0], m->offset(), __ATOMIC_RELEASE);
        ::pause();
        return 0;
    });
    while (__atomic_load_n(&offset[0], __ATOMIC_ACQUIRE) == 0) ::usleep(1000);
    auto pa = Pool::attach(p.name());
    ASSERT_TRUE(pa);
    auto m = KvMirror::attach(std::move(*pa), offset[0]);
    ASSERT_TRUE(m);
    std::string out;
    EXPECT_TRUE(m->writer_alive());
    EXPECT_EQ(m->lookup(bytes_of("k"), 0, out), MirrorLookup::hit);
    EXPECT_EQ(m->lookup(bytes_of("x"), 0, out), MirrorLookup::absent);
    ::kill(w, SIGKILL);
    EXPECT_EQ(wait_child(w), 128 + SIGKILL);
    EXPECT_FALSE(m->writer_alive());
    EXPECT_EQ(m->lookup(bytes_of("k"), 0, out), MirrorLookup::unknown);
    EXPECT_EQ(m->lookup(bytes_of("x"), 0, out), MirrorLookup::unknown);
}

}  // namespace
}  // namespace dragon::channels
