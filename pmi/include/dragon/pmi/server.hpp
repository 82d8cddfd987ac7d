// One job's simple PMI server on one node (docs/pmi.md): the PMI-1 and PMI-2
// requests of the job's local ranks, the job-wide key/value space, and the
// fence, done as an allgather of each node's new key/values. It owns no
// sockets and no threads: its host (the node agent) feeds it bytes and
// carries what it asks to send, all on one thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dragon/common/codec.hpp"
#include "dragon/common/result.hpp"
#include "dragon/pmi/wire.hpp"

namespace dragon::pmi {

/// A key and its value, as a fence batch carries them between nodes.
struct KeyValue {
    std::string key;
    std::string value;
    DRAGON_WIRE_FIELDS(key, value)
};

/// Where the job's ranks are and who this node is.
struct JobLayout {
    std::uint64_t job_id = 0;
    std::string kvsname;                 // at most kMaxKvsName bytes, no spaces or ';'
    std::uint32_t node = 0;              // this node's id
    std::vector<std::uint32_t> rank_node;  // node id of every rank (size = job size)
    std::uint32_t universe_size = 0;     // 0: the job size
};

/// `(vector,(first_node,node_count,ranks_per_node),...)` for the layout, the
/// way MPICH reads it (the block list repeats until every rank is placed), or
/// nullopt when no form of it fits in `max_len` bytes.
std::optional<std::string> process_mapping(const std::vector<std::uint32_t>& rank_node, std::size_t max_len);

/// Expands a process mapping back into a node per rank (MPICH's reading).
Result<std::vector<std::uint32_t>> expand_process_mapping(std::string_view mapping, std::uint32_t size);

using ConnId = std::uint64_t;

// Bounds on what ranks can make a node hold (a put past them answers rc=-1).
inline constexpr std::size_t kMaxFenceBytes = 16U << 20;  // one node's new key/values per fence
inline constexpr std::size_t kMaxJobBytes = 256U << 20;   // the job's key/values on a node
inline constexpr std::size_t kMaxNodeAttrs = 4096;        // PMI-2 node attributes per job and node

/// What the server needs from its host. Every call is made from inside a
/// JobServer call, on the host's thread.
class JobHost {
public:
    virtual ~JobHost() = default;
    /// Queue bytes for the connection, in order.
    virtual void send(ConnId conn, std::string bytes) = 0;
    /// Close the connection once what was queued is written; the server
    /// forgets it (no `disconnected` call follows).
    virtual void close(ConnId conn) = 0;
    /// Send this node's key/values of fence `seq` to every other node of the
    /// job; their batches come back through JobServer::remote_fence.
    virtual void fence_out(std::uint64_t seq, std::string batch) = 0;
    /// A rank asked to abort the job with this exit code.
    virtual void abort(std::uint32_t rank, int exit_code, std::string message) = 0;
    /// A rank broke the protocol, or closed its connection after init
    /// without finalize; the server is done with its connection. The job
    /// cannot go on with it: the host should end the rank's process, whose
    /// exit then fails the job with this message (rank_exited).
    /// `protocol`: bad bytes (end it now); else a lost connection (the
    /// process may be crashing: give its exit a moment to be seen first).
    virtual void rank_error(std::optional<std::uint32_t> rank, std::string message, bool protocol) = 0;
};

class JobServer {
public:
    JobServer(JobLayout layout, JobHost& host);

    /// A new connection. `rank` is known for a PMI_FD socket made for that
    /// rank; for a PMI_PORT connection it comes with `initack pmiid=ID` (or
    /// PMI-2 `fullinit pmiid=ID`), where ID is port_id(rank): a random number
    /// only that rank was given, so nobody else can speak for it.
    ConnId connect(std::optional<std::uint32_t> rank);
    /// The PMI_ID a local rank gets with PMI_PORT (0 for a rank not on this node).
    [[nodiscard]] std::uint32_t port_id(std::uint32_t rank) const;
    /// The open connection of a local rank, if any.
    [[nodiscard]] std::optional<ConnId> conn_of(std::uint32_t rank) const;
    /// Bytes that arrived on a connection: handles every complete request.
    void received(ConnId conn, std::string_view bytes);
    /// The peer closed the connection (or it failed).
    void disconnected(ConnId conn);

