// Test helpers: unique pool names that are always unlinked, forked children, message patterns.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dragon/channels/channel.hpp"
#include "dragon/channels/pool.hpp"

namespace dragon::channels::test {

/// A pool with a name unique to this process and test, unlinked on scope exit
/// (also when an ASSERT fails), so /dev/shm stays clean.
class ScopedPool {
public:
    explicit ScopedPool(std::size_t size, std::uint32_t node = 0) {
        static std::atomic<unsigned> counter{0};
        std::string run = fmt::format("7e57{:x}{:04x}", ::getpid(), counter++);
        name_ = *make_pool_name(run, node);
        // Hold the run's node lock like a live agent does, so the orchestrator's
        // stale-run cleanup (which removes dragon-* entries whose lock is free
        // or missing) leaves this pool alone while the test runs.
        lock_path_ = fmt::format("/dev/shm/dragon-{}-n{}-lock", run, node);
        lock_fd_ = ::open(lock_path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        if (lock_fd_ >= 0) (void)::flock(lock_fd_, LOCK_EX | LOCK_NB);
        auto p = Pool::create(name_, size);
        if (!p) {
            ADD_FAILURE() << "Pool::create " << name_ << ": " << p.error().message();
            return;
        }
        pool_.emplace(std::move(p).value());
    }
    ScopedPool(const ScopedPool&) = delete;
    ScopedPool& operator=(const ScopedPool&) = delete;
    ~ScopedPool() {
        if (pool_) (void)Pool::unlink(name_);
        if (lock_fd_ >= 0) {
            ::unlink(lock_path_.c_str());
            ::close(lock_fd_);
        }
    }
    [[nodiscard]] bool ok() const { return pool_.has_value(); }
    Pool& operator*() { return *pool_; }
    Pool* operator->() { return &*pool_; }
    [[nodiscard]] const std::string& name() const { return name_; }

private:
    std::string name_;
    std::string lock_path_;
    int lock_fd_ = -1;
    std::optional<Pool> pool_;
};

/// Runs fn in a forked child whose exit status is fn's return value. The child
/// never returns into gtest; an alarm kills it if it hangs.
inline pid_t fork_child(const std::function<int()>& fn, unsigned alarm_s = 50) {
    pid_t pid = ::fork();
    if (pid == 0) {
        ::alarm(alarm_s);
        int rc = 99;
        try {
            rc = fn();
        } catch (...) {
            rc = 98;
        }
        ::_exit(rc);
    }
    return pid;
}

/// In a child: prints why it failed (gtest output is the parent's) and returns exit code 1.
inline int report_child_error(const Error& e) {
    std::fprintf(stderr, "child %d: %s\n", static_cast<int>(::getpid()), e.message().c_str());
    return 1;
}

/// Exit code of a child, or 128+signal.
inline int wait_child(pid_t pid) {
    int st = 0;
    if (::waitpid(pid, &st, 0) != pid) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -2;
}

/// Anonymous shared memory visible to forked children (for results and flags).
template <class T>
class SharedArray {
public:
    explicit SharedArray(std::size_t n) : n_(n) {
        void* p = ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        p_ = p == MAP_FAILED ? nullptr : static_cast<T*>(p);
        if (p_ != nullptr) std::memset(static_cast<void*>(p_), 0, bytes());
    }
    ~SharedArray() {
        if (p_ != nullptr) ::munmap(p_, bytes());
    }
    SharedArray(const SharedArray&) = delete;
    SharedArray& operator=(const SharedArray&) = delete;
    T& operator[](std::size_t i) { return p_[i]; }
    [[nodiscard]] std::size_t size() const { return n_; }

private:
    [[nodiscard]] std::size_t bytes() const { return n_ * sizeof(T); }
    std::size_t n_;
    T* p_ = nullptr;
};

/// A self-describing test message: sender, sequence number, size, then a
/// payload derived from all three so corruption and mix-ups are caught.
struct MsgHead {
    std::uint32_t sender;
    std::uint32_t seq;
    std::uint64_t size;
};

inline std::byte pattern(std::uint32_t sender, std::uint32_t seq, std::size_t i) {
    return static_cast<std::byte>((sender * 131U + seq * 7U + static_cast<std::uint32_t>(i) * 13U + (i >> 12)) & 0xffU);
}

inline void fill_message(std::vector<std::byte>& buf, std::uint32_t sender, std::uint32_t seq, std::size_t size) {
    if (size < sizeof(MsgHead)) size = sizeof(MsgHead);
    buf.resize(size);
    MsgHead h{sender, seq, size};
    std::memcpy(buf.data(), &h, sizeof h);
    for (std::size_t i = sizeof h; i < size; ++i) buf[i] = pattern(sender, seq, i);
}

/// Checks a received message; returns false on any mismatch and fills head.
inline bool check_message(std::span<const std::byte> m, MsgHead& head) {
    if (m.size() < sizeof(MsgHead)) return false;
    std::memcpy(&head, m.data(), sizeof head);
    if (head.size != m.size()) return false;
    for (std::size_t i = sizeof head; i < m.size(); ++i)
        if (m[i] != pattern(head.sender, head.seq, i)) return false;
    return true;
}

inline std::span<const std::byte> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace dragon::channels::test
