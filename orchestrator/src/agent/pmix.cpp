// The executor's PMIx service (docs/pmi.md, "PMIx"): one OpenPMIx server
// per agent, made for the first PMIx group; a namespace per group; fences
// gathered from the group's nodes over the links (pmi_fence, as for simple
// PMI); direct modex requests routed to the rank's node; aborts to node 0.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "agent.hpp"
#include "ompi_env.hpp"
#include "dragon/common/names.hpp"
#include "dragon/procgroup/topology.hpp"

namespace dragon::agent {

#if DRAGON_HAVE_PMIX

LocalGroup* Agent::group_of_nspace(const std::string& nspace) {
    for (auto& [id, g] : local_groups_)
        if (g.pmix && g.pmix->nspace == nspace) return &g;
    return nullptr;
}

Status Agent::start_pmix(LocalGroup& g, const msg::ExecMembers& m) {
    if (m.rank_nodes.size() != m.nranks)
        return make_error(Errc::protocol, "PMIx group {}: {} rank nodes for {} ranks", m.group_id, m.rank_nodes.size(),
                          m.nranks);
    if (!pmix_) {
        pmix_tmpdir_ = names::pmix_dir(opts_.run.str(), opts_.node_id);
        pmi::pmix::Upcalls up;
        up.fence = [this](const std::string& ns, std::string blob, bool, pmi::pmix::DataDone done) {
            LocalGroup* lg = group_of_nspace(ns);
            if (lg == nullptr) return done(Error(Errc::not_found, "unknown namespace " + ns), {});
            PmixJob& job = *lg->pmix;
            const std::uint64_t seq = job.fences_started++;
            auto& f = job.fences[seq];
            f.local = true;
            f.own = blob;
            f.done = std::move(done);
            for (std::uint32_t node : job.other_nodes) send_to_node(node, msg::PmiFence{lg->id, seq, blob});
            msg::PmiFence none{lg->id, seq, {}};
            on_pmix_fence(opts_.node_id, std::move(none), *lg);  // completes at once on a single node
        };
        up.direct_modex = [this](const std::string& ns, std::uint32_t rank, pmi::pmix::DataDone done) {
            LocalGroup* lg = group_of_nspace(ns);
            if (lg == nullptr || rank >= lg->pmix->rank_node.size())
                return done(Error(Errc::not_found, fmt::format("no rank {} in {}", rank, ns)), {});
            const std::uint32_t node = lg->pmix->rank_node[rank];
            const std::uint64_t id = next_dmodex_++;
            dmodex_waiting_[id] = std::move(done);
            send_to_node(node, msg::PmixDmodexRequest{lg->id, rank, id});
        };
        up.abort = [this](const std::string& ns, std::uint32_t rank, int status, std::string message) {
            LocalGroup* lg = group_of_nspace(ns);
            if (lg == nullptr) return;
            spdlog::info("group {}: rank {} asks to abort the job (PMIx, status {})", lg->id, rank, status);
            send_to_node(0, msg::PmiAbort{lg->id, rank, status, std::move(message)});
        };
        up.finalized = [this](const std::string& ns, std::uint32_t rank) {
            if (LocalGroup* lg = group_of_nspace(ns)) lg->pmix->finalized.insert(rank);
        };
        auto post = [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); };
        std::error_code fec;
        const auto exe = std::filesystem::read_symlink("/proc/self/exe", fec);
        const auto plugin = (exe.parent_path().parent_path() / "lib" / "libdragon_pmix.so").string();
        auto server = pmi::pmix::load(plugin, pmix_tmpdir_, hostname_, post, std::move(up));
        if (!server) return std::move(server).error();
        pmix_ = std::move(*server);
        spdlog::debug("PMIx server up in {}", pmix_tmpdir_);
        DRAGON_CHECK(make_ompi_dirs(ompi_dirs(opts_.run, opts_.node_id)));
        // The real machine's topology (whatever placement was told to use).
        auto topo = procgroup::Topology::discover();
        auto xml = topo ? topo->to_xml() : Result<std::string>(topo.error());
        if (xml) pmix_topology_xml_ = std::move(*xml);
        else spdlog::warn("PMIx: no topology for the ranks ({}); each discovers its own", xml.error().message());
    }
    auto job = std::make_unique<PmixJob>();
    job->nspace = fmt::format("dragon.{}.{}", opts_.run.str().substr(0, 12), m.group_id);
    job->rank_node = m.rank_nodes;
    for (std::uint32_t r = 0; r < m.nranks; ++r) {
        if (m.rank_nodes[r] == opts_.node_id) job->local_ranks.push_back(r);
        else job->other_nodes.insert(m.rank_nodes[r]);
    }
    // Node names: the host's, made distinct when several nodes share a host.
    pmi::pmix::Job spec;
    spec.nspace = job->nspace;
    spec.node = opts_.node_id;
    spec.rank_node = m.rank_nodes;
    spec.cpus_per_rank = m.spec.cpus_per_proc;
    spec.topology_xml = pmix_topology_xml_;
    std::set<std::uint32_t> nodes(m.rank_nodes.begin(), m.rank_nodes.end());
    std::map<std::string, int> seen;
    auto host_of = [&](std::uint32_t n) { return n == opts_.node_id || n >= links_.size() ? hostname_ : links_[n].hostname; };
    for (std::uint32_t n : nodes) ++seen[host_of(n)];
    spec.node_names.resize(nodes.empty() ? 0 : *nodes.rbegin() + 1);
    for (std::uint32_t n : nodes)
        spec.node_names[n] = seen[host_of(n)] > 1 ? fmt::format("{}-n{}", host_of(n), n) : host_of(n);
    spdlog::debug("group {}: registering PMIx namespace {}", m.group_id, job->nspace);
    DRAGON_CHECK(pmix_->register_job(spec));
    job->registered = true;
    g.pmix = std::move(job);  // from here on, closing the group deregisters it
    DRAGON_CHECK(pmix_->register_ranks(g.pmix->nspace, g.pmix->local_ranks));
    spdlog::debug("group {}: {} PMIx clients registered", m.group_id, g.pmix->local_ranks.size());
    replay_early_fences(g.id);
    return ok();
}

