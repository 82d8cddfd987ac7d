// Placement: exact cpus per rank for each policy and binding, written out by
// hand for the synthetic node "pack:2 numa:2 core:16 pu:2" (128 PUs: core c
// is PUs 2c,2c+1; NUMA d is PUs 32d..32d+31; socket s is PUs 64s..64s+63).
#include "dragon/procgroup/placement.hpp"

#include <map>

#include <gtest/gtest.h>

#include "dragon/common/codec.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::procgroup {
namespace {

using Cpus = std::vector<std::uint32_t>;

NodeResources node(const char* desc, std::uint32_t id = 0, const char* restrict = nullptr) {
    auto t = Topology::synthetic(desc);
    EXPECT_TRUE(t) << t.error().message();
    if (restrict != nullptr) {
        EXPECT_TRUE(t->restrict_to(restrict));
    }
    auto r = NodeResources::from(*t, id, "n" + std::to_string(id));
    EXPECT_TRUE(r);
    return *r;
}

const NodeResources& big() {
    static const NodeResources n = node("pack:2 numa:2 core:16 pu:2");
    return n;
}

std::vector<NodeResources> cluster(std::size_t n) {
    std::vector<NodeResources> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(big());
        out.back().node_id = static_cast<std::uint32_t>(i);
        out.back().hostname = "n" + std::to_string(i);
    }
    return out;
}

Cpus range(std::uint32_t a, std::uint32_t b) {
    Cpus c;
    for (auto i = a; i <= b; ++i) c.push_back(i);
    return c;
}

PlacementRequest req(std::uint32_t n, Policy p, Binding b, std::uint32_t cpp = 1, bool over = false) {
    return PlacementRequest{n, cpp, p, b, over};
}

Plan ok_place(const std::vector<NodeResources>& nodes, const PlacementRequest& r) {
    auto p = place(nodes, r);
    EXPECT_TRUE(p) << p.error().message();
    return p ? *p : Plan{};
}

// (node, local rank, cpus) per rank, in rank order.
struct Want {
    std::uint32_t node;
    std::uint32_t local;
    Cpus cpus;
};

void expect_plan(const Plan& plan, const std::vector<Want>& want) {
    ASSERT_EQ(plan.slots.size(), want.size());
    for (std::size_t r = 0; r < want.size(); ++r) {
        EXPECT_EQ(plan.slots[r].rank, r);
        EXPECT_EQ(plan.slots[r].node_id, want[r].node) << "rank " << r;
        EXPECT_EQ(plan.slots[r].local_rank, want[r].local) << "rank " << r;
        EXPECT_EQ(plan.slots[r].cpus, want[r].cpus) << "rank " << r;
    }
}

std::string error_of(const std::vector<NodeResources>& nodes, const PlacementRequest& r) {
    auto p = place(nodes, r);
    EXPECT_FALSE(p);
    return p ? std::string("(no error)") : p.error().message();
}

// ---- one node ----

TEST(NodeResourcesLimit, KeepFirstTruncatesAndKeepsIndicesDense) {
    auto t = Topology::synthetic("pack:2 numa:2 core:4 pu:2");
    ASSERT_TRUE(t);
    auto r = NodeResources::from(*t, 3, "h");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->pus.size(), 32U);
    auto all = *r;
    all.keep_first(0);
    EXPECT_EQ(all, *r);  // 0: no limit
    all.keep_first(64);
    EXPECT_EQ(all, *r);  // more than there are: no change
    r->keep_first(11);   // 5 whole cores and half of the 6th, all in the first NUMA domains
    ASSERT_EQ(r->pus.size(), 11U);
    EXPECT_TRUE(r->validate());
    EXPECT_EQ(r->core_count(), 6U);
    EXPECT_EQ(r->numa_count(), 2U);
    EXPECT_EQ(r->socket_count(), 1U);
}

TEST(PlaceOneNode, BlockCore) {
    expect_plan(ok_place({big()}, req(4, Policy::block, Binding::core)),
                {{0, 0, {0, 1}}, {0, 1, {2, 3}}, {0, 2, {4, 5}}, {0, 3, {6, 7}}});
}

TEST(PlaceOneNode, BlockCoreTwoCoresPerRank) {
    expect_plan(ok_place({big()}, req(3, Policy::block, Binding::core, 2)),
                {{0, 0, {0, 1, 2, 3}}, {0, 1, {4, 5, 6, 7}}, {0, 2, {8, 9, 10, 11}}});
}

