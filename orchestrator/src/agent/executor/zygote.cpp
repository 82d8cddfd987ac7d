// Fast start (zygote.hpp): starting, asking and forgetting zygotes. The
// wire is python/dragon/_zygote.py's: frames of a 4-byte little-endian
// length and a body; a spawn request's fields are NUL-separated, its stdio
// descriptors ride with the first bytes (SCM_RIGHTS).
#include "zygote.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

namespace dragon::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxReply = 4096;
constexpr std::size_t kEnvRoom = 32 * 1024;

// What the zygote runs: the Python path of the members it serves, then its loop.
constexpr const char* kBoot =
    "import sys,os;sys.path[:]=os.environ['DRAGON_PY_PATH'].split('\\x1e');"
    "from dragon._zygote import main;main()";

bool starts_with(const std::string& s, std::string_view p) { return std::string_view(s).substr(0, p.size()) == p; }

/// The variables that change which modules an interpreter imports, or how
/// it reads and writes text: members that differ in one need another zygote.
bool shapes_interpreter(const std::string& kv) {
    return starts_with(kv, "PYTHON") || starts_with(kv, "DRAGON_PY_PATH=") || starts_with(kv, "DRAGON_ZYGOTE_") ||
           starts_with(kv, "LANG=") || starts_with(kv, "LC_") || starts_with(kv, "LD_PRELOAD=") ||
           starts_with(kv, "LD_LIBRARY_PATH=");
}

std::vector<std::string> shaping_vars(const std::vector<std::string>& envp) {
    std::vector<std::string> out;
    for (const auto& kv : envp)
        if (shapes_interpreter(kv)) out.push_back(kv);
    return out;
}

int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

Status wait_for(int fd, short events, Clock::time_point deadline, std::string_view what) {
    for (;;) {
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, ms_left(deadline));
        if (rc > 0) return ok();
        if (rc == 0) return make_error(Errc::timeout, "{}: no answer from the fast-start interpreter", what);
        if (errno != EINTR) return sys::error_from_errno(what);
    }
}

/// Sends all of data on the non-blocking socket, `fds` with its first bytes.
Status send_frame(int sock, std::string_view data, const std::vector<int>& fds, Clock::time_point deadline) {
    bool fds_sent = fds.empty();
    while (!data.empty()) {
        iovec iov{const_cast<char*>(data.data()), data.size()};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        std::array<char, CMSG_SPACE(sizeof(int) * 3)> ctl{};
        if (!fds_sent) {
            mh.msg_control = ctl.data();
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n > 0) {
            fds_sent = true;
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {  // (EWOULDBLOCK is EAGAIN on Linux)
            DRAGON_CHECK(wait_for(sock, POLLOUT, deadline, "sending to the fast-start interpreter"));
            continue;
        }
        return sys::error_from_errno("sending to the fast-start interpreter");
    }
    return ok();
}

Status recv_exact(int sock, char* buf, std::size_t len, Clock::time_point deadline) {
    while (len > 0) {
        ssize_t n = ::recv(sock, buf, len, 0);
        if (n > 0) {
            buf += n;
            len -= static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) return Error(Errc::closed, "the fast-start interpreter closed its socket");
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return sys::error_from_errno("reading the fast-start interpreter");
        DRAGON_CHECK(wait_for(sock, POLLIN, deadline, "reading the fast-start interpreter"));
    }
    return ok();
}

Result<std::string> recv_frame(int sock, Clock::time_point deadline) {
    std::array<unsigned char, 4> head{};
    DRAGON_CHECK(recv_exact(sock, reinterpret_cast<char*>(head.data()), head.size(), deadline));
    const std::size_t n = head[0] | (head[1] << 8U) | (head[2] << 16U) | (static_cast<std::size_t>(head[3]) << 24U);
    if (n > kMaxReply) return make_error(Errc::protocol, "the fast-start interpreter sent a {}-byte answer", n);
    std::string body(n, '\0');
    DRAGON_CHECK(recv_exact(sock, body.data(), n, deadline));
    return body;
}

std::string frame(std::string_view body) {
    std::string out;
    out.reserve(body.size() + 4);
    const auto n = static_cast<std::uint32_t>(body.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFFU));
    out.append(body);
    return out;
}

/// The zygote's "err <errno> <step> <detail>" as the Error exec's failure
/// of the same step gives (runtime/spawn.cpp).
Error member_error(const rt::ChildSpec& cs, std::string_view answer) {
    int err = 0;
    std::string_view rest = answer;
    auto sp = rest.find(' ');
    try {
        err = std::stoi(std::string(rest.substr(0, sp)));
    } catch (...) {
        err = EIO;
    }
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    std::string_view step = rest.substr(0, rest.find(' '));
    if (err <= 0) err = EIO;
    if (step == "chdir")
        return Error(sys::errc_from_errno(err), fmt::format("cannot change directory to {}: {}", cs.cwd, std::strerror(err)),
                     err);
    if (step == "affinity")
        return Error(sys::errc_from_errno(err),
                     fmt::format("binding {} to cpus {}: {}", cs.path, fmt::join(cs.cpus, ","), std::strerror(err)), err);
    return Error(Errc::system, fmt::format("starting {} (fast start): {}", cs.path, rest), err);
}

}  // namespace