    /// Another node's batch for fence `seq`. An error (a batch that does not
    /// decode, comes twice, from a node outside the job or for a fence out
    /// of step) leaves the server as it was.
    Status remote_fence(std::uint32_t from_node, std::uint64_t seq, std::string_view batch);

    /// A local rank's process ended (`clean`: exit code 0). Returns why that
    /// fails the job, or an empty string: a rank that began PMI (init) and
    /// exited 0 without finalize fails it, so no peer waits for it in a
    /// fence for ever; one that broke the protocol fails it with the reason.
    /// An unclean exit speaks for itself (empty string unless the protocol
    /// was broken). A rank that never spoke PMI counts as arrived at every
    /// later fence (with no keys).
    std::string rank_exited(std::uint32_t rank, bool clean = true);

    [[nodiscard]] const JobLayout& layout() const { return layout_; }
    [[nodiscard]] std::uint64_t fences_done() const { return fence_seq_; }
    [[nodiscard]] std::size_t local_size() const { return local_.size(); }
    [[nodiscard]] std::size_t keys() const { return kvs_.size(); }

private:
    enum class Phase : std::uint8_t { idle, initialized, finalized, aborted, failed, gone };
    struct Rank {
        Phase phase = Phase::idle;
        bool in_fence = false;
        bool bound = false;       // a connection has spoken for it (it can never be taken over)
        bool protocol = false;    // the failure was bad bytes, not a lost connection
        std::optional<ConnId> conn;
        std::string error;
        std::uint32_t port_id = 0;
    };
    struct Conn {
        StreamDecoder dec;
        std::optional<std::uint32_t> rank;
        int version = 1;
    };

    void handle(ConnId id, Conn& c, const Command& cmd);
    void handle_v1(ConnId id, Conn& c, const Command& cmd);
    void handle_v2(ConnId id, Conn& c, const Command& cmd);
    void fail_conn(ConnId id, std::string why);
    Rank* rank_of(const Conn& c);
    Status bind_rank(ConnId id, Conn& c, std::string_view port_id);
    void drop_waits(ConnId id);
    Status put(std::string_view key, std::string_view value);
    [[nodiscard]] std::optional<std::string> lookup(std::string_view key) const;
    [[nodiscard]] std::optional<std::string> job_attr(std::string_view key) const;
    void enter_fence(Rank& r);
    void maybe_send_local();
    void maybe_complete_fence();

    JobLayout layout_;
    JobHost& host_;
    std::map<std::uint32_t, Rank> local_;      // this node's ranks
    std::set<std::uint32_t> other_nodes_;      // the job's nodes but this one
    std::unordered_map<ConnId, Conn> conns_;
    ConnId next_conn_ = 1;
    std::optional<std::string> mapping_;  // PMI_process_mapping, unless too long
    std::string node_ids_;                // dragon.node_ids: job node index -> runtime node id

    // The job's keys visible to every rank (merged at each fence), and this
    // node's puts since the last fence, in order.
    std::unordered_map<std::string, std::string> kvs_;
    std::vector<KeyValue> pending_;
    std::size_t pending_bytes_ = 0;
    std::size_t kvs_bytes_ = 0;
    std::unordered_map<std::uint32_t, std::uint32_t> rank_of_port_id_;
    std::uint64_t fence_seq_ = 0;         // fences completed
    bool local_sent_ = false;             // this node's batch of fence fence_seq_ went out
    std::size_t arrived_ = 0;             // local ranks in the current fence (or gone)
    std::map<std::uint64_t, std::map<std::uint32_t, std::string>> remote_;  // seq -> node -> batch

    // Node attributes (PMI-2 info-putnodeattr) and the gets waiting for them.
    std::unordered_map<std::string, std::string> node_attrs_;
    std::multimap<std::string, ConnId> attr_waiters_;
};

}  // namespace dragon::pmi
