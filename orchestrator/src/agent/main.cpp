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
    std::string run_id;
    std::uint32_t node_id = 0;
    int control_fd = -1;
    app.add_option("--run-id", run_id, "the run this agent belongs to")->required();
    app.add_option("--node-id", node_id, "this node's id in the run");
    app.add_option("--control-fd", control_fd, "inherited stream socket to the front end")->required();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::fprintf(stderr, "dragon-agent: error: %s\n", e.what());
        return 2;
    }

    auto config = dragon::Config::from_env();
    if (!config) {
        std::fprintf(stderr, "dragon-agent: error: %s\n", config.error().message().c_str());
        return 2;
    }
    auto run = dragon::RunId::parse(run_id);
    if (!run) {
        std::fprintf(stderr, "dragon-agent: error: %s\n", run.error().message().c_str());
        return 2;
    }
    return dragon::agent::agent_main({std::move(*run), node_id, control_fd, std::move(*config)});
}
