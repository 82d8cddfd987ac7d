// Topology and NodeResources: synthetic, XML, restriction, discovery, wire.
#include "dragon/procgroup/topology.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "dragon/common/codec.hpp"
#include "dragon/procgroup/resources.hpp"

namespace dragon::procgroup {
namespace {

constexpr const char* kNode = "pack:2 numa:2 core:16 pu:2";

NodeResources resources(const Topology& t, std::uint32_t id = 0) {
    auto r = NodeResources::from(t, id, "n" + std::to_string(id));
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : NodeResources{};
}

TEST(Topology, SyntheticNodeHasTheExpectedHierarchy) {
    auto t = Topology::synthetic(kNode);
    ASSERT_TRUE(t) << t.error().message();
    EXPECT_EQ(t->pu_count(), 128U);
    EXPECT_EQ(t->cpulist(), "0-127");
    auto r = resources(*t);
    ASSERT_EQ(r.pus.size(), 128U);
    EXPECT_EQ(r.core_count(), 64U);
    EXPECT_EQ(r.numa_count(), 4U);
    EXPECT_EQ(r.socket_count(), 2U);
    // Written out by hand: PU 2c and 2c+1 are core c; 32 PUs per NUMA; 64 per socket.
    EXPECT_EQ(r.pus[0], (Pu{0, 0, 0, 0}));
    EXPECT_EQ(r.pus[1], (Pu{1, 0, 0, 0}));
    EXPECT_EQ(r.pus[33], (Pu{33, 16, 1, 0}));
    EXPECT_EQ(r.pus[64], (Pu{64, 32, 2, 1}));
    EXPECT_EQ(r.pus[127], (Pu{127, 63, 3, 1}));
    EXPECT_TRUE(r.validate()) << r.validate().error().message();
}

TEST(Topology, SyntheticWithoutNumaLevelHasOneNumaDomainOverTheMachine) {
    auto t = Topology::synthetic("pack:2 core:4 pu:1");
    ASSERT_TRUE(t) << t.error().message();
    auto r = resources(*t);
    ASSERT_EQ(r.pus.size(), 8U);
    EXPECT_EQ(r.numa_count(), 1U);
    EXPECT_EQ(r.socket_count(), 2U);
}

TEST(Topology, SyntheticWithoutPackageIsOneSocket) {
    auto t = Topology::synthetic("core:4 pu:2");
    ASSERT_TRUE(t) << t.error().message();
    auto r = resources(*t);
    EXPECT_EQ(r.socket_count(), 1U);
    EXPECT_EQ(r.core_count(), 4U);
}

TEST(Topology, BadSyntheticDescriptionIsNamed) {
    auto t = Topology::synthetic("pack:2 bogus:3");
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code(), Errc::invalid_argument);
    EXPECT_NE(t.error().message().find("'pack:2 bogus:3'"), std::string::npos) << t.error().message();
}

TEST(Topology, RestrictKeepsOnlyTheListedPus) {
    auto t = Topology::synthetic(kNode);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->restrict_to("0-7,64-71"));
    EXPECT_EQ(t->cpulist(), "0-7,64-71");
    auto r = resources(*t);
    std::vector<Pu> want = {
        {0, 0, 0, 0},  {1, 0, 0, 0},  {2, 1, 0, 0},  {3, 1, 0, 0},  {4, 2, 0, 0},  {5, 2, 0, 0},
        {6, 3, 0, 0},  {7, 3, 0, 0},  {64, 4, 1, 1}, {65, 4, 1, 1}, {66, 5, 1, 1}, {67, 5, 1, 1},
        {68, 6, 1, 1}, {69, 6, 1, 1}, {70, 7, 1, 1}, {71, 7, 1, 1},
    };
    EXPECT_EQ(r.pus, want);
    EXPECT_TRUE(r.validate());
}

TEST(Topology, RestrictErrorsNameTheProblem) {
    auto t = Topology::synthetic("pack:1 core:4 pu:1");
    ASSERT_TRUE(t);
    auto bad = t->restrict_to("0-2,9");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message(),
              "cannot restrict to cpus '0-2,9': the topology has no PUs 9 (it has 0-3)");
    auto syntax = t->restrict_to("1-x");
    ASSERT_FALSE(syntax);
    EXPECT_EQ(syntax.error().message(), "bad cpu list '1-x': expected a cpu number at offset 2");
    auto reversed = t->restrict_to("3-1");
    ASSERT_FALSE(reversed);
    EXPECT_EQ(reversed.error().message(), "bad cpu list '3-1': range 3-1 is reversed");
    EXPECT_FALSE(t->restrict_to(""));
    EXPECT_EQ(t->cpulist(), "0-3");  // unchanged by failed calls
}

TEST(Topology, XmlRoundTripGivesTheSameResources) {
    auto t = Topology::synthetic(kNode);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->restrict_to("2-9,40,100-103"));
    auto xml = t->to_xml();
    ASSERT_TRUE(xml) << xml.error().message();
    EXPECT_NE(xml->find("<topology"), std::string::npos);
    auto back = Topology::from_xml_string(*xml);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(resources(*back), resources(*t));
    EXPECT_EQ(back->cpulist(), "2-9,40,100-103");
}

