// The PMIx server: OpenPMIx's public server API behind dragon::pmi::pmix::Server.
#include "dragon/pmi/pmix.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <pmix.h>
#include <pmix_server.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

namespace dragon::pmi::pmix {

namespace {

struct Impl {
    Post post;
    Upcalls up;
};

// OpenPMIx's upcalls carry no pointer of ours: the one server of the process.
std::mutex g_mutex;
Impl* g_impl = nullptr;

Impl* impl() {
    std::lock_guard lock(g_mutex);
    return g_impl;
}

Status check(pmix_status_t st, std::string_view what) {
    if (st == PMIX_SUCCESS || st == PMIX_OPERATION_SUCCEEDED) return ok();
    return make_error(Errc::system, "PMIx: {}: {}", what, PMIx_Error_string(st));
}

// Waits for an OpenPMIx operation that completes on its own thread.
struct Waiter {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    pmix_status_t st = PMIX_SUCCESS;
    static void cb(pmix_status_t st, void* cbdata) {
        auto* w = static_cast<Waiter*>(cbdata);
        {
            std::lock_guard lock(w->m);
            w->st = st;
            w->done = true;
        }
        w->cv.notify_all();
    }
    pmix_status_t wait(pmix_status_t started) {
        if (started != PMIX_SUCCESS) return started == PMIX_OPERATION_SUCCEEDED ? PMIX_SUCCESS : started;
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return done; });
        return st;
    }
};

// An array of pmix_info_t that frees what it loaded.
class Infos {
public:
    Infos() { v_.reserve(64); }
    ~Infos() {
        for (auto& i : v_) PMIX_INFO_DESTRUCT(&i);
    }
    Infos(const Infos&) = delete;
    Infos& operator=(const Infos&) = delete;
    void add(const char* key, const void* value, pmix_data_type_t type) {
        v_.emplace_back();
        PMIX_INFO_CONSTRUCT(&v_.back());
        PMIX_INFO_LOAD(&v_.back(), key, value, type);
    }
    void str(const char* key, const std::string& s) { add(key, s.c_str(), PMIX_STRING); }
    void u32(const char* key, std::uint32_t x) { add(key, &x, PMIX_UINT32); }
    void u16(const char* key, std::uint16_t x) { add(key, &x, PMIX_UINT16); }
    void rank(const char* key, pmix_rank_t r) { add(key, &r, PMIX_PROC_RANK); }
    void flag(const char* key, bool b) { add(key, &b, PMIX_BOOL); }
    /// key -> an array of the infos in `inner` (copied).
    void array(const char* key, Infos& inner) {
        pmix_data_array_t darray;
        darray.type = PMIX_INFO;
        darray.size = inner.v_.size();
        darray.array = inner.v_.data();
        add(key, &darray, PMIX_DATA_ARRAY);
    }
    pmix_info_t* data() { return v_.data(); }
    [[nodiscard]] std::size_t size() const { return v_.size(); }

private:
    std::vector<pmix_info_t> v_;
};

void load_proc(pmix_proc_t& p, const std::string& nspace, pmix_rank_t rank) {
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, nspace.c_str(), rank);
}

void release_string(void* cbdata) { delete static_cast<std::string*>(cbdata); }

// Hands data to an OpenPMIx modex callback; the bytes live until it releases them.
void give(pmix_modex_cbfunc_t cbfunc, void* cbdata, Status st, std::string data) {
    auto* owned = new std::string(std::move(data));
    cbfunc(st ? PMIX_SUCCESS : PMIX_ERROR, owned->data(), owned->size(), cbdata, release_string, owned);
}

// ---- upcalls, on OpenPMIx's progress thread: hand each to the host's loop ----

pmix_status_t on_connected(const pmix_proc_t*, void*, pmix_op_cbfunc_t, void*) { return PMIX_OPERATION_SUCCEEDED; }

pmix_status_t on_finalized(const pmix_proc_t* proc, void*, pmix_op_cbfunc_t, void*) {
    if (Impl* s = impl(); s != nullptr && s->up.finalized) {
        std::string ns(proc->nspace);
        auto rank = static_cast<std::uint32_t>(proc->rank);
        s->post([s, ns, rank] { s->up.finalized(ns, rank); });
    }
    return PMIX_OPERATION_SUCCEEDED;
}

pmix_status_t on_abort(const pmix_proc_t* proc, void*, int status, const char msg[], pmix_proc_t[], size_t,
                       pmix_op_cbfunc_t, void*) {
    if (Impl* s = impl(); s != nullptr && s->up.abort) {
        std::string ns(proc->nspace), text(msg != nullptr ? msg : "");
        auto rank = static_cast<std::uint32_t>(proc->rank);
        s->post([s, ns, rank, status, text] { s->up.abort(ns, rank, status, text); });
    }
    return PMIX_OPERATION_SUCCEEDED;
}

