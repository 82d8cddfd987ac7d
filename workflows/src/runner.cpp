// The workflow runner (see runner.hpp): one loop that starts ready instances
// where cpus are free, pumps the agent's events, and moves each instance
// through its state table.
#include "runner.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "dragon/common/group_rules.hpp"
#include "dragon/common/sys.hpp"
#include "dragon/orchestrator/ddict.hpp"
#include "dragon/orchestrator/process_group.hpp"

namespace dragon::workflows {

namespace fs = std::filesystem;
using client::Clock;

namespace {

enum class State { waiting, ready, running, done, failed, skipped, cancelled, resumed, interrupted };

const char* name_of(State s) {
    switch (s) {
    case State::waiting: return "waiting";
    case State::ready: return "ready";
    case State::running: return "running";
    case State::done: return "done";
    case State::failed: return "failed";
    case State::skipped: return "skipped";
    case State::cancelled: return "cancelled";
    case State::resumed: return "done earlier";
    case State::interrupted: return "interrupted";
    }
    return "?";
}

// One rank of one attempt, as its node's agent reported it (start: after
// fork, end: when reaped), for the trace.
struct RankSpan {
    std::uint32_t rank = 0;
    int pid = 0;
    std::uint32_t node = 0;
    double start = 0, end = 0;  // seconds since the run began; end < 0: never reaped
    int exit_code = 0, signal = 0;
};

struct Span {
    double start = 0, end = 0;  // seconds since the run began
    std::uint32_t attempt = 0;
    int exit_code = 0;
    std::string why;
    std::string nodes;  // node ids, blank-separated
    std::string ranks;  // ranks on each, "+"-separated
    std::vector<RankSpan> rank_spans;  // with --trace: the ranks that started
};

struct Slot {
    State state = State::waiting;
    std::size_t waiting_on = 0;
    std::uint32_t attempts = 0;
    std::unique_ptr<client::ProcessGroup> group;
    double started = 0;
    std::optional<Clock::time_point> deadline;
    bool timed_out = false;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> held;  // (node index, cpus)
    int exit_code = 0;
    std::string why;
    std::vector<Span> spans;
    std::string fingerprint;
    // The default logs (no stdout/stderr path in the step): the ranks' output
    // comes to the runner (owner pipes), which creates a log with its first
    // byte. A quiet instance leaves no file, and a run of thousands of small
    // steps creates no thousands of empty ones (file creation was most of
    // the agent's work per step on ext4).
    struct Log {
        std::string path;  // empty: the step names its own file (the agent writes it)
        int fd = -1;
    };
    Log logs[2];  // stdout, stderr
};

struct NodeUse {
    std::uint32_t id = 0;
    std::uint32_t cpus = 1;
    std::uint32_t used = 0;
    [[nodiscard]] std::uint32_t free() const { return used >= cpus ? 0 : cpus - used; }
};

volatile std::sig_atomic_t g_interrupted = 0;
void on_signal(int) { g_interrupted = 1; }

std::string fnv_hex(const std::string& s) {
    std::uint64_t h = 1469598103934665603ULL;
    for (char ch : s) {
        h ^= static_cast<unsigned char>(ch);
        h *= 1099511628211ULL;
    }
    return fmt::format("{:016x}", h);
}

std::string file_safe(const std::string& id) {
    std::string o = id;
    for (auto& c : o)
        if (c == '/' || c == ' ') c = '_';  // one file, in logs/
    return o;
}

std::string pattern_of(const std::string& path) {  // a literal path as a procgroup path pattern
    std::string o;
    for (char c : path) {
        if (c == '%') o += '%';
        o += c;
    }
    return o;
}

std::string comma_list(std::string s, char sep) {
    std::replace(s.begin(), s.end(), sep, ',');
    return s;
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            o += '\\';
            o += static_cast<char>(c);
        } else if (c < 0x20) {
            o += fmt::format("\\u{:04x}", c);
        } else {
            o += static_cast<char>(c);
        }
    }
    return o;
}

// The Python a `python` step runs: `module:function` called with the step's
// args (a returned int is the exit code), or a script run as __main__.
constexpr const char* kPythonShim =
    "import sys\n"
    "spec, args = sys.argv[1], sys.argv[2:]\n"
    "if ':' in spec and not spec.endswith('.py'):\n"
    "    import importlib\n"
    "    mod, fn = spec.split(':', 1)\n"
    "    sys.argv = [spec] + args\n"
    "    r = getattr(importlib.import_module(mod), fn)(*args)\n"
    "    sys.exit(r if isinstance(r, int) and not isinstance(r, bool) else (1 if r is False else 0))\n"
    "else:\n"
    "    import runpy\n"
    "    sys.argv = [spec] + args\n"
    "    runpy.run_path(spec, run_name='__main__')\n";

// The owner of the run's distributed dictionary (docs/workflows.md,
// "Distributed-dictionary keys"): creates it, prints its handle, keeps it
// until its stdin closes (the runner's end, or the runner's death), then
// destroys it. Its managers are its own group, so they stop with it.
constexpr const char* kDdictOwner =
    "import sys\n"
    "from dragon.data.ddict import DDict\n"
    "d = DDict(managers_per_node=1, n_nodes=int(sys.argv[1]), total_mem=int(sys.argv[2]))\n"
    "try:\n"
    "    sys.stdout.write(d.serialize() + '\\n')\n"
    "    sys.stdout.flush()\n"
    "    sys.stdin.read()\n"
    "finally:\n"
    "    d.destroy()\n";

