// Workflows: a YAML file of steps (MPI, any program, Python) loaded,
// validated and expanded into a DAG of step instances. Format: docs/workflows.md.
//
//   auto wf = dragon::workflows::load_file("flow.yaml");   // errors name file:line:column and the field
//   auto dag = dragon::workflows::expand(*wf);             // parameters, dependencies, cycles
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::workflows {

/// Where something was written in the YAML (1-based; 0: not from a file).
struct Mark {
    int line = 0;
    int column = 0;
};

enum class StepType { mpi, process, python };
std::string_view to_string(StepType t) noexcept;

/// How a step uses the parameters it names: one instance per combination
/// (cross product) or one per index of equally long lists (zip).
enum class Expand { product, zip };

/// A string as written, with where it was written (substitution errors point at it).
struct Text {
    std::string value;
    Mark mark;
};

/// One step as written in the file (before parameter expansion).
struct Step {
    std::string name;
    Mark mark;  // of the step's mapping
    StepType type = StepType::process;
    Text command;             // program (process, mpi); `module:function` or a script path (python)
    std::vector<Text> args;
    std::uint32_t nprocs = 1;
    std::uint32_t nodes = 0;        // 0: any; else the ranks spread over this many nodes (at most)
    std::string placement;          // block | cyclic | spread (empty: block, or spread with `nodes`)
    std::string binding = "none";   // none | core | pu | numa | socket
    std::string pmi;                // mpi: simple | cray | pmix (default simple); others: none
    std::vector<std::pair<std::string, Text>> env;
    Text cwd;
    std::vector<Text> depends;  // step names, instance names or globs over them
    std::vector<Text> inputs;   // files or `ddict:key`s read; a step writing one of them is a dependency
    std::vector<Text> outputs;  // files or `ddict:key`s written
    std::uint32_t retries = 0;  // further attempts after a failure
    double timeout = 0;         // seconds per attempt; 0: none
    Text stdout_path;           // empty: <state dir>/<instance>.out
    Text stderr_path;           // empty: <state dir>/<instance>.err
    Expand expand = Expand::product;
    std::vector<std::string> params;  // parameters it uses (found in its fields), in declaration order
};

struct Parameter {
    std::string name;
    Mark mark;
    std::vector<std::string> values;
};

/// A loaded, validated workflow file.
struct Workflow {
    std::string file;  // as given (used in messages)
    std::string dir;   // the file's directory, absolute: relative paths are relative to it
    std::string name;
    std::string description;
    std::vector<std::pair<std::string, Text>> env;
    std::vector<Parameter> parameters;
    std::vector<Step> steps;
};

/// Parses and validates `text` (named `file` in messages; `dir` anchors relative
/// paths). Errc::invalid_argument with "file:line:column: field: problem" on a
/// YAML syntax error, an unknown field, a wrong type or value, a duplicate
/// name, an unknown `${parameter}`. Never throws, whatever the bytes.
Result<Workflow> load_string(const std::string& text, const std::string& file, const std::string& dir);

/// Reads `path` and load_string()s it. Errc::not_found / system when unreadable.
Result<Workflow> load_file(const std::string& path);

/// An `inputs`/`outputs` entry naming a key of the run's distributed
/// dictionary instead of a file: `ddict:KEY` (KEY a Python `str` key).
inline constexpr std::string_view kDdictPrefix = "ddict:";
inline bool is_ddict_key(std::string_view io) noexcept { return io.starts_with(kDdictPrefix); }

/// One runnable instance of a step: parameters substituted, paths absolute.
struct Instance {
    std::string id;           // "step" or "step:p=v,q=w"
    std::size_t step = 0;     // index in Workflow::steps
    std::map<std::string, std::string> values;  // parameter -> value
    StepType type = StepType::process;
    std::vector<std::string> argv;  // command then args (python: filled by the runner)
    std::string command;
    std::vector<std::string> args;
    std::vector<std::string> env;   // NAME=value: the workflow's, then the step's
    std::string cwd;                // absolute
    std::vector<std::string> inputs, outputs;  // absolute paths, or `ddict:key` as written
    std::string stdout_path, stderr_path;      // absolute or empty (the runner chooses)
    std::vector<std::size_t> deps;  // instance indices this one waits for
};

struct Dag {
    std::vector<Instance> instances;  // in a topological order (every dep before its dependents)
};

/// Expands parameters, resolves `depends` (names, globs, matching parameter
/// values) and inputs written by other steps into edges, and checks for
/// cycles and dependencies on nothing. Errors name file:line:column and the field.
Result<Dag> expand(const Workflow& wf);

/// The DAG in Graphviz dot: one node per instance, labelled, an edge per dependency.
std::string to_dot(const Workflow& wf, const Dag& dag);

/// A readable plan: the instances in order with their command, ranks and dependencies.
std::string plan_text(const Workflow& wf, const Dag& dag);

}  // namespace dragon::workflows
