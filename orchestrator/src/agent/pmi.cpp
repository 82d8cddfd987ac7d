// The executor's PMI service (docs/pmi.md): a pmi::JobServer per group with
// PMI on this node, its ranks' sockets (PMI_FD socket pairs, or connections
// to a PMI_PORT listener), and its fences and aborts carried over the links.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "../runtime/spawn.hpp"
#include "agent.hpp"

namespace dragon::agent {

namespace {
constexpr std::size_t kMaxEarlyFenceBytes = 64U << 20;  // fence batches held for groups not started here yet
constexpr std::size_t kReadPauseBytes = 64U << 10;      // unread replies before a rank's requests wait
constexpr auto kLostConnectionGrace = std::chrono::seconds(2);
}

// ---- the JobServer's host --------------------------------------------------------------

PmiJob::~PmiJob() {
    // Pending handlers hold the connections: close them so those end now.
    asio::error_code ec;
    for (auto& [id, c] : conns) c->sock.close(ec);
    if (acceptor) acceptor->close(ec);
}

void PmiJob::drop(std::map<pmi::ConnId, std::shared_ptr<PmiConn>>::iterator it) {
    asio::error_code ec;
    it->second->sock.close(ec);
    conns.erase(it);
}

void PmiJob::send(pmi::ConnId conn, std::string bytes) {
    auto it = conns.find(conn);
    if (it == conns.end()) return;
    it->second->out.push_back(std::move(bytes));
    agent.pmi_write(group_id, conn);
}

void PmiJob::close(pmi::ConnId conn) {
    auto it = conns.find(conn);
    if (it == conns.end()) return;
    it->second->closing = true;
    agent.pmi_write(group_id, conn);  // closes it once the queue is written
}

void PmiJob::fence_out(std::uint64_t seq, std::string batch) {
    for (std::uint32_t node : other_nodes) agent.send_to_node(node, msg::PmiFence{group_id, seq, batch});
}

void PmiJob::abort(std::uint32_t rank, int exit_code, std::string message) {
    spdlog::info("group {}: rank {} asks to abort the job (exit code {})", group_id, rank, exit_code);
    agent.send_to_node(0, msg::PmiAbort{group_id, rank, exit_code, std::move(message)});
}

void PmiJob::rank_error(std::optional<std::uint32_t> rank, std::string message, bool protocol) {
    if (!rank) return spdlog::warn("group {}: a PMI connection: {}", group_id, message);
    // Its peers would wait for it in a fence: end it; its exit report carries
    // the reason (JobServer::rank_exited) and fails the group. A lost
    // connection is most often a crash in progress: its own exit comes first.
    Puid who = 0;
    for (const auto& [puid, p] : agent.procs_)
        if (p->group_id == group_id && p->rank == *rank && p->state == msg::ProcState::running) who = puid;
    if (who == 0) return;
    auto end_it = [&agent = agent, who, group = group_id, r = *rank, message] {
        Process* p = agent.find(who);
        if (p == nullptr || p->state != msg::ProcState::running) return;
        spdlog::warn("group {}: rank {}: {}; ending it", group, r, message);
        ::kill(-p->pid, SIGKILL);
    };
    if (protocol) return end_it();
    auto timer = std::make_shared<asio::steady_timer>(agent.io_, kLostConnectionGrace);
    timer->async_wait([timer, end_it](const asio::error_code& ec) { if (!ec) end_it(); });
}

// ---- set-up ------------------------------------------------------------------------------

Status Agent::start_pmi(LocalGroup& g, const msg::ExecMembers& m) {
    if (m.rank_nodes.size() != m.nranks)
        return make_error(Errc::protocol, "PMI group {}: {} rank nodes for {} ranks", m.group_id, m.rank_nodes.size(),
                          m.nranks);
    auto job = std::make_unique<PmiJob>(*this, m.group_id);
    pmi::JobLayout layout;
    layout.job_id = m.group_id;
    // Unique per run and group; MPICH and Cray PMI treat it as the job's name.
    layout.kvsname = fmt::format("dragon_{}_{}", opts_.run.str().substr(0, 12), m.group_id);
    layout.node = opts_.node_id;
    layout.rank_node = m.rank_nodes;
    std::set<std::uint32_t> nodes(m.rank_nodes.begin(), m.rank_nodes.end());
    for (std::uint32_t n : nodes) {
        if (n != opts_.node_id) job->other_nodes.insert(n);
        if (job->node_index.size() <= n) job->node_index.resize(n + 1, 0);
        job->node_index[n] = static_cast<std::uint32_t>(std::distance(nodes.begin(), nodes.find(n)));
    }
    job->server = std::make_unique<pmi::JobServer>(std::move(layout), *job);

    if (m.spec.pmi_port) {
        // One listener per group and node, on loopback: only this node's ranks
        // connect, and each proves who it is with its random PMI_ID.
        const std::string host = "127.0.0.1";
        asio::error_code ec;
        auto addr = asio::ip::make_address(host, ec);
        if (ec) return make_error(Errc::invalid_argument, "PMI_PORT: bad node address '{}': {}", host, ec.message());
        auto acc = std::make_unique<asio::ip::tcp::acceptor>(io_);
        const asio::ip::tcp::endpoint ep(addr, 0);
        if (acc->open(ep.protocol(), ec); !ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) acc->bind(ep, ec);
        if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
        if (ec) return make_error(Errc::system, "PMI_PORT: cannot listen on {}: {}", host, ec.message());
        job->port = fmt::format("{}:{}", host, acc->local_endpoint().port());
        job->acceptor = std::move(acc);
    }

    const auto kvsname = job->server->layout().kvsname;
    job->env = {
        fmt::format("PMI_SIZE={}", m.nranks),
        fmt::format("PMI_JOBID={}", kvsname),
        fmt::format("PMI_LOCAL_SIZE={}", m.local_size),
        fmt::format("MPI_LOCALNRANKS={}", m.local_size),
        fmt::format("PMI_UNIVERSE_SIZE={}", m.nranks),
        "PMI_SPAWNED=0",
    };
    if (m.spec.pmi == msg::PmiMode::cray) {
        job->env.push_back(fmt::format("PALS_APID={}", kvsname));
        job->env.push_back(fmt::format("PALS_NODEID={}", job->node_index[opts_.node_id]));
        job->env.push_back(fmt::format("PALS_LOCAL_SIZE={}", m.local_size));
        job->env.push_back(fmt::format("PALS_DEPTH={}", m.spec.cpus_per_proc));
        if (shim_dir_.empty()) {
            std::error_code fec;
            auto exe = std::filesystem::read_symlink("/proc/self/exe", fec);
            if (!fec) shim_dir_ = (exe.parent_path().parent_path() / "lib").string();
            if (shim_dir_.empty() || !std::filesystem::exists(shim_dir_ + "/libpmi.so.0"))
                spdlog::warn("--pmi cray: no libpmi.so.0 in {}; ranks use whatever libpmi they find", shim_dir_);
        }
        std::string ld = shim_dir_;
        for (const auto& kv : base_env_)
            if (kv.starts_with("LD_LIBRARY_PATH=") && kv.size() > 16) ld += ":" + kv.substr(16);
        for (const auto& e : m.spec.entries)
            for (const auto& kv : e.proc.env)
                if (kv.starts_with("LD_LIBRARY_PATH=") && kv.size() > 16) ld = shim_dir_ + ":" + kv.substr(16);
        job->env.push_back("LD_LIBRARY_PATH=" + ld);
    }
    g.pmi = std::move(job);
    if (g.pmi->acceptor) pmi_accept(g.id);

    replay_early_fences(g.id);
    return ok();
}

void Agent::replay_early_fences(std::uint64_t group_id) {
    // Fence batches of other nodes that came before this group did.
    auto early = early_fences_.find(group_id);
    if (early == early_fences_.end()) return;
    auto batches = std::move(early->second);
    early_fences_.erase(early);
    for (auto& [from, f] : batches) {
        early_fence_bytes_ -= f.batch.size();
        on_pmi_fence(from, std::move(f));
    }
}

Result<std::pair<sys::UniqueFd, sys::UniqueFd>> Agent::pmi_for_member(LocalGroup& g, std::uint32_t rank,
                                                                       std::vector<std::string>& env) {
    PmiJob& job = *g.pmi;
    const auto& place = g.placement[rank];
    env.insert(env.end(), job.env.begin(), job.env.end());
    env.push_back(fmt::format("PMI_RANK={}", rank));
    env.push_back(fmt::format("PMI_LOCAL_RANK={}", place.local_rank));
    env.push_back(fmt::format("MPI_LOCALRANKID={}", place.local_rank));
    if (g.spec.pmi == msg::PmiMode::cray) {
        env.push_back(fmt::format("PALS_RANKID={}", rank));
        env.push_back(fmt::format("PALS_LOCAL_RANKID={}", place.local_rank));
    }
    if (job.acceptor) {
        env.push_back(fmt::format("PMI_PORT={}", job.port));
        env.push_back(fmt::format("PMI_ID={}", job.server->port_id(rank)));
        return std::pair<sys::UniqueFd, sys::UniqueFd>();
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return sys::error_from_errno(fmt::format("PMI socket for rank {}", rank));
    sys::UniqueFd ours(sv[0]), theirs(sv[1]);
    const int num = DRAGON_TRY(rt::extra_fd_number());
    env.push_back(fmt::format("PMI_FD={}", num));
    return std::pair{std::move(theirs), std::move(ours)};
}

void Agent::pmi_member_started(LocalGroup& g, std::uint32_t rank, sys::UniqueFd parent_end) {
    PmiJob& job = *g.pmi;
    if (!parent_end) return;  // PMI_PORT: it connects on its own
    (void)sys::set_nonblocking(parent_end.get(), true);
    auto conn = std::make_shared<PmiConn>(io_);
    asio::error_code ec;
    conn->sock.assign(parent_end.release(), ec);
    if (ec) return spdlog::error("group {}: PMI socket of rank {}: {}", g.id, rank, ec.message());
    const pmi::ConnId id = job.server->connect(rank);
    job.conns.emplace(id, std::move(conn));
    pmi_read(g.id, id);
}

void Agent::pmi_accept(std::uint64_t group_id) {
    auto it = local_groups_.find(group_id);
    if (it == local_groups_.end() || !it->second.pmi || !it->second.pmi->acceptor) return;
    it->second.pmi->acceptor->async_accept([this, group_id](const asio::error_code& ec, asio::ip::tcp::socket sock) {
        if (ec == asio::error::operation_aborted) return;
        auto g = local_groups_.find(group_id);
        if (g == local_groups_.end() || !g->second.pmi) return;
        PmiJob& job = *g->second.pmi;
        if (!ec) {
            asio::error_code ec2;
            sock.set_option(asio::ip::tcp::no_delay(true), ec2);
            auto conn = std::make_shared<PmiConn>(io_);
            const int fd = sock.release(ec2);
            if (!ec2) {
                conn->sock.assign(fd, ec2);
                const pmi::ConnId id = job.server->connect(std::nullopt);
                job.conns.emplace(id, std::move(conn));
                pmi_read(group_id, id);
            }
            if (job.conns.size() > 2 * job.server->local_size() + 8) {  // more than its ranks could want
                spdlog::warn("group {}: too many PMI connections; closing the newest", group_id);
                job.drop(std::prev(job.conns.end()));
            }
        } else {
            // Out of fds, say: try again a little later, not in a busy loop.
            spdlog::warn("group {}: accepting a PMI connection: {}", group_id, ec.message());
            job.accept_backoff = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(100));
            job.accept_backoff->async_wait([this, group_id](const asio::error_code& e) { if (!e) pmi_accept(group_id); });
            return;
        }
        pmi_accept(group_id);
    });
}

// ---- the sockets -------------------------------------------------------------------------

void Agent::pmi_read(std::uint64_t group_id, pmi::ConnId id) {
    auto g = local_groups_.find(group_id);
    if (g == local_groups_.end() || !g->second.pmi) return;
    auto c = g->second.pmi->conns.find(id);
    if (c == g->second.pmi->conns.end() || c->second->closing) return;
    auto conn = c->second;
    std::size_t queued = 0;
    for (const auto& b : conn->out) queued += b.size();
    if (queued > kReadPauseBytes) {  // it does not read its replies: take no more requests for now
        conn->read_paused = true;
        return;
    }
    conn->read_paused = false;
    conn->sock.async_read_some(asio::buffer(conn->buf), [this, group_id, id, conn](const asio::error_code& ec,
                                                                                  std::size_t n) {
        auto grp = local_groups_.find(group_id);
        if (grp == local_groups_.end() || !grp->second.pmi) return;
        PmiJob& job = *grp->second.pmi;
        auto at = job.conns.find(id);
        if (at == job.conns.end() || at->second != conn || conn->closing) return;
        if (ec) {
            job.server->disconnected(id);
            job.drop(at);
            return;
        }
        job.server->received(id, std::string_view(conn->buf.data(), n));
        pmi_read(group_id, id);
    });
}

void Agent::pmi_write(std::uint64_t group_id, pmi::ConnId id) {
    auto g = local_groups_.find(group_id);
    if (g == local_groups_.end() || !g->second.pmi) return;
    PmiJob& job = *g->second.pmi;
    auto c = job.conns.find(id);
    if (c == job.conns.end()) return;
    auto conn = c->second;
    if (conn->writing) return;
    if (conn->out.empty()) {
        if (conn->closing) job.drop(c);
        return;
    }
    // Replies are small: gather what is queued into one write.
    while (conn->out.size() > 1) {
        auto second = std::move(conn->out[1]);
        conn->out.erase(conn->out.begin() + 1);
        conn->out.front() += second;
    }
    conn->writing = true;
    asio::async_write(conn->sock, asio::buffer(conn->out.front()),
                      [this, group_id, id, conn](const asio::error_code& ec, std::size_t) {
                          conn->writing = false;
                          conn->out.pop_front();
                          auto grp = local_groups_.find(group_id);
                          if (grp == local_groups_.end() || !grp->second.pmi) return;
                          PmiJob& pj = *grp->second.pmi;
                          auto at = pj.conns.find(id);
                          if (at == pj.conns.end() || at->second != conn) return;
                          if (ec) {
                              if (!conn->closing) pj.server->disconnected(id);
                              pj.drop(at);
                              return;
                          }
                          pmi_write(group_id, id);
                          if (conn->read_paused && !conn->writing) pmi_read(group_id, id);
                      });
}

// ---- between nodes ---------------------------------------------------------------------

void Agent::on_pmi_fence(std::uint32_t from, msg::PmiFence&& m) {
    auto g = local_groups_.find(m.group_id);
    if (g == local_groups_.end()) {
        if (forgotten_pmi_.contains(m.group_id)) return;  // it ended here while its peers were in a fence
        // Its members here are not started yet (exec_members comes over another link).
        if (early_fence_bytes_ + m.batch.size() > kMaxEarlyFenceBytes)
            return spdlog::error("PMI fence batch for unknown group {} from node {} dropped", m.group_id, from);
        early_fence_bytes_ += m.batch.size();
        early_fences_[m.group_id].emplace_back(from, std::move(m));
        return;
    }
    if (g->second.pmix) return on_pmix_fence(from, std::move(m), g->second);
    if (!g->second.pmi)
        return spdlog::error("PMI fence batch from node {} for group {}, which has no PMI", from, m.group_id);
    if (auto st = g->second.pmi->server->remote_fence(from, m.seq, m.batch); !st)
        spdlog::error("group {}: {}", m.group_id, st.error().message());
}

void Agent::pmi_drain(LocalGroup& g, std::uint32_t rank) {
    PmiJob& job = *g.pmi;
    auto id = job.server->conn_of(rank);
    if (!id) return;
    auto c = job.conns.find(*id);
    if (c == job.conns.end()) return;
    auto conn = c->second;
    // Whatever is still in its socket was written before it exited.
    char buf[4096];
    for (int i = 0; i < 64; ++i) {
        const auto n = ::recv(conn->sock.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        job.server->received(*id, std::string_view(buf, static_cast<std::size_t>(n)));
        if (!job.server->conn_of(rank)) break;
    }
}

void Agent::pmi_forget(std::uint64_t group_id) {
    if (auto early = early_fences_.find(group_id); early != early_fences_.end()) {
        for (const auto& [from, f] : early->second) early_fence_bytes_ -= f.batch.size();
        early_fences_.erase(early);
    }
    forgotten_pmi_.insert(group_id);
    while (forgotten_pmi_.size() > 4096) forgotten_pmi_.erase(forgotten_pmi_.begin());  // ids only grow
}

}  // namespace dragon::agent
