// The workflow loader and the DAG: formats, errors with file:line:column, expansion, edges, cycles.
#include <gtest/gtest.h>

#include "dragon/workflows/workflow.hpp"

namespace wfs = dragon::workflows;

namespace {

wfs::Workflow load_ok(const std::string& y) {
    auto r = wfs::load_string(y, "t.yaml", "/w");
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
    return r ? *r : wfs::Workflow{};
}

std::string load_err(const std::string& y) {
    auto r = wfs::load_string(y, "t.yaml", "/w");
    EXPECT_FALSE(r.has_value());
    return r ? std::string() : r.error().message();
}

std::string expand_err(const std::string& y) {
    auto wf = load_ok(y);
    auto d = wfs::expand(wf);
    EXPECT_FALSE(d.has_value());
    return d ? std::string() : d.error().message();
}

wfs::Dag expand_ok(const std::string& y) {
    auto wf = load_ok(y);
    auto d = wfs::expand(wf);
    EXPECT_TRUE(d.has_value()) << (d ? "" : d.error().message());
    return d ? *d : wfs::Dag{};
}

const wfs::Instance* find(const wfs::Dag& d, const std::string& id) {
    for (const auto& i : d.instances)
        if (i.id == id) return &i;
    return nullptr;
}

std::vector<std::string> dep_ids(const wfs::Dag& d, const std::string& id) {
    std::vector<std::string> out;
    for (auto k : find(d, id)->deps) out.push_back(d.instances[k].id);
    return out;
}

}  // namespace

TEST(WorkflowLoader, FullStepFields) {
    auto wf = load_ok(R"(
name: demo
description: all fields
env: {A: "1"}
parameters: {n: [1, 2]}
steps:
  - name: sim
    type: mpi
    command: ./sim
    args: ["--n", "${n}"]
    nprocs: 4
    nodes: 2
    placement: cyclic
    bind: core
    pmi: pmix
    env: {B: x}
    cwd: run
    outputs: ["out-${n}.dat"]
    retries: 2
    timeout: 1.5m
    stdout: sim-${n}.log
    stderr: sim-${n}.err
  - name: post
    type: python
    command: mod:fn
    inputs: ["run/out-${n}.dat"]
)");
    ASSERT_EQ(wf.steps.size(), 2u);
    const auto& s = wf.steps[0];
    EXPECT_EQ(wf.name, "demo");
    EXPECT_EQ(s.type, wfs::StepType::mpi);
    EXPECT_EQ(s.nprocs, 4u);
    EXPECT_EQ(s.nodes, 2u);
    EXPECT_EQ(s.placement, "cyclic");
    EXPECT_EQ(s.binding, "core");
    EXPECT_EQ(s.pmi, "pmix");
    EXPECT_EQ(s.retries, 2u);
    EXPECT_DOUBLE_EQ(s.timeout, 90.0);
    EXPECT_EQ(s.params, std::vector<std::string>{"n"});
    EXPECT_EQ(wf.steps[1].pmi, "none");
    EXPECT_EQ(s.mark.line, 7);
}

TEST(WorkflowLoader, MpiDefaultsToSimplePmi) {
    auto wf = load_ok("steps: [{name: a, type: mpi, command: x}]");
    EXPECT_EQ(wf.steps[0].pmi, "simple");
}

TEST(WorkflowLoader, ErrorsNameLineColumnAndField) {
    EXPECT_EQ(load_err("steps:\n  - name: a\n    type: process\n    command: x\n    nprocz: 3\n"),
              "t.yaml:5:5: steps[0].nprocz: unknown field (known: name, description, type, command, args, nprocs, nodes, "
              "placement, bind, pmi, env, cwd, depends, inputs, outputs, retries, timeout, stdout, stderr, expand)");
    EXPECT_EQ(load_err("steps:\n  - name: a\n    type: process\n    command: x\n    nprocs: many\n"),
              "t.yaml:5:13: steps[0].nprocs: expected a whole number from 1 to 65536, got 'many'");
    EXPECT_EQ(load_err("steps:\n  - name: a\n    type: shell\n    command: x\n"),
              "t.yaml:3:11: steps[0].type: expected mpi, process or python, got 'shell'");
    EXPECT_EQ(load_err("stepz: []\n"), "t.yaml:1:1: stepz: unknown field (known: name, description, env, parameters, steps)");
    EXPECT_EQ(load_err("steps: [{name: a, type: process}]\n"),
              "t.yaml:1:9: steps[0].command: missing: the program (or module:function, or script) to run");
    EXPECT_EQ(load_err("steps: [{name: a, type: process, command: x, args: ['${nope}']}]\n"),
              "t.yaml:1:53: steps[0].args: unknown parameter '${nope}' (parameters: none)");
    EXPECT_EQ(load_err("steps: [{name: a, type: process, command: x, timeout: soon}]\n"),
              "t.yaml:1:55: steps[0].timeout: expected a duration in seconds (90, 1.5, 30s, 5m, 2h), got 'soon'");
    EXPECT_EQ(load_err("steps: [{name: a, type: process, command: x, args: [a, [b]]}]\n"),
              "t.yaml:1:56: steps[0].args[1]: expected a string, got a list");
    EXPECT_EQ(load_err("steps: [{name: a, type: process, command: x, pmi: simple}]\n"),
              "t.yaml:1:51: steps[0].pmi: only mpi steps get PMI (this step is process)");
    EXPECT_EQ(load_err("steps:\n - {name: a, type: process, command: x}\n - {name: a, type: process, command: y}\n"),
              "t.yaml:3:4: steps[1].name: step 'a' is defined twice (first at line 2)");
}

