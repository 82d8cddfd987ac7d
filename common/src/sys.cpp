// errno translation and fd helpers: the only place errno becomes an Error.
#include "dragon/common/sys.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace dragon::sys {

Errc errc_from_errno(int err) noexcept {
    switch (err) {
        case ENOENT: case ESRCH: case ENXIO: return Errc::not_found;
        case EACCES: case EPERM: return Errc::permission_denied;
        case EEXIST: case EADDRINUSE: return Errc::already_exists;
        case ETIMEDOUT: return Errc::timeout;
        case EAGAIN: return Errc::would_block;
        case ENOSPC: case ENOMEM: case EMFILE: case ENFILE: return Errc::no_space;
        case EPIPE: case ECONNRESET: case ECONNREFUSED: case ENOTCONN: return Errc::closed;
        case EINVAL: case ENAMETOOLONG: case ENOTDIR: case EISDIR: return Errc::invalid_argument;
        case E2BIG: case EFBIG: return Errc::too_large;
        case ENOSYS: case EOPNOTSUPP: return Errc::unsupported;
        default: return Errc::system;
    }
}

Error error_from_errno(std::string_view what, int err) {
    return Error(errc_from_errno(err), fmt::format("{}: {}", what, std::strerror(err)), err);
}

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0 && fd_ != fd) ::close(fd_);
    fd_ = fd;
}

Status send_all(int fd, std::string_view data, std::string_view what) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return error_from_errno(what);
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return ok();
}

Status send_with_fd(int sock, std::string_view data, int fd_to_pass, std::string_view what) {
    if (data.empty()) return make_error(Errc::invalid_argument, "{}: a descriptor needs at least one byte to go with", what);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{const_cast<char*>(data.data()), data.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd_to_pass, sizeof(int));
    bool attached = false;  // the descriptor went with the first bytes sent
    while (!data.empty()) {
        iov = iovec{const_cast<char*>(data.data()), data.size()};
        const ssize_t n = attached ? ::send(sock, data.data(), data.size(), MSG_NOSIGNAL) : ::sendmsg(sock, &m, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{sock, POLLOUT, 0};
            if (::poll(&p, 1, -1) < 0 && errno != EINTR) return error_from_errno(what);
            continue;
        }
        if (n < 0) return error_from_errno(what);
        attached = true;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return ok();
}

Result<std::size_t> recv_with_fd(int sock, char* buf, std::size_t cap, UniqueFd& fd, std::string_view what) {
    alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
    iovec iov{buf, cap};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    ssize_t n = 0;
    do {
        n = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return error_from_errno(what);
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int got = -1;
            std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (!fd) fd = UniqueFd(got);
            else ::close(got);
        }
    }
    return static_cast<std::size_t>(n);
}

Status write_all(int fd, const void* data, std::size_t len) {
    const auto* p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {  // someone made the fd non-blocking: wait instead of failing
                pollfd pfd{fd, POLLOUT, 0};
                if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return error_from_errno("poll");
                continue;
            }
            return error_from_errno("write");
        }
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return ok();
}

Status read_exact(int fd, void* data, std::size_t len) {
    auto* p = static_cast<char*>(data);
    while (len > 0) {
        ssize_t n = ::read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return error_from_errno("read");
        }
        if (n == 0) return Error(Errc::closed, "read: end of file");
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return ok();
}

Status set_nonblocking(int fd, bool on) {
    int flags = DRAGON_TRY(call("fcntl(F_GETFL)", [&] { return ::fcntl(fd, F_GETFL); }));
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    DRAGON_CHECK(call("fcntl(F_SETFL)", [&] { return ::fcntl(fd, F_SETFL, flags); }));
    return ok();
}

}  // namespace dragon::sys
