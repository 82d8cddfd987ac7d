// Fast start (agent/executor/zygote.hpp) against a real zygote: Debian's
// python3 running python/dragon/_zygote.py from the source tree, this test
// process as the child subreaper that the agent is.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "agent/executor/zygote.hpp"

namespace dragon::agent {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPython = "/usr/bin/python3";

rt::ChildSpec member(std::string code, std::vector<std::string> env = {}) {
    rt::ChildSpec cs;
    cs.path = kPython;
    cs.argv = {kPython, "-S", "-c", std::move(code)};
    // The whole sys.path, as ProcessTemplate passes it: the boot code replaces it.
    cs.envp = {std::string("DRAGON_PY_PATH=") + DRAGON_SOURCE_PYTHON +
                   "\x1e/usr/lib/python3.11\x1e/usr/lib/python3.11/lib-dynload\x1e/usr/lib/python3/dist-packages",
               "PATH=/usr/bin:/bin"};
    cs.envp.insert(cs.envp.end(), env.begin(), env.end());
    return cs;
}

TEST(ZygoteKind, OnlyPythonDashCWithOurPath) {
    auto cs = member("pass");
    EXPECT_FALSE(Zygotes::kind_of(cs).empty());
    auto no_s = cs;
    no_s.argv = {kPython, "-c", "pass"};
    EXPECT_FALSE(Zygotes::kind_of(no_s).empty());
    EXPECT_NE(Zygotes::kind_of(no_s), Zygotes::kind_of(cs));  // other flags, other zygote
    auto other_flag = cs;
    other_flag.argv = {kPython, "-u", "-c", "pass"};
    EXPECT_TRUE(Zygotes::kind_of(other_flag).empty());
    auto script = cs;
    script.argv = {kPython, "-S", "x.py"};
    EXPECT_TRUE(Zygotes::kind_of(script).empty());
    auto pmi = cs;
    pmi.extra_fd = 9;  // a PMI descriptor: exec only
    EXPECT_TRUE(Zygotes::kind_of(pmi).empty());
    auto foreign = cs;
    foreign.envp = {"PATH=/usr/bin"};  // no DRAGON_PY_PATH: not one of our members
    EXPECT_TRUE(Zygotes::kind_of(foreign).empty());
}

TEST(ZygoteKind, InterpreterShapingVariablesMatterOthersDoNot) {
    auto a = member("pass", {"FOO=1", "PYTHONHASHSEED=0"});
    auto b = member("other code", {"FOO=2", "PYTHONHASHSEED=0"});
    EXPECT_EQ(Zygotes::kind_of(a), Zygotes::kind_of(b));  // code and plain variables are the member's own
    auto c = member("pass", {"FOO=1", "PYTHONHASHSEED=1"});
    EXPECT_NE(Zygotes::kind_of(a), Zygotes::kind_of(c));
    auto d = member("pass", {"FOO=1", "PYTHONHASHSEED=0", "LANG=C.UTF-8"});
    EXPECT_NE(Zygotes::kind_of(a), Zygotes::kind_of(d));
}

class ZygoteTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        ASSERT_TRUE(fs::exists(fs::path(DRAGON_SOURCE_PYTHON) / "dragon" / "_zygote.py"));
    }
    void TearDown() override {
        z.stop();
        // Reap what is left (the zygotes end at the end of their sockets).
        for (int i = 0; i < 200; ++i) {
            int st = 0;
            pid_t p = ::waitpid(-1, &st, WNOHANG);
            if (p < 0) break;
            if (p == 0) std::this_thread::sleep_for(10ms);
        }
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    }

    /// Asks until a zygote forks the member (the first asks are exec's job).
    Result<pid_t> forked(const rt::ChildSpec& cs) {
        for (int i = 0; i < 600; ++i) {
            if (auto r = z.spawn(cs)) return std::move(*r);
            reap_strays();
            std::this_thread::sleep_for(50ms);
        }
        return Error(Errc::timeout, "no zygote became ready in 30 s");
    }
    void reap_strays() {
        int st = 0;
        for (pid_t p; (p = ::waitpid(-1, &st, WNOHANG)) > 0;) (void)z.reaped(p, st);
    }
    int wait_exit(pid_t pid) {
        // Ours once the zygote's middle process has exited (the zygote answers
        // before that): the member is reparented to us, the subreaper.
        int st = 0;
        for (int i = 0; i < 500; ++i) {
            pid_t r = ::waitpid(pid, &st, 0);
            if (r == pid) return st;
            if (r < 0 && errno != ECHILD) break;
            std::this_thread::sleep_for(10ms);
        }
        ADD_FAILURE() << "member " << pid << " never became our child";
        return st;
    }

    Zygotes z{ZygoteOptions{{"PATH=/usr/bin:/bin"}, true, std::chrono::milliseconds(30000), 2, 3}};
};