class Runner {
public:
    Runner(client::Session& s, const Workflow& wf, const Dag& dag, const RunnerOptions& o)
        : session_(s), wf_(wf), dag_(dag), opts_(o), slots_(dag.instances.size()), users_(dag.instances.size()) {}

    Result<int> run();

private:
    double now() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
    double since_start(std::int64_t wall_ns) const { return static_cast<double>(wall_ns - t0_wall_ns_) / 1e9; }
    void collect_ranks(std::size_t i);
    Status prepare();
    Status start_ddict();
    void stop_ddict();
    std::string missing_output(std::size_t i);
    void launch_ready();
    bool place(std::size_t i, std::vector<std::pair<std::uint32_t, std::uint32_t>>& out);
    void start(std::size_t i);
    void finish(std::size_t i);
    void drain_output(std::size_t i);
    void close_logs(std::size_t i);
    bool take_start_answers();
    void end_attempt(std::size_t i, bool success, int code, std::string why);
    void mark_done(std::size_t i, State st);
    void skip_dependents(std::size_t i);
    void cancel_all(const std::string& why);
    void event(const std::string& line);
    void draw(bool final);
    void summary();
    Status write_trace();

    client::Session& session_;
    const Workflow& wf_;
    const Dag& dag_;
    RunnerOptions opts_;
    std::vector<Slot> slots_;
    std::vector<std::vector<std::size_t>> users_;
    std::vector<NodeUse> nodes_;
    std::set<std::size_t> ready_;    // by topological index
    std::set<std::size_t> running_;
    Clock::time_point t0_ = Clock::now();
    std::int64_t t0_wall_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    std::string dir_;
    std::ofstream state_;
    bool stopping_ = false;
    int drawn_lines_ = 0;
    double last_draw_ = -1;
    std::size_t next_node_ = 0;
    // The run's distributed dictionary, when a step names a `ddict:` key.
    std::unique_ptr<client::ProcessGroup> ddict_owner_;
    std::string ddict_handle_;
    std::optional<ddict::DDict> ddict_;  // the runner's own client (output checks)
};

Status Runner::prepare() {
    dir_ = state_dir(wf_);
    std::error_code ec;
    fs::create_directories(fs::path(dir_) / "logs", ec);
    if (ec) return make_error(Errc::system, "cannot create {}: {}", dir_, ec.message());
    // What an instance is: its command, environment and folder. A changed
    // instance is not "done" in an earlier run's state.
    for (std::size_t i = 0; i < dag_.instances.size(); ++i) {
        const auto& in = dag_.instances[i];
        std::string key = std::string(to_string(in.type)) + '\0' + in.command;
        for (const auto& a : in.args) key += '\0' + a;
        for (const auto& e : in.env) key += '\1' + e;
        key += '\2' + in.cwd;
        slots_[i].fingerprint = fnv_hex(key);
        for (auto d : in.deps) users_[d].push_back(i);
        slots_[i].waiting_on = in.deps.size();
    }
    const auto state_file = (fs::path(dir_) / "state").string();
    std::set<std::pair<std::string, std::string>> done_before;
    if (opts_.resume) {
        std::ifstream in(state_file);
        std::string line;
        while (std::getline(in, line)) {
            // done <TAB> id <TAB> fingerprint
            const auto a = line.find('\t'), b = line.rfind('\t');
            if (a == std::string::npos || b == a || line.substr(0, a) != "done") continue;
            done_before.emplace(line.substr(a + 1, b - a - 1), line.substr(b + 1));
        }
    }
    state_.open(state_file, opts_.resume ? std::ios::app : std::ios::trunc);
    if (!state_) return make_error(Errc::system, "cannot write {}", state_file);
    for (std::size_t i = 0; i < dag_.instances.size(); ++i) {
        // An instance is done earlier only if everything it waits for is too.
        bool deps_resumed = std::all_of(dag_.instances[i].deps.begin(), dag_.instances[i].deps.end(),
                                        [&](std::size_t d) { return slots_[d].state == State::resumed; });
        // ... and its outputs are still there: files that exist (a key of an
        // earlier run's dictionary is gone with it, so such an instance runs again).
        const auto& outs = dag_.instances[i].outputs;
        const bool outputs_there = std::all_of(outs.begin(), outs.end(), [](const std::string& o) {
            std::error_code no_throw;
            return !is_ddict_key(o) && fs::exists(o, no_throw);
        });
        if (deps_resumed && outputs_there && done_before.contains({dag_.instances[i].id, slots_[i].fingerprint})) {
            slots_[i].state = State::resumed;
            state_ << "done\t" << dag_.instances[i].id << '\t' << slots_[i].fingerprint << '\n';
        }
    }
    state_.flush();
    for (std::size_t i = 0; i < dag_.instances.size(); ++i) {
        if (slots_[i].state == State::resumed) continue;
        std::size_t n = 0;
        for (auto d : dag_.instances[i].deps)
            if (slots_[d].state != State::resumed) ++n;
        slots_[i].waiting_on = n;
        if (n == 0) {
            slots_[i].state = State::ready;
            ready_.insert(i);
        }
    }
    auto machine = session_.machine();
    if (!machine) return std::move(machine).error().context("asking the runtime for its nodes");
    for (const auto& m : *machine) nodes_.push_back({m.node_id, std::max<std::uint32_t>(1, m.cpus), 0});
    if (nodes_.empty()) nodes_.push_back({0, 1, 0});
    return start_ddict();
}

