// Placement policies over NodeResources (the rules are in docs/placement.md).
#include "dragon/procgroup/placement.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

namespace dragon::procgroup {
namespace {

constexpr std::array<std::string_view, 3> kPolicyNames{"block", "cyclic", "spread"};
constexpr std::array<std::string_view, 5> kBindingNames{"none", "core", "pu", "numa", "socket"};

// A unit is what one "cpu" of cpus_per_proc counts (a PU or a core), or for
// numa/socket binding a whole domain. Units keep topology order, and their
// PUs lie back to back in one flat array (one allocation per node, not per
// unit: placing over a thousand nodes is dominated by this).
struct Unit {
    std::uint32_t begin = 0;  // [begin, end) in Units::flat
    std::uint32_t end = 0;
    std::uint32_t socket = 0;
    std::uint32_t numa = 0;
    std::uint32_t cores = 0;
};

struct Units {
    std::vector<std::uint32_t> flat;  // OS indices, grouped by unit
    std::vector<Unit> units;
};

// Groups a node's PUs into units, in order of first appearance. The node
// must be valid (dense indices), which bounds the vectors by its PU count.
Units units_of(const NodeResources& node, Binding b) {
    Units out;
    const auto n = static_cast<std::uint32_t>(node.pus.size());
    out.flat.resize(n);
    if (b == Binding::pu) {
        out.units.reserve(n);
        for (std::uint32_t i = 0; i < n; ++i) {
            const auto& p = node.pus[i];
            out.flat[i] = p.os_index;
            out.units.push_back(Unit{i, i + 1, p.socket, p.numa, 1});
        }
        return out;
    }
    std::uint32_t Pu::*key = &Pu::core;
    if (b == Binding::numa) key = &Pu::numa;
    if (b == Binding::socket) key = &Pu::socket;
    constexpr auto kUnset = static_cast<std::uint32_t>(-1);
    std::vector<std::uint32_t> index(n, kUnset);      // key -> unit
    std::vector<std::uint32_t> core_unit(n, kUnset);  // core -> unit that counted it
    std::vector<std::uint32_t> unit_of(n);            // PU -> unit
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto& p = node.pus[i];
        std::uint32_t& u = index[p.*key];
        if (u == kUnset) {
            u = static_cast<std::uint32_t>(out.units.size());
            out.units.push_back(Unit{0, 0, p.socket, p.numa, 0});
        }
        unit_of[i] = u;
        out.units[u].end += 1;  // a count until the offsets are laid out
        if (core_unit[p.core] != u) {
            core_unit[p.core] = u;
            out.units[u].cores += 1;
        }
    }
    std::uint32_t at = 0;
    for (auto& u : out.units) {
        u.begin = at;
        at += u.end;
        u.end = u.begin;  // advanced while filling
    }
    for (std::uint32_t i = 0; i < n; ++i) out.flat[out.units[unit_of[i]].end++] = node.pus[i].os_index;
    return out;
}

bool whole_domain(Binding b) {
    return b == Binding::numa || b == Binding::socket;
}

// A place for one rank on a node, before ranks are assigned.
struct Place {
    std::uint32_t begin = 0;  // cpus: [begin, end) of NodePlaces::flat, ascending
    std::uint32_t end = 0;
    std::uint32_t socket = 0;
    std::uint32_t numa = 0;
};

struct NodePlaces {
    std::vector<std::uint32_t> flat;
    std::vector<Place> places;
};

// The node's places in topology order: consecutive runs of cpus_per_proc
// units, or each whole domain with enough cores.
NodePlaces places_of(const NodeResources& node, Binding b, std::uint32_t cpp) {
    NodePlaces out;
    if (cpp == 0) return out;
    auto [flat, units] = units_of(node, b);
    if (whole_domain(b)) {
        for (const auto& u : units) {
            if (u.cores < cpp) continue;
            out.places.push_back(Place{u.begin, u.end, u.socket, u.numa});
        }
    } else {
        // Units are laid out in order, so a run of units is one flat range.
        for (std::size_t i = 0; i + cpp <= units.size(); i += cpp)
            out.places.push_back(
                Place{units[i].begin, units[i + cpp - 1].end, units[i].socket, units[i].numa});
    }
    for (const auto& p : out.places) std::sort(flat.begin() + p.begin, flat.begin() + p.end);
    out.flat = std::move(flat);
    return out;
}

// Reorders places round-robin over the groups named by `key` (socket or numa):
// first place of group 0, first of group 1, ..., second of group 0, ...
// Groups are visited in ascending index; exhausted groups are skipped.
std::vector<std::size_t> interleave(const std::vector<Place>& places, std::uint32_t Place::*key) {
    std::uint32_t groups = 0;
    for (const auto& p : places) groups = std::max(groups, p.*key + 1);
    std::vector<std::vector<std::size_t>> by(groups);
    for (std::size_t i = 0; i < places.size(); ++i) by[places[i].*key].push_back(i);
    std::vector<std::size_t> order;
    order.reserve(places.size());
    for (std::size_t round = 0; order.size() < places.size(); ++round)
        for (const auto& g : by)
            if (round < g.size()) order.push_back(g[round]);
    return order;
}

std::uint32_t domains_used(const std::vector<Place>& places) {
    std::unordered_set<std::uint32_t> s;
    for (const auto& p : places) s.insert(p.numa);
    return static_cast<std::uint32_t>(s.size());
}

// Splits `total` ranks over nodes in proportion to weight[n], never more than
// cap[n] (sum(cap) >= total). Largest remainder, ties to the lower node;
// capped nodes are fixed and the rest re-split until nothing exceeds its cap.
std::vector<std::uint64_t> proportional_shares(std::uint64_t total, const std::vector<std::uint32_t>& weight,
                                               const std::vector<std::uint32_t>& cap) {
    const std::size_t n = weight.size();
    std::vector<std::uint64_t> share(n, 0);
    std::vector<bool> fixed(n, false);
    for (std::size_t i = 0; i < n; ++i)
        if (weight[i] == 0 || cap[i] == 0) fixed[i] = true;
    std::uint64_t left = total;
    for (;;) {
        std::uint64_t wsum = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (!fixed[i]) wsum += weight[i];
        if (wsum == 0 || left == 0) break;
        std::vector<std::pair<std::uint64_t, std::size_t>> rem;  // (remainder, node)
        std::uint64_t given = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (fixed[i]) continue;
            std::uint64_t num = left * weight[i];
            share[i] = num / wsum;
            given += share[i];
            rem.emplace_back(num % wsum, i);
        }
        std::stable_sort(rem.begin(), rem.end(), [](auto& a, auto& b) { return a.first > b.first; });
        for (std::size_t k = 0; given < left; ++k, ++given) share[rem[k].second] += 1;
        bool capped = false;
        for (std::size_t i = 0; i < n; ++i) {
            if (!fixed[i] && share[i] > cap[i]) {
                share[i] = cap[i];
                fixed[i] = true;
                left -= cap[i];
                capped = true;
            }
        }
        if (!capped) break;
        for (std::size_t i = 0; i < n; ++i)
            if (!fixed[i]) share[i] = 0;
    }
    return share;
}

