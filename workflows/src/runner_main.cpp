// dragon-workflow: the head process `dragon-orchestrate run flow.yaml`
// starts. Loads the workflow again (the front end already validated it),
// connects to its agent and runs the DAG (runner.hpp).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "dragon/workflows/workflow.hpp"
#include "runner.hpp"

namespace {

// The dragon package beside this program: <prefix>/bin/../python (a build
// tree) or <prefix>/lib/python3/dist-packages (installed).
std::string dragon_python_dir() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return {};
    const auto prefix = exe.parent_path().parent_path();
    for (const auto& cand : {prefix / "python", prefix / "lib" / "python3" / "dist-packages"})
        if (std::filesystem::exists(cand / "dragon" / "__init__.py", ec)) return cand.string();
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"dragon-workflow: run a workflow's steps in the Dragon runtime it runs under "
                 "(started by 'dragon-orchestrate run flow.yaml')"};
    std::string file, progress = "plain";
    dragon::workflows::RunnerOptions ro;
    app.add_option("file", file, "the workflow YAML")->required();
    app.add_flag("--resume", ro.resume, "skip instances an earlier run of this file completed");
    app.add_flag("--fail-fast", ro.fail_fast, "stop everything at the first failure");
    app.add_option("--trace", ro.trace_path, "write a Chrome trace (JSON) here");
    app.add_option("--progress", progress, "none, plain or tty")->check(CLI::IsMember({"none", "plain", "tty"}));
    CLI11_PARSE(app, argc, argv);
    ro.progress = progress == "tty" ? dragon::workflows::Progress::tty
                : progress == "none" ? dragon::workflows::Progress::none
                                     : dragon::workflows::Progress::plain;
    ro.python_path = dragon_python_dir();
    if (const char* py = std::getenv("DRAGON_WORKFLOW_PYTHON"); py != nullptr && *py != '\0') ro.python = py;

    auto wf = dragon::workflows::load_file(file);
    if (!wf) {
        std::fprintf(stderr, "dragon-workflow: error: %s\n", wf.error().message().c_str());
        return 2;
    }
    auto dag = dragon::workflows::expand(*wf);
    if (!dag) {
        std::fprintf(stderr, "dragon-workflow: error: %s\n", dag.error().message().c_str());
        return 2;
    }
    auto session = dragon::client::Session::connect_from_env();
    if (!session) {
        std::fprintf(stderr, "dragon-workflow: error: %s (run it with 'dragon-orchestrate run %s')\n",
                     session.error().message().c_str(), file.c_str());
        return 2;
    }
    auto rc = dragon::workflows::run(*session, *wf, *dag, ro);
    if (!rc) {
        std::fprintf(stderr, "dragon-workflow: error: %s\n", rc.error().message().c_str());
        return 1;
    }
    return *rc;
}
