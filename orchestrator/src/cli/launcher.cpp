// Launch back ends: `local` (one agent, a child of the front end) and
// `virtual` (N agents on this machine, each on its own loopback address,
// its own node id and shared memory, linked only by the transport).
#include "launcher.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <poll.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include "../agent/agent_main.hpp"
#include "../runtime/rendezvous.hpp"
#include "../runtime/spawn.hpp"
#include "dragon/common/hostlist.hpp"
#include "dragon/transport/tcp.hpp"

extern char** environ;

namespace dragon::cli {

namespace {

constexpr int kControlFd = 3;  // where an agent finds its control socket
constexpr int kListenFd = 4;   // and its listening socket

/// A spawned launcher child in its own process group, with no signal blocked
/// and the signals the front end handles back at their defaults.
void own_group_default_signals(posix_spawnattr_t& attr) {
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGTTIN, SIGTTOU}) sigaddset(&defaults, s);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
}

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
    own_group_default_signals(attr);

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
    if (!opts.cpus.empty()) args.insert(args.end(), {"--cpus", fmt::format("{}", fmt::join(opts.cpus, ","))});
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
    VirtualLauncher(std::string agent_path, std::vector<std::string> addresses, bool split_cpus)
        : agent_path_(std::move(agent_path)), addresses_(std::move(addresses)), split_cpus_(split_cpus) {}
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
        std::vector<std::vector<int>> shares(n);
        if (split_cpus_) shares = DRAGON_TRY(split_cpus(n));
        int sv[2];
        DRAGON_CHECK(sys::call("socketpair", [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); }));
        sys::UniqueFd mine(sv[0]), theirs(sv[1]);
        std::vector<AgentHandle> out;
        for (std::uint32_t k = 0; k < n; ++k) {
            agent::AgentOptions o{run};
            o.node_id = k;
            o.cpus = shares[k];
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
    /// Node k's cpus: the ones this process may use, dealt out round-robin.
    static Result<std::vector<std::vector<int>>> split_cpus(std::uint32_t n) {
        cpu_set_t set;
        CPU_ZERO(&set);
        DRAGON_CHECK(sys::call("sched_getaffinity", [&] { return ::sched_getaffinity(0, sizeof set, &set); }));
        std::vector<int> mine;
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(static_cast<std::size_t>(c), &set)) mine.push_back(c);
        std::vector<std::vector<int>> shares(n);
        const std::size_t rounds = std::max<std::size_t>(mine.size(), n);
        for (std::size_t i = 0; i < rounds; ++i) {
            auto& s = shares[i % n];
            const int c = mine[i % mine.size()];
            if (std::find(s.begin(), s.end(), c) == s.end()) s.push_back(c);
        }
        return shares;
    }

    std::string agent_path_;
    std::vector<std::string> addresses_;
    bool split_cpus_ = false;
};

/// The first executable `name` on PATH, or empty.
std::string find_in_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    if (path == nullptr) return {};
    std::string_view rest(path);
    while (!rest.empty()) {
        const auto colon = rest.find(':');
        std::string dir(rest.substr(0, colon));
        rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
        if (dir.empty()) dir = ".";
        std::string full = dir + "/" + name;
        if (::access(full.c_str(), X_OK) == 0) return full;
    }
    return {};
}

std::uint16_t port_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

constexpr auto kSlurmCheckinTimeout = std::chrono::seconds(60);
constexpr auto kSlurmHandshakeTimeout = std::chrono::seconds(5);

/// One agent per node of the Slurm allocation, all started by one srun. The
/// agents check in with the front end over TCP (rt::rendezvous_with_frontend):
/// node 0's connection becomes its control connection, the others learn
/// where node 0 listens and link up with it as in any multi-node run.
class SlurmLauncher final : public Launcher {
public:
    explicit SlurmLauncher(LaunchOptions o) : o_(std::move(o)) {}
    [[nodiscard]] std::string_view name() const override { return "slurm"; }

