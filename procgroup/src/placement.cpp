// Placement policies over NodeResources (the rules are in docs/placement.md).
#include "dragon/procgroup/placement.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <optional>
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

namespace {

// The prefix of every placement error, and the errors place() shares with
// the constrained overload.
struct Ctx {
    const std::vector<NodeResources>& nodes;
    const PlacementRequest& req;
    std::string what;

    Ctx(const std::vector<NodeResources>& n, const PlacementRequest& r)
        : nodes(n),
          req(r),
          what(fmt::format("placing {} ranks (policy {}, binding {}, cpus_per_proc {})", r.nprocs,
                           to_string(r.policy), to_string(r.binding), r.cpus_per_proc)) {}

    [[nodiscard]] Error bad(Errc c, std::string_view msg) const { return Error(c, fmt::format("{}: {}", what, msg)); }

    // What every request must satisfy before anything is placed.
    [[nodiscard]] Status check() const {
        if (!wire_valid(req.policy))
            return bad(Errc::invalid_argument, fmt::format("invalid policy value {}", static_cast<int>(req.policy)));
        if (!wire_valid(req.binding))
            return bad(Errc::invalid_argument,
                       fmt::format("invalid binding value {}", static_cast<int>(req.binding)));
        if (nodes.empty()) return bad(Errc::invalid_argument, "no nodes to place on");
        if (req.nprocs == 0) return bad(Errc::invalid_argument, "nprocs is 0; need at least 1 rank");
        if (req.nprocs > kMaxProcs)
            return bad(Errc::too_large, fmt::format("nprocs {} is over the limit of {}", req.nprocs, kMaxProcs));
        if (req.cpus_per_proc == 0) return bad(Errc::invalid_argument, "cpus_per_proc is 0; need at least 1");
        std::unordered_set<std::uint32_t> ids;
        for (const auto& n : nodes) {
            if (!ids.insert(n.node_id).second)
                return bad(Errc::invalid_argument, fmt::format("node_id {} appears twice", n.node_id));
            auto v = n.validate();
            if (!v) return bad(v.error().code(), v.error().message());
        }
        return ok();
    }

    // Every node is too small for one rank: say what the biggest offers.
    [[nodiscard]] Error too_small() const {
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

    // What one rank needs, for messages about nodes too small for it.
    [[nodiscard]] std::string one_rank() const {
        return fmt::format("{} {}", req.cpus_per_proc,
                           whole_domain(req.binding) ? fmt::format("cores in one {}", to_string(req.binding))
                                                     : std::string(unit_name(req.binding)));
    }
};

// Every node's places, and the order in which the policy takes each node's.
struct Layout {
    std::vector<NodePlaces> places;
    std::vector<std::vector<std::size_t>> order;  // per node: indices into places[i].places
    std::uint64_t total = 0;
};

Layout layout_of(const std::vector<NodeResources>& nodes, const PlacementRequest& req) {
    Layout l;
    const std::size_t nn = nodes.size();
    l.places.resize(nn);
    l.order.resize(nn);
    for (std::size_t i = 0; i < nn; ++i) {
        l.places[i] = places_of(nodes[i], req.binding, req.cpus_per_proc);
        l.total += l.places[i].places.size();
        switch (req.policy) {
            case Policy::block:
                l.order[i].resize(l.places[i].places.size());
                std::iota(l.order[i].begin(), l.order[i].end(), 0U);
                break;
            case Policy::cyclic: l.order[i] = interleave(l.places[i].places, &Place::socket); break;
            case Policy::spread: l.order[i] = interleave(l.places[i].places, &Place::numa); break;
        }
    }
    return l;
}

using Taken = std::pair<std::uint32_t, std::uint32_t>;  // (node index, place index)

// The (node, place) that `want` ranks take in rank order under `policy`,
// from the places listed per node in `order` (each node's own taking order;
// want must not exceed what they list). The full layout order gives the
// plan of place(); a shorter list (the free places of some nodes) gives the
// same policy over what is left.
std::vector<Taken> sequence(Policy policy, const Layout& l, const std::vector<std::vector<std::size_t>>& order,
                            std::uint64_t want) {
    const std::size_t nn = order.size();
    std::vector<Taken> seq;
    seq.reserve(want);
    auto take = [&](std::size_t i, std::size_t k) {
        seq.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(order[i][k]));
    };
    switch (policy) {
        case Policy::block:
            for (std::size_t i = 0; i < nn && seq.size() < want; ++i)
                for (std::size_t k = 0; k < order[i].size() && seq.size() < want; ++k) take(i, k);
            break;
        case Policy::cyclic: {
            std::vector<std::size_t> active;
            for (std::size_t i = 0; i < nn; ++i)
                if (!order[i].empty()) active.push_back(i);
            for (std::size_t round = 0; seq.size() < want && !active.empty(); ++round) {
                std::vector<std::size_t> next;
                for (auto i : active) {
                    if (seq.size() == want) break;
                    take(i, round);
                    if (round + 1 < order[i].size()) next.push_back(i);
                }
                active = std::move(next);
            }
            break;
        }
        case Policy::spread: {
            std::vector<std::uint32_t> weight(nn);
            std::vector<std::uint32_t> cap(nn);
            for (std::size_t i = 0; i < nn; ++i) {
                std::unordered_set<std::uint32_t> domains;
                for (auto k : order[i]) domains.insert(l.places[i].places[k].numa);
                weight[i] = static_cast<std::uint32_t>(domains.size());
                cap[i] = static_cast<std::uint32_t>(order[i].size());
            }
            auto share = proportional_shares(want, weight, cap);
            for (std::size_t i = 0; i < nn; ++i)
                for (std::uint64_t k = 0; k < share[i]; ++k) take(i, k);
            break;
        }
    }
    return seq;
}

// Fills node_id and cpus of a slot on node `ni`, in place `pi` of it (none
// for a rank that takes no place: only its explicit cpus bind it).
class SlotFiller {
public:
    SlotFiller(const std::vector<NodeResources>& nodes, const Layout& l, Binding b) : nodes_(nodes), l_(l), b_(b) {}

