// Blocking rendezvous between a batch-launched agent and the front end.
#include "rendezvous.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace dragon::rt {

namespace {

/// Waits until `fd` is ready for `events` or the deadline passes.
Status wait_fd(int fd, short events, Deadline deadline, const char* what) {
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return make_error(Errc::timeout, "{}: timed out", what);
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1 << 30)));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sys::error_from_errno(what);
        if (r > 0) return ok();
    }
}

}  // namespace

Status write_all(int fd, const std::string& bytes, Deadline deadline) {
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    while (n > 0) {
        const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= static_cast<std::size_t>(r);
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno != EAGAIN) return sys::error_from_errno("writing");
        DRAGON_CHECK(wait_fd(fd, POLLOUT, deadline, "writing"));
    }
    return ok();
}

Result<wire::Frame> read_frame(int fd, std::size_t max_body, Deadline deadline, const std::string& peer) {
    // Exact: what follows the frame stays in the socket for whoever reads next
    // (the next step here, or the agent's loop once the control connection is handed over).
    wire::FrameReader reader(fd, peer, {.max_frame_body = max_body, .exact = true});
    auto m = DRAGON_TRY(reader.next(deadline));
    return m.frame();
}

Status run_handshake(int fd, transport::Handshake& hs, Deadline deadline, const std::string& peer) {
    if (auto first = hs.initial_output(); !first.empty()) DRAGON_CHECK(write_all(fd, first, deadline));
    while (!hs.done()) {
        auto f = DRAGON_TRY(read_frame(fd, transport::kHandshakeMaxBody, deadline, peer));
        auto step = hs.on_frame(f);
        if (!step) {
            // Tell a dragon peer why before closing (best effort).
            (void)write_all(fd, transport::Handshake::reject_frame(step.error()),
                            std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
            return std::move(step).error();
        }
        if (!step->out.empty()) DRAGON_CHECK(write_all(fd, step->out, deadline));
    }
    return ok();
}

Result<Rendezvous> rendezvous_with_frontend(const std::string& address, std::uint16_t port,
                                            const transport::RunSecret& secret, msg::AgentCheckin me,
                                            const ListenFn& listen, Deadline deadline) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (auto* v4 = reinterpret_cast<sockaddr_in*>(&ss); ::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        len = sizeof(sockaddr_in);
    } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss); ::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        len = sizeof(sockaddr_in6);
    } else {
        return make_error(Errc::invalid_argument, "front end address '{}' is not an IP address", address);
    }
    const std::string where = fmt::format("the front end at {}:{}", address, port);
    // The front end listens before it starts the batch step, but retry a
    // refused connect briefly anyway (a slow network may drop the first SYN).
    sys::UniqueFd fd;
    for (;;) {
        fd = sys::UniqueFd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) return sys::error_from_errno("socket");
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0) break;
        if (errno == EINPROGRESS) {
            DRAGON_CHECK(wait_fd(fd.get(), POLLOUT, deadline, "connecting"));
            int err = 0;
            socklen_t elen = sizeof err;
            ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
            if (err == 0) break;
            errno = err;
        }
        if (errno != ECONNREFUSED || std::chrono::steady_clock::now() + std::chrono::milliseconds(200) > deadline)
            return sys::error_from_errno("connecting to " + where);
        ::usleep(100 * 1000);
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto hs = DRAGON_TRY(transport::Handshake::initiator(secret, me.node_id, kFrontEndNodeId));
    if (auto st = run_handshake(fd.get(), hs, deadline, where); !st) {
        Error e = std::move(st).error();
        return e.message().find(where) == std::string::npos ? std::move(e).context(where) : e;
    }
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    char text[INET6_ADDRSTRLEN] = {};
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &llen);
    if (local.ss_family == AF_INET6) ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr, text, sizeof text);
    else ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&local)->sin_addr, text, sizeof text);
    auto where_i_listen = DRAGON_TRY(listen(text));
    me.address = std::move(where_i_listen.first);
    me.port = where_i_listen.second;
    DRAGON_CHECK(write_all(fd.get(), wire::frame_of(me), deadline));
    Rendezvous out;
    if (me.node_id != 0) {
        auto f = read_frame(fd.get(), 4096, deadline, where);
        if (!f) return std::move(f).error().context("waiting for node 0's address");
        out.head = DRAGON_TRY(msg::decode_as<msg::HeadAddress>(*f));
    }
    // Blocking from here: node 0 hands it to its event loop as the control connection.
    const int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    out.fd = std::move(fd);
    return out;
}

std::string own_address() {
    if (const char* a = std::getenv("DRAGON_AGENT_ADDRESS"); a != nullptr && *a != '\0') return a;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) {
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (::getaddrinfo(host, nullptr, &hints, &res) == 0 && res != nullptr) {
            char buf[INET_ADDRSTRLEN] = {};
            ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
            ::freeaddrinfo(res);
            return buf;
        }
    }
    return "127.0.0.1";
}

}  // namespace dragon::rt
