// Open MPI's node-local files for the ranks of PMIx groups: a directory of
// the node's own for vader's shared-memory segments and one for Open MPI's
// session directory, so that the nodes of a virtual cluster (several agents
// on one host, where Open MPI's names for these files coincide) never share
// them, and nothing of a run outlives it (docs/pmi.md, "PMIx").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/ids.hpp"
#include "dragon/common/result.hpp"

namespace dragon::agent {

struct OmpiDirs {
    /// vader's backing files, which Open MPI names by host, job id and local
    /// rank only: /dev/shm/dragon-<run>-n<node>-ompi (tmpfs, as its default;
    /// a /dev/shm entry of the node, so removed with the node's others).
    std::string backing;
    /// Open MPI's session directory tree (ompi.<host>.<uid>/jf.<family>/...,
    /// shared by all nodes of a host otherwise, and left behind by directly
    /// launched ranks): <names::pmix_dir>/ompi, removed with the PMIx server's
    /// directory.
    std::string session;
};

/// The directories of node `node` of run `run`. Pure: creates nothing.
OmpiDirs ompi_dirs(const RunId& run, std::uint32_t node);

/// Creates both directories, and the PMIx directory that holds the session
/// one, with mode 0700; existing ones are fine. Owns nothing: the agent's
/// teardown removes them (NodeLock::remove_node_segments, PmiService::stop).
Status make_ompi_dirs(const OmpiDirs& dirs);

/// Whether the run is a virtual cluster: several nodes, all named like node
/// 0 by `hostname_of` (the agents' host names), so every rank is on this host.
bool nodes_share_one_host(std::uint32_t nnodes, const std::function<std::string(std::uint32_t)>& hostname_of);

struct OmpiSetting {
    std::string name;  ///< the variable the runtime sets
    std::string value;
    /// Variables that, set by the user, mean the user chose (the name itself,
    /// or one Open MPI refuses to combine with it).
    std::vector<std::string> user_keys;
};

/// The Open MPI settings the runtime gives a node's ranks: the directories,
/// and on a virtual cluster TCP over loopback (`btl_tcp_if_include=lo`: Open
/// MPI leaves out loopback by default, and a host without another interface
/// would leave ranks of different virtual nodes with no way to each other).
std::vector<OmpiSetting> ompi_settings(const OmpiDirs& dirs, bool one_host);

/// `env` ("KEY=VALUE" entries: the agent's environment merged with the
/// group's) plus each of ompi_settings() none of whose user_keys `env` sets
/// (even to an empty value): a user's own OMPI_MCA_* choice always wins.
std::vector<std::string> add_ompi_env(std::vector<std::string> env, const OmpiDirs& dirs, bool one_host);

}  // namespace dragon::agent