    Result<std::vector<AgentHandle>> launch(const RunId& run, const Config& config) override {
        const char* nn = std::getenv("SLURM_JOB_NUM_NODES");
        if (nn == nullptr) nn = std::getenv("SLURM_NNODES");
        if (nn == nullptr || std::getenv("SLURM_JOB_ID") == nullptr)
            return Error(Errc::invalid_argument,
                         "--launcher slurm: not inside a Slurm allocation (SLURM_JOB_ID and SLURM_JOB_NUM_NODES are "
                         "not set); run under salloc or sbatch, or use --launcher local");
        const auto alloc = static_cast<std::uint32_t>(std::strtoul(nn, nullptr, 10));
        std::vector<std::string> names;
        if (const char* nl = std::getenv("SLURM_JOB_NODELIST"); nl != nullptr && *nl != '\0') {
            auto e = expand_hostlist(nl);
            if (!e) return std::move(e).error().context("SLURM_JOB_NODELIST");
            names = std::move(*e);
        }
        const std::uint32_t n = o_.nodes != 0 ? o_.nodes : alloc;
        if (alloc == 0 || n > alloc)
            return make_error(Errc::invalid_argument, "--nodes {}: the allocation (job {}) has {} nodes", n,
                              std::getenv("SLURM_JOB_ID"), alloc);
        auto name_of = [&](std::uint32_t k) { return k < names.size() ? names[k] : fmt::format("node {}", k); };

        const std::string srun = find_in_path("srun");
        if (srun.empty()) return Error(Errc::not_found, "--launcher slurm: srun is not on PATH");
        std::string agent = o_.agent_path;
        if (agent.empty()) {
            // The dragon-agent installed next to this program.
            std::string self(4096, '\0');
            const ssize_t len = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
            if (len <= 0) return sys::error_from_errno("finding dragon-agent next to /proc/self/exe");
            self.resize(static_cast<std::size_t>(len));
            agent = self.substr(0, self.rfind('/') + 1) + "dragon-agent";
        }
        if (::access(agent.c_str(), X_OK) != 0)
            return make_error(Errc::not_found, "--launcher slurm: the agent program {} is not there (set DRAGON_AGENT)",
                              agent);

        auto secret = DRAGON_TRY(transport::RunSecret::generate());
        const std::string address = o_.control_address.empty() ? rt::own_address() : o_.control_address;
        auto listener = transport::tcp::bind_listening_socket(address, 0);
        if (!listener) return std::move(listener).error().context("the front end's rendezvous port");
        const std::uint16_t port = port_of(listener->get());

        std::vector<std::string> args = {srun,
                                         fmt::format("--nodes={}", n),
                                         fmt::format("--ntasks={}", n),
                                         "--ntasks-per-node=1",
                                         "--cpu-bind=none",
                                         "--unbuffered",
                                         "--kill-on-bad-exit=1",
                                         "--job-name=dragon-agents"};
        args.insert(args.end(), o_.srun_args.begin(), o_.srun_args.end());
        args.insert(args.end(), {agent, "--run-id", run.str(), "--nnodes", std::to_string(n), "--slurm",
                                 "--rendezvous", fmt::format("{}:{}", address, port)});
        std::vector<std::string> env;
        for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
        env = rt::merge_env(std::move(env), config.to_env());
        env = rt::merge_env(std::move(env), {fmt::format("{}={}", transport::kSecretHexEnv, secret.to_hex())});
        const pid_t pid = DRAGON_TRY(spawn_srun(args, env));
        spdlog::info("srun (pid {}) starts {} agents; they check in at {}:{}", pid, n, address, port);

        auto fail = [&](Error e) -> Error {
            // SIGTERM first: srun passes it on to the step's tasks; a killed srun could not.
            ::kill(pid, SIGTERM);
            int st = 0;
            for (int i = 0; i < 200 && ::waitpid(pid, &st, WNOHANG) == 0; ++i) ::usleep(10'000);
            if (::waitpid(pid, &st, WNOHANG) == 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &st, 0);
            }
            return e;
        };
        // Check-ins, in any order, until every node has come or the deadline.
        const auto deadline = std::chrono::steady_clock::now() + kSlurmCheckinTimeout;
        std::vector<sys::UniqueFd> waiting;  // nodes k > 0 that came before node 0
        std::vector<bool> came(n, false);
        std::uint32_t count = 0;
        std::optional<msg::HeadAddress> head;
        sys::UniqueFd control;
        while (count < n) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                auto s = msg::ExitStatus::from_wait_status(status);
                std::string missing;
                for (std::uint32_t k = 0; k < n; ++k)
                    if (!came[k]) missing += fmt::format("{}{} ({})", missing.empty() ? "" : ", ", k, name_of(k));
                return make_error(Errc::closed,
                                  "srun ended ({}) before the agents of node {} checked in; srun's messages are above",
                                  s.signal != 0 ? fmt::format("signal {}", s.signal) : fmt::format("code {}", s.exit_code),
                                  missing);
            }
            if (std::chrono::steady_clock::now() >= deadline) {
                std::string missing;
                for (std::uint32_t k = 0; k < n; ++k)
                    if (!came[k]) missing += fmt::format("{}{} ({})", missing.empty() ? "" : ", ", k, name_of(k));
                return fail(make_error(Errc::timeout, "the agents of node {} did not check in within {} s", missing,
                                       std::chrono::duration_cast<std::chrono::seconds>(kSlurmCheckinTimeout).count()));
            }
            pollfd p{listener->get(), POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            sys::UniqueFd c(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!c) continue;
            auto hs = transport::Handshake::acceptor(secret, rt::kFrontEndNodeId);
            if (!hs) return fail(std::move(hs).error());
            const auto until = std::min(deadline, std::chrono::steady_clock::now() + kSlurmHandshakeTimeout);
            if (auto st = rt::run_handshake(c.get(), *hs, until, "a connecting agent"); !st) {
                spdlog::warn("rendezvous: dropped a connection that did not authenticate: {}", st.error().message());
                continue;
            }
            auto f = rt::read_frame(c.get(), 4096, until, fmt::format("the agent of node {}", *hs->peer_node_id()));
            auto in = f ? msg::decode_as<msg::AgentCheckin>(*f) : Result<msg::AgentCheckin>(std::move(f).error());
            if (!in || in->version != msg::kProtocolVersion || in->node_id >= n || came[in->node_id] ||
                in->node_id != hs->peer_node_id()) {
                spdlog::warn("rendezvous: dropped a bad check-in: {}", in ? "wrong node id or version" : in.error().message());
                continue;
            }
            came[in->node_id] = true;
            ++count;
            spdlog::info("node {} ({}) checked in: host {}, agent pid {}, listening on {}:{}", in->node_id,
                         in->node_name, in->hostname, in->pid, in->address, in->port);
            if (in->node_id == 0) {
                head = msg::HeadAddress{in->address, in->port};
                control = std::move(c);
                for (auto& w : waiting) (void)rt::write_all(w.get(), wire::frame_of(*head), until);
                waiting.clear();
            } else if (head) {
                (void)rt::write_all(c.get(), wire::frame_of(*head), until);
            } else {
                waiting.push_back(std::move(c));
            }
        }
        // Blocking from here, as the local launcher's socketpair is.
        ::fcntl(control.get(), F_SETFL, ::fcntl(control.get(), F_GETFL) & ~O_NONBLOCK);
        std::vector<AgentHandle> out;
        out.push_back({0, pid, std::move(control), std::chrono::milliseconds(15000)});
        return out;
    }

