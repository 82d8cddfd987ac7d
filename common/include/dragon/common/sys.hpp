// The one place where errno becomes an Error, and RAII owners of OS handles.
#pragma once

#include <cerrno>
#include <string_view>
#include <utility>

#include "dragon/common/result.hpp"

namespace dragon::sys {

/// Maps an errno value to an Errc (ENOENT -> not_found, EACCES -> permission_denied...).
Errc errc_from_errno(int err) noexcept;

/// An Error for a failed OS call: "<what>: <strerror(err)>".
Error error_from_errno(std::string_view what, int err = errno);

/// Wraps an OS call that returns -1 and sets errno; retries on EINTR.
template <class F>
auto call(std::string_view what, F&& f) -> Result<decltype(f())> {
    for (;;) {
        auto rc = f();
        if (rc != -1) return rc;
        if (errno == EINTR) continue;
        return error_from_errno(what);
    }
}

/// A move-only owner of a file descriptor; closes it on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    /// Gives up ownership without closing.
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

/// Writes all of [data, data+len) to fd, blocking until done (retries short
/// writes and EINTR; waits with poll if the fd turns out to be non-blocking).
Status write_all(int fd, const void* data, std::size_t len);

/// Sends all of `data` on a blocking socket with MSG_NOSIGNAL: a peer that
/// hung up gives an error (naming `what`), never a SIGPIPE that would kill
/// the process a library lives in. Retries short sends and EINTR.
Status send_all(int fd, std::string_view data, std::string_view what);

/// Sends `data` with `fd_to_pass` attached (SCM_RIGHTS) on a unix socket,
/// then the rest of `data` if the first send was short: the descriptor
/// travels with the first bytes. The socket may be non-blocking (waits with
/// poll). The caller keeps its own copy of fd_to_pass.
Status send_with_fd(int sock, std::string_view data, int fd_to_pass, std::string_view what);

/// Receives up to `cap` bytes into `buf` from a unix socket, and the
/// descriptor sent with them if any (into `fd`, close-on-exec). Returns the
/// byte count (0: EOF). A second descriptor in one message is closed.
Result<std::size_t> recv_with_fd(int sock, char* buf, std::size_t cap, UniqueFd& fd, std::string_view what);

/// Reads exactly len bytes from a blocking fd; Errc::closed on EOF before len.
Status read_exact(int fd, void* data, std::size_t len);

/// Sets or clears O_NONBLOCK.
Status set_nonblocking(int fd, bool on);

}  // namespace dragon::sys
