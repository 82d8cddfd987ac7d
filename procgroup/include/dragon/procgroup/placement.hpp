// Placement: which node and which cpus each rank of a process group gets.
// Pure computation on NodeResources (no hwloc, no I/O), so node 0 can place
// for every node from the descriptions the agents send. See docs/placement.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/codec.hpp"
#include "dragon/common/cpulist.hpp"
#include "dragon/common/result.hpp"
#include "dragon/procgroup/resources.hpp"

namespace dragon::procgroup {

/// How ranks are mapped to slots (docs/placement.md has worked examples).
enum class Policy : std::uint8_t {
    block,   // fill node 0 in topology order, then node 1, ...
    cyclic,  // rank r on node r % N; within a node round-robin over sockets
    spread,  // even over all NUMA domains: node shares proportional to domains
};

/// What a rank is bound to, and so what one "cpu" of cpus_per_proc means.
enum class Binding : std::uint8_t {
    none,    // mapped like core; not bound (Slot::cpus = all allowed PUs of the node)
    core,    // cpus_per_proc cores, bound to all their allowed PUs
    pu,      // cpus_per_proc PUs (hardware threads)
    numa,    // one whole NUMA domain per rank (it must have >= cpus_per_proc cores)
    socket,  // one whole socket per rank (it must have >= cpus_per_proc cores)
};

bool wire_valid(Policy p);
bool wire_valid(Binding b);
std::string_view to_string(Policy p);
std::string_view to_string(Binding b);
/// Parses "block" / "cyclic" / "spread"; the error lists the valid values.
Result<Policy> parse_policy(std::string_view s);
/// Parses "none" / "core" / "pu" / "numa" / "socket"; the error lists the valid values.
Result<Binding> parse_binding(std::string_view s);

/// The most ranks one place() call accepts (Errc::too_large above it).
inline constexpr std::uint32_t kMaxProcs = 1U << 22;

struct PlacementRequest {
    std::uint32_t nprocs = 0;
    std::uint32_t cpus_per_proc = 1;
    Policy policy = Policy::block;
    Binding binding = Binding::core;
    bool allow_oversubscribe = false;  // false: more ranks than slots is an error
    DRAGON_WIRE_FIELDS(nprocs, cpus_per_proc, policy, binding, allow_oversubscribe)
};

/// Where one rank runs.
struct Slot {
    std::uint32_t rank = 0;
    std::uint32_t node_id = 0;        // NodeResources::node_id of its node
    std::uint32_t local_rank = 0;     // 0.. among the ranks on that node, in rank order
    std::vector<std::uint32_t> cpus;  // OS PU indices it is bound to, ascending
                                      // (binding none: all allowed PUs of the node)
    bool operator==(const Slot&) const = default;
    DRAGON_WIRE_FIELDS(rank, node_id, local_rank, cpus)
};

struct Plan {
    std::vector<Slot> slots;            // slots[r].rank == r
    std::vector<std::string> warnings;  // oversubscription, nodes too small for one rank
    DRAGON_WIRE_FIELDS(slots, warnings)
};

/// How many ranks a node holds without sharing cpus for this binding and
/// cpus_per_proc (pu: PUs / cpp; core, none: cores / cpp; numa, socket:
/// domains with at least cpp cores). 0 when cpus_per_proc is 0 or the node
/// is invalid (see NodeResources::validate).
std::uint32_t capacity(const NodeResources& node, Binding binding, std::uint32_t cpus_per_proc);

/// Places req.nprocs ranks over `nodes` (each validated first). Pure and
/// deterministic: the same input gives the same plan. Runs in time linear in
/// nprocs plus the nodes' PUs (spread adds a term in nodes * log nodes).
/// Errors (Errc::invalid_argument unless said): no nodes, duplicate node_id,
/// an invalid node, nprocs 0, nprocs > kMaxProcs (too_large), cpus_per_proc 0,
/// cpus_per_proc larger than any node (or domain) offers, and more ranks than
/// slots without allow_oversubscribe (no_space). Each message names the value.
Result<Plan> place(const std::vector<NodeResources>& nodes, const PlacementRequest& req);

/// Where the ranks of one group entry (consecutive ranks, in entry order)
/// may go. An entry with no constraint is placed as place() places a group.
struct EntryConstraint {
    std::uint32_t count = 0;          // ranks of this entry
    std::int32_t node = -1;           // -1: any node; else only this node_id
    std::string host;                 // empty: any; else only nodes with this hostname
    std::vector<std::uint32_t> cpus;  // non-empty: every rank is bound to exactly these OS cpu ids
    std::string name;                 // for messages ("entry 1 (NAME): ..."), e.g. the program
    [[nodiscard]] bool constrained() const { return node != -1 || !host.empty() || !cpus.empty(); }
};

/// Places a group made of `entries` (their counts must add up to
/// req.nprocs). Without any constraint this is place(nodes, req). Otherwise
/// (docs/placement.md, "Entry constraints"): the unconstrained entries'
/// ranks are placed together as place() would place them alone; then each
/// constrained entry, in order, takes the places still free on the nodes it
/// may use, with the request's policy, binding and cpus_per_proc; ranks of an
/// entry with `cpus` are bound to those cpus instead. local_rank counts each
/// node's ranks in rank order. Errors (besides place()'s): a node_id not in
/// `nodes`, a hostname no node has, a node/host pair that disagree, a cpu no
/// matching node has (invalid_argument), and more ranks than free places on
/// the entry's nodes without allow_oversubscribe (no_space; never for an
/// entry with cpus). Each message names the entry and the value.
Result<Plan> place(const std::vector<NodeResources>& nodes, const PlacementRequest& req,
                   const std::vector<EntryConstraint>& entries);

/// "0-3,8,10-11": an ascending, deduplicated cpu list with runs as ranges.

using dragon::format_cpulist;  // "0-3,8,10-11" (common/cpulist.hpp)

/// A table with one line per rank: rank, node id, hostname, local rank and
/// cpus (as ranges), followed by the plan's warnings. Hostnames come from
/// `nodes` ("?" for a node_id not there).
std::string format_map(const Plan& plan, const std::vector<NodeResources>& nodes);

}  // namespace dragon::procgroup
