// NodeResources: derived from an hwloc topology, validated when received.
#include "dragon/procgroup/resources.hpp"

#include <hwloc.h>

#include <algorithm>
#include <unordered_map>

#include "dragon/procgroup/topology.hpp"

namespace dragon::procgroup {
namespace {

// Dense numbering in order of first appearance.
class Dense {
public:
    std::uint32_t operator()(std::uint64_t key) {
        auto [it, fresh] = ids_.try_emplace(key, static_cast<std::uint32_t>(ids_.size()));
        return it->second;
    }

private:
    std::unordered_map<std::uint64_t, std::uint32_t> ids_;
};

// The NUMA domain of a PU: among the NUMA nodes whose cpuset holds it, the one
// with the smallest cpuset (the most local), ties to the lowest logical index.
// That prefers DRAM over a same-cpuset HBM/CXL node listed after it.
hwloc_obj_t numa_of(hwloc_topology_t t, hwloc_obj_t pu) {
    hwloc_obj_t best = nullptr;
    int best_weight = 0;
    for (hwloc_obj_t n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, nullptr); n != nullptr;
         n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, n)) {
        if (n->cpuset == nullptr || hwloc_bitmap_isset(n->cpuset, pu->os_index) == 0) continue;
        int w = hwloc_bitmap_weight(n->cpuset);
        if (best == nullptr || w < best_weight) {
            best = n;
            best_weight = w;
        }
    }
    return best;
}

std::uint32_t dense_count(const std::vector<Pu>& pus, std::uint32_t Pu::*field) {
    std::uint32_t m = 0;
    for (const auto& p : pus) m = std::max(m, p.*field + 1);
    return m;
}

}  // namespace

Result<NodeResources> NodeResources::from(const Topology& topology, std::uint32_t node_id,
                                          std::string hostname) {
    hwloc_topology_t t = topology.native();
    if (t == nullptr) return make_error(Errc::invalid_argument, "node {}: topology was moved from", node_id);
    NodeResources r;
    r.node_id = node_id;
    r.hostname = std::move(hostname);
    Dense cores;
    Dense numas;
    Dense sockets;
    constexpr std::uint64_t kNone = 1ULL << 40;  // keys for "no such ancestor"
    for (hwloc_obj_t pu = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_PU, nullptr); pu != nullptr;
         pu = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_PU, pu)) {
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE, pu);
        hwloc_obj_t pack = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_PACKAGE, pu);
        hwloc_obj_t numa = numa_of(t, pu);
        Pu p;
        p.os_index = pu->os_index;
        p.core = cores(core != nullptr ? core->logical_index : kNone + pu->logical_index);
        p.numa = numas(numa != nullptr ? numa->logical_index : kNone);
        p.socket = sockets(pack != nullptr ? pack->logical_index : kNone);
        r.pus.push_back(p);
    }
    if (r.pus.empty())
        return make_error(Errc::invalid_argument, "node {} ({}): the topology has no allowed PU", node_id,
                          r.hostname);
    return r;
}

void NodeResources::keep_first(std::uint32_t n) {
    if (n == 0 || n >= pus.size()) return;
    pus.resize(n);
    Dense cores, numas, sockets;  // indices stay dense over what is left
    for (Pu& p : pus) {
        p.core = cores(p.core);
        p.numa = numas(p.numa);
        p.socket = sockets(p.socket);
    }
}

std::uint32_t NodeResources::core_count() const {
    return dense_count(pus, &Pu::core);
}
std::uint32_t NodeResources::numa_count() const {
    return dense_count(pus, &Pu::numa);
}
std::uint32_t NodeResources::socket_count() const {
    return dense_count(pus, &Pu::socket);
}

Status NodeResources::validate() const {
    if (pus.empty()) return make_error(Errc::invalid_argument, "node {} ({}) has no PU", node_id, hostname);
    // Density first: it bounds every index by pus.size(), so the vectors
    // below stay small whatever arrived over the wire.
    struct Level {
        const char* name;
        std::uint32_t Pu::*field;
    };
    for (Level l : {Level{"core", &Pu::core}, Level{"numa", &Pu::numa}, Level{"socket", &Pu::socket}}) {
        std::uint32_t n = dense_count(pus, l.field);
        if (n > pus.size())
            return make_error(Errc::invalid_argument,
                              "node {} ({}): {} indices are not dense (largest {} with {} PUs)", node_id,
                              hostname, l.name, n - 1, pus.size());
        std::vector<bool> used(n, false);
        for (const auto& p : pus) used[p.*(l.field)] = true;
        auto gap = std::find(used.begin(), used.end(), false);
        if (gap != used.end())
            return make_error(Errc::invalid_argument,
                              "node {} ({}): {} indices are not dense ({} {} is unused, largest is {})",
                              node_id, hostname, l.name, l.name, gap - used.begin(), n - 1);
    }
    std::vector<std::uint32_t> os;
    os.reserve(pus.size());
    for (const auto& p : pus) os.push_back(p.os_index);
    std::sort(os.begin(), os.end());
    auto dup = std::adjacent_find(os.begin(), os.end());
    if (dup != os.end())
        return make_error(Errc::invalid_argument, "node {} ({}): PU {} is listed twice", node_id, hostname,
                          *dup);
    // core -> the first PU seen on it, to compare numa/socket against.
    std::vector<const Pu*> core_first(dense_count(pus, &Pu::core), nullptr);
    for (const auto& p : pus) {
        const Pu*& first = core_first[p.core];
        if (first == nullptr) {
            first = &p;
        } else if (first->numa != p.numa || first->socket != p.socket) {
            return make_error(Errc::invalid_argument,
                              "node {} ({}): PU {} of core {} is in numa {} socket {}, but PU {} of that "
                              "core is in numa {} socket {}",
                              node_id, hostname, p.os_index, p.core, p.numa, p.socket, first->os_index,
                              first->numa, first->socket);
        }
    }
    return ok();
}

}  // namespace dragon::procgroup
