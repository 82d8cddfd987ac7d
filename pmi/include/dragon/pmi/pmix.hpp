// The node agent's PMIx server, on OpenPMIx's public server API
// (docs/pmi.md, "PMIx"): namespaces per job, client registration and the
// fork environment of each rank, and the upcalls the host must carry out
// (fence across nodes, direct modex, abort, finalize). OpenPMIx calls the
// upcalls on its own progress thread; this wrapper never blocks there and
// hands each one to the host's thread through `Post`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::pmi::pmix {

/// Runs a function on the host's thread (the agent's event loop), later.
using Post = std::function<void(std::function<void()>)>;
/// Completes a fence or a direct modex: the data goes back to OpenPMIx.
using DataDone = std::function<void(Status st, std::string data)>;

/// What the host does for the PMIx server; every call comes on the host's thread.
struct Upcalls {
    /// This node's ranks of `nspace` are all in a fence; `blob` is this
    /// node's data. Send it to every other node of the job, gather theirs,
    /// and call `done` with all nodes' blobs concatenated (any order).
    std::function<void(const std::string& nspace, std::string blob, bool collect, DataDone done)> fence;
    /// A local rank wants rank `rank`'s data, which lives on another node:
    /// ask that node (its host calls Server::dmodex_request) and call `done`.
    std::function<void(const std::string& nspace, std::uint32_t rank, DataDone done)> direct_modex;
    /// A local rank called PMIx_Abort.
    std::function<void(const std::string& nspace, std::uint32_t rank, int status, std::string message)> abort;
    /// A local rank called PMIx_Finalize.
    std::function<void(const std::string& nspace, std::uint32_t rank)> finalized;
};

/// A job (one ProcessGroup) as this node registers it.
struct Job {
    std::string nspace;
    std::uint32_t node = 0;                  // this node's runtime id
    std::vector<std::uint32_t> rank_node;    // runtime node id of every rank
    std::vector<std::string> node_names;     // by runtime node id (entries of nodes without ranks may be empty)
    std::uint32_t cpus_per_rank = 1;
    std::string topology_xml;  // this node's hwloc (v2) XML: ranks load it instead of probing /sys each
};

/// The process's one PMIx server (OpenPMIx allows one per process). An
/// interface: the implementation lives in the plugin libdragon_pmix.so,
/// loaded by load() on first use, so that the daemons do not load
/// libpmix and its dependencies (libevent, libmunge, libudev: about a
/// millisecond) on every start-up.
class Server {
public:
    virtual ~Server() = default;  // PMIx_server_finalize

    /// Registers the job's namespace (job, node and per-rank keys) and this
    /// node's local support. Blocks briefly (OpenPMIx's own thread does it).
    virtual Status register_job(const Job& job) = 0;
    /// Registers the job's local ranks as clients (all at once; blocks until done).
    virtual Status register_ranks(const std::string& nspace, const std::vector<std::uint32_t>& ranks) = 0;
    /// The environment a registered rank needs ("K=V": PMIX_NAMESPACE,
    /// PMIX_RANK, PMIX_SERVER_URI*, ...). Does not block.
    virtual Result<std::vector<std::string>> setup_rank(const std::string& nspace, std::uint32_t rank) = 0;
    /// Forgets a job: its clients and namespace.
    virtual void deregister_job(const std::string& nspace, const std::vector<std::uint32_t>& local_ranks) = 0;
    /// Another node asks for the data of our local rank: `done` comes on the host's thread.
    virtual void dmodex_request(const std::string& nspace, std::uint32_t rank, DataDone done) = 0;
};

/// Loads `plugin` (libdragon_pmix.so) and makes the server: PMIx_server_init
/// with its rendezvous files in `tmpdir` (created; the caller removes it
/// after the server is gone). Fails if the plugin or OpenPMIx cannot be
/// loaded, or a server exists.
Result<std::unique_ptr<Server>> load(const std::string& plugin, const std::string& tmpdir, const std::string& hostname,
                                     Post post, Upcalls upcalls);

/// The plugin's entry point (extern "C", resolved by load()).
struct CreateArgs {
    const std::string* tmpdir;
    const std::string* hostname;
    Post* post;
    Upcalls* upcalls;
    std::string* error;  // set when it returns null
};
using CreateFn = Server* (*)(CreateArgs*);
inline constexpr const char* kCreateSymbol = "dragon_pmix_create_v1";

}  // namespace dragon::pmi::pmix
