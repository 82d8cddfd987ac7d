// Futex wrappers: process-shared (no FUTEX_PRIVATE_FLAG), absolute monotonic deadlines.
#include "futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <vector>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

namespace dragon::channels::detail {

Deadline::Deadline(Timeout t) noexcept {
    if (t <= Timeout::zero()) {
        try_once_ = true;
        return;
    }
    if (t == kForever) {
        forever_ = true;
        return;
    }
    ::clock_gettime(CLOCK_MONOTONIC, &abs_);
    constexpr std::int64_t kMaxNs = std::int64_t{1} << 62;
    std::int64_t ns = t.count() > kMaxNs ? kMaxNs : t.count();
    abs_.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
    abs_.tv_nsec += static_cast<long>(ns % 1'000'000'000);
    if (abs_.tv_nsec >= 1'000'000'000) {
        abs_.tv_sec += 1;
        abs_.tv_nsec -= 1'000'000'000;
    }
}

bool Deadline::passed() const noexcept {
    if (forever_) return false;
    if (try_once_) return true;
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > abs_.tv_sec || (now.tv_sec == abs_.tv_sec && now.tv_nsec >= abs_.tv_nsec);
}

WaitResult futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& d) noexcept {
    if (d.passed()) return WaitResult::timed_out;
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, so retries after
    // EINTR do not stretch the timeout.
    long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET, expected,
                        d.abs(), nullptr, FUTEX_BITSET_MATCH_ANY);
    if (rc == -1 && errno == ETIMEDOUT) return WaitResult::timed_out;
    return WaitResult::woken;  // woken, EAGAIN (value changed) or EINTR: the caller re-checks
}

void futex_wake(std::atomic<std::uint32_t>& word, int n) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

WaitResult futex_waitv(std::span<const WaitItem> items, const Deadline& d) noexcept {
    if (d.passed()) return WaitResult::timed_out;
    struct ::futex_waitv waiters[FUTEX_WAITV_MAX] = {};
    std::size_t n = items.size() < FUTEX_WAITV_MAX ? items.size() : FUTEX_WAITV_MAX;
    for (std::size_t i = 0; i < n; ++i) {
        waiters[i].val = items[i].expected;
        waiters[i].uaddr = reinterpret_cast<std::uintptr_t>(items[i].word);
        waiters[i].flags = FUTEX_32;
    }
    long rc = ::syscall(SYS_futex_waitv, waiters, static_cast<unsigned>(n), 0u, d.abs(), CLOCK_MONOTONIC);
    if (rc == -1 && errno == ETIMEDOUT) return WaitResult::timed_out;
    if (rc == -1 && errno == ENOSYS) {
        // Kernels before 5.16: sleep on the first word in 1 ms slices and let the caller re-check all.
        Deadline slice(std::chrono::milliseconds(1));
        if (futex_wait(*items[0].word, items[0].expected, slice) == WaitResult::timed_out && d.passed())
            return WaitResult::timed_out;
    }
    return WaitResult::woken;
}

}  // namespace dragon::channels::detail
