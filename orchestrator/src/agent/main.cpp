// dragon-agent: the per-node daemon. Started by dragon-orchestrate (or srun),
// never by hand; its arguments are internal and may change between versions.
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

#include <sys/socket.h>
#include <netinet/in.h>

#include "../runtime/rendezvous.hpp"
#include "agent_main.hpp"
#include "dragon/common/log.hpp"
#include "dragon/transport/tcp.hpp"

int main(int argc, char** argv) {
    CLI::App app{"dragon-agent: the Dragon node agent (started by dragon-orchestrate)"};
    std::string run_id, head, address, rendezvous;
    bool slurm = false;
    std::uint32_t node_id = 0, nnodes = 1;
    int control_fd = -1, listen_fd = -1;
    app.add_option("--run-id", run_id, "the run this agent belongs to")->required();
    app.add_option("--node-id", node_id, "this node's id in the run");
    app.add_option("--control-fd", control_fd, "node 0: inherited stream socket to the front end");
    app.add_option("--nnodes", nnodes, "how many nodes the run has");
    app.add_option("--address", address, "several nodes: the address this agent listens on");
    app.add_option("--listen-fd", listen_fd, "several nodes: an inherited listening socket");
    app.add_option("--head", head, "node k > 0: ADDRESS:PORT where node 0 listens");
    app.add_option("--rendezvous", rendezvous, "batch launchers: ADDRESS:PORT of the front end to check in with");
    std::vector<int> cpus;
    app.add_option("--cpus", cpus, "run on these cpus only (the topology and every process placed here)")
        ->delimiter(',')
        ->check(CLI::Range(0, CPU_SETSIZE - 1))
        ->type_name("CPU,...");
    app.add_flag("--slurm", slurm, "started by srun: the node id is $SLURM_NODEID, the node name $SLURMD_NODENAME");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::fprintf(stderr, "dragon-agent: error: %s\n", e.what());
        return 2;
    }
    auto fail = [](const std::string& why) {
        std::fprintf(stderr, "dragon-agent: error: %s\n", why.c_str());
        return 2;
    };
    auto config = dragon::Config::from_env();
    if (!config) return fail(config.error().message());
    auto run = dragon::RunId::parse(run_id);
    if (!run) return fail(run.error().message());
    dragon::agent::AgentOptions opts{std::move(*run)};
    opts.node_id = node_id;
    opts.nnodes = nnodes;
    opts.control_fd = control_fd;
    opts.listen_fd = listen_fd;
    opts.address = address;
    opts.cpus = cpus;
    auto split_host_port = [](const std::string& s, std::string& host, std::uint16_t& port) {
        const auto colon = s.rfind(':');
        const long p = colon == std::string::npos ? -1 : std::strtol(s.c_str() + colon + 1, nullptr, 10);
        if (p <= 0 || p > 65535) return false;
        host = s.substr(0, colon);
        port = static_cast<std::uint16_t>(p);
        return true;
    };
    if (!head.empty() && !split_host_port(head, opts.head_address, opts.head_port))
        return fail("--head needs ADDRESS:PORT, not '" + head + "'");
    if (slurm) {
        const char* id = std::getenv("SLURM_NODEID");
        char* end = nullptr;
        const unsigned long v = id != nullptr ? std::strtoul(id, &end, 10) : 0;
        if (id == nullptr || *id == '\0' || *end != '\0' || v >= opts.nnodes)
            return fail(fmt::format("--slurm: SLURM_NODEID is '{}', not a node id below {}", id != nullptr ? id : "",
                                    opts.nnodes));
        opts.node_id = static_cast<std::uint32_t>(v);
        // Place on the cpus Slurm granted here, not on the whole machine.
        if (const char* c = std::getenv("SLURM_CPUS_ON_NODE")) opts.cpu_limit = static_cast<std::uint32_t>(std::strtoul(c, nullptr, 10));
    }
    if (opts.nnodes > 1 || !rendezvous.empty()) {
        auto secret = dragon::transport::RunSecret::from_env();
        if (!secret) return fail(secret.error().message());
        opts.secret = std::move(*secret);
        ::unsetenv(dragon::transport::kSecretHexEnv);  // not for the processes this agent starts
        ::unsetenv(dragon::transport::kSecretFileEnv);
    }
    if (!rendezvous.empty()) {
        // Started by a batch system: listen on this host's address, then check in with the front end.
        std::string fe_host;
        std::uint16_t fe_port = 0;
        if (!split_host_port(rendezvous, fe_host, fe_port)) return fail("--rendezvous needs ADDRESS:PORT");
        // Listen on the address this host reached the front end from (a host
        // name may resolve to a loopback address); DRAGON_AGENT_ADDRESS overrides.
        if (const char* a = std::getenv("DRAGON_AGENT_ADDRESS"); a != nullptr && *a != '\0') opts.address = a;
        auto listen = [&opts](const std::string& local) -> dragon::Result<std::pair<std::string, std::uint16_t>> {
            if (opts.address.empty()) opts.address = local;
            if (opts.nnodes == 1) return std::make_pair(opts.address, std::uint16_t{0});
            auto lfd = DRAGON_TRY(dragon::transport::tcp::bind_listening_socket(opts.address, 0));
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            ::getsockname(lfd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
            const auto port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                             : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
            opts.listen_fd = lfd.release();  // the other agents' links come to this listener
            return std::make_pair(opts.address, port);
        };
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        const char* name = std::getenv("SLURMD_NODENAME");
        const dragon::msg::AgentCheckin me{dragon::msg::kProtocolVersion, opts.node_id, static_cast<std::int32_t>(::getpid()),
                                           host, name != nullptr ? name : host, {}, 0};
        auto r = dragon::rt::rendezvous_with_frontend(fe_host, fe_port, *opts.secret, me, listen,
                                                      std::chrono::steady_clock::now() + std::chrono::seconds(60));
        if (!r) return fail(fmt::format("node {}: {}", opts.node_id, r.error().message()));
        opts.join_timeout = std::chrono::seconds(75);  // the front end waits up to 60 s for the last check-in
        if (opts.node_id == 0) {
            opts.control_fd = r->fd.release();
        } else {
            opts.head_address = r->head.address;
            opts.head_port = r->head.port;
        }
    }
    opts.config = std::move(*config);
    return dragon::agent::agent_main(std::move(opts));
}