TEST(PlaceOneNode, BlockPu) {
    expect_plan(ok_place({big()}, req(4, Policy::block, Binding::pu)),
                {{0, 0, {0}}, {0, 1, {1}}, {0, 2, {2}}, {0, 3, {3}}});
}

TEST(PlaceOneNode, BlockPuThreePerRank) {
    expect_plan(ok_place({big()}, req(2, Policy::block, Binding::pu, 3)),
                {{0, 0, {0, 1, 2}}, {0, 1, {3, 4, 5}}});
}

TEST(PlaceOneNode, CyclicCoreAlternatesSockets) {
    expect_plan(ok_place({big()}, req(4, Policy::cyclic, Binding::core)),
                {{0, 0, {0, 1}}, {0, 1, {64, 65}}, {0, 2, {2, 3}}, {0, 3, {66, 67}}});
}

TEST(PlaceOneNode, SpreadCoreGoesRoundTheNumaDomains) {
    expect_plan(ok_place({big()}, req(6, Policy::spread, Binding::core)), {{0, 0, {0, 1}},
                                                                           {0, 1, {32, 33}},
                                                                           {0, 2, {64, 65}},
                                                                           {0, 3, {96, 97}},
                                                                           {0, 4, {2, 3}},
                                                                           {0, 5, {34, 35}}});
}

TEST(PlaceOneNode, BlockNuma) {
    expect_plan(ok_place({big()}, req(4, Policy::block, Binding::numa)),
                {{0, 0, range(0, 31)}, {0, 1, range(32, 63)}, {0, 2, range(64, 95)}, {0, 3, range(96, 127)}});
}

TEST(PlaceOneNode, CyclicNumaAlternatesSockets) {
    expect_plan(ok_place({big()}, req(4, Policy::cyclic, Binding::numa)),
                {{0, 0, range(0, 31)}, {0, 1, range(64, 95)}, {0, 2, range(32, 63)}, {0, 3, range(96, 127)}});
}

TEST(PlaceOneNode, Socket) {
    expect_plan(ok_place({big()}, req(2, Policy::block, Binding::socket)),
                {{0, 0, range(0, 63)}, {0, 1, range(64, 127)}});
    expect_plan(ok_place({big()}, req(2, Policy::spread, Binding::socket, 32)),
                {{0, 0, range(0, 63)}, {0, 1, range(64, 127)}});
}

TEST(PlaceOneNode, NoneGetsTheWholeNode) {
    auto plan = ok_place({big()}, req(2, Policy::block, Binding::none));
    expect_plan(plan, {{0, 0, range(0, 127)}, {0, 1, range(0, 127)}});
    EXPECT_TRUE(plan.warnings.empty());
}

TEST(PlaceOneNode, Capacities) {
    EXPECT_EQ(capacity(big(), Binding::pu, 1), 128U);
    EXPECT_EQ(capacity(big(), Binding::pu, 3), 42U);
    EXPECT_EQ(capacity(big(), Binding::core, 1), 64U);
    EXPECT_EQ(capacity(big(), Binding::none, 4), 16U);
    EXPECT_EQ(capacity(big(), Binding::numa, 1), 4U);
    EXPECT_EQ(capacity(big(), Binding::numa, 17), 0U);
    EXPECT_EQ(capacity(big(), Binding::socket, 32), 2U);
    EXPECT_EQ(capacity(big(), Binding::core, 0), 0U);
}

// ---- four nodes ----

TEST(PlaceCluster, CyclicGoesRoundTheNodesThenTheSockets) {
    expect_plan(ok_place(cluster(4), req(8, Policy::cyclic, Binding::core)), {{0, 0, {0, 1}},
                                                                              {1, 0, {0, 1}},
                                                                              {2, 0, {0, 1}},
                                                                              {3, 0, {0, 1}},
                                                                              {0, 1, {64, 65}},
                                                                              {1, 1, {64, 65}},
                                                                              {2, 1, {64, 65}},
                                                                              {3, 1, {64, 65}}});
}

TEST(PlaceCluster, BlockFillsNodeZeroFirst) {
    auto plan = ok_place(cluster(4), req(130, Policy::block, Binding::core));
    ASSERT_EQ(plan.slots.size(), 130U);
    EXPECT_EQ(plan.slots[63].node_id, 0U);
    EXPECT_EQ(plan.slots[63].cpus, (Cpus{126, 127}));
    EXPECT_EQ(plan.slots[64].node_id, 1U);
    EXPECT_EQ(plan.slots[64].local_rank, 0U);
    EXPECT_EQ(plan.slots[64].cpus, (Cpus{0, 1}));
    EXPECT_EQ(plan.slots[129].node_id, 2U);
    EXPECT_EQ(plan.slots[129].local_rank, 1U);
    EXPECT_EQ(plan.slots[129].cpus, (Cpus{2, 3}));
}

