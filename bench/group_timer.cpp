// Times ProcessGroups started inside a running runtime: run as the head
// program, it starts `runs` groups of N copies of a program one after the
// other and prints each start-to-join time in seconds, one per line
// ("group 0.123456"). The first group is printed too (it includes warming
// up the agents' placement); drivers usually drop it.
//
//   dragon-bench-group-timer N RUNS [PROGRAM [ARGS...]]   (default /bin/true)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dragon/orchestrator/client.hpp"
#include "dragon/orchestrator/process_group.hpp"

namespace cl = dragon::client;

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: dragon-bench-group-timer N RUNS [PROGRAM [ARGS...]]\n");
        return 2;
    }
    const auto n = static_cast<std::uint32_t>(std::strtoul(argv[1], nullptr, 10));
    const int runs = std::atoi(argv[2]);
    std::vector<std::string> prog = {"/bin/true"};
    if (argc > 3) prog.assign(argv + 3, argv + argc);
    auto s = cl::Session::connect_from_env();
    if (!s) return std::fprintf(stderr, "group-timer: %s\n", s.error().message().c_str()), 1;
    for (int r = 0; r < runs; ++r) {
        cl::GroupOptions o;
        o.placement = "cyclic";
        cl::ProcessGroup g(*s, o);
        auto t = cl::ProcessTemplate::command(prog);
        t.stdout_redirect = cl::Redirect::discard();
        g.add(t, n);
        const auto t0 = std::chrono::steady_clock::now();
        if (auto st = g.start(); !st) return std::fprintf(stderr, "group-timer: %s\n", st.error().message().c_str()), 1;
        auto done = g.join();
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!done || !*done) return std::fprintf(stderr, "group-timer: join failed\n"), 1;
        if (auto c = g.close(); !c) return std::fprintf(stderr, "group-timer: %s\n", c.error().message().c_str()), 1;
        std::printf("group %.6f\n", dt);
        std::fflush(stdout);
    }
    return 0;
}
