// Simple PMI-1/PMI-2 and Cray PMI (docs/pmi.md): a pmi::JobServer per group
// on this node and its ranks' sockets (PMI_FD socket pairs, or connections to
// a PMI_PORT listener); its fences go to the group's other nodes as pmi_fence.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <deque>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../../runtime/spawn.hpp"
#include "dragon/pmi/server.hpp"
#include "pmi.hpp"

namespace dragon::agent {

namespace {
constexpr std::size_t kReadPauseBytes = 64U << 10;  // unread replies before a rank's requests wait
constexpr auto kLostConnectionGrace = std::chrono::seconds(2);

/// One PMI connection of a local rank (a PMI_FD socket or an accepted
/// PMI_PORT connection), with what is queued to write to it.
struct Conn {
    asio::posix::stream_descriptor sock;
    std::deque<std::string> out;
    bool writing = false;
    bool closing = false;      // the server is done with it: close once `out` is written
    bool read_paused = false;  // replies pile up unread: no more requests until they drain
    std::array<char, 4096> buf{};
    explicit Conn(asio::io_context& io) : sock(io) {}
};
}  // namespace

class WireJob final : public PmiJob, private pmi::JobHost {
public:
    WireJob(PmiService& svc, const msg::ExecMembers& m);
    ~WireJob() override;
    WireJob(const WireJob&) = delete;
    WireJob& operator=(const WireJob&) = delete;

    Status listen();  // PMI_PORT
    Result<RankPmi> prepare_rank(std::uint32_t rank, std::uint32_t local_rank, std::vector<std::string> env) override;
    void rank_started(std::uint32_t rank, sys::UniqueFd ours) override;
    std::string rank_exited(std::uint32_t rank, bool clean) override;
    void remote_fence(std::uint32_t from, msg::PmiFence&& m) override;

private:
    // pmi::JobHost
    void send(pmi::ConnId conn, std::string bytes) override;
    void close(pmi::ConnId conn) override;
    void fence_out(std::uint64_t seq, std::string batch) override;
    void abort(std::uint32_t rank, int exit_code, std::string message) override;
    void rank_error(std::optional<std::uint32_t> rank, std::string message, bool protocol) override;

    void accept();
    void read(pmi::ConnId id);
    void write(pmi::ConnId id);
    void add(pmi::ConnId id, std::shared_ptr<Conn> c);
    /// Closes a connection's socket (ending its pending operations) and forgets it.
    void drop(std::map<pmi::ConnId, std::shared_ptr<Conn>>::iterator it);