template <class E, std::size_t N>
Result<E> parse_enum(std::string_view what, std::string_view s,
                     const std::array<std::string_view, N>& names) {
    for (std::size_t i = 0; i < N; ++i)
        if (names.at(i) == s) return static_cast<E>(i);
    return make_error(Errc::invalid_argument, "unknown {} '{}' (valid: {})", what, s, fmt::join(names, ", "));
}

const char* unit_name(Binding b) {
    return b == Binding::pu ? "PUs" : "cores";
}

}  // namespace

bool wire_valid(Policy p) {
    return static_cast<std::size_t>(p) < kPolicyNames.size();
}
bool wire_valid(Binding b) {
    return static_cast<std::size_t>(b) < kBindingNames.size();
}
std::string_view to_string(Policy p) {
    return wire_valid(p) ? kPolicyNames.at(static_cast<std::size_t>(p)) : "?";
}
std::string_view to_string(Binding b) {
    return wire_valid(b) ? kBindingNames.at(static_cast<std::size_t>(b)) : "?";
}
Result<Policy> parse_policy(std::string_view s) {
    return parse_enum<Policy>("placement policy", s, kPolicyNames);
}
Result<Binding> parse_binding(std::string_view s) {
    return parse_enum<Binding>("binding", s, kBindingNames);
}

