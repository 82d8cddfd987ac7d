// The executor's PMI service (docs/pmi.md): what a group's ranks on this
// node need to speak PMI, behind one small interface whatever the flavour.
// Simple PMI-1/PMI-2 and Cray's libpmi share a wire back end (a
// pmi::JobServer and its ranks' sockets); PMIx has its own (a namespace on
// this agent's OpenPMIx server). Fences and aborts travel through the Router
// like any other message; the service owns its jobs and nothing else.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>

#include "../dispatch.hpp"
#include "../router.hpp"
#include "dragon/common/ids.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::pmi::pmix {
class Server;
}

namespace dragon::agent {

/// What one rank needs to speak PMI, made before it is spawned.
struct RankPmi {
    std::vector<std::string> env;  // the member's whole environment, PMI's added
    sys::UniqueFd child_fd;  // the rank's end of its PMI_FD socket (ChildSpec::extra_fd); empty otherwise
    sys::UniqueFd our_fd;    // this agent's end of it, for rank_started
};

/// A group's PMI on this node, one flavour behind it. Destroying it forgets
/// the job here: its sockets close, its namespace is deregistered, fences
/// still open are answered with an error.
class PmiJob {
public:
    virtual ~PmiJob() = default;
    /// The environment (`env`, the member's own, with what PMI needs added:
    /// each flavour decides which of the user's settings it leaves alone) and
    /// fds rank `rank` starts with. Fails when the flavour cannot serve it
    /// (the member then fails to start, 126).
    virtual Result<RankPmi> prepare_rank(std::uint32_t rank, std::uint32_t local_rank, std::vector<std::string> env) = 0;
    /// The rank was spawned; `ours` is this agent's end of its socket (may be empty).
    virtual void rank_started(std::uint32_t rank, sys::UniqueFd ours) = 0;
    /// The rank's process ended. Returns why this fails the job when its own
    /// exit status does not say so (a clean exit without PMI finalize while
    /// its peers wait), or an empty string.
    virtual std::string rank_exited(std::uint32_t rank, bool clean) = 0;
    /// Another node's part of a fence (or, for PMIx, of a collective).
    virtual void remote_fence(std::uint32_t from, msg::PmiFence&& m) = 0;
};

struct PmiOptions {
    RunId run;
    std::uint32_t node_id = 0;
    std::string hostname;
    std::vector<std::string> base_env;  // the agent's environment (LD_LIBRARY_PATH for the Cray shim)
    /// A rank whose PMI connection broke must end (its peers would wait for
    /// it in a fence); its exit then fails the group with the server's
    /// reason. Called on the loop; `why` is for the log.
    std::function<void(std::uint64_t group, std::uint32_t rank, const std::string& why)> end_rank;
};

/// Every PMI job of this node, by group id, and what arrives for them from
/// other nodes (fence batches, PMIx direct-modex requests and replies).
class PmiService {
public:
    PmiService(Router& router, asio::io_context& io, PmiOptions opts);
    ~PmiService();
    PmiService(const PmiService&) = delete;
    PmiService& operator=(const PmiService&) = delete;

    /// Its handlers: pmi_fence, pmix_dmodex_request and pmix_dmodex_reply from other nodes.
    void bind(Dispatcher<std::uint32_t>& nodes);

    /// The PMI job of a group whose members here are about to start, in the
    /// flavour its spec asks for; owned by the service until forget().
    /// Fence batches that came for it earlier are fed to it now.
    Result<PmiJob*> start(const msg::ExecMembers& m);
    /// The group was closed here: its job goes, and late fence batches for it are dropped.
    void forget(std::uint64_t group_id);
    /// The run ends: every job goes, then the PMIx server and its directory.
    void stop();

    // What the back ends use (pmi_service.cpp, wire_job.cpp, pmix_job.cpp).
    Router& router() { return router_; }
    asio::io_context& io() { return io_; }
    const PmiOptions& options() const { return opts_; }

private:
    void on_fence(std::uint32_t from, msg::PmiFence&& m);
    Result<std::unique_ptr<PmiJob>> make_wire_job(const msg::ExecMembers& m);
    Result<std::unique_ptr<PmiJob>> make_pmix_job(const msg::ExecMembers& m);
    Status start_pmix_server();
    void on_dmodex_request(std::uint32_t from, const msg::PmixDmodexRequest& m);
    void on_dmodex_reply(const msg::PmixDmodexReply& m);
    /// Where Cray's libpmi.so.0 shim is (found on first need).
    const std::string& shim_dir();
    friend class PmixJob;
    friend class WireJob;

    Router& router_;
    asio::io_context& io_;
    PmiOptions opts_;
    std::map<std::uint64_t, std::unique_ptr<PmiJob>> jobs_;  // by group id
    std::map<std::uint64_t, std::vector<std::pair<std::uint32_t, msg::PmiFence>>> early_fences_;  // before start()
    std::size_t early_fence_bytes_ = 0;
    std::set<std::uint64_t> forgotten_;  // groups closed here: late fence batches for them are dropped
    std::string shim_dir_;
    // PMIx: one server per agent, made for the first PMIx group.
    std::unique_ptr<pmi::pmix::Server> pmix_;
    std::string pmix_tmpdir_;
    std::string pmix_topology_xml_;
    std::uint64_t next_dmodex_ = 1;
    std::map<std::uint64_t, std::function<void(Status, std::string)>> dmodex_waiting_;
};

}  // namespace dragon::agent
