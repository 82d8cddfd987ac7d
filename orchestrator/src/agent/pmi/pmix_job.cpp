// PMIx (docs/pmi.md, "PMIx"): one OpenPMIx server per agent, made for the
// first PMIx group; a namespace per group; fences gathered from the group's
// nodes through the Router (pmi_fence, as for simple PMI); direct modex
// requests routed to the rank's node; aborts to node 0.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "dragon/common/names.hpp"
#include "dragon/pmi/pmix.hpp"
#include "../../runtime/spawn.hpp"
#include "dragon/procgroup/topology.hpp"
#include "ompi_env.hpp"
#include "pmi.hpp"

namespace dragon::agent {

#if DRAGON_HAVE_PMIX

class PmixJob final : public PmiJob {
public:
    PmixJob(PmiService& svc, const msg::ExecMembers& m);
    ~PmixJob() override;
    PmixJob(const PmixJob&) = delete;
    PmixJob& operator=(const PmixJob&) = delete;

    Status register_here(const msg::ExecMembers& m);
    Result<RankPmi> prepare_rank(std::uint32_t rank, std::uint32_t local_rank, std::vector<std::string> env) override;
    void rank_started(std::uint32_t, sys::UniqueFd) override {}
    std::string rank_exited(std::uint32_t rank, bool clean) override;
    void remote_fence(std::uint32_t from, msg::PmiFence&& m) override;

    // Upcalls of the server, on the loop.
    void fence(std::string blob, pmi::pmix::DataDone done);
    void direct_modex(std::uint32_t rank, pmi::pmix::DataDone done);
    void abort(std::uint32_t rank, int status, std::string message);
    void finalized(std::uint32_t rank) { finalized_.insert(rank); }
    [[nodiscard]] const std::string& nspace() const { return nspace_; }

private:
    /// Completes fence `seq` once this node's part and every other node's are in.
    void maybe_complete(std::uint64_t seq);

    PmiService& svc_;
    std::uint64_t group_id_;
    std::string nspace_;
    std::vector<std::uint32_t> rank_node_;
    std::vector<std::uint32_t> local_ranks_;
    std::set<std::uint32_t> other_nodes_;
    std::uint64_t fences_started_ = 0;  // this node's fence_nb calls so far
    struct Fence {
        bool local = false;
        std::string own;
        pmi::pmix::DataDone done;
        std::map<std::uint32_t, std::string> remote;
    };
    std::map<std::uint64_t, Fence> fences_;  // by sequence number
    std::set<std::uint32_t> connected_, finalized_;
    bool registered_ = false;
    bool one_host_ = false;  // every node of the run is on this host (a virtual cluster)
};

namespace {
/// The PMIx job of a namespace on this node, or null.
PmixJob* job_of(std::map<std::uint64_t, std::unique_ptr<PmiJob>>& jobs, const std::string& nspace) {
    for (auto& [id, j] : jobs)
        if (auto* p = dynamic_cast<PmixJob*>(j.get()); p != nullptr && p->nspace() == nspace) return p;
    return nullptr;
}
}  // namespace

Status PmiService::start_pmix_server() {
    if (pmix_) return ok();
    pmix_tmpdir_ = names::pmix_dir(opts_.run.str(), opts_.node_id);
    pmi::pmix::Upcalls up;
    up.fence = [this](const std::string& ns, std::string blob, bool, pmi::pmix::DataDone done) {
        if (PmixJob* j = job_of(jobs_, ns)) return j->fence(std::move(blob), std::move(done));
        done(Error(Errc::not_found, "unknown namespace " + ns), {});
    };
    up.direct_modex = [this](const std::string& ns, std::uint32_t rank, pmi::pmix::DataDone done) {
        if (PmixJob* j = job_of(jobs_, ns)) return j->direct_modex(rank, std::move(done));
        done(Error(Errc::not_found, fmt::format("no rank {} in {}", rank, ns)), {});
    };
    up.abort = [this](const std::string& ns, std::uint32_t rank, int status, std::string message) {
        if (PmixJob* j = job_of(jobs_, ns)) j->abort(rank, status, std::move(message));
    };
    up.finalized = [this](const std::string& ns, std::uint32_t rank) {
        if (PmixJob* j = job_of(jobs_, ns)) j->finalized(rank);
    };
    // Before the server: a server is only ever up with the node's Open MPI directories made.
    DRAGON_CHECK(make_ompi_dirs(ompi_dirs(opts_.run, opts_.node_id)));
    auto post = [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); };
    std::error_code fec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", fec);
    const auto plugin = (exe.parent_path().parent_path() / "lib" / "libdragon_pmix.so").string();
    pmix_ = DRAGON_TRY(pmi::pmix::load(plugin, pmix_tmpdir_, opts_.hostname, post, std::move(up)));
    spdlog::debug("PMIx server up in {}", pmix_tmpdir_);
    // The real machine's topology (whatever placement was told to use).
    auto topo = procgroup::Topology::discover();
    auto xml = topo ? topo->to_xml() : Result<std::string>(topo.error());
    if (xml) pmix_topology_xml_ = std::move(*xml);
    else spdlog::warn("PMIx: no topology for the ranks ({}); each discovers its own", xml.error().message());
    return ok();
}