// A dictionary for the run when an instance that will run names a key.
Status Runner::start_ddict() {
    bool used = false;
    for (std::size_t i = 0; i < dag_.instances.size() && !used; ++i) {
        if (slots_[i].state == State::resumed) continue;
        const auto& in = dag_.instances[i];
        for (const auto* v : {&in.inputs, &in.outputs})
            used = used || std::any_of(v->begin(), v->end(), [](const std::string& s) { return is_ddict_key(s); });
    }
    if (!used) return ok();
    std::uint64_t mem = 1ULL << 30;  // the managers' heap bound, all together (not reserved)
    if (const char* m = std::getenv("DRAGON_WORKFLOW_DDICT_MEM"); m != nullptr && *m != '\0')
        mem = std::strtoull(m, nullptr, 10);
    client::GroupOptions go;
    ddict_owner_ = std::make_unique<client::ProcessGroup>(session_, go);
    client::ProcessTemplate t;
    t.argv = {opts_.python, "-c", kDdictOwner, std::to_string(nodes_.size()), std::to_string(mem)};
    t.node = static_cast<std::int32_t>(session_.node_id());
    std::string pp = opts_.python_path;
    if (const char* env_pp = std::getenv("PYTHONPATH"); env_pp != nullptr && *env_pp != '\0')
        pp += (pp.empty() ? "" : ":") + std::string(env_pp);
    t.env.push_back("PYTHONPATH=" + pp);
    t.stdin_redirect = client::Redirect::pipe();
    t.stdout_redirect = client::Redirect::pipe();
    t.stderr_redirect = client::Redirect::file(pattern_of((fs::path(dir_) / "logs" / "@ddict.err").string()));
    ddict_owner_->add(std::move(t), 1);
    if (auto st = ddict_owner_->start(); !st) return std::move(st).error().context("starting the run's dictionary");
    std::string got;
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    while (got.find('\n') == std::string::npos) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
        if (left.count() <= 0) break;
        auto r = ddict_owner_->read_output(0, msg::Stream::out, left);
        if (!r) return std::move(r).error().context("waiting for the run's dictionary");
        if (r->empty() && ddict_owner_->outcome()) break;  // it ended
        if (r->empty() && session_.events(ddict_owner_->id()).done) break;
        got += *r;
    }
    if (got.find('\n') == std::string::npos)
        return make_error(Errc::system, "the run's distributed dictionary did not start (see {})",
                          (fs::path(dir_) / "logs" / "@ddict.err").string());
    ddict_handle_ = got.substr(0, got.find('\n'));
    event(fmt::format("ddict  the run's dictionary: {} manager{}", nodes_.size(), nodes_.size() > 1 ? "s" : ""));
    return ok();
}

// Destroys the dictionary: the owner's stdin closes, it destroys it and ends.
void Runner::stop_ddict() {
    ddict_.reset();
    if (!ddict_owner_) return;
    (void)ddict_owner_->write_stdin(0, {}, true);
    // After Ctrl-C the runtime is stopping (it signals every process, the
    // managers too, and removes the shared memory itself): do not wait long.
    auto joined = ddict_owner_->join(g_interrupted ? std::chrono::seconds(1) : std::chrono::seconds(30));
    if (!joined || !*joined) (void)ddict_owner_->kill();
    (void)ddict_owner_->close();
    ddict_owner_.reset();
}

// After a successful attempt: the first declared output that is not there
// (a file that does not exist, a key the dictionary does not hold), or "".
std::string Runner::missing_output(std::size_t i) {
    for (const auto& o : dag_.instances[i].outputs) {
        if (!is_ddict_key(o)) {
            std::error_code ec;
            if (!fs::exists(o, ec)) return "did not write its output " + o;
            continue;
        }
        if (!ddict_) {
            auto d = ddict::DDict::attach(ddict_handle_);
            if (!d) return "cannot check its output " + o + ": " + d.error().message();
            ddict_.emplace(std::move(*d));
        }
        auto has = ddict_->contains(o.substr(kDdictPrefix.size()));
        if (!has) return "cannot check its output " + o + ": " + has.error().message();
        if (!*has) return "did not write its output " + o;
    }
    return {};
}

// Chooses nodes for an instance's ranks: all on the node with the most free
// cpus when they fit there, else spread; `nodes: N` splits them over N
// nodes. False when they do not fit now (something else must end first).
bool Runner::place(std::size_t i, std::vector<std::pair<std::uint32_t, std::uint32_t>>& out) {
    const Step& s = wf_.steps[dag_.instances[i].step];
    const std::uint32_t n = s.nprocs;
    out.clear();
    std::vector<std::uint32_t> order(nodes_.size());
    for (std::size_t k = 0; k < order.size(); ++k) order[k] = static_cast<std::uint32_t>((k + next_node_) % nodes_.size());
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return nodes_[a].free() > nodes_[b].free(); });
    const bool alone = running_.empty();  // nothing else runs: start even oversubscribed
    if (s.nodes > 0) {
        const std::uint32_t want = std::min<std::uint32_t>(s.nodes, static_cast<std::uint32_t>(nodes_.size()));
        for (std::uint32_t k = 0; k < want; ++k) {
            const std::uint32_t share = n / want + (k < n % want ? 1 : 0);
            if (share == 0) continue;
            if (nodes_[order[k]].free() < share && !alone) return false;
            out.emplace_back(order[k], share);
        }
        return true;
    }
    if (nodes_[order[0]].free() >= n) {
        out.emplace_back(order[0], n);
        return true;
    }
    std::uint32_t left = n;
    for (auto k : order) {
        const auto take = std::min(left, nodes_[k].free());
        if (take > 0) out.emplace_back(k, take);
        left -= take;
        if (left == 0) return true;
    }
    if (!alone) return false;
    // Oversubscribed: the rest round-robin over all nodes.
    for (std::uint32_t k = 0; left > 0; k = static_cast<std::uint32_t>((k + 1) % nodes_.size()), --left) {
        auto it = std::find_if(out.begin(), out.end(), [&](auto& p) { return p.first == k; });
        if (it == out.end()) out.emplace_back(k, 1);
        else ++it->second;
    }
    return true;
}