TEST(WorkflowLoader, YamlSyntaxErrorHasPosition) {
    const auto e = load_err("steps:\n  - name: [a\n");
    EXPECT_EQ(e.rfind("t.yaml:", 0), 0u) << e;
    EXPECT_NE(e.find("YAML:"), std::string::npos) << e;
    EXPECT_EQ(load_err(""), "t.yaml:1:1: empty file: a workflow needs at least steps");
    EXPECT_EQ(load_err("- 1\n- 2\n"), "t.yaml:1:1: a workflow is a mapping with name, steps, ...; got a list");
}

TEST(WorkflowLoader, SubstitutionRules) {
    EXPECT_EQ(load_err("steps: [{name: a, type: process, command: 'x${', args: []}]\n"),
              "t.yaml:1:43: steps[0].command: '${' without a closing '}' (write $$ for a dollar)");
    auto d = expand_ok("parameters: {p: [v]}\nsteps: [{name: a, type: process, command: echo, "
                       "args: ['$$HOME', '$x', '${p}-${step}-${instance}', '${workflow_dir}']}]\n");
    ASSERT_EQ(d.instances.size(), 1u);
    EXPECT_EQ(d.instances[0].args, (std::vector<std::string>{"$HOME", "$x", "v-a-a:p=v", "/w"}));
}

TEST(WorkflowDag, ProductZipAndMatchingDependencies) {
    ASSERT_EQ(expand_err("parameters: {a: [1, 2], b: [x, y, z]}\nsteps: [{name: z, type: process, command: "
                         "'${a}${b}', expand: zip}]\n"),
              "t.yaml:2:9: steps[0].expand: zip needs parameters of one length: 'a' has 2 values, 'b' 3");
    auto d2 = expand_ok(R"(
parameters: {a: [1, 2], b: [x, y]}
steps:
  - {name: sim, type: process, command: s, args: ["${a}", "${b}"]}
  - {name: ana, type: process, command: t, args: ["${a}"], depends: [sim]}
  - {name: red, type: process, command: r, depends: [ana]}
  - {name: zipped, type: process, command: z, args: ["${a}${b}"], expand: zip}
)");
    EXPECT_EQ(d2.instances.size(), 4u + 2u + 1u + 2u);
    EXPECT_NE(find(d2, "sim:a=1,b=y"), nullptr);
    EXPECT_EQ(dep_ids(d2, "ana:a=2"), (std::vector<std::string>{"sim:a=2,b=x", "sim:a=2,b=y"}));
    EXPECT_EQ(dep_ids(d2, "red").size(), 2u);
    EXPECT_EQ(find(d2, "zipped:a=2,b=y")->args, std::vector<std::string>{"2y"});
    // Topological order: every dependency comes first.
    for (std::size_t i = 0; i < d2.instances.size(); ++i)
        for (auto k : d2.instances[i].deps) EXPECT_LT(k, i);
}

TEST(WorkflowDag, GlobsInstancesAndInferredFiles) {
    auto d = expand_ok(R"(
parameters: {n: [1, 2, 3]}
steps:
  - {name: gen, type: process, command: g, outputs: ["part-${n}.txt"]}
  - {name: one, type: process, command: o, inputs: [part-2.txt]}
  - {name: all, type: process, command: a, depends: ["gen:*"]}
  - {name: exact, type: process, command: e, depends: ["gen:n=3"]}
  - {name: both, type: process, command: b, depends: ["[oe]*"]}
)");
    EXPECT_EQ(dep_ids(d, "one"), std::vector<std::string>{"gen:n=2"});
    EXPECT_EQ(dep_ids(d, "all").size(), 3u);
    EXPECT_EQ(dep_ids(d, "exact"), std::vector<std::string>{"gen:n=3"});
    EXPECT_EQ(dep_ids(d, "both").size(), 2u);
    EXPECT_EQ(find(d, "gen:n=1")->outputs, std::vector<std::string>{"/w/part-1.txt"});
}