TEST(Topology, XmlFileLoadsAndMissingFileIsNamed) {
    auto t = Topology::synthetic(kNode);
    ASSERT_TRUE(t);
    auto xml = t->to_xml();
    ASSERT_TRUE(xml);
    std::string path = ::testing::TempDir() + "dragon_topo_" + std::to_string(::getpid()) + ".xml";
    {
        std::ofstream f(path);
        f << *xml;
    }
    auto back = Topology::from_xml_file(path);
    std::remove(path.c_str());
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(resources(*back), resources(*t));

    auto missing = Topology::from_xml_file("/nonexistent/topo.xml");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), Errc::not_found);
    EXPECT_EQ(missing.error().message(), "cannot open topology XML file '/nonexistent/topo.xml'");
}

TEST(Topology, GarbageXmlIsAnError) {
    auto t = Topology::from_xml_string("<not a topology>");
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code(), Errc::invalid_argument);
    EXPECT_NE(t.error().message().find("invalid topology XML"), std::string::npos) << t.error().message();
    EXPECT_FALSE(Topology::from_xml_string(""));
}

TEST(Topology, MoveLeavesTheSourceEmpty) {
    auto t = Topology::synthetic("core:2 pu:1");
    ASSERT_TRUE(t);
    Topology a = std::move(*t);
    EXPECT_EQ(t->native(), nullptr);  // NOLINT(bugprone-use-after-move): checking the moved-from state
    EXPECT_EQ(a.pu_count(), 2U);
    EXPECT_FALSE(NodeResources::from(*t, 0, "x"));
}

std::set<std::uint32_t> affinity() {
    cpu_set_t set;
    CPU_ZERO(&set);
    EXPECT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
    std::set<std::uint32_t> out;
    for (std::size_t i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) out.insert(static_cast<std::uint32_t>(i));
    return out;
}

std::set<std::uint32_t> pus_of(const NodeResources& r) {
    std::set<std::uint32_t> out;
    for (const auto& p : r.pus) out.insert(p.os_index);
    return out;
}

TEST(Topology, DiscoverMatchesTheProcessAffinity) {
    auto t = Topology::discover();
    ASSERT_TRUE(t) << t.error().message();
    auto r = resources(*t);
    EXPECT_GE(r.pus.size(), 1U);
    EXPECT_EQ(pus_of(r), affinity());
    EXPECT_TRUE(r.validate());
}

TEST(Topology, DiscoveredTopologySurvivesAnXmlRoundTrip) {
    auto t = Topology::discover();
    ASSERT_TRUE(t) << t.error().message();
    auto xml = t->to_xml();
    ASSERT_TRUE(xml) << xml.error().message();
    auto back = Topology::from_xml_string(*xml);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(resources(*back), resources(*t));
}

TEST(Topology, DiscoverFollowsANarrowedAffinity) {
    auto before = affinity();
    if (before.size() < 2) GTEST_SKIP() << "needs at least 2 allowed cpus";
    std::size_t last = *before.rbegin();
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
    auto t = Topology::discover();
    cpu_set_t all;
    CPU_ZERO(&all);
    for (std::size_t c : before) CPU_SET(c, &all);
    ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
    ASSERT_TRUE(t) << t.error().message();
    EXPECT_EQ(pus_of(resources(*t)), (std::set<std::uint32_t>{static_cast<std::uint32_t>(last)}));
}

TEST(Resources, WireRoundTrip) {
    auto t = Topology::synthetic(kNode);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->restrict_to("0-5,70"));
    auto r = resources(*t, 7);
    std::string body;
    wire::Writer w(body);
    wire::encode(w, r);
    auto back = wire::decode_exact<NodeResources>(body);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, r);
    EXPECT_EQ(back->node_id, 7U);
    EXPECT_EQ(back->hostname, "n7");
    for (std::size_t cut = 0; cut < body.size(); ++cut)
        EXPECT_FALSE(wire::decode_exact<NodeResources>(std::string_view(body).substr(0, cut))) << cut;
}

TEST(Resources, ValidateNamesTheBrokenInvariant) {
    NodeResources r{3, "h", {}};
    EXPECT_EQ(r.validate().error().message(), "node 3 (h) has no PU");
    r.pus = {{0, 0, 0, 0}, {0, 1, 0, 0}};
    EXPECT_EQ(r.validate().error().message(), "node 3 (h): PU 0 is listed twice");
    r.pus = {{0, 0, 0, 0}, {1, 0, 1, 0}, {2, 1, 1, 0}};
    EXPECT_EQ(
        r.validate().error().message(),
        "node 3 (h): PU 1 of core 0 is in numa 1 socket 0, but PU 0 of that core is in numa 0 socket 0");
    r.pus = {{0, 0, 0, 0}, {1, 0, 0, 0}, {2, 2, 0, 0}};
    EXPECT_EQ(r.validate().error().message(),
              "node 3 (h): core indices are not dense (core 1 is unused, largest is 2)");
    r.pus = {{0, 0, 0, 0}, {1, 1, 0, 7}};
    EXPECT_EQ(r.validate().error().message(),
              "node 3 (h): socket indices are not dense (largest 7 with 2 PUs)");
    r.pus = {{0, 0, 0, 0}, {1, 1, 0, 0}};
    EXPECT_TRUE(r.validate());
}

}  // namespace
}  // namespace dragon::procgroup
