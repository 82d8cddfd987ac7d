// spawn_child, resolve_program and merge_env against the real OS.
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <string>

#include "runtime/spawn.hpp"

namespace dragon::rt {
namespace {

int wait_exit(pid_t pid) {
    int st = 0;
    EXPECT_EQ(::waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(Spawn, RunsAProgramWithArgsEnvAndCwd) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ChildSpec spec{"/bin/sh", {"sh", "-c", "echo $X; pwd"}, {"X=42"}, "/tmp", -1, w.get(), -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid) << pid.error().message();
    w.reset();
    char buf[64] = {};
    std::string got;
    for (ssize_t n; (n = ::read(r.get(), buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
    EXPECT_EQ(got, "42\n/tmp\n");
    EXPECT_EQ(wait_exit(*pid), 0);
}

TEST(Spawn, ChildIsItsOwnProcessGroup) {
    ChildSpec spec{"/bin/sleep", {"sleep", "5"}, {}, "", -1, -1, -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid);
    EXPECT_EQ(::getpgid(*pid), *pid);
    ::kill(-*pid, SIGTERM);
    EXPECT_EQ(wait_exit(*pid), 128 + SIGTERM);
}

TEST(Spawn, BadWorkingDirectoryIsANamedError) {
    ChildSpec spec{"/bin/true", {"true"}, {}, "/nonexistent/dir", -1, -1, -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_FALSE(pid);
    EXPECT_EQ(pid.error().code(), Errc::not_found);
    EXPECT_EQ(pid.error().message(), "cannot change directory to /nonexistent/dir: No such file or directory");
}

// A file without execute permission, removed at the end of the test.
struct PlainFile {
    std::string path = "/tmp/dragon-spawn-test-" + std::to_string(::getpid());
    PlainFile() {
        FILE* f = std::fopen(path.c_str(), "w");
        std::fputs("not a program\n", f);
        std::fclose(f);
        ::chmod(path.c_str(), 0644);
    }
    ~PlainFile() { ::unlink(path.c_str()); }
};

TEST(Spawn, ExecFailureIsAnErrorNotExitCode127) {
    PlainFile plain;
    ChildSpec spec{plain.path, {"plain"}, {}, "", -1, -1, -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_FALSE(pid);
    EXPECT_EQ(pid.error().sys_errno(), EACCES);
    EXPECT_NE(pid.error().message().find("cannot execute " + plain.path), std::string::npos);
    int st = 0;
    EXPECT_EQ(::waitpid(-1, &st, WNOHANG), -1);  // the failed child was reaped already
}

TEST(Spawn, SignalsAreDefaultInTheChildEvenIfIgnoredHere) {
    ::signal(SIGPIPE, SIG_IGN);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ChildSpec spec{"/bin/sh", {"sh", "-c", "grep SigIgn /proc/self/status"}, {}, "", -1, w.get(), -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid);
    w.reset();
    char buf[128] = {};
    ASSERT_GT(::read(r.get(), buf, sizeof buf - 1), 0);
    EXPECT_STREQ(buf, "SigIgn:\t0000000000000000\n");
    EXPECT_EQ(wait_exit(*pid), 0);
    ::signal(SIGPIPE, SIG_DFL);
}

TEST(Spawn, BindsTheChildToTheGivenCpus) {
    cpu_set_t mine;
    ASSERT_EQ(::sched_getaffinity(0, sizeof mine, &mine), 0);
    unsigned last = 0;
    for (unsigned c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &mine)) last = c;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ChildSpec spec{"/bin/grep", {"grep", "Cpus_allowed_list", "/proc/self/status"}, {}, "", -1, w.get(), -1, {last}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid) << pid.error().message();
    w.reset();
    char buf[128] = {};
    ASSERT_GT(::read(r.get(), buf, sizeof buf - 1), 0);
    EXPECT_EQ(std::string(buf), "Cpus_allowed_list:\t" + std::to_string(last) + "\n");
    EXPECT_EQ(wait_exit(*pid), 0);
}

TEST(Spawn, BindingToACpuOutsideTheAllowedSetIsANamedError) {
    ChildSpec spec{"/bin/true", {"true"}, {}, "", -1, -1, -1, {4000}};
    auto pid = spawn_child(spec);
    ASSERT_FALSE(pid);
    EXPECT_NE(pid.error().message().find("binding /bin/true to cpus 4000"), std::string::npos) << pid.error().message();
}

TEST(Spawn, TheChildGetsOnlyItsThreeStdioFds) {
    int leaky = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC: would be inherited by a plain fork+exec
    ASSERT_GE(leaky, 0);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    // ls lists the fds of the directory stream it opens too (3 here).
    ChildSpec spec{"/bin/ls", {"ls", "/proc/self/fd"}, {}, "", -1, w.get(), -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid) << pid.error().message();
    w.reset();
    std::string got;
    char buf[256];
    for (ssize_t n; (n = ::read(r.get(), buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
    EXPECT_EQ(got, "0\n1\n2\n3\n");
    EXPECT_EQ(wait_exit(*pid), 0);
    ::close(leaky);
}

TEST(Spawn, ThousandsOfOpenFdsStayOutOfTheChild) {
    // Thousands of open fds (as an agent with thousands of members has):
    // spawning must still work, and the child must not see them. (The cost is
    // measured by bench/launch.py, not here.)
    std::vector<sys::UniqueFd> held;
    for (int i = 0; i < 3000; ++i) held.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ChildSpec spec{"/bin/sh", {"sh", "-c", "ls /proc/$$/fd | wc -l"}, {}, "", -1, w.get(), -1, {}};
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid) << pid.error().message();
    w.reset();
    char buf[64] = {};
    ASSERT_GT(::read(r.get(), buf, sizeof buf - 1), 0);
    EXPECT_LE(std::atoi(buf), 4);  // sh's 0, 1, 2 (and one of its own at most)
    EXPECT_EQ(wait_exit(*pid), 0);
}

TEST(ResolveProgram, SearchesPathLikeExecvp) {
    auto p = resolve_program("sh", "/nonexistent:/bin");
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, "/bin/sh");
    auto missing = resolve_program("no-such-prog", "/bin:/usr/bin");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().message(), "program 'no-such-prog' not found in PATH");
    auto dir = resolve_program("/tmp", "");
    ASSERT_FALSE(dir);
    EXPECT_EQ(dir.error().code(), Errc::permission_denied);
    PlainFile plain;
    auto notexec = resolve_program(plain.path, "");
    ASSERT_FALSE(notexec);
    EXPECT_EQ(notexec.error().message(), plain.path + " is not executable");
}

TEST(MergeEnv, LaterEntriesReplaceEarlierOnes) {
    auto env = merge_env({"A=1", "AB=2", "C=3"}, {"A=9", "D=4"});
    EXPECT_EQ(env, (std::vector<std::string>{"A=9", "AB=2", "C=3", "D=4"}));
}

}  // namespace
}  // namespace dragon::rt