TEST(PlaceCluster, SpreadGivesEachNodeItsShareOverItsDomains) {
    expect_plan(ok_place(cluster(4), req(8, Policy::spread, Binding::core)), {{0, 0, {0, 1}},
                                                                              {0, 1, {32, 33}},
                                                                              {1, 0, {0, 1}},
                                                                              {1, 1, {32, 33}},
                                                                              {2, 0, {0, 1}},
                                                                              {2, 1, {32, 33}},
                                                                              {3, 0, {0, 1}},
                                                                              {3, 1, {32, 33}}});
}

TEST(PlaceCluster, SpreadSixteenRanksOnePerDomain) {
    auto plan = ok_place(cluster(4), req(16, Policy::spread, Binding::numa));
    std::vector<Want> want;
    for (std::uint32_t n = 0; n < 4; ++n)
        for (std::uint32_t d = 0; d < 4; ++d) want.push_back({n, d, range(32 * d, 32 * d + 31)});
    expect_plan(plan, want);
}

TEST(PlaceCluster, SpreadIsProportionalToDomainsAndCapped) {
    // Node 0: 4 NUMA domains, 64 cores. Node 1: 1 domain, 4 cores (PUs 0-7).
    std::vector<NodeResources> nodes{big(), node("pack:1 core:4 pu:2", 1)};
    // 10 ranks: shares 10*4/5 = 8 and 10*1/5 = 2.
    expect_plan(ok_place(nodes, req(10, Policy::spread, Binding::core)), {{0, 0, {0, 1}},
                                                                          {0, 1, {32, 33}},
                                                                          {0, 2, {64, 65}},
                                                                          {0, 3, {96, 97}},
                                                                          {0, 4, {2, 3}},
                                                                          {0, 5, {34, 35}},
                                                                          {0, 6, {66, 67}},
                                                                          {0, 7, {98, 99}},
                                                                          {1, 0, {0, 1}},
                                                                          {1, 1, {2, 3}}});
    // 12 ranks: 9.6 and 2.4; the larger remainder (node 0) gets the extra one.
    auto p12 = ok_place(nodes, req(12, Policy::spread, Binding::core));
    std::map<std::uint32_t, int> per12;
    for (const auto& s : p12.slots) per12[s.node_id]++;
    EXPECT_EQ(per12, (std::map<std::uint32_t, int>{{0, 10}, {1, 2}}));
    // 30 ranks: 24 and 6, but node 1 holds only 4: node 0 takes 26.
    auto p30 = ok_place(nodes, req(30, Policy::spread, Binding::core));
    std::map<std::uint32_t, int> per30;
    for (const auto& s : p30.slots) per30[s.node_id]++;
    EXPECT_EQ(per30, (std::map<std::uint32_t, int>{{0, 26}, {1, 4}}));
}

// ---- restricted allowed cpusets ----

TEST(PlaceRestricted, CyclicOverTheAllowedCoresOnly) {
    auto n = node("pack:2 numa:2 core:16 pu:2", 0, "0-7,64-71");
    expect_plan(ok_place({n}, req(4, Policy::cyclic, Binding::core)),
                {{0, 0, {0, 1}}, {0, 1, {64, 65}}, {0, 2, {2, 3}}, {0, 3, {66, 67}}});
    EXPECT_EQ(capacity(n, Binding::core, 1), 8U);
    EXPECT_EQ(capacity(n, Binding::numa, 1), 2U);
    expect_plan(ok_place({n}, req(2, Policy::block, Binding::numa)),
                {{0, 0, range(0, 7)}, {0, 1, range(64, 71)}});
    expect_plan(ok_place({n}, req(1, Policy::block, Binding::none)),
                {{0, 0, {0, 1, 2, 3, 4, 5, 6, 7, 64, 65, 66, 67, 68, 69, 70, 71}}});
}

TEST(PlaceRestricted, HalfACoreIsStillACore) {
    auto n = node("pack:2 numa:2 core:16 pu:2", 0, "0-2");
    expect_plan(ok_place({n}, req(2, Policy::block, Binding::core)), {{0, 0, {0, 1}}, {0, 1, {2}}});
    expect_plan(ok_place({n}, req(3, Policy::block, Binding::pu)), {{0, 0, {0}}, {0, 1, {1}}, {0, 2, {2}}});
}

