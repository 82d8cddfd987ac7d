// `dragon-orchestrate run flow.yaml` (see workflow.hpp, docs/workflows.md).
#include "workflow.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "dragon/workflows/workflow.hpp"

extern char** environ;

namespace dragon::cli {

namespace fs = std::filesystem;

bool is_workflow_file(const std::string& word) { return word.ends_with(".yaml") || word.ends_with(".yml"); }

namespace {

// Graphviz renders the picture: dot -Tsvg, no shell between.
Status render_svg(const std::string& dot_text, const std::string& out) {
    const std::string tmp = out + ".dot.tmp";
    {
        std::ofstream f(tmp, std::ios::trunc);
        f << dot_text;
        if (!f) return make_error(Errc::system, "cannot write {}", tmp);
    }
    std::vector<std::string> args = {"dot", "-Tsvg", tmp, "-o", out};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, "dot", nullptr, nullptr, argv.data(), environ);
    if (rc != 0) {
        std::remove(tmp.c_str());
        return make_error(Errc::not_found, "cannot run Graphviz 'dot' for {} ({}); write a .dot file instead, or "
                                           "install graphviz", out, std::strerror(rc));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    std::remove(tmp.c_str());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return make_error(Errc::system, "dot failed to draw {}", out);
    return ok();
}

}  // namespace

int run_workflow(const std::string& path, RunOptions opts, const WorkflowFlags& flags) {
    auto wf = workflows::load_file(path);
    if (!wf) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", wf.error().message().c_str());
        return kExitUsage;
    }
    auto dag = workflows::expand(*wf);
    if (!dag) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", dag.error().message().c_str());
        return kExitUsage;
    }
    if (!flags.dag_path.empty()) {
        const auto dot = workflows::to_dot(*wf, *dag);
        Status st;
        if (flags.dag_path.ends_with(".svg")) {
            st = render_svg(dot, flags.dag_path);
        } else {
            std::ofstream f(flags.dag_path, std::ios::trunc);
            f << dot;
            if (!f) st = make_error(Errc::system, "cannot write {}", flags.dag_path);
        }
        if (!st) {
            std::fprintf(stderr, "dragon-orchestrate: error: --dag: %s\n", st.error().message().c_str());
            return kExitUsage;
        }
    }
    if (opts.dry_run) {
        std::fputs(workflows::plan_text(*wf, *dag).c_str(), stdout);
        return 0;
    }
    std::error_code ec;
    auto runner = fs::read_symlink("/proc/self/exe", ec).parent_path() / "dragon-workflow";
    if (const char* r = std::getenv("DRAGON_WORKFLOW_RUNNER"); r != nullptr && *r != '\0') runner = r;
    std::string progress = flags.progress;
    if (progress == "auto") {
        const char* term = std::getenv("TERM");
        progress = isatty(STDOUT_FILENO) && term != nullptr && std::string(term) != "dumb" ? "tty" : "plain";
    }
    ProgramEntry head;
    head.argv = {runner.string(), fs::absolute(path).string(), "--progress", progress};
    if (flags.resume) head.argv.emplace_back("--resume");
    if (flags.fail_fast) head.argv.emplace_back("--fail-fast");
    if (!flags.trace_path.empty()) {
        head.argv.emplace_back("--trace");
        head.argv.push_back(fs::absolute(flags.trace_path).string());
    }
    opts.programs = {std::move(head)};
    opts.forward_stdin = false;
    return run_program(std::move(opts));
}

}  // namespace dragon::cli