void Runner::launch_ready() {
    auto full = [&] {
        return !running_.empty() &&
               std::none_of(nodes_.begin(), nodes_.end(), [](const NodeUse& n) { return n.free() > 0; });
    };
    if (ready_.empty() || full()) return;
    // A copy: starting one can end it at once (a refused start), which may
    // requeue it or, with --fail-fast, cancel everything queued.
    const std::vector<std::size_t> candidates(ready_.begin(), ready_.end());
    for (const std::size_t i : candidates) {
        if (stopping_) return;
        // Every cpu taken and something runs: nothing can start (place()
        // would say no to each of possibly thousands of ready instances).
        if (full()) return;
        if (!ready_.contains(i)) continue;
        std::vector<std::pair<std::uint32_t, std::uint32_t>> where;
        if (!place(i, where)) continue;  // a smaller one behind it may fit
        ready_.erase(i);
        slots_[i].held = std::move(where);
        for (auto [k, c] : slots_[i].held) nodes_[k].used += c;
        next_node_ = (next_node_ + 1) % nodes_.size();
        start(i);
    }
}

void Runner::start(std::size_t i) {
    const Instance& in = dag_.instances[i];
    const Step& s = wf_.steps[in.step];
    Slot& sl = slots_[i];
    ++sl.attempts;
    sl.state = State::running;
    sl.timed_out = false;
    sl.started = now();
    running_.insert(i);

    client::GroupOptions go;
    go.placement = s.placement.empty() ? "block" : s.placement;
    go.binding = s.binding;
    go.pmi = msg::pmi_mode_from(s.pmi).value_or(msg::PmiMode::none);
    client::ProcessTemplate t;
    if (in.type == StepType::python) {
        t.argv = {opts_.python, "-c", kPythonShim, in.command};
        t.argv.insert(t.argv.end(), in.args.begin(), in.args.end());
    } else {
        t.argv = in.argv;
    }
    t.cwd = in.cwd;
    t.env = in.env;
    if (in.type == StepType::python) {
        std::string pp = opts_.python_path;
        for (const auto& p : {in.cwd, wf_.dir}) pp += (pp.empty() ? "" : ":") + p;
        std::string extra;
        for (const auto& e : in.env)
            if (e.starts_with("PYTHONPATH=")) extra = e.substr(11);
        if (extra.empty())
            if (const char* env_pp = std::getenv("PYTHONPATH")) extra = env_pp;
        if (!extra.empty()) pp += ":" + extra;
        t.env.push_back("PYTHONPATH=" + pp);
    }
    t.env.push_back("DRAGON_WORKFLOW=" + (wf_.name.empty() ? wf_.file : wf_.name));
    t.env.push_back("DRAGON_WORKFLOW_STEP=" + s.name);
    t.env.push_back("DRAGON_WORKFLOW_INSTANCE=" + in.id);
    t.env.push_back("DRAGON_WORKFLOW_ATTEMPT=" + std::to_string(sl.attempts));
    if (!ddict_handle_.empty()) t.env.push_back("DRAGON_WORKFLOW_DDICT=" + ddict_handle_);
    const std::string base = (fs::path(dir_) / "logs" / file_safe(in.id)).string();
    const std::string* named[2] = {&in.stdout_path, &in.stderr_path};
    const char* suffix[2] = {".out", ".err"};
    client::Redirect* redirect[2] = {&t.stdout_redirect, &t.stderr_redirect};
    for (int k = 0; k < 2; ++k) {
        auto& log = sl.logs[k];
        log.fd = -1;
        if (named[k]->empty()) {
            // Created by the first byte; an earlier attempt's (or run's) goes now.
            log.path = base + suffix[k];
            ::unlink(log.path.c_str());
            *redirect[k] = client::Redirect::pipe();
        } else {
            log.path.clear();
            std::error_code ec;
            fs::create_directories(fs::path(*named[k]).parent_path(), ec);
            *redirect[k] = client::Redirect::file(pattern_of(*named[k]));
        }
    }

    sl.group = std::make_unique<client::ProcessGroup>(session_, go);
    std::string where, ranks;
    const bool pin = s.placement.empty();
    for (auto [k, c] : sl.held) {
        client::ProcessTemplate tk = t;
        if (pin) tk.node = static_cast<std::int32_t>(nodes_[k].id);
        sl.group->add(std::move(tk), c);
        where += fmt::format("{}{}", where.empty() ? "" : " ", nodes_[k].id);
        ranks += fmt::format("{}{}", ranks.empty() ? "" : "+", c);
    }
    sl.spans.push_back({sl.started, 0, sl.attempts, 0, {}, where, ranks, {}});
    if (s.timeout > 0)
        sl.deadline = Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(s.timeout * 1000));
    else
        sl.deadline.reset();
    // The request goes now; its answer is taken in the loop (take_start_answers):
    // meanwhile the runner starts other instances and files their ends.
    if (auto st = sl.group->start_without_waiting(); !st) {
        event(fmt::format("start  {} failed: {}", in.id, st.error().message()));
        end_attempt(i, false, 127, st.error().message());
        return;
    }
    event(fmt::format("start  {}{} on node{} {} ({} rank{})", in.id,
                      sl.attempts > 1 ? fmt::format(" (attempt {}/{})", sl.attempts, s.retries + 1) : "",
                      sl.held.size() > 1 ? "s" : "", where, ranks, s.nprocs > 1 ? "s" : ""));
}