Zygotes::Zygotes(ZygoteOptions opts) : opts_(std::move(opts)) {}

Zygotes::~Zygotes() { stop(); }

std::string Zygotes::kind_of(const rt::ChildSpec& cs) {
    const auto& a = cs.argv;
    if (cs.extra_fd >= 0 || a.size() < 3 || a.size() > 4 || a[a.size() - 2] != "-c") return {};
    if (a.size() == 4 && a[1] != "-S") return {};
    std::vector<std::string> shaping = shaping_vars(cs.envp);
    if (std::none_of(shaping.begin(), shaping.end(), [](const auto& kv) { return starts_with(kv, "DRAGON_PY_PATH="); }))
        return {};  // not one of ours: it would not find dragon._zygote
    std::sort(shaping.begin(), shaping.end());
    return fmt::format("{}\x1f{}\x1f{}", cs.path, a.size() == 4 ? "-S" : "", fmt::join(shaping, "\x1f"));
}

Zygotes::Zygote* Zygotes::find(const std::string& kind) {
    auto it = std::find_if(zygotes_.begin(), zygotes_.end(), [&](const Zygote& z) { return z.kind == kind; });
    return it == zygotes_.end() ? nullptr : &*it;
}

std::optional<Result<pid_t>> Zygotes::spawn(const rt::ChildSpec& cs) {
    if (!opts_.enabled) return std::nullopt;
    const std::string kind = kind_of(cs);
    if (kind.empty()) return std::nullopt;
    Zygote* z = find(kind);
    if (z == nullptr) {
        start(kind, cs);
        if ((z = find(kind)) == nullptr) return std::nullopt;
    }
    if (!z->ready && !z->waited) {
        // Once per zygote: wait for its imports (its "ready") rather than
        // exec this member and the many that usually follow it.
        z->waited = true;
        pollfd p{z->sock.get(), POLLIN, 0};
        (void)::poll(&p, 1, ms_left(z->started + opts_.ready_wait));
    }
    if (!check_ready(*z)) return std::nullopt;
    return fork_member(*z, cs);
}

void Zygotes::start(const std::string& kind, const rt::ChildSpec& cs) {
    if (auto f = failures_.find(kind); f != failures_.end() && f->second >= opts_.max_failures) return;  // exec from now on
    if (zygotes_.size() >= opts_.max_zygotes) return;
    std::array<int, 2> sv{};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.data()) != 0) {
        spdlog::warn("fast start: socketpair: {}", std::strerror(errno));
        return;
    }
    sys::UniqueFd ours(sv[0]), theirs(sv[1]);
    auto fd_number = rt::extra_fd_number();
    if (!fd_number) return spdlog::warn("fast start: {}", fd_number.error().message());
    std::vector<std::string> shaping = shaping_vars(cs.envp);
    shaping.push_back(fmt::format("DRAGON_ZYGOTE_FD={}", *fd_number));
    shaping.push_back(fmt::format("DRAGON_ZYGOTE_AGENT={}", ::getpid()));
    // Room in the zygote's initial environment block, which a member
    // overwrites with its own (identity first) so that /proc/<pid>/environ
    // tells who it is, as an exec'd member's does (_zygote._publish_environ).
    shaping.push_back("DRAGON_ZYGOTE_ENV_ROOM=" + std::string(kEnvRoom, '.'));
    std::vector<std::string> argv{cs.argv[0]};
    if (cs.argv.size() == 4) argv.emplace_back("-S");
    argv.insert(argv.end(), {"-c", kBoot});
    // Its own stderr is the agent's: a zygote that cannot import says why in the agent's log.
    auto env = rt::merge_env(opts_.base_env, shaping);
    std::unordered_set<std::string> env_set(env.begin(), env.end());
    rt::ChildSpec zc{cs.path, std::move(argv), std::move(env), {}, -1, -1, 2, {}, theirs.get()};
    auto pid = rt::spawn_child(zc);
    if (!pid) {
        spdlog::warn("fast start: starting {}: {}", cs.path, pid.error().message());
        ++failures_[kind];
        return;
    }
    (void)sys::set_nonblocking(ours.get(), true);
    spdlog::info("fast start: zygote pid {} for {} (starting)", *pid, cs.path);
    zygotes_.push_back(Zygote{kind, *pid, std::move(ours), false, Clock::now(), false, std::move(env_set)});
}