pmix_status_t on_fence(const pmix_proc_t procs[], size_t nprocs, const pmix_info_t info[], size_t ninfo, char* data,
                       size_t ndata, pmix_modex_cbfunc_t cbfunc, void* cbdata) {
    Impl* s = impl();
    if (s == nullptr || !s->up.fence || nprocs == 0) return PMIX_ERR_NOT_SUPPORTED;
    std::string ns(procs[0].nspace);
    for (size_t i = 0; i < nprocs; ++i)  // one whole job at a time (MPI_Init's fence)
        if (ns != procs[i].nspace || procs[i].rank != PMIX_RANK_WILDCARD) return PMIX_ERR_NOT_SUPPORTED;
    bool collect = false;
    for (size_t i = 0; i < ninfo; ++i)
        if (PMIX_CHECK_KEY(&info[i], PMIX_COLLECT_DATA)) collect = PMIX_INFO_TRUE(&info[i]);
    std::string blob(data != nullptr ? data : "", data != nullptr ? ndata : 0);
    s->post([s, ns, blob = std::move(blob), collect, cbfunc, cbdata]() mutable {
        s->up.fence(ns, std::move(blob), collect,
                    [cbfunc, cbdata](Status st, std::string all) { give(cbfunc, cbdata, std::move(st), std::move(all)); });
    });
    return PMIX_SUCCESS;
}

pmix_status_t on_direct_modex(const pmix_proc_t* proc, const pmix_info_t[], size_t, pmix_modex_cbfunc_t cbfunc,
                              void* cbdata) {
    Impl* s = impl();
    if (s == nullptr || !s->up.direct_modex) return PMIX_ERR_NOT_SUPPORTED;
    std::string ns(proc->nspace);
    auto rank = static_cast<std::uint32_t>(proc->rank);
    s->post([s, ns, rank, cbfunc, cbdata] {
        s->up.direct_modex(ns, rank, [cbfunc, cbdata](Status st, std::string blob) {
            give(cbfunc, cbdata, std::move(st), std::move(blob));
        });
    });
    return PMIX_SUCCESS;
}

struct DmodexCall {
    Impl* s;
    DataDone done;
};

void on_dmodex_answer(pmix_status_t st, char* data, size_t sz, void* cbdata) {
    auto* call = static_cast<DmodexCall*>(cbdata);
    std::string blob(data != nullptr ? data : "", data != nullptr ? sz : 0);
    call->s->post([call, st, blob = std::move(blob)]() mutable {
        std::unique_ptr<DmodexCall> owned(call);
        owned->done(st == PMIX_SUCCESS ? ok() : check(st, "direct modex"), std::move(blob));
    });
}

}  // namespace


class OpenPmixServer final : public Server {
public:
    explicit OpenPmixServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
    ~OpenPmixServer() override;
    static Result<std::unique_ptr<Server>> create(const std::string& tmpdir, const std::string& hostname, Post post,
                                                  Upcalls upcalls);
    Status register_job(const Job& job) override;
    Status register_ranks(const std::string& nspace, const std::vector<std::uint32_t>& ranks) override;
    Result<std::vector<std::string>> setup_rank(const std::string& nspace, std::uint32_t rank) override;
    void deregister_job(const std::string& nspace, const std::vector<std::uint32_t>& local_ranks) override;
    void dmodex_request(const std::string& nspace, std::uint32_t rank, DataDone done) override;

private:
    std::unique_ptr<Impl> impl_;
};

Result<std::unique_ptr<Server>> OpenPmixServer::create(const std::string& tmpdir, const std::string& hostname,
                                                       Post post, Upcalls upcalls) {
    {
        std::lock_guard lock(g_mutex);
        if (g_impl != nullptr) return Error(Errc::already_exists, "PMIx: this process has a PMIx server already");
    }
    if (::mkdir(tmpdir.c_str(), 0700) != 0 && errno != EEXIST)
        return make_error(Errc::system, "PMIx: cannot create {}: {}", tmpdir, std::strerror(errno));
    auto im = std::make_unique<Impl>();
    im->post = std::move(post);
    im->up = std::move(upcalls);
    {
        std::lock_guard lock(g_mutex);
        g_impl = im.get();
    }
    static pmix_server_module_t module{};
    module.client_connected = on_connected;
    module.client_finalized = on_finalized;
    module.abort = on_abort;
    module.fence_nb = on_fence;
    module.direct_modex = on_direct_modex;
    Infos info;
    info.str(PMIX_SERVER_TMPDIR, tmpdir);
    info.str(PMIX_HOSTNAME, hostname);
    // Several agents may share a host (a virtual cluster): none claims the
    // host-wide rendezvous points; ranks find their server by its URI.
    info.flag(PMIX_SERVER_SYSTEM_SUPPORT, false);
    info.flag(PMIX_SERVER_TOOL_SUPPORT, false);
    const pmix_status_t st = PMIx_server_init(&module, info.data(), info.size());
    if (st != PMIX_SUCCESS) {
        std::lock_guard lock(g_mutex);
        g_impl = nullptr;
        return check(st, "server init").error();
    }
    return std::unique_ptr<Server>(new OpenPmixServer(std::move(im)));
}

