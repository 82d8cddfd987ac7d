// Futex and deadline helpers for process-shared waiting (internal).
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <span>

#include "dragon/channels/pool.hpp"

namespace dragon::channels::detail {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4);

/// An absolute CLOCK_MONOTONIC deadline built from a Timeout.
class Deadline {
public:
    explicit Deadline(Timeout t) noexcept;
    [[nodiscard]] bool try_once() const noexcept { return try_once_; }
    [[nodiscard]] bool forever() const noexcept { return forever_; }
    [[nodiscard]] bool passed() const noexcept;
    /// nullptr when forever.
    [[nodiscard]] const timespec* abs() const noexcept { return forever_ ? nullptr : &abs_; }

private:
    bool try_once_ = false;
    bool forever_ = false;
    timespec abs_{};
};

enum class WaitResult { woken, timed_out };

/// Sleeps while *word == expected (process-shared futex), until woken or the
/// deadline. Spurious wake-ups are reported as woken.
WaitResult futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& d) noexcept;

/// Wakes up to n sleepers on word.
void futex_wake(std::atomic<std::uint32_t>& word, int n = 0x7fffffff) noexcept;

struct WaitItem {
    std::atomic<std::uint32_t>* word;
    std::uint32_t expected;
};

/// Sleeps on several words at once (futex_waitv, at most 128).
WaitResult futex_waitv(std::span<const WaitItem> items, const Deadline& d) noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace dragon::channels::detail