TEST_F(ZygoteTest, ForksMemberWithItsEnvironmentDirectoryAndStdio) {
    auto dir = fs::temp_directory_path() / fmt::format("zygote_test_{}", ::getpid());
    fs::create_directories(dir);
    auto out = dir / "out.txt";
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    auto cs = member(
        "import os,sys;print(os.environ['MARK'], os.getcwd(), os.getppid()==int(os.environ['ME']), sys.argv, "
        "sorted(os.listdir('/proc/self/fd')));sys.exit(7)",
        {"MARK=hello", fmt::format("ME={}", ::getpid())});
    cs.cwd = dir.string();
    cs.stdout_fd = fd;
    auto pid = forked(cs);
    ::close(fd);
    ASSERT_TRUE(pid) << pid.error().message();
    int st = wait_exit(*pid);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 7);
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    // Only stdio is open in the member (listdir's own descriptor aside).
    EXPECT_EQ(ss.str(), fmt::format("hello {} True ['-c'] ['0', '1', '2', '3']\n", dir.string()));
    EXPECT_EQ(z.forked(), 1U);
    fs::remove_all(dir);
}

TEST_F(ZygoteTest, BadDirectoryIsTheStartErrorExecGives) {
    auto cs = member("pass");
    ASSERT_TRUE(forked(cs));  // warm
    cs.cwd = "/nonexistent/dir";
    auto r = z.spawn(cs);
    ASSERT_TRUE(r.has_value());
    ASSERT_FALSE(*r);
    EXPECT_EQ(r->error().sys_errno(), ENOENT);
    EXPECT_NE(r->error().message().find("cannot change directory to /nonexistent/dir"), std::string::npos)
        << r->error().message();
    EXPECT_EQ(z.count(), 1U);  // the zygote goes on
}

TEST_F(ZygoteTest, SignalEndsMemberAndDeadZygoteIsReplaced) {
    auto cs = member("import time;time.sleep(60)");
    auto pid = forked(cs);
    ASSERT_TRUE(pid) << pid.error().message();
    ASSERT_EQ(::kill(*pid, SIGTERM), 0);
    int st = wait_exit(*pid);
    ASSERT_TRUE(WIFSIGNALED(st));
    EXPECT_EQ(WTERMSIG(st), SIGTERM);
    // Kill the zygote: reaped() knows it, the next ask execs and starts another.
    ASSERT_EQ(z.count(), 1U);
    bool seen = false;
    for (int i = 0; i < 10 && !seen; ++i) {
        for (const auto& e : fs::directory_iterator("/proc")) {
            auto name = e.path().filename().string();
            if (name.find_first_not_of("0123456789") != std::string::npos) continue;
            std::ifstream c(e.path() / "cmdline");
            std::string cmd((std::istreambuf_iterator<char>(c)), {});
            std::ifstream s(e.path() / "stat");
            std::string stat((std::istreambuf_iterator<char>(s)), {});
            auto rp = stat.rfind(')');
            if (cmd.find("dragon._zygote import main") == std::string::npos || rp == std::string::npos) continue;
            std::istringstream rest(stat.substr(rp + 2));
            std::string state;
            pid_t ppid = 0;
            rest >> state >> ppid;
            if (ppid != ::getpid()) continue;
            ::kill(std::stoi(name), SIGKILL);
            int zst = 0;
            ASSERT_EQ(::waitpid(std::stoi(name), &zst, 0), std::stoi(name));
            EXPECT_TRUE(z.reaped(std::stoi(name), zst));
            seen = true;
        }
    }
    ASSERT_TRUE(seen);
    EXPECT_EQ(z.count(), 0U);
    auto again = forked(member("pass"));
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(WEXITSTATUS(wait_exit(*again)), 0);
}

TEST_F(ZygoteTest, FirstMemberWaitsForTheStartingZygote) {
    // A group's first member starts the zygote and waits for its imports:
    // it is forked, not exec'd (nor are the members after it).
    auto first = z.spawn(member("pass"));
    ASSERT_TRUE(first.has_value());
    ASSERT_TRUE(*first) << first->error().message();
    EXPECT_EQ(WEXITSTATUS(wait_exit(**first)), 0);
    EXPECT_EQ(z.forked(), 1U);
}

TEST_F(ZygoteTest, NoWaitMeansExecUntilReady) {
    Zygotes eager{ZygoteOptions{{}, true, std::chrono::milliseconds(30000), 2, 3, std::chrono::milliseconds(0)}};
    EXPECT_FALSE(eager.spawn(member("pass")).has_value());  // starting: exec this one
    EXPECT_EQ(eager.count(), 1U);
    eager.stop();
}

TEST_F(ZygoteTest, DisabledNeverForks) {
    Zygotes off{ZygoteOptions{{}, false, std::chrono::milliseconds(1000), 2, 3}};
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(off.spawn(member("pass")).has_value());
    EXPECT_EQ(off.count(), 0U);
}

}  // namespace
}  // namespace dragon::agent
