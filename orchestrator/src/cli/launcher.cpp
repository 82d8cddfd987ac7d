// The local launch back end: one agent, a child of the front end, connected
// by a socketpair.
#include "launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "../agent/agent.hpp"
#include "../runtime/spawn.hpp"

extern char** environ;

namespace dragon::cli {

namespace {

class LocalLauncher final : public Launcher {
public:
    /// With an agent path, the agent is that program (exec'd); without, the
    /// agent runs in a forked child of the front end, saving an exec on the
    /// start-up path of every run.
    explicit LocalLauncher(std::string agent_path) : agent_path_(std::move(agent_path)) {}
    [[nodiscard]] std::string_view name() const override { return "local"; }

    Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) override {
        int sv[2];
        DRAGON_CHECK(sys::call("socketpair", [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); }));
        sys::UniqueFd mine(sv[0]), theirs(sv[1]);
        if (agent_path_.empty()) return fork_agent(run, config, std::move(mine), std::move(theirs));

        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, theirs.get(), 3);  // dup2 clears CLOEXEC on fd 3
        // Its own process group: a terminal's Ctrl-C reaches the front end only,
        // which then drives an orderly teardown.
        sigset_t none, defaults;
        sigemptyset(&none);
        sigemptyset(&defaults);
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGTTIN, SIGTTOU}) sigaddset(&defaults, s);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

        std::vector<std::string> env_final;
        for (char** e = environ; *e != nullptr; ++e) env_final.emplace_back(*e);
        env_final = rt::merge_env(std::move(env_final), config.to_env());  // the resolved config wins
        std::vector<char*> envp;
        for (auto& e : env_final) envp.push_back(e.data());
        envp.push_back(nullptr);
        std::vector<std::string> args = {agent_path_, "--run-id", run.str(), "--node-id", "0", "--control-fd", "3"};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);

        pid_t pid = 0;
        int rc = ::posix_spawn(&pid, agent_path_.c_str(), &fa, &attr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (rc != 0) return sys::error_from_errno(fmt::format("starting the agent {}", agent_path_), rc);
        std::vector<AgentHandle> out;
        out.push_back({0, pid, std::move(mine)});
        return out;
    }

private:
    // Called before the front end has an event loop or signal handlers, so
    // the child starts from a plain process; it never returns into the
    // front end's stack (it _exits), so no front-end destructor runs twice.
    static Result<std::vector<AgentHandle>> fork_agent(const RunId& run, const Config& config, sys::UniqueFd mine,
                                                       sys::UniqueFd theirs) {
        const pid_t pid = ::fork();
        if (pid < 0) return sys::error_from_errno("forking the agent");
        if (pid == 0) {
            mine.reset();  // else the agent would never see the front end go away
            ::setpgid(0, 0);  // a terminal's Ctrl-C reaches the front end only
            for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGTTIN, SIGTTOU}) ::signal(s, SIG_DFL);
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            ::prctl(PR_SET_NAME, "dragon-agent");
            if (int null = ::open("/dev/null", O_RDONLY); null >= 0) {
                ::dup2(null, 0);
                if (null != 0) ::close(null);
            }
            for (const auto& kv : config.to_env()) ::putenv(::strdup(kv.c_str()));  // processes inherit the config
            ::_exit(agent::agent_main({run, 0, theirs.release(), config}));
        }
        std::vector<AgentHandle> out;
        out.push_back({0, pid, std::move(mine)});
        return out;
    }

    std::string agent_path_;
};

}  // namespace

Result<std::unique_ptr<Launcher>> make_launcher(std::string_view name, std::string agent_path) {
    if (name == "local") return std::unique_ptr<Launcher>(std::make_unique<LocalLauncher>(std::move(agent_path)));
    return make_error(Errc::invalid_argument, "unknown launcher '{}' (available: local)", name);
}

std::string default_agent_path() {
    if (const char* p = std::getenv("DRAGON_AGENT"); p != nullptr && *p != '\0') return p;
    return {};
}

}  // namespace dragon::cli
