// Names of a run's node-local resources. Every shared-memory segment of a run
// is /dev/shm/dragon-<runid>-n<node>-<what>, so a run's leftovers can be found
// and removed by name alone; sockets live in the abstract namespace and leave
// no file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dragon/common/ids.hpp"

namespace dragon::names {

inline constexpr std::string_view kShmDir = "/dev/shm";
inline constexpr std::string_view kPrefix = "dragon-";

/// "dragon-<runid>-n<node>-<what>" (no leading slash); `what` is [a-z0-9_.]+.
std::string shm_name(const RunId& run, std::uint32_t node, std::string_view what);

struct ShmNameParts {
    std::string run_id;
    std::uint32_t node = 0;
    std::string what;
};
/// Splits a /dev/shm entry name made by shm_name(); nullopt for anything else.
std::optional<ShmNameParts> parse_shm_name(std::string_view name);

/// The abstract Unix socket name (without the leading NUL) of a node's agent.
std::string agent_socket_name(const RunId& run, std::uint32_t node);

/// The directory of a node agent's PMIx server (its rendezvous files):
/// /tmp/dragon-<run>-n<node>-pmix; the run id is given as text so the
/// cleanup of dead runs can name it too.
std::string pmix_dir(std::string_view run, std::uint32_t node);

// Environment variables the agent sets for every process it starts.
inline constexpr const char* kEnvRunId = "DRAGON_RUN_ID";
inline constexpr const char* kEnvNodeId = "DRAGON_NODE_ID";
inline constexpr const char* kEnvPuid = "DRAGON_PUID";
inline constexpr const char* kEnvAgentSocket = "DRAGON_AGENT_SOCKET";  // "@<abstract name>"

}  // namespace dragon::names