    void fill(Slot& s, std::size_t ni, std::optional<std::uint32_t> pi) {
        s.node_id = nodes_[ni].node_id;
        if (b_ == Binding::none || !pi) {
            auto [it, fresh] = node_pus_.try_emplace(ni);
            if (fresh) {
                for (const auto& p : nodes_[ni].pus) it->second.push_back(p.os_index);
                std::sort(it->second.begin(), it->second.end());
            }
            s.cpus = it->second;
        } else {
            const auto& np = l_.places[ni];
            const Place& pl = np.places[*pi];
            s.cpus.assign(np.flat.begin() + pl.begin, np.flat.begin() + pl.end);
        }
    }

private:
    const std::vector<NodeResources>& nodes_;
    const Layout& l_;
    Binding b_;
    std::unordered_map<std::size_t, std::vector<std::uint32_t>> node_pus_;
};

void warn_small_nodes(Plan& plan, const Ctx& c, const Layout& l) {
    for (std::size_t i = 0; i < c.nodes.size(); ++i)
        if (l.places[i].places.empty())
            plan.warnings.push_back(fmt::format("node {} ({}) cannot hold one rank of {}; it gets no ranks",
                                                c.nodes[i].node_id, c.nodes[i].hostname, c.one_rank()));
}

std::string oversubscribed(std::uint64_t nprocs, std::uint64_t total) {
    std::uint64_t sharing = nprocs >= 2 * total ? nprocs : 2 * (nprocs - total);
    return fmt::format("oversubscribed: {} ranks on {} slots; {} ranks share cpus with another rank", nprocs, total,
                       sharing);
}

void number_local_ranks(Plan& plan) {
    std::unordered_map<std::uint32_t, std::uint32_t> local;
    for (auto& s : plan.slots) s.local_rank = local[s.node_id]++;
}

std::string entry_name(std::size_t e, const EntryConstraint& c) {
    return c.name.empty() ? fmt::format("entry {}", e) : fmt::format("entry {} ({})", e, c.name);
}

// The nodes (indices into ctx.nodes) entry `e` may use, or why there are none.
Result<std::vector<std::size_t>> candidates(const Ctx& c, std::size_t e, const EntryConstraint& ec) {
    const auto& nodes = c.nodes;
    const auto who = entry_name(e, ec);
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < nodes.size(); ++i)
        if (ec.node == -1 || static_cast<std::int64_t>(nodes[i].node_id) == ec.node) out.push_back(i);
    if (out.empty()) {
        std::vector<std::uint32_t> ids;
        for (const auto& n : nodes) ids.push_back(n.node_id);
        return c.bad(Errc::invalid_argument,
                     fmt::format("{}: node {} does not exist (nodes: {})", who, ec.node, format_cpulist(ids)));
    }
    if (!ec.host.empty()) {
        const std::size_t named = out.front();  // the node asked for, when one was
        std::erase_if(out, [&](std::size_t i) { return nodes[i].hostname != ec.host; });
        if (out.empty() && ec.node != -1)
            return c.bad(Errc::invalid_argument, fmt::format("{}: node {} is host '{}', not '{}'", who, ec.node,
                                                             nodes[named].hostname, ec.host));
        if (out.empty()) {
            std::vector<std::string> hosts;
            for (const auto& n : nodes)
                if (std::find(hosts.begin(), hosts.end(), n.hostname) == hosts.end()) hosts.push_back(n.hostname);
            return c.bad(Errc::invalid_argument, fmt::format("{}: no node has hostname '{}' (hosts: {})", who,
                                                             ec.host, fmt::join(hosts, ", ")));
        }
    }
    if (!ec.cpus.empty()) {
        // Of several matching nodes, those with every cpu asked for; the
        // error names the first cpu the first matching node lacks.
        auto lacks = [&](std::size_t i) -> std::optional<std::uint32_t> {
            std::unordered_set<std::uint32_t> have;
            for (const auto& p : nodes[i].pus) have.insert(p.os_index);
            for (auto cpu : ec.cpus)
                if (!have.contains(cpu)) return cpu;
            return std::nullopt;
        };
        const std::size_t first = out.front();
        std::erase_if(out, [&](std::size_t i) { return lacks(i).has_value(); });
        if (out.empty()) {
            std::vector<std::uint32_t> have;
            for (const auto& p : nodes[first].pus) have.push_back(p.os_index);
            return c.bad(Errc::invalid_argument,
                         fmt::format("{}: node {} ({}) has no cpu {} (its cpus: {})", who, nodes[first].node_id,
                                     nodes[first].hostname, *lacks(first), format_cpulist(have)));
        }
    }
    return out;
}

}  // namespace

