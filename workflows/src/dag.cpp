// Expansion of a Workflow into its DAG of instances: parameters, dependencies
// (named, globbed, inferred from files), cycles; and the DAG's pictures.
#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "dragon/workflows/workflow.hpp"
#include "subst.hpp"

namespace dragon::workflows {

namespace {

constexpr std::size_t kMaxInstances = 100000;

Error at(const Workflow& wf, Mark m, const std::string& field, const std::string& problem) {
    std::string where = wf.file;
    if (m.line > 0) where += ":" + std::to_string(m.line) + ":" + std::to_string(m.column);
    return Error(Errc::invalid_argument, where + ": " + field + ": " + problem);
}

std::string absolute_in(const std::string& base, const std::string& p) {
    if (p.empty()) return p;
    std::filesystem::path path(p);
    if (path.is_relative()) path = std::filesystem::path(base) / path;
    return path.lexically_normal().string();
}

bool has_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// The value combinations of a step's parameters (product or zip), each a map.
Result<std::vector<std::map<std::string, std::string>>> combinations(const Workflow& wf, const Step& s,
                                                                    const std::string& where) {
    std::vector<const Parameter*> ps;
    for (const auto& name : s.params)
        for (const auto& p : wf.parameters)
            if (p.name == name) ps.push_back(&p);
    std::vector<std::map<std::string, std::string>> out;
    if (ps.empty()) {
        out.emplace_back();
        return out;
    }
    if (s.expand == Expand::zip) {
        for (const auto* p : ps)
            if (p->values.size() != ps[0]->values.size())
                return at(wf, s.mark, where + ".expand",
                          "zip needs parameters of one length: '" + ps[0]->name + "' has " +
                              std::to_string(ps[0]->values.size()) + " values, '" + p->name + "' " +
                              std::to_string(p->values.size()));
        for (std::size_t i = 0; i < ps[0]->values.size(); ++i) {
            std::map<std::string, std::string> m;
            for (const auto* p : ps) m[p->name] = p->values[i];
            out.push_back(std::move(m));
        }
        return out;
    }
    std::size_t total = 1;
    for (const auto* p : ps) {
        total *= p->values.size();
        if (total > kMaxInstances)
            return at(wf, s.mark, where, "expands to more than " + std::to_string(kMaxInstances) + " instances");
    }
    std::vector<std::size_t> idx(ps.size(), 0);
    for (std::size_t n = 0; n < total; ++n) {
        std::map<std::string, std::string> m;
        for (std::size_t k = 0; k < ps.size(); ++k) m[ps[k]->name] = ps[k]->values[idx[k]];
        out.push_back(std::move(m));
        for (std::size_t k = ps.size(); k-- > 0;) {  // the last parameter varies fastest
            if (++idx[k] < ps[k]->values.size()) break;
            idx[k] = 0;
        }
    }
    return out;
}

}  // namespace

Result<Dag> expand(const Workflow& wf) {
    Dag dag;
    std::vector<std::vector<std::size_t>> of_step(wf.steps.size());
    // Instances, with every text field substituted.
    for (std::size_t si = 0; si < wf.steps.size(); ++si) {
        const Step& s = wf.steps[si];
        const std::string where = "steps[" + std::to_string(si) + "]";
        auto combos = DRAGON_TRY(combinations(wf, s, where));
        if (dag.instances.size() + combos.size() > kMaxInstances)
            return at(wf, s.mark, where, "the workflow expands to more than " + std::to_string(kMaxInstances) + " instances");
        for (auto& values : combos) {
            Instance in;
            in.step = si;
            in.type = s.type;
            in.id = s.name;
            if (!values.empty()) {
                in.id += ":";
                bool first = true;
                for (const auto& pname : s.params) {
                    in.id += (first ? "" : ",") + pname + "=" + values[pname];
                    first = false;
                }
            }
            in.values = values;
            auto vars = values;
            vars["workflow_dir"] = wf.dir;
            vars["step"] = s.name;
            vars["instance"] = in.id;
            auto sub = [&](const Text& t, const std::string& field) -> Result<std::string> {
                auto r = substitute(t.value, vars);
                if (!r) return at(wf, t.mark, where + "." + field, r.error().message());
                return r;
            };
            in.command = DRAGON_TRY(sub(s.command, "command"));
            for (const auto& a : s.args) in.args.push_back(DRAGON_TRY(sub(a, "args")));
            in.cwd = absolute_in(wf.dir, DRAGON_TRY(sub(s.cwd, "cwd")));
            if (in.cwd.empty()) in.cwd = wf.dir;
            for (const auto& [k, v] : wf.env) {
                auto r = substitute(v.value, vars);
                if (!r) return at(wf, v.mark, "env." + k, r.error().message());
                in.env.push_back(k + "=" + *r);
            }
            for (const auto& [k, v] : s.env) in.env.push_back(k + "=" + DRAGON_TRY(sub(v, "env." + k)));
            // A file becomes absolute; a `ddict:key` stays as written (the run's dictionary, one name space).
            auto io = [&](const Text& t, const std::string& field) -> Result<std::string> {
                auto v = DRAGON_TRY(sub(t, field));
                if (!is_ddict_key(v)) return absolute_in(in.cwd, v);
                if (v.size() == kDdictPrefix.size())
                    return at(wf, t.mark, where + "." + field, "'ddict:' needs a key after it (ddict:KEY)");
                return v;
            };
            for (const auto& f : s.inputs) in.inputs.push_back(DRAGON_TRY(io(f, "inputs")));
            for (const auto& f : s.outputs) in.outputs.push_back(DRAGON_TRY(io(f, "outputs")));
            in.stdout_path = absolute_in(in.cwd, DRAGON_TRY(sub(s.stdout_path, "stdout")));
            in.stderr_path = absolute_in(in.cwd, DRAGON_TRY(sub(s.stderr_path, "stderr")));
            if (s.type != StepType::python) {
                // "./prog" is the step's, not the agent's: relative to its cwd. A bare name is searched in PATH.
                in.argv.push_back(in.command.find('/') != std::string::npos ? absolute_in(in.cwd, in.command)
                                                                           : in.command);
                in.argv.insert(in.argv.end(), in.args.begin(), in.args.end());
            }
            of_step[si].push_back(dag.instances.size());
            dag.instances.push_back(std::move(in));
        }
    }
    std::map<std::string, std::size_t> by_id;
    std::map<std::string, std::size_t> step_by_name;
    for (std::size_t i = 0; i < wf.steps.size(); ++i) step_by_name[wf.steps[i].name] = i;
    for (std::size_t i = 0; i < dag.instances.size(); ++i) by_id[dag.instances[i].id] = i;

    // Who writes each file: two writers of one file would race.
    std::map<std::string, std::size_t> writer;
    for (std::size_t i = 0; i < dag.instances.size(); ++i) {
        for (const auto& f : dag.instances[i].outputs) {
            auto [it, fresh] = writer.emplace(f, i);
            if (!fresh && it->second != i) {
                const Step& s = wf.steps[dag.instances[i].step];
                return at(wf, s.outputs.empty() ? s.mark : s.outputs.front().mark,
                          "steps[" + std::to_string(dag.instances[i].step) + "].outputs",
                          "'" + f + "' is written by both '" + dag.instances[it->second].id + "' and '" +
                              dag.instances[i].id + "'");
            }
        }
    }

    // Edges.
    for (std::size_t i = 0; i < dag.instances.size(); ++i) {
        Instance& in = dag.instances[i];
        const Step& s = wf.steps[in.step];
        const std::string where = "steps[" + std::to_string(in.step) + "].depends";
        std::set<std::size_t> deps;
        auto vars = in.values;
        vars["workflow_dir"] = wf.dir;
        vars["step"] = s.name;
        vars["instance"] = in.id;
        for (const auto& d : s.depends) {
            auto target = substitute(d.value, vars);
            if (!target) return at(wf, d.mark, where, target.error().message());
            std::vector<std::size_t> found;
            if (auto st = step_by_name.find(*target); st != step_by_name.end()) {
                // The instances of that step that agree on the parameters both use.
                for (auto j : of_step[st->second]) {
                    bool agree = true;
                    for (const auto& [p, v] : dag.instances[j].values)
                        if (auto mine = in.values.find(p); mine != in.values.end() && mine->second != v) agree = false;
                    if (agree) found.push_back(j);
                }
                if (found.empty()) found = of_step[st->second];
            } else if (auto it = by_id.find(*target); it != by_id.end()) {
                found.push_back(it->second);
            } else if (has_glob(*target)) {
                for (std::size_t j = 0; j < dag.instances.size(); ++j) {
                    const auto& other = dag.instances[j];
                    if (fnmatch(target->c_str(), other.id.c_str(), 0) == 0 ||
                        fnmatch(target->c_str(), wf.steps[other.step].name.c_str(), 0) == 0)
                        if (j != i && other.step != in.step) found.push_back(j);
                }
                if (found.empty()) return at(wf, d.mark, where, "'" + *target + "' matches no step");
            } else {
                std::string names;
                for (const auto& st2 : wf.steps) names += (names.empty() ? "" : ", ") + st2.name;
                return at(wf, d.mark, where, "'" + *target + "' is not a step (steps: " + names + ")");
            }
            for (auto j : found) {
                if (dag.instances[j].step == in.step)
                    return at(wf, d.mark, where, "step '" + s.name + "' depends on itself");
                deps.insert(j);
            }
        }
        for (const auto& f : in.inputs)
            if (auto w = writer.find(f); w != writer.end() && w->second != i) deps.insert(w->second);
        in.deps.assign(deps.begin(), deps.end());
    }

    // Topological order (Kahn); what is left over holds a cycle.
    const std::size_t n = dag.instances.size();
    std::vector<std::size_t> indeg(n, 0);
    std::vector<std::vector<std::size_t>> users(n);
    for (std::size_t i = 0; i < n; ++i)
        for (auto d : dag.instances[i].deps) {
            ++indeg[i];
            users[d].push_back(i);
        }
    std::vector<std::size_t> order;
    order.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
        if (indeg[i] == 0) order.push_back(i);
    for (std::size_t k = 0; k < order.size(); ++k)
        for (auto u : users[order[k]])
            if (--indeg[u] == 0) order.push_back(u);
    if (order.size() != n) {
        // Walk back along deps that are still blocked until a node repeats.
        std::size_t cur = 0;
        while (indeg[cur] == 0) ++cur;
        std::vector<std::size_t> path;
        std::map<std::size_t, std::size_t> pos;
        while (!pos.contains(cur)) {
            pos[cur] = path.size();
            path.push_back(cur);
            for (auto d : dag.instances[cur].deps)
                if (indeg[d] != 0) {
                    cur = d;
                    break;
                }
        }
        std::string cycle;
        // "a -> b": a depends on b.
        for (std::size_t k = pos[cur]; k < path.size(); ++k) cycle += dag.instances[path[k]].id + " -> ";
        cycle += dag.instances[cur].id;
        const Step& s = wf.steps[dag.instances[cur].step];
        const Mark m = s.depends.empty() ? (s.inputs.empty() ? s.mark : s.inputs.front().mark) : s.depends.front().mark;
        return at(wf, m, "steps[" + std::to_string(dag.instances[cur].step) + "].depends",
                  "a dependency cycle: " + cycle);
    }
    std::vector<std::size_t> new_index(n);
    for (std::size_t k = 0; k < n; ++k) new_index[order[k]] = k;
    Dag sorted;
    sorted.instances.reserve(n);
    for (auto i : order) {
        Instance in = std::move(dag.instances[i]);
        for (auto& d : in.deps) d = new_index[d];
        std::sort(in.deps.begin(), in.deps.end());
        sorted.instances.push_back(std::move(in));
    }
    return sorted;
}

namespace {
std::string dot_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if (c == '\n') {
            o += "\\n";
            continue;
        }
        o += c;
    }
    return o;
}
}  // namespace

