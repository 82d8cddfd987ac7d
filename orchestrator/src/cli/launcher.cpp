// Launch back ends: `local` (one agent, a child of the front end) and
// `virtual` (N agents on this machine, each on its own loopback address,
// its own node id and shared memory, linked only by the transport).
#include "launcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "../agent/agent.hpp"
#include "../runtime/spawn.hpp"
#include "dragon/transport/tcp.hpp"

extern char** environ;

namespace dragon::cli {

namespace {

constexpr int kControlFd = 3;  // where an agent finds its control socket
constexpr int kListenFd = 4;   // and its listening socket

/// Starts one agent: exec'd from `agent_path`, or (empty path) forked from
/// this process, saving an exec on the start-up path. `control` and
/// `listen` become fds 3 and 4 of the agent; nothing else of ours stays
/// open in it. Called before the front end has an event loop or signal
/// handlers, so a forked agent starts from a plain process; it never
/// returns into the front end's stack (it _exits).
Result<pid_t> start_agent(const std::string& agent_path, agent::AgentOptions opts, sys::UniqueFd control,
                          sys::UniqueFd listen) {
    if (agent_path.empty()) {
        const pid_t pid = ::fork();
        if (pid < 0) return sys::error_from_errno("forking an agent");
        if (pid > 0) return pid;
        // The front end's log files close now, not later over fds reused below.
        spdlog::shutdown();
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
        // Only our own fds: another agent's control end or listener held
        // here would hide that agent's death from its peers.
        // Out of the way first: either may sit on the other's target number.
        const int c = control ? ::fcntl(control.get(), F_DUPFD, kListenFd + 1) : -1;
        const int l = listen ? ::fcntl(listen.get(), F_DUPFD, kListenFd + 1) : -1;
        if (c >= 0) ::dup2(c, kControlFd);
        else ::close(kControlFd);
        if (l >= 0) ::dup2(l, kListenFd);
        else ::close(kListenFd);
        ::close_range(kListenFd + 1, ~0U, 0);
        opts.control_fd = opts.node_id == 0 ? kControlFd : -1;
        opts.listen_fd = opts.nnodes > 1 ? kListenFd : -1;
        for (const auto& kv : opts.config.to_env()) ::putenv(::strdup(kv.c_str()));  // processes inherit the config
        ::_exit(agent::agent_main(std::move(opts)));
    }

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    // dup2 clears close-on-exec on the target; everything else of ours is
    // close-on-exec. Copies above 4 first: either fd may sit on the other's
    // target number (a listener bound first is often fd 3).
    sys::UniqueFd c_high, l_high;
    if (control) c_high = sys::UniqueFd(::fcntl(control.get(), F_DUPFD_CLOEXEC, kListenFd + 1));
    if (listen) l_high = sys::UniqueFd(::fcntl(listen.get(), F_DUPFD_CLOEXEC, kListenFd + 1));
    if ((control && !c_high) || (listen && !l_high)) return sys::error_from_errno("copying an agent's fds");
    if (c_high) posix_spawn_file_actions_adddup2(&fa, c_high.get(), kControlFd);
    if (l_high) posix_spawn_file_actions_adddup2(&fa, l_high.get(), kListenFd);
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
    env_final = rt::merge_env(std::move(env_final), opts.config.to_env());  // the resolved config wins
    if (opts.secret) env_final = rt::merge_env(std::move(env_final), {fmt::format("{}={}", transport::kSecretHexEnv, opts.secret->to_hex())});
    std::vector<char*> envp;
    for (auto& e : env_final) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = {agent_path, "--run-id", opts.run.str(), "--node-id", std::to_string(opts.node_id),
                                     "--nnodes", std::to_string(opts.nnodes)};
    if (control) args.insert(args.end(), {"--control-fd", std::to_string(kControlFd)});
    if (listen) args.insert(args.end(), {"--listen-fd", std::to_string(kListenFd), "--address", opts.address});
    if (!opts.head_address.empty())
        args.insert(args.end(), {"--head", fmt::format("{}:{}", opts.head_address, opts.head_port)});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, agent_path.c_str(), &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return sys::error_from_errno(fmt::format("starting the agent {}", agent_path), rc);
    return pid;
}

class LocalLauncher final : public Launcher {
public:
    explicit LocalLauncher(std::string agent_path) : agent_path_(std::move(agent_path)) {}
    [[nodiscard]] std::string_view name() const override { return "local"; }

    Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) override {
        int sv[2];
        DRAGON_CHECK(sys::call("socketpair", [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); }));
        sys::UniqueFd mine(sv[0]), theirs(sv[1]);
        agent::AgentOptions o{run};
        o.config = config;
        const pid_t pid = DRAGON_TRY(start_agent(agent_path_, std::move(o), std::move(theirs), {}));
        std::vector<AgentHandle> out;
        out.push_back({0, pid, std::move(mine)});
        return out;
    }

private:
    std::string agent_path_;
};

