// Blocking client of the agent's local socket: requests and replies in
// order, with the agent's unsolicited events (output, group_done, stdin
// acknowledgements) filed per group as they arrive in between.
#include "dragon/orchestrator/client.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "dragon/common/names.hpp"

namespace dragon::client {

Status Session::send_bytes(const std::string& frame) {
    // Blocking is safe: the agent reads its clients whatever it is sending.
    return sys::send_all(fd_.get(), frame, "sending to the agent");
}

Result<bool> Session::pump(std::optional<Clock::time_point> deadline) {
    // Wait for one frame, then take whatever else has arrived without waiting.
    auto first = reader_.next(deadline.value_or(wire::kNoDeadline));
    if (!first) return first.error().code() == Errc::timeout ? Result<bool>(false) : std::move(first).error();
    DRAGON_CHECK(file_frame(first->frame()));
    for (;;) {
        auto more = reader_.next(Clock::now());
        if (!more) return more.error().code() == Errc::timeout ? Result<bool>(true) : std::move(more).error();
        DRAGON_CHECK(file_frame(more->frame()));
    }
}

Status Session::file_frame(wire::Frame&& f) {
    switch (static_cast<msg::Type>(f.type)) {
        case msg::Type::output: {
            auto m = DRAGON_TRY(msg::decode_as<msg::Output>(f));
            events_[m.group_id].output[{m.rank, m.stream}] += m.data;
            return ok();
        }
        case msg::Type::group_done: {
            auto m = DRAGON_TRY(msg::decode_as<msg::GroupDone>(f));
            events_[m.group_id].done = std::move(m);
            return ok();
        }
        case msg::Type::stdin_ack: {
            auto m = DRAGON_TRY(msg::decode_as<msg::StdinAck>(f));
            auto& n = stdin_unacked_[m.puid];
            n = n > m.consumed ? n - m.consumed : 0;
            return ok();
        }
        case msg::Type::group_started: {
            auto m = DRAGON_TRY(msg::decode_as<msg::GroupStarted>(f));
            const std::uint64_t id = m.request_id;
            started_.insert_or_assign(id, std::move(m));
            return ok();
        }
        default:
            if (unawaited_ > 0) {  // call() sends nothing while these are due: it is theirs
                --unawaited_;
                return ok();
            }
            replies_.push_back(std::move(f));
            return ok();
    }
}

Result<std::uint64_t> Session::post_group_start(msg::GroupStart req) {
    req.request_id = next_start_++;
    DRAGON_CHECK(send_bytes(wire::frame_of(req)));
    return req.request_id;
}

std::optional<msg::GroupStarted> Session::take_group_started(std::uint64_t request_id) {
    auto it = started_.find(request_id);
    if (it == started_.end()) return std::nullopt;
    msg::GroupStarted m = std::move(it->second);
    started_.erase(it);
    return m;
}

std::uint64_t Session::stdin_unacked(Puid puid) const {
    auto it = stdin_unacked_.find(puid);
    return it == stdin_unacked_.end() ? 0 : it->second;
}

Result<std::pair<std::string, Puid>> agent_from_env() {
    const char* sock = std::getenv(names::kEnvAgentSocket);
    if (sock == nullptr || *sock == '\0')
        return make_error(Errc::not_found, "{} is not set: this process was not started by Dragon",
                          names::kEnvAgentSocket);
    Puid self = 0;
    if (const char* p = std::getenv(names::kEnvPuid)) self = std::strtoull(p, nullptr, 10);
    return std::make_pair(std::string(sock), self);
}

Result<Session> Session::connect_from_env() {
    auto [sock, self] = DRAGON_TRY(agent_from_env());
    return connect(sock, self);
}

Result<sys::UniqueFd> dial_agent(const std::string& socket_name) {
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
    return fd;
}

Result<Session> Session::connect(const std::string& socket_name, Puid self) {
    Session s(DRAGON_TRY(dial_agent(socket_name)), {});
    s.welcome_ = DRAGON_TRY(s.call<msg::ClientWelcome>(msg::ClientHello{msg::kProtocolVersion, self}));
    return s;
}

Result<channels::Pool> Session::attach_pool() const {
    auto name = DRAGON_TRY(channels::make_pool_name(welcome_.run_id, welcome_.node_id));
    return channels::Pool::attach(name);
}

Result<std::vector<msg::ProcEntry>> Session::processes() {
    auto t = DRAGON_TRY((call<msg::ProcTable>(msg::ProcQuery{})));
    return std::move(t.procs);
}

Result<std::vector<msg::MachineNode>> Session::machine() {
    auto m = DRAGON_TRY((call<msg::MachineInfo>(msg::MachineQuery{})));
    return std::move(m.nodes);
}

}  // namespace dragon::client
