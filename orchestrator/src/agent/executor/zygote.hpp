// Fast start (docs/runtime.md): pre-imported Python interpreters of this
// node that fork members. The executor asks for one when a member is
// `python [-S] -c code` with fast_start set; a zygote (python/dragon/_zygote.py)
// of that interpreter, flags and Python path forks it twice so that the
// agent, a child subreaper, is the member's parent: reaping, exit reports,
// signals and teardown stay the executor's own. A zygote starts with the
// first member of its kind, which waits for it (up to ready_wait: its imports
// take about as long as one member's, far less than the exec of the dozens
// a group or a pool starts at once); a zygote that is not ready by then, and
// any that fails, means the member is exec'd as any other.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "../../runtime/spawn.hpp"
#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::agent {

struct ZygoteOptions {
    std::vector<std::string> base_env;  // the environment a zygote starts with (the members' base)
    bool enabled = true;
    std::chrono::milliseconds reply_timeout{30000};  // a fork answered later than this: the zygote is broken
    std::size_t max_zygotes = 4;                     // kinds served at once (interpreters, paths, main modules)
    unsigned max_failures = 3;                       // zygotes of one kind that died before exec takes over for good
    std::chrono::milliseconds ready_wait{5000};      // how long members wait for a starting zygote (once)
};

class Zygotes {
public:
    explicit Zygotes(ZygoteOptions opts);
    Zygotes(const Zygotes&) = delete;
    Zygotes& operator=(const Zygotes&) = delete;
    ~Zygotes();

    /// Starts the member `cs` by forking a zygote of its kind (started, and
    /// waited for, if there is none). Empty when the caller must exec it (not
    /// a Python member, or no zygote ready in time). An error is the member's start
    /// failure (a bad directory, a binding refused), as exec's would be.
    std::optional<Result<pid_t>> spawn(const rt::ChildSpec& cs);
    /// A child of the agent was reaped: true if it was a zygote (forgotten;
    /// the next member of its kind starts another).
    bool reaped(pid_t pid, int status);
    /// The run ends: each zygote exits at the end of its socket.
    void stop();

    [[nodiscard]] std::size_t count() const { return zygotes_.size(); }
    [[nodiscard]] std::size_t forked() const { return forked_; }

    /// The kind of interpreter a member needs ("" when it is not one a
    /// zygote can start): program, flags, Python path and the variables
    /// that change what an interpreter imports or how. Exposed for tests.
    static std::string kind_of(const rt::ChildSpec& cs);

private:
    struct Zygote {
        std::string kind;
        pid_t pid = 0;
        sys::UniqueFd sock;
        bool ready = false;
        std::chrono::steady_clock::time_point started{};
        bool waited = false;  // a member waited for it to be ready: the next ones do not
        std::unordered_set<std::string> env;  // the environment it started with ("K=V")
    };
    Zygote* find(const std::string& kind);
    void start(const std::string& kind, const rt::ChildSpec& cs);
    bool check_ready(Zygote& z);
    Result<pid_t> fork_member(Zygote& z, const rt::ChildSpec& cs);
    void drop(Zygote& z, const std::string& why);

    ZygoteOptions opts_;
    std::vector<Zygote> zygotes_;
    std::map<std::string, unsigned> failures_;  // kind -> zygotes that died or never became ready
    std::size_t forked_ = 0;
};

}  // namespace dragon::agent