// The answers of starts that arrived: a refused start ends its attempt.
// Returns whether one did.
bool Runner::take_start_answers() {
    std::vector<std::pair<std::size_t, std::string>> refused;
    for (auto i : running_) {
        auto& g = slots_[i].group;
        if (!g || !g->starting()) continue;
        auto st = g->take_start_answer();
        if (!st) refused.emplace_back(i, st.error().message());
    }
    for (auto& [i, why] : refused) {
        event(fmt::format("start  {} failed: {}", dag_.instances[i].id, why));
        end_attempt(i, false, 127, why);
    }
    return !refused.empty();
}

// The output of instance i's ranks that arrived, appended to its default
// logs (created by their first byte).
void Runner::drain_output(std::size_t i) {
    Slot& sl = slots_[i];
    if (!sl.group || sl.group->starting() || sl.group->id() == 0) return;
    auto& ev = session_.events(sl.group->id());
    for (auto& [key, data] : ev.output) {
        if (data.empty()) continue;
        auto& log = sl.logs[key.second == msg::Stream::err ? 1 : 0];
        if (log.path.empty()) {  // (not expected: only default logs are piped)
            data.clear();
            continue;
        }
        if (log.fd < 0) {
            std::error_code ec;
            fs::create_directories(fs::path(log.path).parent_path(), ec);
            log.fd = ::open(log.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (log.fd < 0) {
                std::fprintf(stderr, "dragon-workflow: cannot write %s: %s (its output is lost)\n", log.path.c_str(),
                             std::strerror(errno));
                log.path.clear();
                data.clear();
                continue;
            }
        }
        if (auto st = sys::write_all(log.fd, data.data(), data.size()); !st)
            std::fprintf(stderr, "dragon-workflow: writing %s: %s\n", log.path.c_str(), st.error().message().c_str());
        data.clear();
    }
}

void Runner::close_logs(std::size_t i) {
    for (auto& log : slots_[i].logs) {
        if (log.fd >= 0) ::close(log.fd);
        log.fd = -1;
    }
}

void Runner::finish(std::size_t i) {
    Slot& sl = slots_[i];
    drain_output(i);  // (the group's output all came before its end)
    close_logs(i);
    const auto& done = sl.group->outcome();
    bool success = done && done->outcome == msg::GroupOutcome::succeeded && !sl.timed_out;
    int code = 0;
    std::string why;
    auto how = [](std::uint32_t rank, const msg::ExitStatus& st) {
        return fmt::format("rank {} {}", rank,
                           st.signal != 0 ? fmt::format("killed by signal {}", st.signal)
                                          : fmt::format("exited with {}", st.exit_code));
    };
    if (done && done->outcome == msg::GroupOutcome::stopped) {
        // Stopped (a timeout, --fail-fast, Ctrl-C): no rank failed first; say how rank 0 ended.
        code = done->rank0_status.shell_code();
        why = "stopped: " + how(0, done->rank0_status);
        if (code == 0) code = 1;
    } else if (done && done->outcome != msg::GroupOutcome::succeeded) {
        code = done->fail_status.shell_code();
        why = !done->fail_error.empty() ? done->fail_error : how(done->fail_rank, done->fail_status);
        if (code == 0) code = 1;
    }
    if (sl.timed_out) {
        why = fmt::format("timed out after {}s", wf_.steps[dag_.instances[i].step].timeout);
        code = 124;  // as timeout(1)
        success = false;
    }
    collect_ranks(i);
    (void)sl.group->close_without_waiting();  // (its end arrived: one round trip fewer per instance)
    sl.group.reset();
    if (success) {
        if (auto missing = missing_output(i); !missing.empty()) {
            success = false;
            code = 1;
            why = std::move(missing);
        }
    }
    end_attempt(i, success, code, why);
}

// With --trace: every rank's start and end as the agents reported them to
// node 0 (one round trip, before the group is closed and forgotten).
void Runner::collect_ranks(std::size_t i) {
    Slot& sl = slots_[i];
    if (opts_.trace_path.empty() || !sl.group || sl.spans.empty()) return;
    auto info = sl.group->info();
    if (!info) return;  // the trace then has the instance span only
    for (const auto& p : info->processes)
        for (const auto& r : p.runs) {
            if (r.started_ns == 0) continue;
            sl.spans.back().rank_spans.push_back({p.rank, r.pid, p.node_id, since_start(r.started_ns),
                                                  r.exited && r.ended_ns != 0 ? since_start(r.ended_ns) : -1.0,
                                                  r.status.exit_code, r.status.signal});
        }
}

void Runner::end_attempt(std::size_t i, bool success, int code, std::string why) {
    Slot& sl = slots_[i];
    const Instance& in = dag_.instances[i];
    const Step& s = wf_.steps[in.step];
    running_.erase(i);
    for (auto [k, c] : sl.held) nodes_[k].used -= c;
    sl.held.clear();
    if (sl.group && sl.group->starting()) (void)sl.group->wait_started();
    if (sl.group && sl.group->id() == 0) sl.group.reset();  // (its start was refused: nothing runs)
    if (sl.group) {
        // (finish() closed an ended one already.) One still running is
        // killed (its output kept) and closed; an ended one is closed
        // without waiting for the agent's answer.
        if (!session_.events(sl.group->id()).done) {
            (void)sl.group->kill();
            drain_output(i);
            (void)sl.group->close();
        } else {
            drain_output(i);
            (void)sl.group->close_without_waiting();
        }
        sl.group.reset();
    }
    close_logs(i);
    sl.spans.back().end = now();
    sl.spans.back().exit_code = code;
    sl.spans.back().why = why;
    sl.exit_code = code;
    sl.why = why;
    const double took = sl.spans.back().end - sl.spans.back().start;
    if (success) {
        event(fmt::format("done   {} in {:.2f}s", in.id, took));
        state_ << "done\t" << in.id << '\t' << sl.fingerprint << '\n';
        state_.flush();
        mark_done(i, State::done);
        return;
    }
    if (sl.attempts <= s.retries && !stopping_ && !g_interrupted) {
        event(fmt::format("retry  {}: {} (attempt {}/{} failed)", in.id, why, sl.attempts, s.retries + 1));
        sl.state = State::ready;
        ready_.insert(i);
        return;
    }
    if (g_interrupted) {  // stopped by Ctrl-C (or SIGTERM): not its own failure
        event(fmt::format("interrupted {}: {}", in.id, why));
        sl.state = State::interrupted;
        return;
    }
    event(fmt::format("failed {}: {}", in.id, why));
    sl.state = State::failed;
    skip_dependents(i);
    if (opts_.fail_fast && !stopping_) cancel_all("--fail-fast after " + in.id + " failed");
}

void Runner::mark_done(std::size_t i, State st) {
    slots_[i].state = st;
    for (auto u : users_[i]) {
        if (slots_[u].state != State::waiting) continue;
        if (--slots_[u].waiting_on == 0) {
            slots_[u].state = State::ready;
            ready_.insert(u);
        }
    }
}

void Runner::skip_dependents(std::size_t i) {
    std::vector<std::size_t> todo(users_[i].begin(), users_[i].end());
    while (!todo.empty()) {
        const auto u = todo.back();
        todo.pop_back();
        if (slots_[u].state != State::waiting) continue;
        slots_[u].state = State::skipped;
        slots_[u].why = "after " + dag_.instances[i].id + " failed";
        todo.insert(todo.end(), users_[u].begin(), users_[u].end());
    }
}

void Runner::cancel_all(const std::string& why) {
    stopping_ = true;
    event("stop   " + why);
    for (std::size_t i = 0; i < slots_.size(); ++i)
        if (slots_[i].state == State::waiting || slots_[i].state == State::ready) {
            slots_[i].state = State::cancelled;
            slots_[i].why = why;
        }
    ready_.clear();
    for (auto i : running_) {
        auto& g = slots_[i].group;
        if (g && g->starting()) (void)g->wait_started();
        if (g && g->id() != 0) (void)g->request_stop(std::chrono::seconds(2));
    }
}

void Runner::event(const std::string& line) {
    if (opts_.progress != Progress::plain) return;
    std::fprintf(stdout, "[%8.2fs] %s\n", now(), line.c_str());
    std::fflush(stdout);
}

// The live view: a header and a line per step, redrawn in place.
void Runner::draw(bool final) {
    if (opts_.progress != Progress::tty) return;
    const double t = now();
    if (!final && last_draw_ >= 0 && t - last_draw_ < 0.2) return;
    last_draw_ = t;
    struct Counts {
        std::size_t queued = 0, running = 0, done = 0, failed = 0, skipped = 0;
        double first = -1, last = 0;
    };
    std::vector<Counts> c(wf_.steps.size());
    std::size_t all_done = 0;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        auto& k = c[dag_.instances[i].step];
        switch (slots_[i].state) {
        case State::waiting:
        case State::ready: ++k.queued; break;
        case State::running: ++k.running; break;
        case State::done:
        case State::resumed: ++k.done, ++all_done; break;
        case State::failed:
        case State::interrupted: ++k.failed; break;
        case State::skipped:
        case State::cancelled: ++k.skipped; break;
        }
        for (const auto& sp : slots_[i].spans) {
            if (k.first < 0 || sp.start < k.first) k.first = sp.start;
            k.last = std::max(k.last, sp.end > 0 ? sp.end : t);
        }
    }
    std::string out;
    if (drawn_lines_ > 0) out += fmt::format("\x1b[{}A", drawn_lines_);
    out += fmt::format("\x1b[2K\x1b[1m{}\x1b[0m  {}/{} done  {:.1f}s\n", wf_.name.empty() ? wf_.file : wf_.name,
                       all_done, slots_.size(), t);
    int lines = 1;
    std::size_t width = 4;
    for (const auto& s : wf_.steps) width = std::max(width, s.name.size());
    width = std::min<std::size_t>(width, 32);
    const std::size_t shown = std::min<std::size_t>(wf_.steps.size(), 40);
    for (std::size_t k = 0; k < shown; ++k) {
        const auto& x = c[k];
        const char* mark = x.failed > 0 ? "\x1b[31mx\x1b[0m" : x.running > 0 ? "\x1b[33m>\x1b[0m"
                         : (x.queued == 0 && x.skipped == 0) ? "\x1b[32m+\x1b[0m" : " ";
        out += fmt::format("\x1b[2K {} {:<{}}  queued {:>4}  running {:>4}  done {:>4}  failed {:>4}", mark,
                           wf_.steps[k].name.substr(0, 32), width, x.queued, x.running, x.done, x.failed);
        if (x.skipped > 0) out += fmt::format("  skipped {}", x.skipped);
        if (x.first >= 0) out += fmt::format("  {:.1f}s", x.last - x.first);
        out += "\n";
        ++lines;
    }
    if (shown < wf_.steps.size()) {
        out += fmt::format("\x1b[2K   ... and {} more steps\n", wf_.steps.size() - shown);
        ++lines;
    }
    drawn_lines_ = lines;
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
}

