// Blocking client of the agent's local socket.
#include "dragon/orchestrator/client.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "dragon/common/names.hpp"

namespace dragon::client {

namespace {

constexpr std::size_t kMaxReply = 64U << 20;

// send(MSG_NOSIGNAL), not write: an agent that hangs up must give an error,
// never a SIGPIPE that kills the process this library lives in.
Status send_frame(int fd, const std::string& frame) {
    const char* p = frame.data();
    std::size_t left = frame.size();
    while (left > 0) {
        auto n = DRAGON_TRY(sys::call("sending to the agent", [&] { return ::send(fd, p, left, MSG_NOSIGNAL); }));
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return ok();
}

Result<wire::Frame> recv_frame(int fd) {
    char header[wire::kFrameHeaderSize];
    DRAGON_CHECK(sys::read_exact(fd, header, sizeof header));
    wire::FrameDecoder dec(kMaxReply);
    dec.feed(std::string_view(header, sizeof header));
    wire::Reader r(header + 4, 4);
    const auto len = r.scalar<std::uint32_t>();
    if (len > kMaxReply) return make_error(Errc::too_large, "agent reply of {} bytes", len);
    std::string body(len, '\0');
    DRAGON_CHECK(sys::read_exact(fd, body.data(), len));
    dec.feed(body);
    auto f = DRAGON_TRY(dec.next());
    if (!f) return Error(Errc::protocol, "incomplete frame from the agent");
    return std::move(*f);
}

template <class Reply>
Result<Reply> expect(wire::Frame&& f) {
    if (f.type == static_cast<std::uint16_t>(msg::Type::error_reply)) {
        auto e = DRAGON_TRY(msg::decode_as<msg::ErrorReply>(f));
        return Error(static_cast<Errc>(e.code), "agent: " + e.message);
    }
    return msg::decode_as<Reply>(f);
}

}  // namespace

template <class Reply, class Request>
Result<Reply> Session::call(const Request& req) {
    DRAGON_CHECK(send_frame(fd_.get(), wire::frame_of(req)));
    auto frame = DRAGON_TRY(recv_frame(fd_.get()));
    return expect<Reply>(std::move(frame));
}

Result<Session> Session::connect_from_env() {
    const char* sock = std::getenv(names::kEnvAgentSocket);
    if (sock == nullptr || *sock == '\0')
        return make_error(Errc::not_found, "{} is not set: this process was not started by Dragon",
                          names::kEnvAgentSocket);
    Puid self = 0;
    if (const char* p = std::getenv(names::kEnvPuid)) self = std::strtoull(p, nullptr, 10);
    return connect(sock, self);
}

Result<Session> Session::connect(const std::string& socket_name, Puid self) {
    std::string name = socket_name.starts_with('@') ? socket_name.substr(1) : socket_name;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (name.empty() || name.size() + 1 > sizeof addr.sun_path)
        return make_error(Errc::invalid_argument, "bad agent socket name '{}'", socket_name);
    std::memcpy(addr.sun_path + 1, name.data(), name.size());  // abstract: leading NUL
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    int raw = DRAGON_TRY(sys::call("socket", [] { return ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); }));
    sys::UniqueFd fd(raw);
    DRAGON_CHECK(sys::call(fmt::format("connecting to the agent at @{}", name),
                           [&] { return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len); }));
    DRAGON_CHECK(send_frame(fd.get(), wire::frame_of(msg::ClientHello{msg::kProtocolVersion, self})));
    auto frame = DRAGON_TRY(recv_frame(fd.get()));
    auto welcome = DRAGON_TRY(expect<msg::ClientWelcome>(std::move(frame)));
    return Session(std::move(fd), std::move(welcome));
}

Result<channels::Pool> Session::attach_pool() const {
    auto name = DRAGON_TRY(channels::make_pool_name(welcome_.run_id, welcome_.node_id));
    return channels::Pool::attach(name);
}

Result<std::vector<msg::ProcEntry>> Session::processes() {
    auto t = DRAGON_TRY((call<msg::ProcTable>(msg::ProcQuery{})));
    return std::move(t.procs);
}

}  // namespace dragon::client
