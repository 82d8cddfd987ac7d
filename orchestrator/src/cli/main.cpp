// dragon-orchestrate: the command line front end of the Dragon runtime.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../runtime/node_lock.hpp"
#include "dragon/common/config.hpp"
#include "dragon/common/group_rules.hpp"
#include "dragon/common/log.hpp"
#include "frontend.hpp"
#include "workflow.hpp"

namespace {

int cmd_cleanup(bool dry_run) {
    auto r = dragon::rt::cleanup_stale(dry_run);
    if (!r) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", r.error().message().c_str());
        return dragon::cli::kExitRuntimeFailure;
    }
    for (const auto& name : r->removed) std::printf("%s /dev/shm/%s\n", dry_run ? "would remove" : "removed", name.c_str());
    for (const auto& live : r->live_runs) std::printf("kept %s (its agent is running)\n", live.c_str());
    if (r->removed.empty()) std::printf("nothing to remove\n");
    return 0;
}

// "a x : -n 3 b y" -> [{a x, first_n}, {b y, 3}]: a lone ':' starts the
// next program, which may begin with -n N (default 1).
dragon::Result<std::vector<dragon::cli::ProgramEntry>> split_programs(std::vector<std::string> words,
                                                                     std::uint32_t first_n) {
    using dragon::Errc;
    std::vector<dragon::cli::ProgramEntry> out(1);
    out.back().nprocs = first_n;
    bool at_start = false;  // right after a ':'
    for (std::size_t i = 0; i < words.size(); ++i) {
        auto& w = words[i];
        if (w == ":") {
            if (out.back().argv.empty()) return dragon::Error(Errc::invalid_argument, "':' with no program before it");
            out.emplace_back();
            at_start = true;
            continue;
        }
        if (at_start && (w == "-n" || w == "--nprocs" || w.starts_with("--nprocs="))) {
            std::string value;
            if (w.starts_with("--nprocs=")) value = w.substr(9);
            else if (i + 1 < words.size()) value = words[++i];
            char* end = nullptr;
            const unsigned long n = std::strtoul(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || n < 1 || n > 1000000)
                return dragon::make_error(Errc::invalid_argument, "program {}: -n needs a count from 1 to 1000000, not '{}'",
                                          out.size(), value);
            out.back().nprocs = static_cast<std::uint32_t>(n);
            continue;
        }
        if (at_start && w.starts_with("-"))
            return dragon::make_error(Errc::invalid_argument, "program {}: unknown option '{}' (only -n N may follow ':')",
                                      out.size(), w);
        at_start = false;
        out.back().argv.push_back(std::move(w));
    }
    if (out.back().argv.empty()) return dragon::Error(Errc::invalid_argument, "':' with no program after it");
    std::uint64_t total = 0;
    for (const auto& p : out) total += p.nprocs;
    if (total > 1000000) return dragon::make_error(Errc::invalid_argument, "{} ranks in all is too many", total);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"dragon-orchestrate: start a Dragon runtime and run a program in it"};
    app.set_version_flag("--version", "dragon-orchestrate " DRAGON_VERSION);
    app.require_subcommand(1);

    // Options from the configuration table: flag, environment variable, default.
    auto config = dragon::Config::from_env();
    if (!config) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", config.error().message().c_str());
        return dragon::cli::kExitUsage;
    }
    // Given before or after the subcommand; applied in command-line order.
    std::vector<std::pair<std::string, std::string>> given;
    auto add_config_options = [&given](CLI::App* to) {
        for (const auto& opt : dragon::config_table()) {
            auto name = std::string(opt.name);
            to->add_option_function<std::string>(
                   "--" + name, [&given, name](const std::string& v) { given.emplace_back(name, v); },
                   fmt::format("{} [env {}, default '{}']", opt.help, opt.env, opt.default_value))
                ->type_name("VALUE");
        }
    };
    add_config_options(&app);

    auto* run = app.add_subcommand("run", "start a runtime, run PROGRAM in it as the head process, tear down");
    dragon::cli::RunOptions ro;
    bool no_stdin = false, no_oversubscribe = false;
    std::string srun_args;
    // Where the agents run: the same options for `run` and `serve`.
    auto add_launcher_options = [&ro, &srun_args](CLI::App* to) {
        to->add_option("--launcher", ro.launcher,
                       "how to start agents: local (one node), virtual (--nodes N agents on this machine, "
                       "each on its own loopback address), slurm (one agent per node of the allocation, "
                       "with srun); default: slurm inside a Slurm allocation, else local");
        to->add_option("--nodes", ro.nodes, "virtual: how many nodes (default 1); slurm: use the first N nodes of "
                                            "the allocation (default all)")
            ->check(CLI::Range(1U, 65535U));
        to->add_option("--hosts", ro.hosts,
                       "with --launcher virtual: each node's listen address (127.x.y.z), in node order")
            ->delimiter(',')
            ->type_name("ADDR,...");
        to->add_flag("--split-cpus", ro.split_cpus,
                     "with --launcher virtual: each node gets its own share of this machine's cpus (node k: "
                     "cpus k, k+N, ...; round-robin when there are more nodes than cpus), as real nodes have, "
                     "instead of all nodes sharing every cpu");
        to->add_option("--srun-args", srun_args,
                       "with --launcher slurm: extra arguments for the srun that starts the agents")
            ->type_name("'ARGS'");
        to->add_option("--control-address", ro.control_address,
                       "with --launcher slurm: the address agents reach this front end at (default: this host's)")
            ->type_name("ADDR");
    };
    add_launcher_options(run);
    std::uint32_t nprocs = 1;
    run->add_option("-n,--nprocs", nprocs, "run N copies of PROGRAM as one group (ranks 0..N-1)")
        ->capture_default_str()
        ->check(CLI::Range(1U, 1000000U));
    run->add_option("--placement", ro.placement, "where ranks go: block, cyclic or spread")->capture_default_str();
    run->add_option("--bind", ro.binding, "bind each rank to: none, core, pu, numa or socket")->capture_default_str();
    run->add_option("--cpus-per-proc", ro.cpus_per_proc, "cpus (of the --bind kind) per rank")
        ->capture_default_str()
        ->check(CLI::Range(1U, 1U << 20));
    run->add_flag("--no-oversubscribe", no_oversubscribe, "refuse more ranks than cpus instead of warning");
    run->add_flag("--restart", ro.restart, "replace a rank that fails instead of failing the group");
    run->add_option("--max-restarts", ro.max_restarts, "with --restart: replacements allowed in all")
        ->capture_default_str();
    run->add_option("--pmi", ro.pmi,
                    "serve PMI to the ranks (MPI programs, no mpirun): none, simple (PMI-1/PMI-2 wire, MPICH) or "
                    "cray (simple plus the PALS environment and our libpmi.so.0 first in LD_LIBRARY_PATH) or pmix "
                    "(a PMIx server: Open MPI, mpi4py)")
        ->check(CLI::IsMember({"none", "simple", "cray", "pmix"}))
        ->capture_default_str();
    run->add_flag("--pmi-port", ro.pmi_port, "with --pmi: ranks connect to PMI_PORT (host:port, PMI_ID) instead of "
                                             "inheriting a PMI_FD socket");
    dragon::cli::WorkflowFlags wflags;
    run->add_flag("--resume", wflags.resume, "workflow: skip instances an earlier run of this file completed");
    run->add_flag("--fail-fast", wflags.fail_fast, "workflow: stop every step at the first failure");
    run->add_option("--dag", wflags.dag_path, "workflow: draw the expanded DAG here (.dot, or .svg with Graphviz)")
        ->type_name("FILE");
    run->add_option("--trace", wflags.trace_path, "workflow: write a Chrome/Perfetto trace (JSON) of the run here")
        ->type_name("FILE");
    run->add_option("--progress", wflags.progress, "workflow: auto (live view on a terminal), tty, plain or none")
        ->check(CLI::IsMember({"auto", "tty", "plain", "none"}))
        ->capture_default_str();
    run->add_flag("--display-map", ro.display_map, "print rank -> node -> cpus before starting");
    run->add_flag("--dry-run", ro.dry_run, "print the placement and start nothing");
    run->add_flag("--label", ro.label, "prefix every output line with [rank]");
    run->add_flag("--label-node", ro.label_node, "prefix every output line with [node:puid]");
    run->add_flag("--no-stdin", no_stdin, "give rank 0 /dev/null as stdin instead of forwarding ours");
    run->add_option("--input", ro.input_pattern, "every rank's stdin from this file (%r rank, %n node, %h host, ...)")
        ->type_name("PATTERN");
    run->add_option("--output", ro.output_pattern, "every rank's stdout to this file (%r rank, %4r zero-padded, ...)")
        ->type_name("PATTERN");
    run->add_option("--error", ro.error_pattern, "every rank's stderr to this file (may equal --output)")
        ->type_name("PATTERN");
    run->prefix_command();  // everything from PROGRAM on belongs to PROGRAM
    add_config_options(run);
    run->footer("Usage: dragon-orchestrate run [OPTIONS] [--] PROGRAM [ARGS...] [: -n N PROGRAM2 [ARGS...] ...]\n"
                "A lone ':' starts another program of the same group (MPMD); its ranks follow the previous ones.");

    auto* cleanup = app.add_subcommand("cleanup", "remove shared memory left behind by runs whose agents died");
    bool dry_run = false;
    cleanup->add_flag("--dry-run", dry_run, "only list what would be removed");
    add_config_options(cleanup);

    auto* serve = app.add_subcommand(
        "serve", "start a runtime with no head program and keep it until stdin closes or a signal comes; clients "
                 "connect on their own (the Python package's embedded runtime)");
    add_launcher_options(serve);
    serve->add_option("--ready-fd", ro.ready_fd,
                      "once every agent is up, write one JSON line to this descriptor: run_id, agent_socket (node "
                      "0's, for DRAGON_AGENT_SOCKET), agent_pid, frontend_pid")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    serve->add_flag("--label", ro.label, "prefix every output line with [group:rank]");
    serve->add_flag("--label-node", ro.label_node, "prefix every output line with [node:puid]");
    add_config_options(serve);

    // `--` ends our options: what follows is PROGRAM and its arguments, untouched.
    std::vector<std::string> args(argv + 1, argv + argc);
    std::vector<std::string> program;
    if (auto dd = std::find(args.begin(), args.end(), "--"); dd != args.end()) {
        program.assign(dd + 1, args.end());
        args.erase(dd, args.end());
    }
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
    try {
        app.parse(args);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        std::fprintf(stderr, "dragon-orchestrate: error: %s\nRun 'dragon-orchestrate --help' for usage.\n", e.what());
        return dragon::cli::kExitUsage;
    }
    for (const auto& [name, value] : given) {
        if (auto st = config->set(name, value); !st) {
            std::fprintf(stderr, "dragon-orchestrate: error: --%s: %s\n", name.c_str(), st.error().message().c_str());
            return dragon::cli::kExitUsage;
        }
    }
    if (auto st = dragon::log::init("frontend", config->log_level(), config->log_dir()); !st) {
        std::fprintf(stderr, "dragon-orchestrate: error: %s\n", st.error().message().c_str());
        return dragon::cli::kExitUsage;
    }

    if (*cleanup) return cmd_cleanup(dry_run);
    auto split_srun_args = [&] {
        for (std::size_t i = 0; i < srun_args.size();) {  // split on blanks (no quoting: pass simple options)
            const auto b = srun_args.find_first_not_of(" \t", i);
            if (b == std::string::npos) break;
            const auto e = srun_args.find_first_of(" \t", b);
            ro.srun_args.push_back(srun_args.substr(b, e == std::string::npos ? std::string::npos : e - b));
            i = e == std::string::npos ? srun_args.size() : e;
        }
    };
    if (*serve) {
        if (!serve->remaining().empty() || !program.empty()) {
            std::fprintf(stderr, "dragon-orchestrate: error: serve takes no program\n");
            return dragon::cli::kExitUsage;
        }
        ro.serve = true;
        ro.config = std::move(*config);
        split_srun_args();
        return dragon::cli::run_program(std::move(ro));
    }

    const auto before_dd = run->remaining();
    if (!before_dd.empty() && (!program.empty() || before_dd.front().starts_with("-"))) {
        std::fprintf(stderr, "dragon-orchestrate: error: run: %s '%s'\nRun 'dragon-orchestrate run --help' for usage.\n",
                     before_dd.front().starts_with("-") ? "unknown option" : "unexpected argument",
                     before_dd.front().c_str());
        return dragon::cli::kExitUsage;
    }
    const bool after_dd = !program.empty();
    if (program.empty()) program = before_dd;
    const bool workflow = !after_dd && program.size() == 1 && dragon::cli::is_workflow_file(program.front());
    const bool workflow_flags = wflags.resume || wflags.fail_fast || !wflags.dag_path.empty() ||
                                !wflags.trace_path.empty() || wflags.progress != "auto";
    if (workflow_flags && !workflow) {
        std::fprintf(stderr, "dragon-orchestrate: error: run: --resume, --fail-fast, --dag, --trace and --progress "
                             "are for a workflow file (run flow.yaml)\n");
        return dragon::cli::kExitUsage;
    }
    if (program.empty()) {
        std::fprintf(stderr, "dragon-orchestrate: error: run: no PROGRAM given\n"
                             "Usage: dragon-orchestrate run [OPTIONS] [--] PROGRAM [ARGS...]\n");
        return dragon::cli::kExitUsage;
    }
    if (workflow) {
        ro.config = std::move(*config);
        split_srun_args();
        return dragon::cli::run_workflow(program.front(), std::move(ro), wflags);
    }
    auto programs = split_programs(std::move(program), nprocs);
    if (!programs) {
        std::fprintf(stderr, "dragon-orchestrate: error: run: %s\n", programs.error().message().c_str());
        return dragon::cli::kExitUsage;
    }
    ro.programs = std::move(*programs);
    ro.config = std::move(*config);
    split_srun_args();
    ro.forward_stdin = !no_stdin;
    ro.allow_oversubscribe = !no_oversubscribe;
    if (ro.restart && ro.max_restarts == 0) ro.max_restarts = 1U << 20;  // --restart alone: keep replacing
    // The group's own rules, as the runtime would refuse them, but before anything starts.
    auto pmi = dragon::msg::pmi_mode_from(ro.pmi);
    auto rules = pmi ? dragon::msg::check_group_options(ro.restart, *pmi, ro.pmi_port) : dragon::Status(pmi.error());
    if (!rules) {
        std::fprintf(stderr, "dragon-orchestrate: error: run: %s (--restart, --pmi, --pmi-port)\n",
                     rules.error().message().c_str());
        return dragon::cli::kExitUsage;
    }
    return dragon::cli::run_program(std::move(ro));
}