void Runner::summary() {
    std::string out = fmt::format("\n{:<24} {:>9}  {:<26} {:>9}  {:>4}\n", "STEP", "INSTANCES", "STATE", "TIME", "EXIT");
    std::size_t n_done = 0, n_failed = 0, n_skipped = 0, n_cancelled = 0, n_resumed = 0, n_interrupted = 0;
    std::vector<std::size_t> failed;
    for (std::size_t k = 0; k < wf_.steps.size(); ++k) {
        std::map<State, std::size_t> count;
        double first = -1, last = 0;
        int code = 0;
        bool any_ran = false;
        std::size_t total = 0;
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            if (dag_.instances[i].step != k) continue;
            ++total;
            const auto& sl = slots_[i];
            ++count[sl.state];
            for (const auto& sp : sl.spans) {
                any_ran = true;
                if (first < 0 || sp.start < first) first = sp.start;
                last = std::max(last, sp.end);
            }
            if (sl.state == State::failed || sl.state == State::interrupted) {
                if (code == 0) code = sl.exit_code;
                failed.push_back(i);
            }
        }
        const bool no_exit = count.size() == 1 && (count.begin()->first == State::skipped ||
                                                   count.begin()->first == State::cancelled ||
                                                   count.begin()->first == State::resumed);
        std::string state;
        for (auto [st, n] : count) {
            if (!state.empty()) state += ", ";
            state += count.size() == 1 ? name_of(st) : fmt::format("{} {}", n, name_of(st));
        }
        n_done += count[State::done];
        n_failed += count[State::failed];
        n_skipped += count[State::skipped];
        n_cancelled += count[State::cancelled];
        n_interrupted += count[State::interrupted];
        n_resumed += count[State::resumed];
        out += fmt::format("{:<24} {:>9}  {:<26} {:>9}  {:>4}\n", wf_.steps[k].name.substr(0, 24), total,
                           state.substr(0, 26), any_ran ? fmt::format("{:.2f}s", last - first) : "-",
                           no_exit ? "-" : std::to_string(code));
    }
    for (auto i : failed) {
        std::string err = dag_.instances[i].stderr_path;
        if (err.empty()) {  // a default log exists only if something was written
            err = (fs::path(dir_) / "logs" / (file_safe(dag_.instances[i].id) + ".err")).string();
            std::error_code ec;
            if (!fs::exists(err, ec)) err = "none written";
        }
        out += fmt::format("  {} {}: {} (stderr: {})\n", dag_.instances[i].id, name_of(slots_[i].state), slots_[i].why,
                           err);
    }
    out += fmt::format("{} instances: {} done, {} done earlier, {} failed, {} skipped, {} cancelled{} in {:.2f}s\n",
                       slots_.size(), n_done, n_resumed, n_failed, n_skipped, n_cancelled,
                       n_interrupted > 0 ? fmt::format(", {} interrupted", n_interrupted) : "", now());
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
}