TEST(PlaceRestricted, ADomainTooSmallForCpusPerProcIsSkipped) {
    // NUMA 0 keeps 4 cores, NUMA 1 keeps 8: numa binding with 6 cores per rank fits only NUMA 1.
    auto n = node("pack:2 numa:2 core:16 pu:2", 0, "0-7,32-47");
    EXPECT_EQ(capacity(n, Binding::numa, 6), 1U);
    expect_plan(ok_place({n}, req(1, Policy::block, Binding::numa, 6)), {{0, 0, range(32, 47)}});
}

// ---- OS numbering that is not topology order (Intel-style hyperthreads) ----

TEST(PlaceOsNumbering, CpusAreOsIndicesInAscendingOrder) {
    // Core 0 is PUs 0 and 4, core 1 is 1 and 5 (socket 0); core 2 is 2 and 6, core 3 is 3 and 7 (socket 1).
    auto ht = node("pack:2 core:2 pu:2(indexes=0,4,1,5,2,6,3,7)");
    expect_plan(ok_place({ht}, req(3, Policy::block, Binding::pu)), {{0, 0, {0}}, {0, 1, {4}}, {0, 2, {1}}});
    expect_plan(ok_place({ht}, req(2, Policy::block, Binding::core)), {{0, 0, {0, 4}}, {0, 1, {1, 5}}});
    expect_plan(ok_place({ht}, req(4, Policy::cyclic, Binding::core)),
                {{0, 0, {0, 4}}, {0, 1, {2, 6}}, {0, 2, {1, 5}}, {0, 3, {3, 7}}});
    expect_plan(ok_place({ht}, req(1, Policy::block, Binding::socket)), {{0, 0, {0, 1, 4, 5}}});
    // Only the first hardware thread of each core allowed.
    auto first = node("pack:2 core:2 pu:2(indexes=0,4,1,5,2,6,3,7)", 0, "0-3");
    expect_plan(ok_place({first}, req(2, Policy::cyclic, Binding::core)), {{0, 0, {0}}, {0, 1, {2}}});
    auto plan = ok_place({ht}, req(1, Policy::block, Binding::core));
    EXPECT_NE(format_map(plan, {ht}).find("  0,4\n"), std::string::npos) << format_map(plan, {ht});
}

// ---- oversubscription ----

TEST(PlaceOversubscribe, WrapsAroundWithAWarning) {
    auto small = node("core:2 pu:1");
    auto plan = ok_place({small}, req(3, Policy::block, Binding::core, 1, true));
    expect_plan(plan, {{0, 0, {0}}, {0, 1, {1}}, {0, 2, {0}}});
    ASSERT_EQ(plan.warnings.size(), 1U);
    EXPECT_EQ(plan.warnings[0], "oversubscribed: 3 ranks on 2 slots; 2 ranks share cpus with another rank");
    auto five = ok_place({small}, req(5, Policy::cyclic, Binding::core, 1, true));
    ASSERT_EQ(five.warnings.size(), 1U);
    EXPECT_EQ(five.warnings[0], "oversubscribed: 5 ranks on 2 slots; 5 ranks share cpus with another rank");
    EXPECT_EQ(five.slots[4].cpus, (Cpus{0}));
    EXPECT_EQ(five.slots[4].local_rank, 4U);
}

TEST(PlaceOversubscribe, SpreadWrapsOverTheFullPlan) {
    auto plan = ok_place(cluster(2), req(10, Policy::spread, Binding::numa, 1, true));
    // 8 domains; ranks 8 and 9 repeat ranks 0 and 1.
    EXPECT_EQ(plan.slots[8].node_id, 0U);
    EXPECT_EQ(plan.slots[8].cpus, range(0, 31));
    EXPECT_EQ(plan.slots[9].cpus, range(32, 63));
    EXPECT_EQ(plan.slots[8].local_rank, 4U);
    EXPECT_EQ(plan.warnings.size(), 1U);
}

TEST(PlaceOversubscribe, RefusedWithoutTheOption) {
    auto p = place({node("core:2 pu:1")}, req(3, Policy::block, Binding::core));
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code(), Errc::no_space);
    EXPECT_EQ(
        p.error().message(),
        "placing 3 ranks (policy block, binding core, cpus_per_proc 1): only 2 ranks fit on the 1 node(s) "
        "without sharing cpus; allow oversubscription or ask for fewer ranks");
}

// ---- bad requests ----

