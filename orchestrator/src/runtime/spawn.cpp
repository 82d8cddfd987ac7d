// vfork/exec of managed processes.
#include "spawn.hpp"

#include <fmt/ranges.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

namespace dragon::rt {

namespace {

// Sanitizers cannot follow a vfork child that shares their memory; use fork there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kUseVfork = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kUseVfork = false;
#else
constexpr bool kUseVfork = true;
#endif
#else
constexpr bool kUseVfork = true;
#endif

// What the child reports through the error pipe when it cannot exec.
struct ChildFailure {
    int step;  // which step failed (kStep*)
    int err;   // errno
};
constexpr int kStepDup = 1, kStepChdir = 2, kStepExec = 3, kStepParent = 4, kStepAffinity = 5;

[[noreturn]] void child_fail(int pipe_fd, int step) {
    ChildFailure f{step, errno};
    // Best effort: if this write fails the parent still sees exit 127.
    [[maybe_unused]] auto n = ::write(pipe_fd, &f, sizeof f);
    ::_exit(127);
}

int install_fd(int from, int to, int devnull) {
    int src = from >= 0 ? from : devnull;
    if (src == to) return ::fcntl(to, F_SETFD, 0);  // keep it across exec
    return ::dup2(src, to);
}

// What the child needs, prepared by the parent (the child may not allocate).
struct ChildArgs {
    const char* path;
    char* const* argv;
    char* const* envp;
    const char* cwd;
    int in, out, err;
    int extra;  // -1: none; else installed as fd_limit
    int devnull;
    int errpipe;
    pid_t parent;
    const cpu_set_t* cpus;  // null: inherit
    std::size_t cpus_size;
    int fd_limit;  // the child keeps fds below this (the slots), drops the rest
};

// A few fds reserved near the bottom of the agent's table. The child's stdio
// and error pipe pass through them, so the child can take a private fd table
// holding only fds below `limit` (close_range with CLOSE_RANGE_UNSHARE copies
// nothing above it). Cloning with a shared table and unsharing only the low
// part makes a spawn cost the same with 10 or 10,000 fds open; a plain vfork
// copies the whole table, which made launching thousands of processes
// quadratic. Process-wide; used from one thread (the agent's loop).
class FdSlots {
public:
    static constexpr int kStdin = 0, kStdout = 1, kStderr = 2, kErrPipe = 3, kExtra = 4, kCount = 5;

    static Result<FdSlots*> get() {
        static FdSlots slots;
        static Status made = slots.make();
        if (!made) return made.error();
        return &slots;
    }
    [[nodiscard]] int fd(int i) const { return fds_[i]; }
    [[nodiscard]] int devnull() const { return devnull_; }
    [[nodiscard]] int limit() const { return limit_; }
    /// Puts `fd` (or /dev/null for -1) into slot i, close-on-exec.
    Status put(int i, int fd) {
        DRAGON_CHECK(sys::call("dup3 into an fd slot", [&] { return ::dup3(fd >= 0 ? fd : devnull_, fds_[i], O_CLOEXEC); }));
        return ok();
    }
    /// Puts /dev/null back into every slot, dropping the references they held.
    void clear() {
        for (int i = 0; i < kCount; ++i) ::dup3(devnull_, fds_[i], O_CLOEXEC);
    }

private:
    Status make() {
        devnull_ = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull_ < 0) return sys::error_from_errno("opening /dev/null");
        limit_ = devnull_ + 1;
        for (int& f : fds_) {
            f = ::fcntl(devnull_, F_DUPFD_CLOEXEC, 0);  // the lowest free fds
            if (f < 0) return sys::error_from_errno("reserving fd slots");
            limit_ = std::max(limit_, f + 1);
        }
        return ok();
    }
    int fds_[kCount] = {-1, -1, -1, -1, -1};
    int devnull_ = -1;
    int limit_ = 0;
};

// Resets a signal to SIG_DFL with the raw system call: glibc's wrappers
// refuse its reserved signals (32, 33), which must not stay ignored in the
// programs we start either.
void reset_signal(int sig) {
    struct {
        void* handler;
        unsigned long flags;
        void* restorer;
        unsigned long mask;
    } kact{nullptr /* SIG_DFL */, 0, nullptr, 0};
    ::syscall(SYS_rt_sigaction, sig, &kact, nullptr, sizeof kact.mask);
}

// The child between clone/vfork and exec: async-signal-safe calls only.
[[noreturn]] void run_child(const ChildArgs* a) {
    // A private fd table with only the fds below the limit: the slots, the
    // agent's stdio and its first few (close-on-exec) fds.
    if (::close_range(static_cast<unsigned>(a->fd_limit), ~0U, CLOSE_RANGE_UNSHARE) != 0 &&
        (::unshare(CLONE_FILES) != 0 || ::close_range(static_cast<unsigned>(a->fd_limit), ~0U, 0) != 0))
        child_fail(a->errpipe, kStepDup);
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        reset_signal(sig);
    }
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != a->parent) child_fail(a->errpipe, kStepParent);  // the agent died already
    if (install_fd(a->in, 0, a->devnull) < 0 || install_fd(a->out, 1, a->devnull) < 0 ||
        install_fd(a->err, 2, a->devnull) < 0)
        child_fail(a->errpipe, kStepDup);
    // Programs get stdin, stdout and stderr, nothing else of ours or of whoever
    // started us (the error pipe still works until exec closes it).
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    // The extra fd goes just above the slots: free, since the private table ends there.
    if (a->extra >= 0 && ::dup2(a->extra, a->fd_limit) < 0) child_fail(a->errpipe, kStepDup);
    if (a->cwd != nullptr && ::chdir(a->cwd) != 0) child_fail(a->errpipe, kStepChdir);
    if (a->cpus != nullptr && ::sched_setaffinity(0, a->cpus_size, a->cpus) != 0) child_fail(a->errpipe, kStepAffinity);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(a->path, a->argv, a->envp);
    child_fail(a->errpipe, kStepExec);
}

