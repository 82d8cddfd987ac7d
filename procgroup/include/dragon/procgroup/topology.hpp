// Topology: a move-only owner of one loaded hwloc topology (this machine, a
// synthetic description, or an XML export), restricted to the allowed cpus.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

// hwloc's handle type, declared here so this header does not pull in hwloc.h.
struct hwloc_topology;

namespace dragon::procgroup {

/// A loaded hwloc topology. Made only by the factories below, so a Topology
/// always holds a loaded topology (or none after being moved from).
/// Not thread-safe for concurrent mutation (restrict_to); const calls may run
/// concurrently. None of the calls block on anything but local I/O.
class Topology {
public:
    /// Discovers this machine. The result holds only the PUs this process may
    /// run on: the cgroup cpuset (hwloc's default) intersected with the
    /// process's current affinity mask (sched_getaffinity; Slurm's
    /// --cpu-bind, taskset). Disallowed NUMA nodes are dropped too.
    /// Reads /sys and /proc; takes milliseconds, so discover once per agent.
    static Result<Topology> discover();

    /// Builds a synthetic topology from an hwloc synthetic description, e.g.
    /// "pack:2 numa:2 core:16 pu:2". PU OS indices are numbered 0..n-1 in
    /// topology order. Without a "numa" level hwloc adds one NUMA node that
    /// covers the whole machine. Errc::invalid_argument names a bad description.
    static Result<Topology> synthetic(std::string_view description);

    /// Loads an XML export (from to_xml() or `lstopo foo.xml`) from a file.
    /// Errc::not_found / invalid_argument name the path.
    static Result<Topology> from_xml_file(const std::string& path);

    /// Loads an XML export held in memory.
    static Result<Topology> from_xml_string(std::string_view xml);

    /// Exports the topology (including any restriction) as hwloc XML, which
    /// from_xml_string() loads back to the same resources.
    [[nodiscard]] Result<std::string> to_xml() const;

    /// Removes every PU not in `cpulist` (Linux cpulist syntax: "0-7,16"), to
    /// model an allowed cpuset (cgroup, Slurm allocation) in tests and
    /// planning. Cores, NUMA nodes and packages left without PUs disappear.
    /// Errc::invalid_argument if the list is malformed or names PUs the
    /// topology does not have (the message lists them); the topology is
    /// unchanged on error.
    Status restrict_to(std::string_view cpulist);

    /// The allowed PUs as a cpulist ("0-127").
    [[nodiscard]] std::string cpulist() const;

    /// Number of PUs in the topology.
    [[nodiscard]] std::uint32_t pu_count() const;

    /// The underlying hwloc handle for binding calls (still owned by this
    /// object; valid until it is destroyed or moved from).
    [[nodiscard]] hwloc_topology* native() const noexcept { return topo_; }

    Topology(Topology&& o) noexcept;
    Topology& operator=(Topology&& o) noexcept;
    Topology(const Topology&) = delete;
    Topology& operator=(const Topology&) = delete;
    ~Topology();

private:
    explicit Topology(hwloc_topology* t) noexcept : topo_(t) {}
    hwloc_topology* topo_ = nullptr;
};

}  // namespace dragon::procgroup