private:
    /// srun in its own process group (a terminal's Ctrl-C reaches the front
    /// end only, which tears the run down in order), stdin from /dev/null;
    /// its stdout and stderr (and the agents') are ours.
    static Result<pid_t> spawn_srun(const std::vector<std::string>& args, std::vector<std::string> env) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        own_group_default_signals(attr);
        std::vector<char*> argv, envp;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        for (auto& e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        pid_t pid = 0;
        const int rc = ::posix_spawn(&pid, args[0].c_str(), &fa, &attr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (rc != 0) return sys::error_from_errno("starting " + args[0], rc);
        return pid;
    }

    LaunchOptions o_;
};

}  // namespace

std::string default_launcher_name() {
    if (std::getenv("SLURM_JOB_ID") != nullptr && !find_in_path("srun").empty()) return "slurm";
    return "local";
}

Result<std::unique_ptr<Launcher>> make_launcher(const LaunchOptions& opts) {
    LaunchOptions o = opts;
    if (o.name.empty()) o.name = default_launcher_name();
    if (o.split_cpus && o.name != "virtual")
        return Error(Errc::invalid_argument, "--split-cpus is for --launcher virtual (real nodes have their own cpus)");
    if (o.name == "slurm") {
        if (!o.hosts.empty()) return Error(Errc::invalid_argument, "--hosts is for --launcher virtual (Slurm names the nodes)");
        return std::unique_ptr<Launcher>(std::make_unique<SlurmLauncher>(std::move(o)));
    }
    if (!o.srun_args.empty() || !o.control_address.empty())
        return Error(Errc::invalid_argument, "--srun-args and --control-address are for --launcher slurm");
    if (o.nodes == 0) o.nodes = 1;
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
        return std::unique_ptr<Launcher>(
            std::make_unique<VirtualLauncher>(o.agent_path, std::move(addresses), o.split_cpus));
    }
    return make_error(Errc::invalid_argument, "unknown launcher '{}' (available: local, virtual, slurm)", o.name);
}

std::string default_agent_path() {
    if (const char* p = std::getenv("DRAGON_AGENT"); p != nullptr && *p != '\0') return p;
    return {};
}

}  // namespace dragon::cli