Result<Plan> place(const std::vector<NodeResources>& nodes, const PlacementRequest& req) {
    const Ctx c(nodes, req);
    DRAGON_CHECK(c.check());
    Plan plan;
    const auto l = layout_of(nodes, req);
    if (l.total == 0) return c.too_small();
    warn_small_nodes(plan, c, l);
    if (req.nprocs > l.total) {
        if (!req.allow_oversubscribe)
            return c.bad(Errc::no_space,
                         fmt::format("only {} ranks fit on the {} node(s) without sharing cpus; allow "
                                     "oversubscription or ask for fewer ranks",
                                     l.total, nodes.size()));
        plan.warnings.push_back(oversubscribed(req.nprocs, l.total));
    }
    // Ranks beyond the sequence's length wrap around (oversubscription).
    const std::uint64_t want = std::min<std::uint64_t>(req.nprocs, l.total);
    const auto seq = sequence(req.policy, l, l.order, want);
    if (seq.size() != want)
        return c.bad(Errc::internal, fmt::format("built {} places for {} ranks", seq.size(), want));
    SlotFiller filler(nodes, l, req.binding);
    plan.slots.resize(req.nprocs);
    for (std::uint32_t r = 0; r < req.nprocs; ++r) {
        auto [ni, pi] = seq[r % seq.size()];
        plan.slots[r].rank = r;
        filler.fill(plan.slots[r], ni, pi);
    }
    number_local_ranks(plan);
    return plan;
}

