// Open MPI's per-node directories and settings for PMIx ranks
// (agent/ompi_env.hpp), and their removal with the node's /dev/shm entries
// (runtime/node_lock.hpp).
#include "agent/pmi/ompi_env.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "dragon/common/names.hpp"

#include "runtime/node_lock.hpp"

namespace dragon::agent {
namespace {

namespace fs = std::filesystem;

RunId run_id(const char* hex) {
    return *RunId::parse(hex);
}

std::vector<std::string> with(const std::vector<std::string>& env, const std::string& prefix) {
    std::vector<std::string> out;
    std::copy_if(env.begin(), env.end(), std::back_inserter(out),
                 [&](const std::string& kv) { return kv.starts_with(prefix); });
    return out;
}

TEST(OmpiEnv, EachNodeOfARunHasItsOwnDirectories) {
    const auto run = run_id("0abc");
    const OmpiDirs n0 = ompi_dirs(run, 0), n1 = ompi_dirs(run, 1);
    EXPECT_EQ(n0.backing, "/dev/shm/dragon-0abc-n0-ompi");
    EXPECT_EQ(n0.session, names::pmix_dir("0abc", 0) + "/ompi");
    EXPECT_NE(n0.backing, n1.backing);
    EXPECT_NE(n0.session, n1.session);
    // The backing directory is one of the node's /dev/shm entries, so teardown and cleanup find it.
    auto parts = names::parse_shm_name(fs::path(n1.backing).filename().string());
    ASSERT_TRUE(parts);
    EXPECT_EQ(parts->run_id, "0abc");
    EXPECT_EQ(parts->node, 1U);
}

TEST(OmpiEnv, RanksGetTheBackingAndSessionDirectories) {
    const OmpiDirs d = ompi_dirs(run_id("0abc"), 3);
    const auto env = add_ompi_env({"PATH=/bin", "OMPI_MCA_ess=pmi"}, d, false);
    EXPECT_EQ(with(env, "OMPI_MCA_btl_vader_backing_directory="),
              std::vector<std::string>{"OMPI_MCA_btl_vader_backing_directory=" + d.backing});
    EXPECT_EQ(with(env, "OMPI_MCA_orte_tmpdir_base="),
              std::vector<std::string>{"OMPI_MCA_orte_tmpdir_base=" + d.session});
    EXPECT_EQ(with(env, "PATH="), std::vector<std::string>{"PATH=/bin"});
    EXPECT_EQ(with(env, "OMPI_MCA_ess="), std::vector<std::string>{"OMPI_MCA_ess=pmi"});
    EXPECT_TRUE(with(env, "OMPI_MCA_btl_tcp_").empty());  // real nodes: Open MPI picks its interfaces
    EXPECT_EQ(env.size(), 4U);
}

TEST(OmpiEnv, AVirtualClusterTalksTcpOverLoopback) {
    const OmpiDirs d = ompi_dirs(run_id("0abc"), 0);
    EXPECT_EQ(with(add_ompi_env({}, d, true), "OMPI_MCA_btl_tcp_"),
              std::vector<std::string>{"OMPI_MCA_btl_tcp_if_include=lo"});
    // Open MPI refuses if_include next to if_exclude: a user's exclude list stands alone.
    EXPECT_EQ(with(add_ompi_env({"OMPI_MCA_btl_tcp_if_exclude=docker0"}, d, true), "OMPI_MCA_btl_tcp_"),
              std::vector<std::string>{"OMPI_MCA_btl_tcp_if_exclude=docker0"});
    EXPECT_EQ(with(add_ompi_env({"OMPI_MCA_btl_tcp_if_include=eth0"}, d, true), "OMPI_MCA_btl_tcp_"),
              std::vector<std::string>{"OMPI_MCA_btl_tcp_if_include=eth0"});
}

TEST(OmpiEnv, AUsersOwnSettingWinsEvenWhenEmpty) {
    const OmpiDirs d = ompi_dirs(run_id("0abc"), 0);
    const auto env =
        add_ompi_env({"OMPI_MCA_btl_vader_backing_directory=/mine", "OMPI_MCA_orte_tmpdir_base="}, d, false);
    EXPECT_EQ(env, (std::vector<std::string>{"OMPI_MCA_btl_vader_backing_directory=/mine",
                                             "OMPI_MCA_orte_tmpdir_base="}));
    // A longer name that merely starts like ours is not ours.
    const auto other = add_ompi_env({"OMPI_MCA_btl_vader_backing_directory_x=1"}, d, false);
    EXPECT_EQ(with(other, "OMPI_MCA_btl_vader_backing_directory=").size(), 1U);
}

TEST(OmpiEnv, AVirtualClusterIsSeveralNodesOfOneHostName) {
    const std::vector<std::string> virt{"vm", "vm", "vm"}, real{"a", "b", "a"};
    auto of = [](const std::vector<std::string>& names) {
        return [&names](std::uint32_t n) { return names.at(n); };
    };
    EXPECT_TRUE(nodes_share_one_host(3, of(virt)));
    EXPECT_FALSE(nodes_share_one_host(3, of(real)));
    EXPECT_FALSE(nodes_share_one_host(1, of(virt)));  // one node: nothing crosses nodes
}

// These two touch /dev/shm and /tmp under a run id no live run has.
struct OmpiDirsOnDisk : ::testing::Test {
    RunId run = *RunId::generate();
    OmpiDirs dirs = ompi_dirs(run, 2);
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dirs.backing, ec);
        fs::remove_all(names::pmix_dir(run.str(), 2), ec);
        fs::remove(fmt::format("/dev/shm/{}", names::shm_name(run, 2, "lock")), ec);
    }
};

