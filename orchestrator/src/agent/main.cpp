// dragon-agent: the per-node daemon. Started by dragon-orchestrate (or srun),
// never by hand; its arguments are internal and may change between versions.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

#include "agent.hpp"
#include "dragon/common/log.hpp"

int main(int argc, char** argv) {
    CLI::App app{"dragon-agent: the Dragon node agent (started by dragon-orchestrate)"};
    std::string run_id, head, address;
    std::uint32_t node_id = 0, nnodes = 1;
    int control_fd = -1, listen_fd = -1;
    app.add_option("--run-id", run_id, "the run this agent belongs to")->required();
    app.add_option("--node-id", node_id, "this node's id in the run");
    app.add_option("--control-fd", control_fd, "node 0: inherited stream socket to the front end");
    app.add_option("--nnodes", nnodes, "how many nodes the run has");
    app.add_option("--address", address, "several nodes: the address this agent listens on");
    app.add_option("--listen-fd", listen_fd, "several nodes: an inherited listening socket");
    app.add_option("--head", head, "node k > 0: ADDRESS:PORT where node 0 listens");
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
    if (!head.empty()) {
        const auto colon = head.rfind(':');
        const long port = colon == std::string::npos ? -1 : std::strtol(head.c_str() + colon + 1, nullptr, 10);
        if (port <= 0 || port > 65535) return fail("--head needs ADDRESS:PORT, not '" + head + "'");
        opts.head_address = head.substr(0, colon);
        opts.head_port = static_cast<std::uint16_t>(port);
    }
    if (opts.nnodes > 1) {
        auto secret = dragon::transport::RunSecret::from_env();
        if (!secret) return fail(secret.error().message());
        opts.secret = std::move(*secret);
        ::unsetenv(dragon::transport::kSecretHexEnv);  // not for the processes this agent starts
    }
    opts.config = std::move(*config);
    return dragon::agent::agent_main(std::move(opts));
}