std::uint32_t capacity(const NodeResources& node, Binding binding, std::uint32_t cpus_per_proc) {
    if (cpus_per_proc == 0 || !wire_valid(binding) || !node.validate()) return 0;
    return static_cast<std::uint32_t>(places_of(node, binding, cpus_per_proc).places.size());
}

Result<Plan> place(const std::vector<NodeResources>& nodes, const PlacementRequest& req) {
    const auto what = fmt::format("placing {} ranks (policy {}, binding {}, cpus_per_proc {})", req.nprocs,
                                  to_string(req.policy), to_string(req.binding), req.cpus_per_proc);
    auto bad = [&](Errc c, std::string msg) { return Error(c, fmt::format("{}: {}", what, msg)); };
    if (!wire_valid(req.policy))
        return bad(Errc::invalid_argument,
                   fmt::format("invalid policy value {}", static_cast<int>(req.policy)));
    if (!wire_valid(req.binding))
        return bad(Errc::invalid_argument,
                   fmt::format("invalid binding value {}", static_cast<int>(req.binding)));
    if (nodes.empty()) return bad(Errc::invalid_argument, "no nodes to place on");
    if (req.nprocs == 0) return bad(Errc::invalid_argument, "nprocs is 0; need at least 1 rank");
    if (req.nprocs > kMaxProcs)
        return bad(Errc::too_large, fmt::format("nprocs {} is over the limit of {}", req.nprocs, kMaxProcs));
    if (req.cpus_per_proc == 0) return bad(Errc::invalid_argument, "cpus_per_proc is 0; need at least 1");
    {
        std::unordered_set<std::uint32_t> ids;
        for (const auto& n : nodes) {
            if (!ids.insert(n.node_id).second)
                return bad(Errc::invalid_argument, fmt::format("node_id {} appears twice", n.node_id));
            auto v = n.validate();
            if (!v) return bad(v.error().code(), v.error().message());
        }
    }

    Plan plan;
    const std::size_t nn = nodes.size();
    std::vector<NodePlaces> places(nn);
    std::vector<std::uint32_t> cap(nn);
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < nn; ++i) {
        places[i] = places_of(nodes[i], req.binding, req.cpus_per_proc);
        cap[i] = static_cast<std::uint32_t>(places[i].places.size());
        total += cap[i];
    }
    if (total == 0) {
        // Every node is too small for one rank: say what the biggest offers.
        std::uint32_t best = 0;
        for (const auto& n : nodes) {
            for (const auto& u : units_of(n, req.binding).units)
                best = std::max(best, whole_domain(req.binding) ? u.cores : 0U);
            if (!whole_domain(req.binding))
                best = std::max(best, static_cast<std::uint32_t>(units_of(n, req.binding).units.size()));
        }
        if (whole_domain(req.binding))
            return bad(
                Errc::invalid_argument,
                fmt::format("cpus_per_proc {} is larger than any {} domain offers: the largest has {} cores",
                            req.cpus_per_proc, to_string(req.binding), best));
        return bad(Errc::invalid_argument,
                   fmt::format("cpus_per_proc {} is larger than any node offers: the largest has {} {}",
                               req.cpus_per_proc, best, unit_name(req.binding)));
    }
    for (std::size_t i = 0; i < nn; ++i)
        if (cap[i] == 0)
            plan.warnings.push_back(
                fmt::format("node {} ({}) cannot hold one rank of {} {}; it gets no ranks", nodes[i].node_id,
                            nodes[i].hostname, req.cpus_per_proc,
                            whole_domain(req.binding) ? fmt::format("cores in one {}", to_string(req.binding))
                                                      : std::string(unit_name(req.binding))));
    if (req.nprocs > total) {
        if (!req.allow_oversubscribe)
            return bad(Errc::no_space,
                       fmt::format(
                           "only {} ranks fit on the {} node(s) without sharing cpus; allow oversubscription "
                           "or ask for fewer ranks",
                           total, nn));
        std::uint64_t sharing = req.nprocs >= 2 * total ? req.nprocs : 2 * (req.nprocs - total);
        plan.warnings.push_back(
            fmt::format("oversubscribed: {} ranks on {} slots; {} ranks share cpus with another rank",
                        req.nprocs, total, sharing));
    }

    // Each node's places in the order its ranks take them.
    std::vector<std::vector<std::size_t>> order(nn);
    for (std::size_t i = 0; i < nn; ++i) {
        switch (req.policy) {
            case Policy::block:
                order[i].resize(places[i].places.size());
                std::iota(order[i].begin(), order[i].end(), 0U);
                break;
            case Policy::cyclic: order[i] = interleave(places[i].places, &Place::socket); break;
            case Policy::spread: order[i] = interleave(places[i].places, &Place::numa); break;
        }
    }

    // The sequence of (node, place) that ranks 0, 1, ... take; ranks beyond
    // its length wrap around (oversubscription).
    std::vector<std::pair<std::uint32_t, std::uint32_t>> seq;
    const std::uint64_t want = std::min<std::uint64_t>(req.nprocs, total);
    seq.reserve(want);
    switch (req.policy) {
        case Policy::block:
            for (std::size_t i = 0; i < nn && seq.size() < want; ++i)
                for (std::size_t k = 0; k < order[i].size() && seq.size() < want; ++k)
                    seq.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(order[i][k]));
            break;
        case Policy::cyclic: {
            std::vector<std::size_t> active;
            for (std::size_t i = 0; i < nn; ++i)
                if (cap[i] > 0) active.push_back(i);
            for (std::size_t round = 0; seq.size() < want; ++round) {
                std::vector<std::size_t> next;
                for (auto i : active) {
                    if (seq.size() == want) break;
                    seq.emplace_back(static_cast<std::uint32_t>(i),
                                     static_cast<std::uint32_t>(order[i][round]));
                    if (round + 1 < cap[i]) next.push_back(i);
                }
                active = std::move(next);
            }
            break;
        }
        case Policy::spread: {
            std::vector<std::uint32_t> weight(nn);
            for (std::size_t i = 0; i < nn; ++i) weight[i] = domains_used(places[i].places);
            auto share = proportional_shares(want, weight, cap);
            for (std::size_t i = 0; i < nn; ++i)
                for (std::uint64_t k = 0; k < share[i]; ++k)
                    seq.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(order[i][k]));
            break;
        }
    }
    if (seq.size() != want)
        return bad(Errc::internal, fmt::format("built {} places for {} ranks", seq.size(), want));

    std::vector<std::uint32_t> local(nn, 0);
    std::unordered_map<std::size_t, std::vector<std::uint32_t>> node_pus;
    plan.slots.resize(req.nprocs);
    for (std::uint32_t r = 0; r < req.nprocs; ++r) {
        auto [ni, pi] = seq[r % seq.size()];
        Slot& s = plan.slots[r];
        s.rank = r;
        s.node_id = nodes[ni].node_id;
        s.local_rank = local[ni]++;
        if (req.binding == Binding::none) {
            auto [it, fresh] = node_pus.try_emplace(ni);
            if (fresh) {
                for (const auto& p : nodes[ni].pus) it->second.push_back(p.os_index);
                std::sort(it->second.begin(), it->second.end());
            }
            s.cpus = it->second;
        } else {
            const auto& np = places[ni];
            const Place& pl = np.places[pi];
            s.cpus.assign(np.flat.begin() + pl.begin, np.flat.begin() + pl.end);
        }
    }
    return plan;
}

std::string format_map(const Plan& plan, const std::vector<NodeResources>& nodes) {
    std::unordered_map<std::uint32_t, const NodeResources*> by_id;
    std::size_t host_w = 4;
    for (const auto& n : nodes) {
        by_id.emplace(n.node_id, &n);
        host_w = std::max(host_w, n.hostname.size());
    }
    std::string out =
        fmt::format("{:>6} {:>6}  {:<{}}  {:>6}  {}\n", "rank", "node", "host", host_w, "local", "cpus");
    for (const auto& s : plan.slots) {
        auto it = by_id.find(s.node_id);
        std::string_view host =
            it != by_id.end() ? std::string_view(it->second->hostname) : std::string_view("?");
        out += fmt::format("{:>6} {:>6}  {:<{}}  {:>6}  {}\n", s.rank, s.node_id, host, host_w, s.local_rank,
                           format_cpulist(s.cpus));
    }
    for (const auto& w : plan.warnings) out += fmt::format("warning: {}\n", w);
    return out;
}

}  // namespace dragon::procgroup
