// A managed process that talks to its agent: prints what the agent says.
// Used by the integration tests of the client socket.
#include <cstdio>

#include "dragon/orchestrator/client.hpp"

int main() {
    auto s = dragon::client::Session::connect_from_env();
    if (!s) {
        std::fprintf(stderr, "client_probe: %s\n", s.error().message().c_str());
        return 1;
    }
    std::printf("run=%s node=%u agent_pid=%d\n", s->run_id().c_str(), s->node_id(), s->agent_pid());
    auto procs = s->processes();
    if (!procs) {
        std::fprintf(stderr, "client_probe: %s\n", procs.error().message().c_str());
        return 1;
    }
    for (const auto& p : *procs)
        std::printf("proc puid=%llu pid=%d state=%s argv0=%s\n", static_cast<unsigned long long>(p.puid), p.pid,
                    p.state == dragon::msg::ProcState::running ? "running" : "exited",
                    p.argv.empty() ? "" : p.argv[0].c_str());
    return 0;
}
