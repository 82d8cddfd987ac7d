// Who may send what to the front end, as data: the frames node 0's agent
// sends on the control connection (docs/protocol.md), checked in one place
// by the agent's Dispatcher before any handler of the front end runs, and
// unit-tested (tests/frontend_routes_test.cpp). A frame not in this table
// ends the run as a protocol error.
#pragma once

#include "agent/dispatch.hpp"
#include "dragon/common/messages.hpp"

namespace dragon::cli {

/// What a front end handler is told of the sender: nothing (there is one
/// control connection, to node 0's agent).
struct FromAgent {};

/// Frames from node 0's agent (Sender::head) on the control connection.
inline constexpr agent::Route kFrontEndInRoutes[] = {
    {msg::Type::agent_hello, {agent::Sender::head}},
    {msg::Type::group_started, {agent::Sender::head}},
    {msg::Type::group_done, {agent::Sender::head}},
    {msg::Type::output, {agent::Sender::head}},
    {msg::Type::proc_exit, {agent::Sender::head}},
    {msg::Type::stdin_ack, {agent::Sender::head}},
    {msg::Type::shutdown_done, {agent::Sender::head}},
};

/// The front end's table (a front end is no agent: head is false, and no route
/// of kFrontEndInRoutes depends on it).
using FrontEndDispatcher = agent::Dispatcher<FromAgent>;

}  // namespace dragon::cli
