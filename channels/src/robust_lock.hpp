// Robust process-shared mutex helpers: init, and a guard that repairs after an owner died.
#pragma once

#include <pthread.h>

#include <utility>

#include "dragon/common/result.hpp"

namespace dragon::channels::detail {

/// Initialises a PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST mutex in place.
Status init_robust_mutex(pthread_mutex_t* m);

/// Holds a robust mutex. lock() runs `repair` when the previous owner died
/// holding it (EOWNERDEAD); if repair succeeds the mutex is marked consistent,
/// otherwise it is left unrecoverable and every later lock fails.
class RobustGuard {
public:
    template <class Repair>
    static Result<RobustGuard> lock(pthread_mutex_t* m, Repair&& repair) {
        int rc = ::pthread_mutex_lock(m);
        if (rc == 0) return RobustGuard(m);
        if (rc == EOWNERDEAD) {
            Status st = repair();
            if (!st) {
                ::pthread_mutex_unlock(m);  // without consistent(): ENOTRECOVERABLE from now on
                return std::move(st).error().context("repairing after a dead lock owner");
            }
            ::pthread_mutex_consistent(m);
            return RobustGuard(m);
        }
        return lock_error(rc);
    }
    RobustGuard(RobustGuard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    RobustGuard& operator=(RobustGuard&&) = delete;
    RobustGuard(const RobustGuard&) = delete;
    RobustGuard& operator=(const RobustGuard&) = delete;
    ~RobustGuard() { unlock(); }
    void unlock() noexcept {
        if (m_ != nullptr) ::pthread_mutex_unlock(std::exchange(m_, nullptr));
    }

private:
    explicit RobustGuard(pthread_mutex_t* m) noexcept : m_(m) {}
    static Error lock_error(int rc);
    pthread_mutex_t* m_;
};

}  // namespace dragon::channels::detail