std::string to_dot(const Workflow& wf, const Dag& dag) {
    std::ostringstream o;
    o << "digraph \"" << dot_escape(wf.name.empty() ? "workflow" : wf.name) << "\" {\n"
      << "  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n";
    for (std::size_t i = 0; i < dag.instances.size(); ++i) {
        const auto& in = dag.instances[i];
        const Step& s = wf.steps[in.step];
        const char* color = in.type == StepType::mpi ? "#cfe2ff" : in.type == StepType::python ? "#d1e7dd" : "#fff3cd";
        o << "  n" << i << " [label=\"" << dot_escape(in.id) << "\\n" << to_string(in.type);
        if (s.nprocs > 1) o << " x" << s.nprocs;
        o << "\", fillcolor=\"" << color << "\"];\n";
    }
    for (std::size_t i = 0; i < dag.instances.size(); ++i)
        for (auto d : dag.instances[i].deps) o << "  n" << d << " -> n" << i << ";\n";
    o << "}\n";
    return o.str();
}

std::string plan_text(const Workflow& wf, const Dag& dag) {
    std::ostringstream o;
    o << "workflow " << (wf.name.empty() ? wf.file : wf.name) << ": " << wf.steps.size() << " steps, "
      << dag.instances.size() << " instances\n";
    for (std::size_t i = 0; i < dag.instances.size(); ++i) {
        const auto& in = dag.instances[i];
        const Step& s = wf.steps[in.step];
        o << "  " << i + 1 << ". " << in.id << " [" << to_string(in.type);
        if (s.nprocs > 1 || s.type == StepType::mpi) o << ", " << s.nprocs << " procs";
        if (s.nodes > 0) o << " on " << s.nodes << " nodes";
        if (s.type == StepType::mpi) o << ", pmi " << s.pmi;
        if (s.retries > 0) o << ", retries " << s.retries;
        if (s.timeout > 0) o << ", timeout " << s.timeout << "s";
        o << "]\n     run: " << in.command;
        for (const auto& a : in.args) o << " " << a;
        o << "\n";
        if (!in.deps.empty()) {
            o << "     after:";
            for (auto d : in.deps) o << " " << dag.instances[d].id;
            o << "\n";
        }
    }
    return o.str();
}

}  // namespace dragon::workflows