OpenPmixServer::~OpenPmixServer() {
    PMIx_server_finalize();  // joins OpenPMIx's thread: no upcall after this
    std::lock_guard lock(g_mutex);
    g_impl = nullptr;
}

Status OpenPmixServer::register_job(const Job& job) {
    const auto size = static_cast<std::uint32_t>(job.rank_node.size());
    // The job's nodes in id order, and the ranks on each.
    std::map<std::uint32_t, std::vector<std::uint32_t>> ranks_on;
    for (std::uint32_t r = 0; r < size; ++r) ranks_on[job.rank_node[r]].push_back(r);
    auto name_of = [&](std::uint32_t node) {
        return node < job.node_names.size() && !job.node_names[node].empty() ? job.node_names[node]
                                                                              : fmt::format("node{}", node);
    };
    std::vector<std::string> names;
    std::vector<std::string> ppn;
    for (const auto& [node, ranks] : ranks_on) {
        names.push_back(name_of(node));
        ppn.push_back(fmt::format("{}", fmt::join(ranks, ",")));
    }
    char* node_regex = nullptr;
    char* proc_regex = nullptr;
    DRAGON_CHECK(check(PMIx_generate_regex(fmt::format("{}", fmt::join(names, ",")).c_str(), &node_regex), "node map"));
    std::unique_ptr<char, decltype(&std::free)> nr(node_regex, &std::free);
    DRAGON_CHECK(check(PMIx_generate_ppn(fmt::format("{}", fmt::join(ppn, ";")).c_str(), &proc_regex), "proc map"));
    std::unique_ptr<char, decltype(&std::free)> pr(proc_regex, &std::free);

    const auto& local = ranks_on[job.node];
    Infos info;
    info.u32(PMIX_UNIV_SIZE, size);
    info.u32(PMIX_JOB_SIZE, size);
    info.u32(PMIX_MAX_PROCS, size);
    info.u32(PMIX_APP_SIZE, size);
    info.u32(PMIX_NUM_NODES, static_cast<std::uint32_t>(ranks_on.size()));
    info.str(PMIX_JOBID, job.nspace);
    info.flag(PMIX_SPAWNED, false);
    info.u32(PMIX_APPNUM, 0);
    info.rank(PMIX_APPLDR, 0);
    info.add(PMIX_NODE_MAP, node_regex, PMIX_REGEX);
    info.add(PMIX_PROC_MAP, proc_regex, PMIX_REGEX);
    // Open MPI 4.1 adopts this instead of discovering the topology in every
    // rank (150 reads of /sys each, which 32 ranks on 2 cores pay dearly).
    if (!job.topology_xml.empty()) info.str("pmix.hwlocxml2", job.topology_xml);
    info.u32(PMIX_LOCAL_SIZE, static_cast<std::uint32_t>(local.size()));
    info.u32(PMIX_NODE_SIZE, static_cast<std::uint32_t>(local.size()));
    info.str(PMIX_LOCAL_PEERS, fmt::format("{}", fmt::join(local, ",")));
    info.rank(PMIX_LOCALLDR, local.empty() ? 0 : local.front());
    std::vector<std::uint16_t> local_rank(size, 0);
    for (const auto& [node, ranks] : ranks_on)
        for (std::size_t i = 0; i < ranks.size(); ++i) local_rank[ranks[i]] = static_cast<std::uint16_t>(i);
    for (std::uint32_t r = 0; r < size; ++r) {
        Infos proc;
        proc.rank(PMIX_RANK, r);
        proc.u16(PMIX_LOCAL_RANK, local_rank[r]);
        proc.u16(PMIX_NODE_RANK, local_rank[r]);
        proc.rank(PMIX_GLOBAL_RANK, r);
        proc.u32(PMIX_APPNUM, 0);
        proc.str(PMIX_HOSTNAME, name_of(job.rank_node[r]));
        proc.u32(PMIX_NODEID, job.rank_node[r]);
        info.array(PMIX_PROC_DATA, proc);
    }
    Waiter w;
    DRAGON_CHECK(check(w.wait(PMIx_server_register_nspace(job.nspace.c_str(), static_cast<int>(local.size()),
                                                          info.data(), info.size(), Waiter::cb, &w)),
                       fmt::format("registering namespace {}", job.nspace)));
    Waiter w2;
    return check(w2.wait(PMIx_server_setup_local_support(job.nspace.c_str(), nullptr, 0, Waiter::cb, &w2)),
                 "local support");
}

