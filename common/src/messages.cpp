// Message helpers: names, validation, exit-status conversion.
#include "dragon/common/messages.hpp"

#include <sys/wait.h>

namespace dragon::msg {

ExitStatus ExitStatus::from_wait_status(int wstatus) {
    ExitStatus s;
    if (WIFSIGNALED(wstatus)) s.signal = WTERMSIG(wstatus);
    else s.exit_code = WEXITSTATUS(wstatus);
    return s;
}

namespace {
template <class M>
constexpr std::string_view name_of() {
    switch (M::kType) {
        case Type::agent_hello: return "agent_hello";
        case Type::stdin_data: return "stdin_data";
        case Type::output: return "output";
        case Type::proc_exit: return "proc_exit";
        case Type::shutdown: return "shutdown";
        case Type::shutdown_done: return "shutdown_done";
        case Type::stdin_ack: return "stdin_ack";
        case Type::group_start: return "group_start";
        case Type::group_started: return "group_started";
        case Type::group_done: return "group_done";
        case Type::client_hello: return "client_hello";
        case Type::client_welcome: return "client_welcome";
        case Type::proc_query: return "proc_query";
        case Type::proc_table: return "proc_table";
        case Type::group_signal: return "group_signal";
        case Type::group_stop: return "group_stop";
        case Type::group_close: return "group_close";
        case Type::group_query: return "group_query";
        case Type::group_status: return "group_status";
        case Type::ok_reply: return "ok_reply";
        case Type::error_reply: return "error_reply";
        case Type::node_hello: return "node_hello";
        case Type::node_table: return "node_table";
        case Type::node_ready: return "node_ready";
        case Type::heartbeat: return "heartbeat";
        case Type::exec_members: return "exec_members";
        case Type::members_started: return "members_started";
        case Type::members_exited: return "members_exited";
        case Type::signal_members: return "signal_members";
        case Type::respawn_member: return "respawn_member";
        case Type::forget_group: return "forget_group";
        case Type::client_relay: return "client_relay";
        case Type::client_gone: return "client_gone";
        case Type::agent_checkin: return "agent_checkin";
        case Type::head_address: return "head_address";
        case Type::chan_send: return "chan_send";
        case Type::chan_recv: return "chan_recv";
        case Type::chan_reply: return "chan_reply";
        case Type::lane_open: return "lane_open";
        case Type::lane_opened: return "lane_opened";
        case Type::machine_query: return "machine_query";
        case Type::machine_info: return "machine_info";
        case Type::chan_count: return "chan_count";
        case Type::chan_sync: return "chan_sync";
        case Type::remote_send: return "remote_send";
        case Type::remote_recv: return "remote_recv";
        case Type::remote_reply: return "remote_reply";
        case Type::remote_cancel: return "remote_cancel";
        case Type::pmi_fence: return "pmi_fence";
        case Type::pmi_abort: return "pmi_abort";
        case Type::pmix_dmodex_request: return "pmix_dmodex_request";
        case Type::pmix_dmodex_reply: return "pmix_dmodex_reply";
        case Type::lane_hello: return "lane_hello";
        case Type::lane_welcome: return "lane_welcome";
        case Type::remote_count: return "remote_count";
        case Type::remote_sync: return "remote_sync";
    }
    return "unknown";
}
}  // namespace

std::string_view type_name(std::uint16_t type) {
    std::string_view name = "unknown";
    std::apply([&](auto... m) {
        ((static_cast<std::uint16_t>(decltype(m)::kType) == type ? (name = name_of<decltype(m)>(), 0) : 0), ...);
    }, AllMessages{});
    return name;
}

Status validate(const wire::Frame& f) {
    Status st = make_error(Errc::protocol, "unknown message type {}", f.type);
    std::apply([&](auto... m) {
        ((static_cast<std::uint16_t>(decltype(m)::kType) == f.type
              ? (void)(st = [&]() -> Status {
                    auto r = decode_as<decltype(m)>(f);
                    if (!r) return std::move(r).error();
                    return ok();
                }())
              : void()),
         ...);
    }, AllMessages{});
    return st;
}

}  // namespace dragon::msg
