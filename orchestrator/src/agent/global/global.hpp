// Global services, hosted by node 0's agent: the group table, placement over
// every node, the groups' state machines (procgroup's GroupTracker), and
// routing between owners (the front end, or a client on any node) and the
// nodes running the members. Owns all of that state; reaches everything
// else through the Router (docs/runtime.md, "Global services").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio.hpp>

#include "../dispatch.hpp"
#include "../router.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/procgroup/group.hpp"
#include "dragon/procgroup/resources.hpp"

namespace dragon::agent {
namespace pg = dragon::procgroup;

/// A group as the global services see it.
struct Group {
    Group(std::uint64_t id, msg::GroupSpec s, std::vector<msg::GroupMember> plan)
        : tracker(id, static_cast<std::uint32_t>(plan.size()), pg::RestartPolicy{s.restart, s.max_restarts}),
          spec(std::move(s)),
          members(std::move(plan)),
          runs(members.size()) {}
    pg::GroupTracker tracker;
    msg::GroupSpec spec;
    std::vector<msg::GroupMember> members;  // placement and current puid/pid, by rank
    std::vector<std::vector<msg::PastRun>> runs;  // every run of each rank
    std::vector<std::uint32_t> entry_of_rank;
    std::set<std::uint32_t> nodes;           // nodes with members
    std::set<std::uint32_t> awaiting_start;  // nodes whose first members_started is still due
    Owner owner;
    std::uint64_t request_id = 0;
    std::vector<std::string> warnings;
    std::unique_ptr<asio::steady_timer> stop_timer;
    int stop_signal = 0;  // last signal sent while stopping
    std::uint32_t patience_ms = 2000;
    bool done_sent = false;
    bool orphaned = false;  // its client owner went away: stop it, then close it
    [[nodiscard]] bool starting() const { return !awaiting_start.empty(); }
};

struct GlobalOptions {
    std::uint32_t nnodes = 1;
    std::string hostname;            // node 0's (file names with %h of a group-wide file)
    std::uint32_t patience_ms = 2000;  // between the stop signals of a group whose owner went away
    /// Node 0's own resources (hwloc costs ~2 ms: asked for only when placement needs them).
    std::function<Result<const pg::NodeResources*>()> own_resources;
};

class GlobalServices {
public:
    GlobalServices(Router& router, asio::io_context& io, GlobalOptions opts);
    GlobalServices(const GlobalServices&) = delete;
    GlobalServices& operator=(const GlobalServices&) = delete;

    /// Its handlers: groups and stdin from the front end, clients' group
    /// requests, and what the executors report.
    void bind(Dispatcher<Owner>& front_end, Dispatcher<Owner>& owners, Dispatcher<std::uint32_t>& nodes);

    /// A node joined with these resources (placement may use it from now on).
    void node_joined(std::uint32_t node, pg::NodeResources resources);
    /// A node was lost: its clients' groups are orphaned, its members fail as lost.
    void node_lost(std::uint32_t node, const std::string& why);
    /// An owner's connection closed: its groups are stopped, then closed.
    void owner_gone(Owner who);
    /// The runtime stops: every running group's state machine hears it (each
    /// node signals its own processes).
    void stop_all();

    [[nodiscard]] std::size_t group_count() const { return groups_.size(); }

private:
    struct GroupPlan {
        std::vector<msg::GroupMember> members;
        std::vector<std::string> warnings;
    };
    void start_group(const msg::GroupStart& req, Owner owner);
    Status check_group_io(const msg::GroupSpec& spec, Owner owner) const;
    void truncate_shared_files(const Group& g);
    Result<GroupPlan> plan_group(const msg::GroupSpec& spec, std::uint32_t nranks, bool want_cpus);
    void on_members_started(std::uint32_t from, const msg::MembersStarted& m);
    void on_members_exited(std::uint32_t from, const msg::MembersExited& m);
    void on_pmi_abort(std::uint32_t from, const msg::PmiAbort& m);
    void apply(Group& g, pg::Action a);
    void stop_group(Group& g);
    void escalate_group(std::uint64_t group_id);
    void maybe_finish_group(Group& g);
    void close_group(std::uint64_t group_id);
    Group* owned_group(Owner who, std::uint64_t group_id);
    msg::GroupStatus group_status(const Group& g);
    void query_group(Owner who, const msg::GroupQuery& m);
    void query_machine(Owner who);
    void signal_group(Owner who, const msg::GroupSignal& m);
    void stop_group_request(Owner who, const msg::GroupStop& m);
    void close_group_request(Owner who, const msg::GroupClose& m);
    void route_stdin(msg::StdinData&& d, Owner from);
    void route_stdin_ack(const msg::StdinAck& a);
    /// Output to the front end or the group's owner; false when that path is above high water.
    bool route_output(const msg::Output& o);
    void reply_error(Owner who, Errc code, std::string why);

    Router& router_;
    asio::io_context& io_;
    GlobalOptions opts_;
    std::map<std::uint64_t, std::unique_ptr<Group>> groups_;
    std::unordered_map<Puid, std::pair<std::uint64_t, std::uint32_t>> member_of_;  // puid -> (group, rank)
    std::uint64_t next_group_id_ = 1;
    std::vector<pg::NodeResources> nodes_;  // by node id, once joined
};

}  // namespace dragon::agent