class VirtualLauncher final : public Launcher {
public:
    VirtualLauncher(std::string agent_path, std::vector<std::string> addresses)
        : agent_path_(std::move(agent_path)), addresses_(std::move(addresses)) {}
    [[nodiscard]] std::string_view name() const override { return "virtual"; }

    Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) override {
        const auto n = static_cast<std::uint32_t>(addresses_.size());
        auto secret = DRAGON_TRY(transport::RunSecret::generate());
        // Every listener is bound before any agent starts: the ports are
        // known up front and no agent dials a port nobody listens on yet.
        std::vector<sys::UniqueFd> listeners;
        std::uint16_t head_port = 0;
        for (std::uint32_t k = 0; k < n; ++k) {
            auto fd = transport::tcp::bind_listening_socket(addresses_[k], 0);
            if (!fd) return std::move(fd).error().context(fmt::format("node {}", k));
            if (k == 0) {
                sockaddr_storage ss{};
                socklen_t len = sizeof ss;
                DRAGON_CHECK(sys::call("getsockname", [&] {
                    return ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len);
                }));
                head_port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
            }
            listeners.push_back(std::move(*fd));
        }
        int sv[2];
        DRAGON_CHECK(sys::call("socketpair", [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); }));
        sys::UniqueFd mine(sv[0]), theirs(sv[1]);
        std::vector<AgentHandle> out;
        for (std::uint32_t k = 0; k < n; ++k) {
            agent::AgentOptions o{run};
            o.node_id = k;
            o.config = config;
            o.nnodes = n;
            o.address = addresses_[k];
            o.secret = secret;
            if (k > 0) {
                o.head_address = addresses_[0];
                o.head_port = head_port;
            }
            auto pid = start_agent(agent_path_, std::move(o), k == 0 ? std::move(theirs) : sys::UniqueFd{},
                                   std::move(listeners[k]));
            if (!pid) {
                for (auto& h : out) ::kill(h.pid, SIGKILL);  // its peers would wait for it in vain
                return std::move(pid).error().context(fmt::format("node {}", k));
            }
            out.push_back({k, *pid, k == 0 ? std::move(mine) : sys::UniqueFd{}});
        }
        return out;
    }

private:
    std::string agent_path_;
    std::vector<std::string> addresses_;
};

}  // namespace

Result<std::unique_ptr<Launcher>> make_launcher(const LaunchOptions& o) {
    if (o.name == "local") {
        if (o.nodes != 1 || !o.hosts.empty())
            return Error(Errc::invalid_argument, "the local launcher runs one node: use --launcher virtual for more");
        return std::unique_ptr<Launcher>(std::make_unique<LocalLauncher>(o.agent_path));
    }
    if (o.name == "virtual") {
        std::vector<std::string> addresses = o.hosts;
        if (addresses.empty()) {
            if (o.nodes < 1 || o.nodes > 250)
                return make_error(Errc::invalid_argument, "--nodes {}: the virtual launcher runs 1 to 250 nodes", o.nodes);
            for (std::uint32_t k = 0; k < o.nodes; ++k) addresses.push_back(fmt::format("127.0.0.{}", k + 2));
        } else if (o.nodes != 1 && o.nodes != addresses.size()) {
            return make_error(Errc::invalid_argument, "--nodes {} but --hosts names {} addresses", o.nodes,
                              addresses.size());
        }
        for (const auto& a : addresses) {
            if (!a.starts_with("127."))
                return make_error(Errc::invalid_argument,
                                  "--hosts: '{}' is not a loopback address (the virtual launcher runs every node here)", a);
        }
        return std::unique_ptr<Launcher>(std::make_unique<VirtualLauncher>(o.agent_path, std::move(addresses)));
    }
    return make_error(Errc::invalid_argument, "unknown launcher '{}' (available: local, virtual)", o.name);
}

std::string default_agent_path() {
    if (const char* p = std::getenv("DRAGON_AGENT"); p != nullptr && *p != '\0') return p;
    return {};
}

}  // namespace dragon::cli