int child_entry(void* args) { run_child(static_cast<const ChildArgs*>(args)); }

}  // namespace

Result<std::string> resolve_program(const std::string& program, const std::string& path_env) {
    auto check = [&](const std::string& p) -> Status {
        struct stat st {};
        if (::stat(p.c_str(), &st) != 0) return sys::error_from_errno(p);
        if (S_ISDIR(st.st_mode)) return make_error(Errc::permission_denied, "{} is a directory", p);
        if (::access(p.c_str(), X_OK) != 0) return make_error(Errc::permission_denied, "{} is not executable", p);
        return ok();
    };
    if (program.empty()) return Error(Errc::invalid_argument, "empty program name");
    if (program.find('/') != std::string::npos) {
        if (auto st = check(program); !st) {
            if (st.error().code() == Errc::not_found)
                return make_error(Errc::not_found, "program '{}' does not exist", program);
            return std::move(st).error();
        }
        return program;
    }
    std::string_view rest = path_env.empty() ? std::string_view("/usr/local/bin:/usr/bin:/bin") : path_env;
    std::optional<Error> first_denied;
    for (;;) {
        auto colon = rest.find(':');
        std::string_view dir = rest.substr(0, colon);
        std::string candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, program);
        auto st = check(candidate);
        if (st) return candidate;
        if (st.error().code() == Errc::permission_denied && !first_denied) first_denied = std::move(st).error();
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
    }
    if (first_denied) return std::move(*first_denied);
    return make_error(Errc::not_found, "program '{}' not found in PATH", program);
}

std::vector<std::string> merge_env(std::vector<std::string> base, const std::vector<std::string>& additions) {
    for (const auto& kv : additions) {
        auto eq = kv.find('=');
        std::string_view key(kv.data(), eq == std::string::npos ? kv.size() : eq + 1);
        bool replaced = false;
        for (auto& b : base) {
            if (std::string_view(b).substr(0, key.size()) == key) {
                b = kv;
                replaced = true;
                break;
            }
        }
        if (!replaced) base.push_back(kv);
    }
    return base;
}

Result<int> extra_fd_number() {
    FdSlots* slots = DRAGON_TRY(FdSlots::get());
    return slots->limit();
}