Result<std::unique_ptr<PmiJob>> PmiService::make_pmix_job(const msg::ExecMembers& m) {
    DRAGON_CHECK(start_pmix_server());
    auto job = std::make_unique<PmixJob>(*this, m);
    DRAGON_CHECK(job->register_here(m));
    return std::unique_ptr<PmiJob>(std::move(job));
}

PmixJob::PmixJob(PmiService& svc, const msg::ExecMembers& m)
    : svc_(svc),
      group_id_(m.group_id),
      nspace_(fmt::format("dragon.{}.{}", svc.options().run.str().substr(0, 12), m.group_id)),
      rank_node_(m.rank_nodes),
      one_host_(nodes_share_one_host(svc.router().nnodes(), [&svc](std::uint32_t n) { return svc.router().node_hostname(n); })) {
    for (std::uint32_t r = 0; r < m.nranks; ++r) {
        if (m.rank_nodes[r] == svc.options().node_id) local_ranks_.push_back(r);
        else other_nodes_.insert(m.rank_nodes[r]);
    }
}

Status PmixJob::register_here(const msg::ExecMembers& m) {
    const PmiOptions& o = svc_.options();
    pmi::pmix::Job spec;
    spec.nspace = nspace_;
    spec.node = o.node_id;
    spec.rank_node = m.rank_nodes;
    spec.cpus_per_rank = m.spec.cpus_per_proc;
    spec.topology_xml = svc_.pmix_topology_xml_;
    // Node names: the host's, made distinct when several nodes share a host.
    std::set<std::uint32_t> nodes(m.rank_nodes.begin(), m.rank_nodes.end());
    std::map<std::string, int> seen;
    Router& r = svc_.router();
    for (std::uint32_t n : nodes) ++seen[r.node_hostname(n)];
    spec.node_names.resize(nodes.empty() ? 0 : *nodes.rbegin() + 1);
    for (std::uint32_t n : nodes) {
        const std::string host = r.node_hostname(n);
        spec.node_names[n] = seen[host] > 1 ? fmt::format("{}-n{}", host, n) : host;
    }
    spdlog::debug("group {}: registering PMIx namespace {}", group_id_, nspace_);
    DRAGON_CHECK(svc_.pmix_->register_job(spec));
    registered_ = true;  // from here on, forgetting the job deregisters it
    DRAGON_CHECK(svc_.pmix_->register_ranks(nspace_, local_ranks_));
    spdlog::debug("group {}: {} PMIx clients registered", group_id_, local_ranks_.size());
    return ok();
}

PmixJob::~PmixJob() {
    if (!registered_ || !svc_.pmix_) return;
    // Fences still open get their answer while the namespace still exists.
    for (auto& [seq, f] : fences_)
        if (f.done) f.done(Error(Errc::closed, "the job ended"), {});
    fences_.clear();
    svc_.pmix_->deregister_job(nspace_, local_ranks_);
}

Result<RankPmi> PmixJob::prepare_rank(std::uint32_t rank, std::uint32_t, std::vector<std::string> env) {
    auto add = DRAGON_TRY(svc_.pmix_->setup_rank(nspace_, rank));
    // Open MPI 4.1 launched directly: its PMIx component, not mpirun's ORTE.
    add.emplace_back("OMPI_MCA_schizo=^orte");
    add.emplace_back("OMPI_MCA_ess=pmi");
    RankPmi r;
    // Then the node's own Open MPI directories, unless the user chose otherwise (ompi_env.hpp).
    const auto& o = svc_.options();
    r.env = add_ompi_env(rt::merge_env(std::move(env), add), ompi_dirs(o.run, o.node_id), one_host_);
    connected_.insert(rank);  // registered: it may speak PMIx from now on
    return r;
}

void PmixJob::fence(std::string blob, pmi::pmix::DataDone done) {
    const std::uint64_t seq = fences_started_++;
    auto& f = fences_[seq];
    f.local = true;
    f.own = blob;
    f.done = std::move(done);
    for (std::uint32_t node : other_nodes_) svc_.router().send(node, msg::PmiFence{group_id_, seq, blob});
    maybe_complete(seq);  // at once on a single node
}