Result<std::vector<std::string>> Agent::pmix_for_member(LocalGroup& g, std::uint32_t rank) {
    auto env = DRAGON_TRY(pmix_->setup_rank(g.pmix->nspace, rank));
    // Open MPI 4.1 launched directly: its PMIx component, not mpirun's ORTE.
    env.emplace_back("OMPI_MCA_schizo=^orte");
    env.emplace_back("OMPI_MCA_ess=pmi");
    g.pmix->connected.insert(rank);  // registered: it may speak PMIx from now on
    return env;
}

void Agent::on_pmix_fence(std::uint32_t from, msg::PmiFence&& m, LocalGroup& g) {
    PmixJob& job = *g.pmix;
    if (from != opts_.node_id) {
        if (!job.other_nodes.contains(from))
            return spdlog::error("group {}: PMIx fence batch from node {}, which has no rank of it", g.id, from);
        if (m.seq > job.fences_started + 1 || (m.seq < job.fences_started && !job.fences.contains(m.seq)))
            return spdlog::error("group {}: PMIx fence {} from node {} out of step", g.id, m.seq, from);
        auto& f = job.fences[m.seq];
        if (!f.remote.emplace(from, std::move(m.batch)).second)
            return spdlog::error("group {}: PMIx fence {} from node {} came twice", g.id, m.seq, from);
    }
    auto it = job.fences.find(m.seq);
    if (it == job.fences.end() || !it->second.local || it->second.remote.size() != job.other_nodes.size()) return;
    std::string all = std::move(it->second.own);
    for (auto& [node, blob] : it->second.remote) all += blob;
    auto done = std::move(it->second.done);
    job.fences.erase(it);
    done(ok(), std::move(all));
}

