// The rendezvous of a batch launcher (slurm): the agents are started by the
// batch system on nodes the front end cannot fork on, so each dials the
// front end's TCP port, proves it knows the run secret (the transport's
// HMAC handshake, docs/transport.md), and checks in with where it listens.
// The front end tells nodes k > 0 where node 0 listens; node 0's connection
// becomes its control connection. Blocking, with deadlines: both sides do
// this before their event loops exist.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>
#include <string>

#include "dragon/common/frame_reader.hpp"
#include "dragon/common/framing.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"
#include "dragon/transport/handshake.hpp"
#include "dragon/transport/run_secret.hpp"

namespace dragon::rt {

using Deadline = wire::Deadline;

/// The front end's node id in the rendezvous handshake (no agent has it).
inline constexpr std::uint32_t kFrontEndNodeId = 0xFFFFFFF0U;

/// Writes all of `bytes` to a blocking or non-blocking socket before `deadline`.
Status write_all(int fd, const std::string& bytes, Deadline deadline);

/// Reads one frame of at most `max_body` bytes before `deadline`, and not a
/// byte more (wire::FrameReader, exact). Errors name `peer`.
Result<wire::Frame> read_frame(int fd, std::size_t max_body, Deadline deadline, const std::string& peer);

/// Runs `hs` over the socket until it is done (authenticated) or fails;
/// errors reading name `peer`.
Status run_handshake(int fd, transport::Handshake& hs, Deadline deadline, const std::string& peer);

/// Agent side: connects to the front end at address:port, authenticates as
/// node `node_id`, checks in, and (node k > 0) reads node 0's address.
/// Returns the connected socket (node 0 keeps it as its control connection).
struct Rendezvous {
    sys::UniqueFd fd;
    msg::HeadAddress head;  // nodes k > 0
};
/// `listen` runs after the handshake, with the local address of the
/// connection (one the front end's network reaches); it returns the
/// address and port this agent listens on, which the check-in reports.
using ListenFn = std::function<Result<std::pair<std::string, std::uint16_t>>(const std::string& local_address)>;
Result<Rendezvous> rendezvous_with_frontend(const std::string& address, std::uint16_t port,
                                            const transport::RunSecret& secret, msg::AgentCheckin me,
                                            const ListenFn& listen, Deadline deadline);

/// The front end's default rendezvous address: $DRAGON_AGENT_ADDRESS if
/// set, else the first IPv4 address the host name resolves to, else
/// 127.0.0.1 (--control-address chooses another). Agents do not use it: they
/// listen on the local address of their connection to the front end.
std::string own_address();

}  // namespace dragon::rt