TEST(PlaceErrors, EveryBadRequestIsNamed) {
    EXPECT_EQ(error_of({}, req(1, Policy::block, Binding::core)),
              "placing 1 ranks (policy block, binding core, cpus_per_proc 1): no nodes to place on");
    EXPECT_EQ(
        error_of({big()}, req(0, Policy::block, Binding::core)),
        "placing 0 ranks (policy block, binding core, cpus_per_proc 1): nprocs is 0; need at least 1 rank");
    EXPECT_EQ(
        error_of({big()}, req(1, Policy::cyclic, Binding::pu, 0)),
        "placing 1 ranks (policy cyclic, binding pu, cpus_per_proc 0): cpus_per_proc is 0; need at least 1");
    EXPECT_EQ(
        error_of({big()}, req(1, Policy::block, Binding::core, 65)),
        "placing 1 ranks (policy block, binding core, cpus_per_proc 65): cpus_per_proc 65 is larger than any "
        "node offers: the largest has 64 cores");
    EXPECT_EQ(
        error_of({big()}, req(1, Policy::block, Binding::pu, 129)),
        "placing 1 ranks (policy block, binding pu, cpus_per_proc 129): cpus_per_proc 129 is larger than any "
        "node offers: the largest has 128 PUs");
    EXPECT_EQ(error_of({big()}, req(1, Policy::spread, Binding::numa, 17)),
              "placing 1 ranks (policy spread, binding numa, cpus_per_proc 17): cpus_per_proc 17 is larger "
              "than any "
              "numa domain offers: the largest has 16 cores");
    EXPECT_EQ(error_of({big(), big()}, req(1, Policy::block, Binding::core)),
              "placing 1 ranks (policy block, binding core, cpus_per_proc 1): node_id 0 appears twice");
    EXPECT_EQ(error_of({NodeResources{5, "e", {}}}, req(1, Policy::block, Binding::core)),
              "placing 1 ranks (policy block, binding core, cpus_per_proc 1): node 5 (e) has no PU");
    auto huge = place({big()}, req(kMaxProcs + 1, Policy::block, Binding::core, 1, true));
    ASSERT_FALSE(huge);
    EXPECT_EQ(huge.error().code(), Errc::too_large);
    EXPECT_EQ(error_of({big()}, req(1, static_cast<Policy>(9), Binding::core)),
              "placing 1 ranks (policy ?, binding core, cpus_per_proc 1): invalid policy value 9");
}

TEST(PlaceErrors, ANodeTooSmallForOneRankIsWarnedAbout) {
    std::vector<NodeResources> nodes{big(), node("core:2 pu:1", 1)};
    auto plan = ok_place(nodes, req(2, Policy::cyclic, Binding::core, 4));
    ASSERT_EQ(plan.warnings.size(), 1U);
    EXPECT_EQ(plan.warnings[0], "node 1 (n1) cannot hold one rank of 4 cores; it gets no ranks");
    EXPECT_EQ(plan.slots[1].node_id, 0U);
}

TEST(PlaceErrors, NoNumaOrSocketLevelMeansTheWholeNode) {
    // hwloc gives a topology without a numa level one NUMA node over the
    // machine, and NodeResources puts PUs without a package in socket 0.
    auto flat = node("core:4 pu:1");
    expect_plan(ok_place({flat}, req(1, Policy::block, Binding::numa)), {{0, 0, {0, 1, 2, 3}}});
    expect_plan(ok_place({flat}, req(1, Policy::block, Binding::socket)), {{0, 0, {0, 1, 2, 3}}});
    auto p = place({flat}, req(2, Policy::block, Binding::numa));
    ASSERT_FALSE(p);
    EXPECT_NE(p.error().message().find("only 1 ranks fit"), std::string::npos) << p.error().message();
}

TEST(PlaceErrors, ParseListsTheValidValues) {
    EXPECT_EQ(*parse_policy("cyclic"), Policy::cyclic);
    EXPECT_EQ(*parse_binding("socket"), Binding::socket);
    EXPECT_EQ(to_string(Policy::spread), "spread");
    EXPECT_EQ(to_string(Binding::pu), "pu");
    EXPECT_EQ(parse_policy("round").error().message(),
              "unknown placement policy 'round' (valid: block, cyclic, spread)");
    EXPECT_EQ(parse_binding("l3").error().message(),
              "unknown binding 'l3' (valid: none, core, pu, numa, socket)");
    for (auto b : {Binding::none, Binding::core, Binding::pu, Binding::numa, Binding::socket})
        EXPECT_EQ(*parse_binding(to_string(b)), b);
}

// ---- output ----

