// Robust mutex init and error mapping.
#include "robust_lock.hpp"

#include "dragon/common/sys.hpp"

namespace dragon::channels::detail {

Status init_robust_mutex(pthread_mutex_t* m) {
    pthread_mutexattr_t attr;
    if (int rc = ::pthread_mutexattr_init(&attr); rc != 0) return sys::error_from_errno("pthread_mutexattr_init", rc);
    int rc = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = ::pthread_mutex_init(m, &attr);
    ::pthread_mutexattr_destroy(&attr);
    if (rc != 0) return sys::error_from_errno("initialising a robust shared mutex", rc);
    return ok();
}

Error RobustGuard::lock_error(int rc) {
    if (rc == ENOTRECOVERABLE)
        return Error(Errc::internal, "lock is unrecoverable: a process died holding it and repair failed", rc);
    return sys::error_from_errno("pthread_mutex_lock", rc);
}

}  // namespace dragon::channels::detail