Status OpenPmixServer::register_ranks(const std::string& nspace, const std::vector<std::uint32_t>& ranks) {
    // All at once, before any rank starts: OpenPMIx's thread answers each in
    // microseconds now, in milliseconds once starting ranks load the cpus.
    struct Many {
        std::mutex m;
        std::condition_variable cv;
        std::size_t left = 0;
        pmix_status_t first = PMIX_SUCCESS;
        static void cb(pmix_status_t st, void* cbdata) {
            auto* w = static_cast<Many*>(cbdata);
            std::lock_guard lock(w->m);
            if (st != PMIX_SUCCESS && w->first == PMIX_SUCCESS) w->first = st;
            if (--w->left == 0) w->cv.notify_all();
        }
    } many;
    many.left = ranks.size();
    pmix_status_t failed = PMIX_SUCCESS;
    for (std::uint32_t r : ranks) {
        pmix_proc_t proc;
        load_proc(proc, nspace, r);
        const pmix_status_t st = PMIx_server_register_client(&proc, ::getuid(), ::getgid(), nullptr, Many::cb, &many);
        if (st != PMIX_SUCCESS) {  // no callback for this one
            std::lock_guard lock(many.m);
            --many.left;
            if (st != PMIX_OPERATION_SUCCEEDED && failed == PMIX_SUCCESS) failed = st;
        }
    }
    std::unique_lock lock(many.m);
    many.cv.wait(lock, [&] { return many.left == 0; });
    return check(failed != PMIX_SUCCESS ? failed : many.first, fmt::format("registering the ranks of {}", nspace));
}

Result<std::vector<std::string>> OpenPmixServer::setup_rank(const std::string& nspace, std::uint32_t rank) {
    pmix_proc_t proc;
    load_proc(proc, nspace, rank);
    char** env = nullptr;
    DRAGON_CHECK(check(PMIx_server_setup_fork(&proc, &env), fmt::format("fork environment of rank {}", rank)));
    std::vector<std::string> out;
    if (env != nullptr) {
        for (char** e = env; *e != nullptr; ++e) {
            out.emplace_back(*e);
            std::free(*e);
        }
        std::free(env);
    }
    return out;
}

void OpenPmixServer::deregister_job(const std::string& nspace, const std::vector<std::uint32_t>& local_ranks) {
    for (std::uint32_t r : local_ranks) {
        pmix_proc_t proc;
        load_proc(proc, nspace, r);
        Waiter w;
        PMIx_server_deregister_client(&proc, Waiter::cb, &w);
        w.wait(PMIX_SUCCESS);
    }
    Waiter w;
    PMIx_server_deregister_nspace(nspace.c_str(), Waiter::cb, &w);
    w.wait(PMIX_SUCCESS);
}

void OpenPmixServer::dmodex_request(const std::string& nspace, std::uint32_t rank, DataDone done) {
    pmix_proc_t proc;
    load_proc(proc, nspace, rank);
    auto* call = new DmodexCall{impl_.get(), std::move(done)};
    const pmix_status_t st = PMIx_server_dmodex_request(&proc, on_dmodex_answer, call);
    if (st != PMIX_SUCCESS) {
        std::unique_ptr<DmodexCall> owned(call);
        owned->done(check(st, "direct modex request"), {});
    }
}

}  // namespace dragon::pmi::pmix

// The plugin's entry point (docs/pmi.md): load() finds it with dlsym.
extern "C" __attribute__((visibility("default"))) dragon::pmi::pmix::Server* dragon_pmix_create_v1(
    dragon::pmi::pmix::CreateArgs* a) {
    auto s = dragon::pmi::pmix::OpenPmixServer::create(*a->tmpdir, *a->hostname, std::move(*a->post),
                                                       std::move(*a->upcalls));
    if (!s) {
        *a->error = s.error().message();
        return nullptr;
    }
    return s->release();
}