TEST_F(OmpiDirsOnDisk, AreMadePrivateAndTwiceIsFine) {
    ASSERT_TRUE(make_ompi_dirs(dirs));
    ASSERT_TRUE(make_ompi_dirs(dirs));
    for (const auto& d : {dirs.backing, dirs.session, names::pmix_dir(run.str(), 2)}) {
        struct stat st {};
        ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
        EXPECT_TRUE(S_ISDIR(st.st_mode)) << d;
        EXPECT_EQ(st.st_mode & 0777, 0700U) << d;
    }
}

TEST_F(OmpiDirsOnDisk, GoWithTheNodesSharedMemoryWhateverIsInThem) {
    auto lock = rt::NodeLock::acquire(run, 2);
    ASSERT_TRUE(lock) << lock.error().message();
    ASSERT_TRUE(make_ompi_dirs(dirs));
    std::ofstream(dirs.backing + "/vader_segment.host.0.1234.0") << "a crashed rank's segment";
    auto removed = lock->remove_node_segments();
    ASSERT_TRUE(removed) << removed.error().message();
    EXPECT_EQ(*removed, 2U);  // the directory and the lock
    EXPECT_FALSE(fs::exists(dirs.backing));
}

TEST_F(OmpiDirsOnDisk, OfADeadAgentGoWithItsOtherEntries) {
    {
        auto lock = rt::NodeLock::acquire(run, 2);  // released at the end of the scope: a dead agent
        ASSERT_TRUE(lock);
    }
    ASSERT_TRUE(make_ompi_dirs(dirs));
    std::ofstream(dirs.backing + "/vader_segment.host.0.1234.1") << "x";
    std::ofstream(dirs.session + "/leftover") << "x";
    auto report = rt::cleanup_stale(false, &run);
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_NE(std::find(report->removed.begin(), report->removed.end(), names::shm_name(run, 2, "ompi")),
              report->removed.end());
    EXPECT_FALSE(fs::exists(dirs.backing));
    EXPECT_FALSE(fs::exists(names::pmix_dir(run.str(), 2)));
}

}  // namespace
}  // namespace dragon::agent
