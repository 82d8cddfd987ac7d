// The workflow loader: YAML text -> a validated Workflow, every error naming
// file:line:column and the field. yaml-cpp throws; nothing escapes this file.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "dragon/workflows/workflow.hpp"
#include "subst.hpp"

namespace dragon::workflows {

std::string_view to_string(StepType t) noexcept {
    switch (t) {
    case StepType::mpi: return "mpi";
    case StepType::process: return "process";
    case StepType::python: return "python";
    }
    return "?";
}

namespace {

constexpr std::size_t kMaxFileBytes = 16U << 20;
constexpr std::size_t kMaxSteps = 100000;
constexpr std::size_t kMaxValues = 100000;

// Thrown inside the loader only, turned into an Error at its edge.
struct LoadError {
    Mark mark;
    std::string field;
    std::string problem;
};

Mark mark_of(const YAML::Node& n) {
    const auto m = n.Mark();
    if (m.line < 0) return {};
    return {m.line + 1, m.column + 1};
}

[[noreturn]] void fail(const YAML::Node& n, std::string field, std::string problem) {
    throw LoadError{mark_of(n), std::move(field), std::move(problem)};
}

std::string kind_of(const YAML::Node& n) {
    switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an undefined node";
    }
}

std::string scalar(const YAML::Node& n, const std::string& field) {
    if (!n.IsScalar()) fail(n, field, "expected a string, got " + kind_of(n));
    return n.Scalar();
}

Text text(const YAML::Node& n, const std::string& field) { return {scalar(n, field), mark_of(n)}; }

std::uint64_t whole(const YAML::Node& n, const std::string& field, std::uint64_t lo, std::uint64_t hi) {
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    std::uint64_t v = 0;
    bool okay = n.IsScalar() && !s.empty() && s.size() <= 12;
    for (char c : s) {
        if (c < '0' || c > '9') {
            okay = false;
            break;
        }
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (!okay || v < lo || v > hi)
        fail(n, field, "expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                           kind_of(n));
    return v;
}

double seconds(const YAML::Node& n, const std::string& field) {
    // A number of seconds, or with a unit: 90, 1.5, 30s, 5m, 2h.
    const std::string s = n.IsScalar() ? n.Scalar() : std::string();
    double mult = 1;
    std::string num = s;
    if (!num.empty() && (num.back() == 's' || num.back() == 'm' || num.back() == 'h')) {
        mult = num.back() == 'm' ? 60 : num.back() == 'h' ? 3600 : 1;
        num.pop_back();
    }
    char* end = nullptr;
    errno = 0;
    const double v = num.empty() ? -1 : std::strtod(num.c_str(), &end);
    if (!n.IsScalar() || num.empty() || end == nullptr || *end != '\0' || errno != 0 || !std::isfinite(v) || v < 0 ||
        v * mult > 1e7 || std::isalpha(static_cast<unsigned char>(num[0])))
        fail(n, field, "expected a duration in seconds (90, 1.5, 30s, 5m, 2h), got " + kind_of(n));
    return v * mult;
}

std::vector<Text> text_list(const YAML::Node& n, const std::string& field) {
    // A list of strings, or one string standing for a list of one.
    std::vector<Text> out;
    if (n.IsScalar()) {
        out.push_back(text(n, field));
        return out;
    }
    if (n.IsNull()) return out;
    if (!n.IsSequence()) fail(n, field, "expected a list of strings, got " + kind_of(n));
    if (n.size() > kMaxValues) fail(n, field, "more than " + std::to_string(kMaxValues) + " entries");
    std::size_t i = 0;
    for (const auto& e : n) out.push_back(text(e, field + "[" + std::to_string(i++) + "]"));
    return out;
}

bool valid_name(const std::string& s) {
    if (s.empty() || s.size() > 128) return false;
    if (!std::isalpha(static_cast<unsigned char>(s[0])) && s[0] != '_') return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
}

bool valid_env_name(const std::string& s) {
    if (s.empty() || s.size() > 256 || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::vector<std::pair<std::string, Text>> env_map(const YAML::Node& n, const std::string& field) {
    std::vector<std::pair<std::string, Text>> out;
    if (n.IsNull()) return out;
    if (!n.IsMap()) fail(n, field, "expected a mapping of NAME: value, got " + kind_of(n));
    std::set<std::string> seen;
    for (const auto& kv : n) {
        const std::string key = scalar(kv.first, field);
        if (!valid_env_name(key)) fail(kv.first, field, "'" + key + "' is not an environment variable name");
        if (!seen.insert(key).second) fail(kv.first, field + "." + key, "given twice");
        out.emplace_back(key, text(kv.second, field + "." + key));
    }
    return out;
}

template <class F>
void each_field(const YAML::Node& map, const std::string& where, const std::vector<std::string_view>& known, F&& f) {
    std::set<std::string> seen;
    for (const auto& kv : map) {
        if (!kv.first.IsScalar()) fail(kv.first, where, "a key must be a plain name, got " + kind_of(kv.first));
        const std::string key = kv.first.Scalar();
        const std::string field = where.empty() ? key : where + "." + key;
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            std::string list;
            for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
            fail(kv.first, field, "unknown field (known: " + list + ")");
        }
        if (!seen.insert(key).second) fail(kv.first, field, "given twice");
        f(key, field, kv.second);
    }
}

const std::vector<std::string_view> kTopFields = {"name", "description", "env", "parameters", "steps"};
const std::vector<std::string_view> kStepFields = {
    "name", "description", "type", "command", "args", "nprocs", "nodes", "placement", "bind", "pmi", "env", "cwd",
    "depends", "inputs", "outputs", "retries", "timeout", "stdout", "stderr", "expand"};

Step load_step(const YAML::Node& n, const std::string& where) {
    if (!n.IsMap()) fail(n, where, "expected a step (a mapping with name, type, command, ...), got " + kind_of(n));
    Step s;
    s.mark = mark_of(n);
    bool have_type = false, have_command = false;
    YAML::Node pmi_node;
    each_field(n, where, kStepFields, [&](const std::string& key, const std::string& field, const YAML::Node& v) {
        if (key == "name") {
            s.name = scalar(v, field);
            if (!valid_name(s.name))
                fail(v, field, "'" + s.name + "' is not a step name (letters, digits, _ - . ; starting with a letter)");
        } else if (key == "description") {
            (void)scalar(v, field);
        } else if (key == "type") {
            const auto t = scalar(v, field);
            if (t == "mpi") s.type = StepType::mpi;
            else if (t == "process") s.type = StepType::process;
            else if (t == "python") s.type = StepType::python;
            else fail(v, field, "expected mpi, process or python, got '" + t + "'");
            have_type = true;
        } else if (key == "command") {
            s.command = text(v, field);
            if (s.command.value.empty()) fail(v, field, "empty command");
            have_command = true;
        } else if (key == "args") {
            if (v.IsScalar()) fail(v, field, "expected a list of arguments (one string per argument), got " + kind_of(v));
            s.args = text_list(v, field);
        } else if (key == "nprocs") {
            s.nprocs = static_cast<std::uint32_t>(whole(v, field, 1, 65536));
        } else if (key == "nodes") {
            s.nodes = static_cast<std::uint32_t>(whole(v, field, 1, 65536));
        } else if (key == "placement") {
            s.placement = scalar(v, field);
            if (s.placement != "block" && s.placement != "cyclic" && s.placement != "spread")
                fail(v, field, "expected block, cyclic or spread, got '" + s.placement + "'");
        } else if (key == "bind") {
            s.binding = scalar(v, field);
            static const std::set<std::string> kinds = {"none", "core", "pu", "numa", "socket"};
            if (!kinds.contains(s.binding)) fail(v, field, "expected none, core, pu, numa or socket, got '" + s.binding + "'");
        } else if (key == "pmi") {
            s.pmi = scalar(v, field);
            if (s.pmi != "simple" && s.pmi != "cray" && s.pmi != "pmix" && s.pmi != "none")
                fail(v, field, "expected simple, cray, pmix or none, got '" + s.pmi + "'");
            pmi_node = v;
        } else if (key == "env") {
            s.env = env_map(v, field);
        } else if (key == "cwd") {
            s.cwd = text(v, field);
        } else if (key == "depends") {
            s.depends = text_list(v, field);
        } else if (key == "inputs") {
            s.inputs = text_list(v, field);
        } else if (key == "outputs") {
            s.outputs = text_list(v, field);
        } else if (key == "retries") {
            s.retries = static_cast<std::uint32_t>(whole(v, field, 0, 1000));
        } else if (key == "timeout") {
            s.timeout = seconds(v, field);
        } else if (key == "stdout") {
            s.stdout_path = text(v, field);
        } else if (key == "stderr") {
            s.stderr_path = text(v, field);
        } else if (key == "expand") {
            const auto e = scalar(v, field);
            if (e == "product") s.expand = Expand::product;
            else if (e == "zip") s.expand = Expand::zip;
            else fail(v, field, "expected product or zip, got '" + e + "'");
        }
    });
    if (s.name.empty()) fail(n, where + ".name", "missing: every step needs a name");
    if (!have_type) fail(n, where + ".type", "missing: mpi, process or python");
    if (!have_command) fail(n, where + ".command", "missing: the program (or module:function, or script) to run");
    if (s.type == StepType::mpi && s.pmi.empty()) s.pmi = "simple";
    if (s.type != StepType::mpi && !s.pmi.empty() && s.pmi != "none")
        fail(pmi_node, where + ".pmi", "only mpi steps get PMI (this step is " + std::string(to_string(s.type)) + ")");
    if (s.pmi.empty()) s.pmi = "none";
    if (s.nodes > s.nprocs) fail(n, where + ".nodes", "more nodes than nprocs");
    return s;
}

// The ${name} references of every text field of a step.
void collect_refs(const Step& s, const std::function<void(const Text&, const std::string&)>& f) {
    auto one = [&](const Text& t, const std::string& field) {
        if (t.mark.line != 0 || !t.value.empty()) f(t, field);
    };
    one(s.command, "command");
    for (const auto& a : s.args) one(a, "args");
    for (const auto& [k, v] : s.env) one(v, "env." + k);
    one(s.cwd, "cwd");
    for (const auto& d : s.depends) one(d, "depends");
    for (const auto& d : s.inputs) one(d, "inputs");
    for (const auto& d : s.outputs) one(d, "outputs");
    one(s.stdout_path, "stdout");
    one(s.stderr_path, "stderr");
}

Workflow load_root(const YAML::Node& root, const std::string& file, const std::string& dir) {
    Workflow wf;
    wf.file = file;
    wf.dir = dir;
    if (!root.IsMap()) fail(root, "", "a workflow is a mapping with name, steps, ...; got " + kind_of(root));
    bool have_steps = false;
    each_field(root, "", kTopFields, [&](const std::string& key, const std::string& field, const YAML::Node& v) {
        if (key == "name") {
            wf.name = scalar(v, field);
        } else if (key == "description") {
            wf.description = scalar(v, field);
        } else if (key == "env") {
            wf.env = env_map(v, field);
        } else if (key == "parameters") {
            if (!v.IsMap()) fail(v, field, "expected a mapping of name: [values], got " + kind_of(v));
            std::set<std::string> seen;
            for (const auto& kv : v) {
                Parameter p;
                p.name = scalar(kv.first, field);
                p.mark = mark_of(kv.first);
                const std::string pf = field + "." + p.name;
                if (!valid_env_name(p.name)) fail(kv.first, pf, "not a parameter name (letters, digits, _)");
                if (p.name == "workflow_dir" || p.name == "step" || p.name == "instance")
                    fail(kv.first, pf, "'" + p.name + "' is reserved (a built-in ${" + p.name + "})");
                if (!seen.insert(p.name).second) fail(kv.first, pf, "given twice");
                if (kv.second.IsScalar()) {
                    p.values.push_back(kv.second.Scalar());
                } else if (kv.second.IsSequence()) {
                    if (kv.second.size() > kMaxValues) fail(kv.second, pf, "too many values");
                    std::size_t i = 0;
                    for (const auto& e : kv.second) p.values.push_back(scalar(e, pf + "[" + std::to_string(i++) + "]"));
                } else {
                    fail(kv.second, pf, "expected a list of values, got " + kind_of(kv.second));
                }
                if (p.values.empty()) fail(kv.second, pf, "an empty list of values");
                std::set<std::string> vs(p.values.begin(), p.values.end());
                if (vs.size() != p.values.size()) fail(kv.second, pf, "a value is given twice");
                wf.parameters.push_back(std::move(p));
            }
        } else if (key == "steps") {
            have_steps = true;
            if (!v.IsSequence()) fail(v, field, "expected a list of steps, got " + kind_of(v));
            if (v.size() == 0) fail(v, field, "no steps");
            if (v.size() > kMaxSteps) fail(v, field, "more than " + std::to_string(kMaxSteps) + " steps");
            std::map<std::string, Mark> names;
            std::size_t i = 0;
            for (const auto& sn : v) {
                const std::string where = "steps[" + std::to_string(i++) + "]";
                Step s = load_step(sn, where);
                if (auto [it, fresh] = names.emplace(s.name, s.mark); !fresh)
                    fail(sn, where + ".name",
                         "step '" + s.name + "' is defined twice (first at line " + std::to_string(it->second.line) + ")");
                wf.steps.push_back(std::move(s));
            }
        }
    });
    if (!have_steps) fail(root, "steps", "missing: a workflow needs a list of steps");
    // Every ${name} must be a parameter or a built-in; note which each step uses.
    std::set<std::string> pnames;
    for (const auto& p : wf.parameters) pnames.insert(p.name);
    for (std::size_t i = 0; i < wf.steps.size(); ++i) {
        auto& s = wf.steps[i];
        std::set<std::string> used;
        collect_refs(s, [&](const Text& t, const std::string& field) {
            auto refs = references(t.value);
            const std::string where = "steps[" + std::to_string(i) + "]." + field;
            if (!refs) throw LoadError{t.mark, where, refs.error().message()};
            for (const auto& r : *refs) {
                if (pnames.contains(r)) used.insert(r);
                else if (r != "workflow_dir" && r != "step" && r != "instance")
                    throw LoadError{t.mark, where, "unknown parameter '${" + r + "}' (parameters: " +
                                                       (pnames.empty() ? std::string("none") : [&] {
                                                           std::string l;
                                                           for (const auto& p : pnames) l += (l.empty() ? "" : ", ") + p;
                                                           return l;
                                                       }()) + ")"};
            }
        });
        for (const auto& p : wf.parameters)
            if (used.contains(p.name)) s.params.push_back(p.name);
    }
    for (const auto& [k, v] : wf.env) {
        auto refs = references(v.value);
        if (!refs) throw LoadError{v.mark, "env." + k, refs.error().message()};
        for (const auto& r : *refs)
            if (r != "workflow_dir")
                throw LoadError{v.mark, "env." + k, "'${" + r + "}': the workflow's env may use only ${workflow_dir}"};
    }
    return wf;
}

}  // namespace

Result<Workflow> load_string(const std::string& text_in, const std::string& file, const std::string& dir) {
    auto at = [&](Mark m, const std::string& field, const std::string& problem) {
        std::string where = file;
        if (m.line > 0) where += ":" + std::to_string(m.line) + ":" + std::to_string(m.column);
        return Error(Errc::invalid_argument, where + ": " + (field.empty() ? "" : field + ": ") + problem);
    };
    if (text_in.size() > kMaxFileBytes) return at({}, "", "larger than 16 MiB");
    if (text_in.find('\0') != std::string::npos) return at({}, "", "not a text file (a NUL byte)");
    try {
        YAML::Node root = YAML::Load(text_in);
        if (root.IsNull()) return at({1, 1}, "", "empty file: a workflow needs at least steps");
        return load_root(root, file, dir);
    } catch (const LoadError& e) {
        return at(e.mark, e.field, e.problem);
    } catch (const YAML::Exception& e) {
        return at({e.mark.line + 1, e.mark.column + 1}, "", "YAML: " + e.msg);
    } catch (const std::exception& e) {
        return at({}, "", std::string("YAML: ") + e.what());
    }
}

Result<Workflow> load_file(const std::string& path) {
    std::error_code ec;
    const auto abs = std::filesystem::absolute(path, ec);
    if (ec) return make_error(Errc::system, "{}: {}", path, ec.message());
    std::ifstream in(abs, std::ios::binary);
    if (!in) return make_error(errno == ENOENT ? Errc::not_found : Errc::system, "{}: cannot read: {}", path,
                               std::strerror(errno));
    std::string text;
    char buf[65536];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
        text.append(buf, static_cast<std::size_t>(in.gcount()));
        if (text.size() > kMaxFileBytes) return make_error(Errc::invalid_argument, "{}: larger than 16 MiB", path);
    }
    return load_string(text, path, abs.parent_path().string());
}

}  // namespace dragon::workflows