Status Runner::write_trace() {
    if (opts_.trace_path.empty()) return ok();
    std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    out += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"" +
           json_escape(wf_.name.empty() ? wf_.file : wf_.name) + "\"}}";
    // Lanes: an attempt takes 1 + (its ranks) consecutive lanes (tids), the
    // first free ones at its start, so nothing overlaps: its own span on the
    // first, a span per rank on the next ones (in Perfetto, the rank rows sit
    // under their instance's row).
    std::vector<std::tuple<double, std::size_t, std::size_t>> spans;  // start, instance, span index
    for (std::size_t i = 0; i < slots_.size(); ++i)
        for (std::size_t k = 0; k < slots_[i].spans.size(); ++k) spans.emplace_back(slots_[i].spans[k].start, i, k);
    std::sort(spans.begin(), spans.end());
    std::vector<double> lane_end;
    for (auto [start, i, k] : spans) {
        const auto& sp = slots_[i].spans[k];
        const std::size_t width = 1 + sp.rank_spans.size();
        std::size_t lane = 0;
        for (;; ++lane) {
            bool free = true;
            for (std::size_t w = 0; w < width && lane + w < lane_end.size(); ++w)
                if (lane_end[lane + w] > sp.start) free = false;
            if (free) break;
        }
        if (lane_end.size() < lane + width) lane_end.resize(lane + width, 0);
        for (std::size_t w = 0; w < width; ++w) lane_end[lane + w] = sp.end;
        const auto& in = dag_.instances[i];
        out += fmt::format(
            ",\n{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{:.0f},\"dur\":{:.0f},"
            "\"args\":{{\"step\":\"{}\",\"type\":\"{}\",\"attempt\":{},\"exit_code\":{},\"nodes\":[{}],\"ranks\":[{}],\"why\":\"{}\"}}}}",
            json_escape(in.id), json_escape(wf_.steps[in.step].name), lane + 1, sp.start * 1e6,
            std::max(0.0, sp.end - sp.start) * 1e6, json_escape(wf_.steps[in.step].name), to_string(in.type),
            sp.attempt, sp.exit_code, comma_list(sp.nodes, ' '), comma_list(sp.ranks, '+'), json_escape(sp.why));
        std::vector<RankSpan> ranks = sp.rank_spans;
        std::sort(ranks.begin(), ranks.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
        for (std::size_t r = 0; r < ranks.size(); ++r) {
            const auto& rs = ranks[r];
            const double end = rs.end < 0 ? sp.end : rs.end;  // not reaped (killed with the runtime): the attempt's end
            out += fmt::format(
                ",\n{{\"name\":\"{} rank {}\",\"cat\":\"rank\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{:.0f},"
                "\"dur\":{:.0f},\"args\":{{\"instance\":\"{}\",\"attempt\":{},\"rank\":{},\"pid\":{},\"node\":{},"
                "\"exit_code\":{},\"signal\":{},\"reaped\":{}}}}}",
                json_escape(in.id), rs.rank, lane + 2 + r, rs.start * 1e6, std::max(0.0, end - rs.start) * 1e6,
                json_escape(in.id), sp.attempt, rs.rank, rs.pid, rs.node, rs.exit_code, rs.signal,
                rs.end < 0 ? "false" : "true");
        }
    }
    out += "\n]}\n";
    std::ofstream f(opts_.trace_path, std::ios::trunc);
    f << out;
    if (!f) return make_error(Errc::system, "cannot write the trace {}", opts_.trace_path);
    return ok();
}

Result<int> Runner::run() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    event(fmt::format("run    {}: {} instance{} (run {})", wf_.name.empty() ? wf_.file : wf_.name, slots_.size(),
                      slots_.size() == 1 ? "" : "s", session_.run_id()));
    DRAGON_CHECK(prepare());
    const auto tick = std::chrono::milliseconds(opts_.progress == Progress::tty ? 200 : 500);
    draw(false);
    for (;;) {
        if (g_interrupted && !stopping_) cancel_all("interrupted");
        launch_ready();
        if (take_start_answers()) continue;  // (a refused start may be retried at once)
        draw(false);
        if (running_.empty()) {
            if (ready_.empty() || stopping_) break;
            continue;  // a refused start was requeued
        }
        auto deadline = Clock::now() + tick;
        for (auto i : running_)
            if (slots_[i].deadline && !slots_[i].timed_out) deadline = std::min(deadline, *slots_[i].deadline);
        // A group's end may already have been filed while a call (a start, a
        // close) waited for its reply: then there is nothing to wait for.
        const bool ended_already = std::any_of(running_.begin(), running_.end(), [&](std::size_t i) {
            const auto& g = slots_[i].group;
            return g && (g->starting() ? session_.group_started_arrived(g->start_request())
                                       : session_.events(g->id()).done.has_value());
        });
        if (!ended_already) {
            auto pumped = session_.pump(deadline);
            if (!pumped) return std::move(pumped).error().context("waiting for the steps");
        }
        if (take_start_answers()) continue;
        const auto t = Clock::now();
        std::vector<std::size_t> ended;
        for (auto i : running_) {
            auto& sl = slots_[i];
            if (sl.group->starting()) continue;  // (its answer has not come: it cannot have ended)
            drain_output(i);
            if (session_.events(sl.group->id()).done) {
                ended.push_back(i);
            } else if (sl.deadline && !sl.timed_out && t >= *sl.deadline) {
                sl.timed_out = true;
                event(fmt::format("timeout {} after {}s: stopping it", dag_.instances[i].id,
                                  wf_.steps[dag_.instances[i].step].timeout));
                (void)sl.group->request_stop(std::chrono::seconds(2));
            }
        }
        for (auto i : ended) finish(i);
    }
    draw(true);
    summary();
    if (auto st = write_trace(); !st) std::fprintf(stderr, "dragon-workflow: %s\n", st.error().message().c_str());
    stop_ddict();
    if (g_interrupted) return 130;
    for (const auto& sl : slots_)
        if (sl.state != State::done && sl.state != State::resumed) return 1;
    return 0;
}

}  // namespace

std::string state_dir(const Workflow& wf) {
    return (fs::path(wf.dir) / (fs::path(wf.file).stem().string() + ".dragon")).string();
}

Result<int> run(client::Session& session, const Workflow& wf, const Dag& dag, const RunnerOptions& opts) {
    Runner r(session, wf, dag, opts);
    return r.run();
}

}  // namespace dragon::workflows