void Agent::on_pmix_dmodex_request(std::uint32_t from, const msg::PmixDmodexRequest& m) {
    auto g = local_groups_.find(m.group_id);
    auto fail = [&](const std::string& why) {
        send_to_node(from, msg::PmixDmodexReply{m.request_id, static_cast<std::uint16_t>(Errc::not_found), why, {}});
    };
    if (g == local_groups_.end() || !g->second.pmix) return fail(fmt::format("group {} has no PMIx job here", m.group_id));
    pmix_->dmodex_request(g->second.pmix->nspace, m.rank, [this, from, id = m.request_id](Status st, std::string blob) {
        msg::PmixDmodexReply r{id, 0, {}, std::move(blob)};
        if (!st) {
            r.code = static_cast<std::uint16_t>(st.error().code());
            r.message = st.error().message();
        }
        send_to_node(from, r);
    });
}

void Agent::on_pmix_dmodex_reply(const msg::PmixDmodexReply& m) {
    auto it = dmodex_waiting_.find(m.request_id);
    if (it == dmodex_waiting_.end()) return;
    auto done = std::move(it->second);
    dmodex_waiting_.erase(it);
    if (m.code != 0) return done(Error(static_cast<Errc>(m.code), m.message), {});
    done(ok(), m.data);
}

std::string Agent::pmix_rank_exited(LocalGroup& g, std::uint32_t rank, bool clean) {
    PmixJob& job = *g.pmix;
    // Only a clean exit needs a reason: a crash or an exit code speaks for itself.
    if (!clean || job.finalized.contains(rank) || !job.connected.contains(rank)) return {};
    // A program that never called PMIx_Init exits without finalize too; it
    // holds nobody up unless a fence is open on this node.
    if (job.fences.empty() && job.fences_started == 0) return {};
    return "exited after PMIx init without PMIx finalize";
}

void Agent::pmix_forget(LocalGroup& g) {
    if (!g.pmix || !g.pmix->registered || !pmix_) return;
    // Fences still open get their answer while the namespace still exists.
    for (auto& [seq, f] : g.pmix->fences)
        if (f.done) f.done(Error(Errc::closed, "the job ended"), {});
    g.pmix->fences.clear();
    pmix_->deregister_job(g.pmix->nspace, g.pmix->local_ranks);
    g.pmix.reset();
}

void Agent::stop_pmix_server() {
    for (auto& [id, g] : local_groups_) pmix_forget(g);
    pmix_.reset();
    if (!pmix_tmpdir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(pmix_tmpdir_, ec);
    }
}

#else  // built without OpenPMIx

LocalGroup* Agent::group_of_nspace(const std::string&) { return nullptr; }
Status Agent::start_pmix(LocalGroup&, const msg::ExecMembers&) {
    return Error(Errc::unsupported, "this dragon-agent was built without OpenPMIx (libpmix-dev): --pmi pmix is not available");
}
Result<std::vector<std::string>> Agent::pmix_for_member(LocalGroup&, std::uint32_t) {
    return Error(Errc::unsupported, "no PMIx");
}
void Agent::on_pmix_fence(std::uint32_t, msg::PmiFence&&, LocalGroup&) {}
void Agent::on_pmix_dmodex_request(std::uint32_t from, const msg::PmixDmodexRequest& m) {
    send_to_node(from, msg::PmixDmodexReply{m.request_id, static_cast<std::uint16_t>(Errc::unsupported), "no PMIx", {}});
}
void Agent::on_pmix_dmodex_reply(const msg::PmixDmodexReply&) {}
std::string Agent::pmix_rank_exited(LocalGroup&, std::uint32_t, bool) { return {}; }
void Agent::pmix_forget(LocalGroup&) {}
void Agent::stop_pmix_server() {}

#endif

}  // namespace dragon::agent