    PmiService& svc_;
    asio::io_context& io_;
    std::uint64_t group_id_;
    bool cray_;
    std::set<std::uint32_t> other_nodes_;
    std::vector<std::uint32_t> node_index_;  // by node id: the job's own node number (PALS_NODEID)
    std::vector<std::string> env_;           // what every rank of the group gets
    std::unique_ptr<pmi::JobServer> server_;
    std::map<pmi::ConnId, std::shared_ptr<Conn>> conns_;
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;  // with PMI_PORT
    std::string port_;                                    // PMI_PORT's host:port
    std::unique_ptr<asio::steady_timer> accept_backoff_;
    // Pending handlers outlive the job (they hold their connection): they check this first.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

Result<std::unique_ptr<PmiJob>> PmiService::make_wire_job(const msg::ExecMembers& m) {
    auto job = std::make_unique<WireJob>(*this, m);
    if (m.spec.pmi_port) DRAGON_CHECK(job->listen());
    return std::unique_ptr<PmiJob>(std::move(job));
}

WireJob::WireJob(PmiService& svc, const msg::ExecMembers& m)
    : svc_(svc), io_(svc.io()), group_id_(m.group_id), cray_(m.spec.pmi == msg::PmiMode::cray) {
    const PmiOptions& o = svc.options();
    pmi::JobLayout layout;
    layout.job_id = m.group_id;
    // Unique per run and group; MPICH and Cray PMI treat it as the job's name.
    layout.kvsname = fmt::format("dragon_{}_{}", o.run.str().substr(0, 12), m.group_id);
    layout.node = o.node_id;
    layout.rank_node = m.rank_nodes;
    std::set<std::uint32_t> nodes(m.rank_nodes.begin(), m.rank_nodes.end());
    for (std::uint32_t n : nodes) {
        if (n != o.node_id) other_nodes_.insert(n);
        if (node_index_.size() <= n) node_index_.resize(n + 1, 0);
        node_index_[n] = static_cast<std::uint32_t>(std::distance(nodes.begin(), nodes.find(n)));
    }
    const std::string kvsname = layout.kvsname;
    server_ = std::make_unique<pmi::JobServer>(std::move(layout), static_cast<pmi::JobHost&>(*this));
    env_ = {
        fmt::format("PMI_SIZE={}", m.nranks),
        fmt::format("PMI_JOBID={}", kvsname),
        fmt::format("PMI_LOCAL_SIZE={}", m.local_size),
        fmt::format("MPI_LOCALNRANKS={}", m.local_size),
        fmt::format("PMI_UNIVERSE_SIZE={}", m.nranks),
        "PMI_SPAWNED=0",
    };
    if (!cray_) return;
    env_.push_back(fmt::format("PALS_APID={}", kvsname));
    env_.push_back(fmt::format("PALS_NODEID={}", node_index_[o.node_id]));
    env_.push_back(fmt::format("PALS_LOCAL_SIZE={}", m.local_size));
    env_.push_back(fmt::format("PALS_DEPTH={}", m.spec.cpus_per_proc));
    // The shim first, before whatever the agent's or the members' own path has.
    const std::string& shim = svc.shim_dir();
    std::string ld = shim;
    for (const auto& kv : o.base_env)
        if (kv.starts_with("LD_LIBRARY_PATH=") && kv.size() > 16) ld += ":" + kv.substr(16);
    for (const auto& e : m.spec.entries)
        for (const auto& kv : e.proc.env)
            if (kv.starts_with("LD_LIBRARY_PATH=") && kv.size() > 16) ld = shim + ":" + kv.substr(16);
    env_.push_back("LD_LIBRARY_PATH=" + ld);
}

WireJob::~WireJob() {
    *alive_ = false;
    // Pending handlers hold the connections: close them so those end now.
    asio::error_code ec;
    for (auto& [id, c] : conns_) c->sock.close(ec);
    if (acceptor_) acceptor_->close(ec);
    if (accept_backoff_) accept_backoff_->cancel();
}

Status WireJob::listen() {
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
    port_ = fmt::format("{}:{}", host, acc->local_endpoint().port());
    acceptor_ = std::move(acc);
    accept();
    return ok();
}

Result<RankPmi> WireJob::prepare_rank(std::uint32_t rank, std::uint32_t local_rank, std::vector<std::string> env) {
    // PMI's variables are the job's: they win over anything of the same name.
    RankPmi r;
    std::vector<std::string> add = env_;
    add.push_back(fmt::format("PMI_RANK={}", rank));
    add.push_back(fmt::format("PMI_LOCAL_RANK={}", local_rank));
    add.push_back(fmt::format("MPI_LOCALRANKID={}", local_rank));
    if (cray_) {
        add.push_back(fmt::format("PALS_RANKID={}", rank));
        add.push_back(fmt::format("PALS_LOCAL_RANKID={}", local_rank));
    }
    if (acceptor_) {
        add.push_back(fmt::format("PMI_PORT={}", port_));
        add.push_back(fmt::format("PMI_ID={}", server_->port_id(rank)));
    } else {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            return sys::error_from_errno(fmt::format("PMI socket for rank {}", rank));
        r.our_fd = sys::UniqueFd(sv[0]);
        r.child_fd = sys::UniqueFd(sv[1]);
        const int num = DRAGON_TRY(rt::extra_fd_number());
        add.push_back(fmt::format("PMI_FD={}", num));
    }
    r.env = rt::merge_env(std::move(env), add);
    return r;
}

void WireJob::rank_started(std::uint32_t rank, sys::UniqueFd ours) {
    if (!ours) return;  // PMI_PORT: it connects on its own
    (void)sys::set_nonblocking(ours.get(), true);
    auto conn = std::make_shared<Conn>(io_);
    asio::error_code ec;
    conn->sock.assign(ours.release(), ec);
    if (ec) return spdlog::error("group {}: PMI socket of rank {}: {}", group_id_, rank, ec.message());
    add(server_->connect(rank), std::move(conn));
}

std::string WireJob::rank_exited(std::uint32_t rank, bool clean) {
    // Whatever is still in its socket was written before it exited (an abort, say).
    if (auto id = server_->conn_of(rank)) {
        if (auto c = conns_.find(*id); c != conns_.end()) {
            auto conn = c->second;
            char buf[4096];
            for (int i = 0; i < 64; ++i) {
                const auto n = ::recv(conn->sock.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
                if (n <= 0) break;
                server_->received(*id, std::string_view(buf, static_cast<std::size_t>(n)));
                if (!server_->conn_of(rank)) break;
            }
        }
    }
    return server_->rank_exited(rank, clean);
}

void WireJob::remote_fence(std::uint32_t from, msg::PmiFence&& m) {
    if (auto st = server_->remote_fence(from, m.seq, m.batch); !st)
        spdlog::error("group {}: {}", group_id_, st.error().message());
}

// ---- pmi::JobHost ----------------------------------------------------------------

void WireJob::send(pmi::ConnId conn, std::string bytes) {
    auto it = conns_.find(conn);
    if (it == conns_.end()) return;
    it->second->out.push_back(std::move(bytes));
    write(conn);
}

void WireJob::close(pmi::ConnId conn) {
    auto it = conns_.find(conn);
    if (it == conns_.end()) return;
    it->second->closing = true;
    write(conn);  // closes it once the queue is written
}

void WireJob::fence_out(std::uint64_t seq, std::string batch) {
    for (std::uint32_t node : other_nodes_) svc_.router().send(node, msg::PmiFence{group_id_, seq, batch});
}

void WireJob::abort(std::uint32_t rank, int exit_code, std::string message) {
    spdlog::info("group {}: rank {} asks to abort the job (exit code {})", group_id_, rank, exit_code);
    svc_.router().send(0, msg::PmiAbort{group_id_, rank, exit_code, std::move(message)});
}

void WireJob::rank_error(std::optional<std::uint32_t> rank, std::string message, bool protocol) {
    if (!rank) return spdlog::warn("group {}: a PMI connection: {}", group_id_, message);
    // Its peers would wait for it in a fence: end it; its exit report carries
    // the reason (JobServer::rank_exited) and fails the group. A lost
    // connection is most often a crash in progress: its own exit comes first.
    auto end_it = [end = svc_.options().end_rank, group = group_id_, r = *rank, message] { end(group, r, message); };
    if (protocol) return end_it();
    auto timer = std::make_shared<asio::steady_timer>(io_, kLostConnectionGrace);
    timer->async_wait([timer, end_it](const asio::error_code& ec) { if (!ec) end_it(); });
}

// ---- the sockets ---------------------------------------------------------------------

void WireJob::add(pmi::ConnId id, std::shared_ptr<Conn> c) {
    conns_.emplace(id, std::move(c));
    read(id);
}

void WireJob::drop(std::map<pmi::ConnId, std::shared_ptr<Conn>>::iterator it) {
    asio::error_code ec;
    it->second->sock.close(ec);
    conns_.erase(it);
}

void WireJob::accept() {
    acceptor_->async_accept([this, alive = alive_](const asio::error_code& ec, asio::ip::tcp::socket sock) {
        if (ec == asio::error::operation_aborted || !*alive) return;
        if (ec) {
            // Out of fds, say: try again a little later, not in a busy loop.
            spdlog::warn("group {}: accepting a PMI connection: {}", group_id_, ec.message());
            accept_backoff_ = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(100));
            accept_backoff_->async_wait([this, alive](const asio::error_code& e) { if (!e && *alive) accept(); });
            return;
        }
        asio::error_code ec2;
        sock.set_option(asio::ip::tcp::no_delay(true), ec2);
        auto conn = std::make_shared<Conn>(io_);
        const int fd = sock.release(ec2);
        if (!ec2) {
            conn->sock.assign(fd, ec2);
            add(server_->connect(std::nullopt), std::move(conn));
        }
        if (conns_.size() > 2 * server_->local_size() + 8) {  // more than its ranks could want
            spdlog::warn("group {}: too many PMI connections; closing the newest", group_id_);
            drop(std::prev(conns_.end()));
        }
        accept();
    });
}

void WireJob::read(pmi::ConnId id) {
    auto c = conns_.find(id);
    if (c == conns_.end() || c->second->closing) return;
    auto conn = c->second;
    std::size_t queued = 0;
    for (const auto& b : conn->out) queued += b.size();
    if (queued > kReadPauseBytes) {  // it does not read its replies: take no more requests for now
        conn->read_paused = true;
        return;
    }
    conn->read_paused = false;
    conn->sock.async_read_some(asio::buffer(conn->buf), [this, alive = alive_, id, conn](const asio::error_code& ec,
                                                                                        std::size_t n) {
        if (!*alive) return;
        auto at = conns_.find(id);
        if (at == conns_.end() || at->second != conn || conn->closing) return;
        if (ec) {
            server_->disconnected(id);
            drop(at);
            return;
        }
        server_->received(id, std::string_view(conn->buf.data(), n));
        read(id);
    });
}

void WireJob::write(pmi::ConnId id) {
    auto c = conns_.find(id);
    if (c == conns_.end()) return;
    auto conn = c->second;
    if (conn->writing) return;
    if (conn->out.empty()) {
        if (conn->closing) drop(c);
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
                      [this, alive = alive_, id, conn](const asio::error_code& ec, std::size_t) {
                          conn->writing = false;
                          conn->out.pop_front();
                          if (!*alive) return;
                          auto at = conns_.find(id);
                          if (at == conns_.end() || at->second != conn) return;
                          if (ec) {
                              if (!conn->closing) server_->disconnected(id);
                              drop(at);
                              return;
                          }
                          write(id);
                          if (conn->read_paused && !conn->writing) read(id);
                      });
}

}  // namespace dragon::agent