TEST(PlaceFormat, CpuListsAreCompressed) {
    EXPECT_EQ(format_cpulist({8, 0, 1, 2, 3, 10, 11}), "0-3,8,10-11");
    EXPECT_EQ(format_cpulist({5}), "5");
    EXPECT_EQ(format_cpulist({}), "");
    EXPECT_EQ(format_cpulist({1, 1, 2}), "1-2");
}

TEST(PlaceFormat, MapIsATable) {
    auto nodes = cluster(2);
    auto plan = ok_place(nodes, req(3, Policy::cyclic, Binding::core, 2));
    EXPECT_EQ(format_map(plan, nodes),
              "  rank   node  host   local  cpus\n"
              "     0      0  n0         0  0-3\n"
              "     1      1  n1         0  0-3\n"
              "     2      0  n0         1  64-67\n");
    plan.warnings.push_back("something");
    EXPECT_NE(format_map(plan, nodes).find("warning: something\n"), std::string::npos);
}

TEST(PlaceFormat, PlanAndRequestGoOnTheWire) {
    auto plan = ok_place(cluster(2), req(3, Policy::cyclic, Binding::core));
    std::string body;
    wire::Writer w(body);
    wire::encode(w, plan);
    auto back = wire::decode_exact<Plan>(body);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->slots, plan.slots);
    std::string rb;
    wire::Writer rw(rb);
    wire::encode(rw, req(3, Policy::spread, Binding::numa, 2, true));
    rb[8] = 7;  // policy byte out of range
    EXPECT_FALSE(wire::decode_exact<PlacementRequest>(rb));
}

// ---- entry constraints ----

// Four nodes "pack:1 core:4 pu:1" (cpus 0-3) with the given hostnames.
std::vector<NodeResources> four_small(std::vector<std::string> hosts = {"n0", "n1", "n2", "n3"}) {
    std::vector<NodeResources> out;
    for (std::uint32_t i = 0; i < 4; ++i) {
        out.push_back(node("pack:1 core:4 pu:1", i));
        out.back().hostname = hosts[i];
    }
    return out;
}

EntryConstraint entry(std::uint32_t count, std::int32_t node = -1, std::string host = {}, Cpus cpus = {}) {
    return EntryConstraint{count, node, std::move(host), std::move(cpus), {}};
}

Plan ok_entries(const std::vector<NodeResources>& nodes, const PlacementRequest& r,
                const std::vector<EntryConstraint>& entries) {
    auto p = place(nodes, r, entries);
    EXPECT_TRUE(p) << p.error().message();
    return p ? *p : Plan{};
}

std::string entries_error(const std::vector<NodeResources>& nodes, const PlacementRequest& r,
                          const std::vector<EntryConstraint>& entries) {
    auto p = place(nodes, r, entries);
    EXPECT_FALSE(p);
    return p ? std::string("(no error)") : p.error().message();
}

TEST(PlaceEntries, WithoutConstraintsItIsPlace) {
    auto nodes = cluster(3);
    for (auto policy : {Policy::block, Policy::cyclic, Policy::spread})
        for (auto binding : {Binding::none, Binding::core, Binding::numa}) {
            auto r = req(13, policy, binding, 1, true);
            auto plain = ok_place(nodes, r);
            auto split = ok_entries(nodes, r, {entry(1), entry(4), entry(8)});
            EXPECT_EQ(split.slots, plain.slots) << to_string(policy) << " " << to_string(binding);
            EXPECT_EQ(split.warnings, plain.warnings);
        }
}

TEST(PlaceEntries, APinnedEntryLandsOnItsNodeAndTheOthersAreUnmoved) {
    // Ranks 0-2 and 5 are placed as a group of 4 alone would be (block: node
    // 0 cores 0-3); ranks 3-4 go to node 2.
    auto plan = ok_entries(four_small(), req(6, Policy::block, Binding::core),
                           {entry(3), entry(2, 2), entry(1)});
    expect_plan(plan, {{0, 0, {0}}, {0, 1, {1}}, {0, 2, {2}}, {2, 0, {0}}, {2, 1, {1}}, {0, 3, {3}}});
    EXPECT_TRUE(plan.warnings.empty());
    auto cyc = ok_entries(four_small(), req(6, Policy::cyclic, Binding::core),
                          {entry(4), entry(2, 2)});
    // Cyclic: ranks 0-3 on nodes 0-3 core 0; node 2's core 0 is taken, so the pinned ones get cores 1, 2.
    expect_plan(cyc, {{0, 0, {0}}, {1, 0, {0}}, {2, 0, {0}}, {3, 0, {0}}, {2, 1, {1}}, {2, 2, {2}}});
}