void PmixJob::remote_fence(std::uint32_t from, msg::PmiFence&& m) {
    if (!other_nodes_.contains(from))
        return spdlog::error("group {}: PMIx fence batch from node {}, which has no rank of it", group_id_, from);
    if (m.seq > fences_started_ + 1 || (m.seq < fences_started_ && !fences_.contains(m.seq)))
        return spdlog::error("group {}: PMIx fence {} from node {} out of step", group_id_, m.seq, from);
    auto& f = fences_[m.seq];
    if (!f.remote.emplace(from, std::move(m.batch)).second)
        return spdlog::error("group {}: PMIx fence {} from node {} came twice", group_id_, m.seq, from);
    maybe_complete(m.seq);
}

void PmixJob::maybe_complete(std::uint64_t seq) {
    auto it = fences_.find(seq);
    if (it == fences_.end() || !it->second.local || it->second.remote.size() != other_nodes_.size()) return;
    std::string all = std::move(it->second.own);
    for (auto& [node, blob] : it->second.remote) all += blob;
    auto done = std::move(it->second.done);
    fences_.erase(it);
    done(ok(), std::move(all));
}

void PmixJob::direct_modex(std::uint32_t rank, pmi::pmix::DataDone done) {
    if (rank >= rank_node_.size()) return done(Error(Errc::not_found, fmt::format("no rank {} in {}", rank, nspace_)), {});
    const std::uint64_t id = svc_.next_dmodex_++;
    svc_.dmodex_waiting_[id] = std::move(done);
    svc_.router().send(rank_node_[rank], msg::PmixDmodexRequest{group_id_, rank, id});
}

void PmixJob::abort(std::uint32_t rank, int status, std::string message) {
    spdlog::info("group {}: rank {} asks to abort the job (PMIx, status {})", group_id_, rank, status);
    svc_.router().send(0, msg::PmiAbort{group_id_, rank, status, std::move(message)});
}

std::string PmixJob::rank_exited(std::uint32_t rank, bool clean) {
    // Only a clean exit needs a reason: a crash or an exit code speaks for itself.
    if (!clean || finalized_.contains(rank) || !connected_.contains(rank)) return {};
    // A program that never called PMIx_Init exits without finalize too; it
    // holds nobody up unless a fence is open on this node.
    if (fences_.empty() && fences_started_ == 0) return {};
    return "exited after PMIx init without PMIx finalize";
}

void PmiService::on_dmodex_request(std::uint32_t from, const msg::PmixDmodexRequest& m) {
    auto it = jobs_.find(m.group_id);
    auto* job = it == jobs_.end() ? nullptr : dynamic_cast<PmixJob*>(it->second.get());
    if (job == nullptr || !pmix_) {
        router_.send(from, msg::PmixDmodexReply{m.request_id, static_cast<std::uint16_t>(Errc::not_found),
                                                fmt::format("group {} has no PMIx job here", m.group_id), {}});
        return;
    }
    pmix_->dmodex_request(job->nspace(), m.rank, [this, from, id = m.request_id](Status st, std::string blob) {
        msg::PmixDmodexReply r{id, 0, {}, std::move(blob)};
        if (!st) {
            r.code = static_cast<std::uint16_t>(st.error().code());
            r.message = st.error().message();
        }
        router_.send(from, r);
    });
}

void PmiService::on_dmodex_reply(const msg::PmixDmodexReply& m) {
    auto it = dmodex_waiting_.find(m.request_id);
    if (it == dmodex_waiting_.end()) return;
    auto done = std::move(it->second);
    dmodex_waiting_.erase(it);
    if (m.code != 0) return done(Error(static_cast<Errc>(m.code), m.message), {});
    done(ok(), m.data);
}

#else  // built without OpenPMIx

Status PmiService::start_pmix_server() {
    return Error(Errc::unsupported, "this dragon-agent was built without OpenPMIx (libpmix-dev): --pmi pmix is not available");
}
Result<std::unique_ptr<PmiJob>> PmiService::make_pmix_job(const msg::ExecMembers&) {
    DRAGON_CHECK(start_pmix_server());
    return Error(Errc::unsupported, "no PMIx");
}
void PmiService::on_dmodex_request(std::uint32_t from, const msg::PmixDmodexRequest& m) {
    router_.send(from, msg::PmixDmodexReply{m.request_id, static_cast<std::uint16_t>(Errc::unsupported), "no PMIx", {}});
}
void PmiService::on_dmodex_reply(const msg::PmixDmodexReply&) {}

#endif

}  // namespace dragon::agent