bool Zygotes::check_ready(Zygote& z) {
    if (z.ready) return true;
    pollfd p{z.sock.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;  // still importing: exec this one
    auto hello = recv_frame(z.sock.get(), Clock::now() + std::chrono::seconds(1));
    if (!hello || !starts_with(*hello, "ready ")) {
        drop(z, hello ? fmt::format("said '{}' instead of ready", *hello) : hello.error().message());
        return false;
    }
    z.ready = true;
    spdlog::info("fast start: zygote pid {} ready", z.pid);
    return true;
}

Result<pid_t> Zygotes::fork_member(Zygote& z, const rt::ChildSpec& cs) {
    // A zygote that died since the last member (its socket hung up before
    // the executor reaped it) never saw this request: exec instead.
    pollfd hup{z.sock.get(), POLLIN, 0};
    if (::poll(&hup, 1, 0) > 0) {
        drop(z, (hup.revents & POLLHUP) != 0 ? "it hung up" : "it spoke out of turn");
        return rt::spawn_child(cs);
    }
    std::string body = "spawn";
    auto field = [&](std::string_view f) {
        body.push_back('\0');
        body.append(f);
    };
    field(cs.cwd);
    field(fmt::format("{}", fmt::join(cs.cpus, ",")));
    std::vector<int> fds;
    std::string mask;
    for (int fd : {cs.stdin_fd, cs.stdout_fd, cs.stderr_fd}) {
        mask.push_back(fd >= 0 ? '1' : '0');
        if (fd >= 0) fds.push_back(fd);
    }
    field(mask);
    field(fmt::format("{}", cs.argv.size()));
    for (const auto& a : cs.argv) field(a);
    // The environment as changes to the zygote's: "K=V" to set, "K" to
    // unset. A member then writes only those (the zygote's own variables,
    // shared pages, stay untouched).
    std::unordered_set<std::string_view> keys;
    for (const auto& kv : cs.envp) {
        keys.insert(std::string_view(kv).substr(0, kv.find('=')));
        if (!z.env.contains(kv)) field(kv);
    }
    for (const auto& kv : z.env) {
        auto key = std::string_view(kv).substr(0, kv.find('='));
        if (!keys.contains(key)) field(key);
    }

    const auto deadline = Clock::now() + opts_.reply_timeout;
    if (auto st = send_frame(z.sock.get(), frame(body), fds, deadline); !st) {
        // Nothing can have started from a request that did not arrive whole.
        drop(z, st.error().message());
        return rt::spawn_child(cs);
    }
    auto answer = recv_frame(z.sock.get(), deadline);
    if (!answer && answer.error().sys_errno() == ECONNRESET) {
        // It died with the request unread (a reset, not an end of file):
        // nothing was forked, exec it.
        drop(z, answer.error().message());
        return rt::spawn_child(cs);
    }
    if (!answer) {
        Error e(Errc::system, fmt::format("starting {} (fast start): {}", cs.path, answer.error().message()), EIO);
        drop(z, answer.error().message());
        return e;
    }
    if (starts_with(*answer, "ok ")) {
        pid_t pid = 0;
        try {
            pid = static_cast<pid_t>(std::stol(answer->substr(3)));
        } catch (...) {
        }
        if (pid > 0) {
            ++forked_;
            return pid;
        }
    }
    if (starts_with(*answer, "err ")) return member_error(cs, std::string_view(*answer).substr(4));
    Error e(Errc::protocol, fmt::format("starting {} (fast start): the zygote said '{}'", cs.path, *answer));
    drop(z, "an answer out of protocol");
    return e;
}

void Zygotes::drop(Zygote& z, const std::string& why) {
    spdlog::warn("fast start: zygote pid {}: {}; members of its kind are exec'd until another is ready", z.pid, why);
    ++failures_[z.kind];
    ::kill(z.pid, SIGKILL);  // reaped by the executor's SIGCHLD loop (reaped() finds it gone)
    const pid_t pid = z.pid;
    zygotes_.erase(std::remove_if(zygotes_.begin(), zygotes_.end(), [pid](const Zygote& x) { return x.pid == pid; }),
                   zygotes_.end());
}

bool Zygotes::reaped(pid_t pid, int status) {
    auto it = std::find_if(zygotes_.begin(), zygotes_.end(), [pid](const Zygote& z) { return z.pid == pid; });
    if (it == zygotes_.end()) return false;
    const auto how = WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
                                         : fmt::format("exited with {}", WEXITSTATUS(status));
    spdlog::warn("fast start: zygote pid {} {}", pid, how);
    ++failures_[it->kind];
    zygotes_.erase(it);
    return true;
}

void Zygotes::stop() {
    // Closing the sockets ends them; the agent's end (PDEATHSIG) would too.
    zygotes_.clear();
}

}  // namespace dragon::agent