TEST(PlaceEntries, APinnedEntryTakesThePlacesLeftOnItsNode) {
    auto plan = ok_entries(four_small(), req(4, Policy::block, Binding::core), {entry(2, 0), entry(2)});
    // The unconstrained ranks 2-3 take node 0's cores 0-1 as if alone; the pinned ones the rest.
    expect_plan(plan, {{0, 0, {2}}, {0, 1, {3}}, {0, 2, {0}}, {0, 3, {1}}});
    auto two = ok_entries(four_small(), req(4, Policy::block, Binding::core), {entry(2, 1), entry(2, 1)});
    expect_plan(two, {{1, 0, {0}}, {1, 1, {1}}, {1, 2, {2}}, {1, 3, {3}}});
}

TEST(PlaceEntries, AHostMatchingSeveralNodesSpreadsWithTheGroupsPolicy) {
    // A virtual cluster: every node has the same hostname.
    auto same = four_small({"vm", "vm", "vm", "vm"});
    auto cyc = ok_entries(same, req(5, Policy::cyclic, Binding::core), {entry(5, -1, "vm")});
    expect_plan(cyc, {{0, 0, {0}}, {1, 0, {0}}, {2, 0, {0}}, {3, 0, {0}}, {0, 1, {1}}});
    auto mixed = four_small({"a", "b", "a", "b"});
    auto on_b = ok_entries(mixed, req(4, Policy::cyclic, Binding::core), {entry(4, -1, "b")});
    expect_plan(on_b, {{1, 0, {0}}, {3, 0, {0}}, {1, 1, {1}}, {3, 1, {1}}});
    auto block_b = ok_entries(mixed, req(5, Policy::block, Binding::core), {entry(5, -1, "b")});
    expect_plan(block_b, {{1, 0, {0}}, {1, 1, {1}}, {1, 2, {2}}, {1, 3, {3}}, {3, 0, {0}}});
    auto node_and_host = ok_entries(mixed, req(1, Policy::block, Binding::core), {entry(1, 2, "a")});
    expect_plan(node_and_host, {{2, 0, {0}}});
}

TEST(PlaceEntries, CpusOverrideTheBinding) {
    // Bound to exactly the cpus asked for (sorted, once each), whatever the binding.
    for (auto binding : {Binding::none, Binding::core, Binding::numa}) {
        auto plan = ok_entries(four_small(), req(3, Policy::cyclic, binding),
                               {entry(1), entry(2, -1, {}, {3, 1, 3})});
        ASSERT_EQ(plan.slots.size(), 3U);
        EXPECT_EQ(plan.slots[1].cpus, (Cpus{1, 3})) << to_string(binding);
        EXPECT_EQ(plan.slots[2].cpus, (Cpus{1, 3})) << to_string(binding);
    }
    auto pinned = ok_entries(four_small(), req(2, Policy::block, Binding::core), {entry(2, 3, {}, {0})});
    expect_plan(pinned, {{3, 0, {0}}, {3, 1, {0}}});
    // More ranks than places is the caller's choice when it names the cpus: no error, no warning.
    auto many = ok_entries(four_small(), req(6, Policy::block, Binding::core), {entry(6, 1, {}, {2})});
    for (const auto& s : many.slots) EXPECT_EQ(s.node_id, 1U);
    EXPECT_EQ(many.slots[5].cpus, (Cpus{2}));
    EXPECT_EQ(many.slots[5].local_rank, 5U);
    EXPECT_TRUE(many.warnings.empty());
    // Of several matching nodes, only those with every cpu asked for.
    auto uneven = four_small();
    uneven[0] = node("pack:1 core:2 pu:1", 0);
    auto skip = ok_entries(uneven, req(2, Policy::cyclic, Binding::core), {entry(2, -1, {}, {3})});
    expect_plan(skip, {{1, 0, {3}}, {2, 0, {3}}});
}