TEST(WorkflowDag, DdictKeysAreInferredDependencies) {
    auto d = expand_ok(R"(
parameters: {n: [1, 2]}
steps:
  - {name: gen, type: python, command: m:g, outputs: ["ddict:part-${n}", "part-${n}.txt"]}
  - {name: use, type: python, command: m:u, inputs: ["ddict:part-${n}"]}
  - {name: all, type: python, command: m:a, inputs: [ddict:part-1, ddict:part-2]}
  - {name: file, type: process, command: f, inputs: [ddict:part-1-file]}
)");
    EXPECT_EQ(dep_ids(d, "use:n=2"), std::vector<std::string>{"gen:n=2"});
    EXPECT_EQ(dep_ids(d, "all").size(), 2u);
    EXPECT_TRUE(dep_ids(d, "file").empty());  // a key nobody writes: no dependency (as a file)
    // a key stays as written (not a path), a file becomes absolute
    EXPECT_EQ(find(d, "gen:n=1")->outputs, (std::vector<std::string>{"ddict:part-1", "/w/part-1.txt"}));
    EXPECT_TRUE(wfs::is_ddict_key("ddict:x") && !wfs::is_ddict_key("/w/ddict:x"));
}

TEST(WorkflowDag, Errors) {
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, depends: [b]}\n"
                         " - {name: b, type: process, command: y, depends: [a]}\n"),
              "t.yaml:2:51: steps[0].depends: a dependency cycle: a -> b -> a");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, depends: [ghost]}\n"),
              "t.yaml:2:51: steps[0].depends: 'ghost' is not a step (steps: a)");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, depends: [zz*]}\n"),
              "t.yaml:2:51: steps[0].depends: 'zz*' matches no step");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, depends: [a]}\n"),
              "t.yaml:2:51: steps[0].depends: step 'a' depends on itself");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, outputs: [f]}\n"
                         " - {name: b, type: process, command: x, outputs: [f]}\n"),
              "t.yaml:3:51: steps[1].outputs: '/w/f' is written by both 'a' and 'b'");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, outputs: [ddict:k]}\n"
                         " - {name: b, type: process, command: x, outputs: [ddict:k]}\n"),
              "t.yaml:3:51: steps[1].outputs: 'ddict:k' is written by both 'a' and 'b'");
    EXPECT_EQ(expand_err("steps:\n - {name: a, type: process, command: x, inputs: [\"ddict:\"]}\n"),
              "t.yaml:2:50: steps[0].inputs: 'ddict:' needs a key after it (ddict:KEY)");
    // A cycle through files only.
    const auto e = expand_err("steps:\n - {name: a, type: process, command: x, inputs: [f2], outputs: [f1]}\n"
                              " - {name: b, type: process, command: x, inputs: [f1], outputs: [f2]}\n");
    EXPECT_NE(e.find("a dependency cycle"), std::string::npos) << e;
}

TEST(WorkflowDag, DotAndPlan) {
    auto wf = load_ok("name: w\nsteps:\n - {name: a, type: mpi, command: x, nprocs: 4}\n"
                      " - {name: b, type: python, command: m:f, depends: [a]}\n");
    auto d = wfs::expand(wf);
    ASSERT_TRUE(d.has_value());
    const auto dot = wfs::to_dot(wf, *d);
    EXPECT_NE(dot.find("digraph \"w\""), std::string::npos);
    EXPECT_NE(dot.find("n0 -> n1;"), std::string::npos);
    EXPECT_NE(dot.find("label=\"a\\nmpi x4\""), std::string::npos);
    const auto plan = wfs::plan_text(wf, *d);
    EXPECT_NE(plan.find("2. b [python]"), std::string::npos) << plan;
    EXPECT_NE(plan.find("after: a"), std::string::npos) << plan;
}

TEST(WorkflowLoader, HostileInputsAreErrorsNotCrashes) {
    const std::string deep(5000, '[');
    EXPECT_FALSE(wfs::load_string(deep, "t.yaml", "/w").has_value());
    EXPECT_FALSE(wfs::load_string(std::string("steps: \0", 8), "t.yaml", "/w").has_value());
    EXPECT_FALSE(wfs::load_string("a: &x [*x]", "t.yaml", "/w").has_value());
    EXPECT_FALSE(wfs::load_string("steps: [{name: a, type: process, command: x, nprocs: 99999999999999999999}]", "t.yaml",
                                  "/w")
                     .has_value());
    // 100000 combinations is the limit.
    EXPECT_NE(expand_err("parameters: {a: [" + [] {
                  std::string s;
                  for (int i = 0; i < 400; ++i) s += (i ? "," : "") + std::to_string(i);
                  return s;
              }() + "], b: [" + [] {
                  std::string s;
                  for (int i = 0; i < 400; ++i) s += (i ? "," : "") + std::to_string(i);
                  return s;
              }() + "]}\nsteps: [{name: a, type: process, command: '${a}${b}'}]\n")
                  .find("more than 100000 instances"),
              std::string::npos);
}