Result<pid_t> spawn_child(const ChildSpec& spec) {
    // Everything the child needs is prepared here: after vfork it may not allocate.
    std::vector<char*> argv;
    argv.reserve(spec.argv.size() + 1);
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    envp.reserve(spec.envp.size() + 1);
    for (const auto& e : spec.envp) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    // The affinity mask, sized for the highest cpu asked for (hosts may have > 1024 cpus).
    const unsigned ncpus = spec.cpus.empty() ? 0 : *std::max_element(spec.cpus.begin(), spec.cpus.end()) + 1;
    const std::size_t mask_size = ncpus == 0 ? 0 : CPU_ALLOC_SIZE(ncpus);
    std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)> mask(ncpus == 0 ? nullptr : CPU_ALLOC(ncpus),
                                                           [](cpu_set_t* m) { if (m != nullptr) CPU_FREE(m); });
    if (ncpus > 0) {
        if (!mask) return Error(Errc::no_space, "allocating a cpu mask");
        CPU_ZERO_S(mask_size, mask.get());
        for (unsigned c : spec.cpus) CPU_SET_S(c, mask_size, mask.get());
    }

    FdSlots* slots = DRAGON_TRY(FdSlots::get());
    int errpipe[2];
    DRAGON_CHECK(sys::call("pipe2", [&] { return ::pipe2(errpipe, O_CLOEXEC); }));
    sys::UniqueFd err_r(errpipe[0]), err_w(errpipe[1]);
    struct ClearSlots {
        FdSlots* s;
        ~ClearSlots() { s->clear(); }
    } clear_slots{slots};
    DRAGON_CHECK(slots->put(FdSlots::kStdin, spec.stdin_fd));
    DRAGON_CHECK(slots->put(FdSlots::kStdout, spec.stdout_fd));
    DRAGON_CHECK(slots->put(FdSlots::kStderr, spec.stderr_fd));
    DRAGON_CHECK(slots->put(FdSlots::kErrPipe, err_w.get()));
    if (spec.extra_fd >= 0) DRAGON_CHECK(slots->put(FdSlots::kExtra, spec.extra_fd));

    const ChildArgs args{spec.path.c_str(), argv.data(), envp.data(), spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
                         slots->fd(FdSlots::kStdin), slots->fd(FdSlots::kStdout), slots->fd(FdSlots::kStderr),
                         spec.extra_fd >= 0 ? slots->fd(FdSlots::kExtra) : -1, slots->devnull(), slots->fd(FdSlots::kErrPipe), ::getpid(), mask.get(), mask_size,
                         slots->limit()};
    // Block every signal so no handler of ours runs in the child before exec.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = -1;
    if constexpr (kUseVfork) {
        // The child borrows our memory and fd table until it execs; we wait (CLONE_VFORK).
        alignas(64) static char child_stack[64 * 1024];
        pid = ::clone(child_entry, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD,
                      const_cast<ChildArgs*>(&args));
    } else {
        pid = ::fork();
        if (pid == 0) run_child(&args);
    }
    const int fork_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return sys::error_from_errno(kUseVfork ? "clone" : "fork", fork_errno);

    slots->clear();  // our copies of the child's ends and of the error pipe go
    err_w.reset();
    ChildFailure f{};
    ssize_t n;
    do {
        n = ::read(err_r.get(), &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return pid;  // exec closed the pipe: running

    int status = 0;
    ::waitpid(pid, &status, 0);  // reap the failed child now, before the SIGCHLD reaper sees it
    if (n != static_cast<ssize_t>(sizeof f)) return make_error(Errc::system, "{}: child failed before exec", spec.path);
    switch (f.step) {
        case kStepChdir:
            return Error(sys::errc_from_errno(f.err),
                         fmt::format("cannot change directory to {}: {}", spec.cwd, std::strerror(f.err)), f.err);
        case kStepDup:
            return Error(Errc::system, fmt::format("setting up stdio of {}: {}", spec.path, std::strerror(f.err)), f.err);
        case kStepParent:
            return Error(Errc::closed, "the agent is exiting", 0);
        case kStepAffinity:
            return Error(sys::errc_from_errno(f.err),
                         fmt::format("binding {} to cpus {}: {}", spec.path, fmt::join(spec.cpus, ","), std::strerror(f.err)),
                         f.err);
        default:
            return Error(sys::errc_from_errno(f.err), fmt::format("cannot execute {}: {}", spec.path, std::strerror(f.err)),
                         f.err);
    }
}

}  // namespace dragon::rt