TEST(PlaceEntries, APinnedEntryBeyondItsNodeIsRefusedOrOversubscribed) {
    auto nodes = four_small();
    auto p = place(nodes, req(6, Policy::block, Binding::core), {entry(1), entry(5, 0)});
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code(), Errc::no_space);
    EXPECT_EQ(p.error().message(),
              "placing 6 ranks (policy block, binding core, cpus_per_proc 1): entry 1: 5 ranks on node 0, where only "
              "3 fit beside the group's other ranks without sharing cpus; allow oversubscription or ask for fewer "
              "ranks");
    auto over = ok_entries(nodes, req(6, Policy::block, Binding::core, 1, true), {entry(1), entry(5, 0)});
    // Three free cores, then node 0's places again from the start.
    expect_plan(over, {{0, 0, {0}}, {0, 1, {1}}, {0, 2, {2}}, {0, 3, {3}}, {0, 4, {0}}, {0, 5, {1}}});
    ASSERT_EQ(over.warnings.size(), 1U);
    EXPECT_EQ(over.warnings[0],
              "oversubscribed: entry 1 has 5 ranks for 3 free slots on node 0; 2 of them share cpus with another "
              "rank");
}

TEST(PlaceEntries, BadConstraintsAreNamed) {
    auto nodes = four_small();
    const std::string pre = "placing 2 ranks (policy block, binding none, cpus_per_proc 1): ";
    auto named = [](EntryConstraint e) {
        e.name = "./worker";
        return e;
    };
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(1), named(entry(1, 7))}),
              pre + "entry 1 (./worker): node 7 does not exist (nodes: 0-3)");
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(1, -2), entry(1)}),
              pre + "entry 0: node -2 does not exist (nodes: 0-3)");
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(2, -1, "nohost")}),
              pre + "entry 0: no node has hostname 'nohost' (hosts: n0, n1, n2, n3)");
    EXPECT_EQ(entries_error(four_small({"vm", "vm", "vm", "vm"}), req(2, Policy::block, Binding::none),
                            {entry(2, -1, "nohost")}),
              pre + "entry 0: no node has hostname 'nohost' (hosts: vm)");
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(2, 1, "n2")}),
              pre + "entry 0: node 1 is host 'n1', not 'n2'");
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(1), entry(1, 2, {}, {1, 9})}),
              pre + "entry 1: node 2 (n2) has no cpu 9 (its cpus: 0-3)");
    EXPECT_EQ(entries_error(nodes, req(2, Policy::block, Binding::none), {entry(1, -1, {}, {4})}),
              pre + "the entries have 1 ranks in all, not nprocs 2");
    // A node too small for one rank of the entry, though others hold ranks.
    auto uneven = four_small();
    uneven[1] = node("pack:1 core:1 pu:1", 1);
    EXPECT_EQ(entries_error(uneven, req(2, Policy::block, Binding::core, 2, true), {entry(1), entry(1, 1)}),
              "placing 2 ranks (policy block, binding core, cpus_per_proc 2): entry 1: node 1 cannot hold one rank "
              "of 2 cores");
}

// ---- scale ----

TEST(PlaceScale, FourThousandRanksOverFourNodes) {
    auto nodes = cluster(4);
    for (auto policy : {Policy::block, Policy::cyclic, Policy::spread}) {
        auto plan = ok_place(nodes, req(4096, policy, Binding::pu, 1, true));
        ASSERT_EQ(plan.slots.size(), 4096U);
        // 512 PUs: every PU holds exactly 8 ranks.
        std::map<std::pair<std::uint32_t, std::uint32_t>, int> per_pu;
        for (const auto& s : plan.slots) {
            ASSERT_EQ(s.cpus.size(), 1U);
            per_pu[{s.node_id, s.cpus[0]}]++;
        }
        EXPECT_EQ(per_pu.size(), 512U) << to_string(policy);
        for (const auto& [k, v] : per_pu) EXPECT_EQ(v, 8) << to_string(policy);
    }
}

TEST(PlaceScale, AThousandNodes) {
    auto nodes = cluster(1000);
    auto cyc = ok_place(nodes, req(4096, Policy::cyclic, Binding::core));
    for (std::uint32_t r : {0U, 999U, 1000U, 4095U}) {
        EXPECT_EQ(cyc.slots[r].node_id, r % 1000);
        EXPECT_EQ(cyc.slots[r].local_rank, r / 1000);
    }
    EXPECT_EQ(cyc.slots[1000].cpus, (Cpus{64, 65}));  // second rank on node 0: the other socket
    // 4000 domains: 4096 * 4 / 4000 = 4.096 each; the 96 extra go to the first nodes.
    auto spr = ok_place(nodes, req(4096, Policy::spread, Binding::core));
    std::vector<int> per(1000, 0);
    for (const auto& s : spr.slots) per[s.node_id]++;
    for (std::uint32_t n = 0; n < 1000; ++n) EXPECT_EQ(per[n], n < 96 ? 5 : 4) << "node " << n;
}

}  // namespace
}  // namespace dragon::procgroup