Result<Plan> place(const std::vector<NodeResources>& nodes, const PlacementRequest& req,
                   const std::vector<EntryConstraint>& entries) {
    const Ctx c(nodes, req);
    std::uint64_t sum = 0;
    bool constrained = false;
    for (const auto& e : entries) {
        sum += e.count;
        constrained = constrained || e.constrained();
    }
    if (sum != req.nprocs)
        return c.bad(Errc::invalid_argument,
                     fmt::format("the entries have {} ranks in all, not nprocs {}", sum, req.nprocs));
    if (!constrained) return place(nodes, req);
    DRAGON_CHECK(c.check());
    Plan plan;
    const auto l = layout_of(nodes, req);
    if (l.total == 0) return c.too_small();
    warn_small_nodes(plan, c, l);
    const std::size_t nn = nodes.size();
    std::vector<std::vector<std::size_t>> cand(entries.size());
    for (std::size_t e = 0; e < entries.size(); ++e)
        if (entries[e].constrained()) cand[e] = DRAGON_TRY(candidates(c, e, entries[e]));

    std::vector<std::uint32_t> first(entries.size());
    for (std::size_t e = 0, r = 0; e < entries.size(); r += entries[e].count, ++e)
        first[e] = static_cast<std::uint32_t>(r);
    std::vector<std::pair<std::size_t, std::optional<std::uint32_t>>> where(req.nprocs);  // (node, place) per rank
    std::vector<std::vector<bool>> used(nn);
    for (std::size_t i = 0; i < nn; ++i) used[i].assign(l.places[i].places.size(), false);

    // Unconstrained entries first, placed together exactly as place() would
    // place them if they were the whole group.
    std::vector<std::uint32_t> free_ranks;
    for (std::size_t e = 0; e < entries.size(); ++e)
        if (!entries[e].constrained())
            for (std::uint32_t k = 0; k < entries[e].count; ++k) free_ranks.push_back(first[e] + k);
    if (!free_ranks.empty()) {
        const std::uint64_t u = free_ranks.size();
        if (u > l.total) {
            if (!req.allow_oversubscribe)
                return c.bad(Errc::no_space,
                             fmt::format("only {} ranks fit on the {} node(s) without sharing cpus, and {} ranks "
                                         "have no placement constraint; allow oversubscription or ask for fewer "
                                         "ranks",
                                         l.total, nn, u));
            plan.warnings.push_back(oversubscribed(u, l.total));
        }
        const auto seq = sequence(req.policy, l, l.order, std::min(u, l.total));
        for (std::size_t k = 0; k < free_ranks.size(); ++k) where[free_ranks[k]] = seq[k % seq.size()];
        for (auto [ni, pi] : seq) used[ni][pi] = true;
    }

    // Then each constrained entry, in entry order, over its nodes: the
    // places nobody took yet, in the policy's order; beyond them (when
    // oversubscription is allowed, or the entry names its own cpus) the
    // nodes' places again from the start.
    for (std::size_t e = 0; e < entries.size(); ++e) {
        const auto& ec = entries[e];
        if (!ec.constrained() || ec.count == 0) continue;
        std::vector<std::vector<std::size_t>> free_order(nn);
        std::vector<std::vector<std::size_t>> all_order(nn);
        std::uint64_t nfree = 0;
        std::uint64_t nall = 0;
        for (auto i : cand[e]) {
            all_order[i] = l.order[i];
            nall += l.order[i].size();
            for (auto k : l.order[i])
                if (!used[i][k]) free_order[i].push_back(k);
            nfree += free_order[i].size();
        }
        std::vector<std::uint32_t> ids;
        for (auto i : cand[e]) ids.push_back(nodes[i].node_id);
        const auto on = fmt::format("node{} {}", ids.size() > 1 ? "s" : "", format_cpulist(ids));
        const bool own_cpus = !ec.cpus.empty();
        if (nall == 0 && !own_cpus)
            return c.bad(Errc::invalid_argument,
                         fmt::format("{}: {} cannot hold one rank of {}", entry_name(e, ec), on, c.one_rank()));
        if (ec.count > nfree && !own_cpus) {
            if (!req.allow_oversubscribe)
                return c.bad(Errc::no_space,
                             fmt::format("{}: {} ranks on {}, where only {} fit beside the group's other ranks "
                                         "without sharing cpus; allow oversubscription or ask for fewer ranks",
                                         entry_name(e, ec), ec.count, on, nfree));
            plan.warnings.push_back(fmt::format("oversubscribed: {} has {} ranks for {} free slots on {}; {} of "
                                                "them share cpus with another rank",
                                                entry_name(e, ec), ec.count, nfree, on, ec.count - nfree));
        }
        const std::uint64_t take = std::min<std::uint64_t>(ec.count, nfree);
        const auto seq = sequence(req.policy, l, free_order, take);
        for (std::size_t k = 0; k < seq.size(); ++k) {
            where[first[e] + k] = seq[k];
            used[seq[k].first][seq[k].second] = true;
        }
        if (ec.count > take) {
            const auto again = sequence(req.policy, l, all_order, nall);
            for (std::uint64_t k = 0; k < ec.count - take; ++k) {
                const auto r = first[e] + take + k;
                if (again.empty()) where[r] = {cand[e][k % cand[e].size()], std::nullopt};  // own cpus only
                else where[r] = again[k % again.size()];
            }
        }
    }

    SlotFiller filler(nodes, l, req.binding);
    plan.slots.resize(req.nprocs);
    for (std::size_t e = 0; e < entries.size(); ++e) {
        std::vector<std::uint32_t> own = entries[e].cpus;
        std::sort(own.begin(), own.end());
        own.erase(std::unique(own.begin(), own.end()), own.end());
        for (std::uint32_t k = 0; k < entries[e].count; ++k) {
            const auto r = first[e] + k;
            Slot& s = plan.slots[r];
            s.rank = r;
            filler.fill(s, where[r].first, where[r].second);
            if (!own.empty()) s.cpus = own;
        }
    }
    number_local_ranks(plan);
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
