// NodeResources: the plain, wire-encodable description of one node's allowed
// PUs that placement works on (no hwloc handles: node 0 places for all nodes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dragon/common/codec.hpp"
#include "dragon/common/result.hpp"

namespace dragon::procgroup {

class Topology;

/// One allowed PU (hardware thread) and where it sits.
/// `core`, `numa` and `socket` are dense indices (0, 1, 2, ...) numbered in
/// order of first appearance when the node's PUs are walked in topology order
/// (on an unrestricted topology: hwloc's logical indices). They are grouping
/// keys; only `os_index` is what the OS and binding calls use.
struct Pu {
    std::uint32_t os_index = 0;  // the OS's cpu number (sched_setaffinity, /proc/cpuinfo)
    std::uint32_t core = 0;      // the core it belongs to (a PU without a core is its own core)
    std::uint32_t numa = 0;      // its NUMA domain (see docs/placement.md for the rules)
    std::uint32_t socket = 0;    // its package; 0 on machines that report no package
    bool operator==(const Pu&) const = default;
    DRAGON_WIRE_FIELDS(os_index, core, numa, socket)
};

/// What one node offers to placement.
struct NodeResources {
    std::uint32_t node_id = 0;
    std::string hostname;
    std::vector<Pu> pus;  // allowed PUs, in topology order

    bool operator==(const NodeResources&) const = default;
    DRAGON_WIRE_FIELDS(node_id, hostname, pus)

    /// Describes a loaded topology (its allowed PUs only). Errc::invalid_argument
    /// if the topology has no PU.
    static Result<NodeResources> from(const Topology& topology, std::uint32_t node_id, std::string hostname);

    /// Checks the invariants placement relies on, for descriptions that came
    /// over the wire: at least one PU, no OS index twice, core/numa/socket
    /// indices dense (each 0..k-1 all used), and every PU of a core in the same
    /// NUMA domain and socket. The error names the node and the offending PU.
    [[nodiscard]] Status validate() const;

    /// Keeps only the first `n` PUs (in topology order) when there are more,
    /// renumbering core/numa/socket densely: a batch system granted n cpus
    /// of this node (0: keep all).
    void keep_first(std::uint32_t n);

    [[nodiscard]] std::uint32_t core_count() const;
    [[nodiscard]] std::uint32_t numa_count() const;
    [[nodiscard]] std::uint32_t socket_count() const;
};

}  // namespace dragon::procgroup
