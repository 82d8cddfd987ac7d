// dragon._core: a thin pybind11 layer over the C++ client API (a session with
// the local agent, ProcessGroup, channels). The idiomatic API is the `dragon`
// package; this module only converts types and errors.
//
// Every call that can block releases the GIL. Long waits are cut into slices
// so that Ctrl-C (a pending SIGINT) is seen between two slices: the wait ends
// with KeyboardInterrupt and nothing was sent or received by the cut slice.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <vector>

#include "dragon/channels/channel.hpp"
#include "dragon/channels/kv_mirror.hpp"
#include "dragon/channels/sync.hpp"
#include "dragon/common/config.hpp"
#include "dragon/common/group_rules.hpp"
#include "dragon/common/log.hpp"
#include "dragon/orchestrator/channel.hpp"
#include "dragon/orchestrator/client.hpp"
#include "dragon/orchestrator/process_group.hpp"

namespace py = pybind11;
using namespace std::chrono_literals;

namespace dragon::python {
namespace {

// ---- errors ------------------------------------------------------------------

PyObject* g_error = nullptr;             // DragonError(Exception)
PyObject* g_timeout = nullptr;           // DragonTimeoutError(DragonError, TimeoutError)
PyObject* g_connection = nullptr;        // DragonConnectionError(DragonError, ConnectionError)
PyObject* g_value = nullptr;             // DragonValueError(DragonError, ValueError)
PyObject* g_not_found = nullptr;         // DragonNotFoundError(DragonError, LookupError)

struct ErrorThrown {
    Error e;
};

PyObject* exception_type(Errc c) {
    switch (c) {
        case Errc::timeout:
        case Errc::would_block: return g_timeout;
        case Errc::closed: return g_connection;
        case Errc::invalid_argument:
        case Errc::protocol:  // bytes from the caller (a descriptor) that do not decode
        case Errc::too_large: return g_value;
        case Errc::not_found: return g_not_found;
        default: return g_error;
    }
}

[[noreturn]] void raise(const Error& e) { throw ErrorThrown{e}; }

/// Text from the runtime (messages, argv) as str, whatever its bytes.
py::object to_str(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

template <class T>
T value_or_raise(Result<T>&& r) {
    if (!r) raise(r.error());
    return std::move(*r);
}

void ok_or_raise(const Status& s) {
    if (!s) raise(s.error());
}

PyObject* make_exception(const char* name, std::initializer_list<PyObject*> bases, const char* doc) {
    PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(bases.size()));
    Py_ssize_t i = 0;
    for (PyObject* b : bases) {
        Py_INCREF(b);
        PyTuple_SET_ITEM(tuple, i++, b);
    }
    PyObject* t = PyErr_NewExceptionWithDoc(name, doc, tuple, nullptr);
    Py_DECREF(tuple);
    if (t == nullptr) throw py::error_already_set();
    return t;
}

// ---- timeouts and slices --------------------------------------------------------

using channels::Timeout;

/// None: forever; <= 0: try once; else that many seconds.
Timeout to_timeout(std::optional<double> seconds) {
    if (!seconds) return channels::kForever;
    if (std::isnan(*seconds)) throw py::value_error("timeout is NaN");
    if (*seconds <= 0) return channels::kTryOnce;
    if (*seconds > 1e9) return channels::kForever;
    return std::chrono::duration_cast<Timeout>(std::chrono::duration<double>(*seconds));
}

/// Runs `op(slice)` with the GIL released, in slices of at most `slice`
/// until it stops answering timeout/would_block or the whole `timeout` has
/// passed; checks for Ctrl-C between slices. The last answer is returned.
template <class Op>
auto sliced(Timeout timeout, Timeout slice, Op&& op) -> decltype(op(slice)) {
    const bool forever = timeout == channels::kForever;
    const auto deadline = forever ? client::Clock::time_point::max() : client::Clock::now() + timeout;
    for (;;) {
        Timeout t = slice;
        if (timeout == channels::kTryOnce) {
            t = channels::kTryOnce;
        } else if (!forever) {
            t = std::min<Timeout>(slice, std::max<Timeout>(Timeout::zero(), deadline - client::Clock::now()));
            if (t == Timeout::zero()) t = channels::kTryOnce;
        }
        auto r = [&] {
            py::gil_scoped_release nogil;
            return op(t);
        }();
        const bool waited_out = !r && (r.error().code() == Errc::timeout || r.error().code() == Errc::would_block);
        if (!waited_out || timeout == channels::kTryOnce) return r;
        if (!forever && client::Clock::now() >= deadline) {
            if (r.error().code() == Errc::would_block) return decltype(r)(Error(Errc::timeout, "timed out"));
            return r;
        }
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

// ---- the connection to the agent ---------------------------------------------------

/// One per process (shared by every group and channel of it): the agent
/// session for groups (one caller at a time, hence the mutex) and, made on
/// first use, the channel gateway.
class Runtime {
public:
    Runtime(std::string socket, Puid self) : socket_(std::move(socket)), self_(self), owner_(::getpid()) {
        auto s = [&] {
            py::gil_scoped_release nogil;
            return client::Session::connect(socket_, self_);
        }();
        session_.emplace(value_or_raise(std::move(s)));
    }

    std::string run_id() const { return session_->run_id(); }
    std::uint32_t node_id() const { return session_->node_id(); }
    int agent_pid() const { return session_->agent_pid(); }

    /// Whether this is a forked child of the process that connected: the
    /// connection (and any lock held at the fork) is the parent's.
    [[nodiscard]] bool forked() const { return ::getpid() != owner_; }
    void check_not_forked(const char* what) const {
        if (forked())
            raise(make_error(Errc::unsupported, "{}: this runtime connection belongs to the parent process (pid {}); "
                                                "a forked child makes its own",
                             what, owner_));
    }

    ~Runtime() {
        if (forked()) {
            // The session and gateway are the parent's: do not close them
            // politely (nothing is sent), and never wait on a lock copied
            // in whatever state the fork found it.
            new std::optional<client::Session>(std::move(session_));
            new std::shared_ptr<client::Gateway>(std::move(gateway_));
        }
    }

    /// Runs `f(session)` with the GIL released and the session locked.
    template <class F>
    auto with_session(F&& f) {
        check_not_forked("the runtime");
        py::gil_scoped_release nogil;
        std::lock_guard lk(mu_);
        return f(*session_);
    }

    /// The session's lock, for callers that released the GIL themselves.
    std::mutex& mutex() { return mu_; }
    /// The session, for callers holding mutex().
    client::Session* session() { return &*session_; }

    std::shared_ptr<client::Gateway> gateway() {
        check_not_forked("channels of other nodes");
        // The lock is taken without the GIL (another thread may hold it
        // while it waits for the GIL), and the error raised with it.
        std::optional<Error> err;
        std::shared_ptr<client::Gateway> gw;
        {
            py::gil_scoped_release nogil;
            std::lock_guard lk(gw_mu_);
            if (!gateway_) {
                auto g = client::Gateway::connect(socket_, self_);
                if (g) gateway_ = std::move(*g);
                else err = std::move(g).error();
            }
            gw = gateway_;
        }
        if (err) raise(*err);
        return gw;
    }

    py::list processes() {
        auto procs = value_or_raise(with_session([](client::Session& s) { return s.processes(); }));
        py::list out;
        for (const auto& p : procs) {
            py::dict d;
            d["puid"] = p.puid;
            d["pid"] = p.pid;
            d["running"] = p.state == msg::ProcState::running;
            d["exit_code"] = p.status.exit_code;
            d["signal"] = p.status.signal;
            py::list argv;
            for (const auto& a : p.argv) argv.append(to_str(a));
            d["argv"] = argv;
            out.append(d);
        }
        return out;
    }

    /// The runtime's nodes: [{"node", "hostname", "cpus", "cores"}] by node id.
    py::list machine() {
        auto nodes = value_or_raise(with_session([](client::Session& s) { return s.machine(); }));
        py::list out;
        for (const auto& n : nodes) {
            py::dict d;
            d["node"] = n.node_id;
            d["hostname"] = to_str(n.hostname);
            d["cpus"] = n.cpus;
            d["cores"] = n.cores;
            out.append(d);
        }
        return out;
    }

private:
    std::string socket_;
    Puid self_;
    pid_t owner_;
    std::mutex mu_;
    std::optional<client::Session> session_;
    std::mutex gw_mu_;
    std::shared_ptr<client::Gateway> gateway_;
};

// ---- groups --------------------------------------------------------------------

client::Redirect to_redirect(const std::string& kind, const std::string& path, const char* what) {
    if (kind == "inherit") return client::Redirect::inherit();
    if (kind == "discard") return client::Redirect::discard();
    if (kind == "pipe") return client::Redirect::pipe();
    if (kind == "file") return client::Redirect::file(path);
    throw py::value_error(std::string(what) + ": unknown redirect '" + kind + "' (inherit, discard, pipe, file)");
}

msg::PmiMode to_pmi(const std::string& s) {
    auto m = msg::pmi_mode_from(s);
    if (!m) throw py::value_error(m.error().message());
    return *m;
}

std::chrono::milliseconds p0() { return std::chrono::milliseconds(0); }

std::chrono::milliseconds to_ms(double seconds) {
    if (!(seconds >= 0)) throw py::value_error("patience must be >= 0 seconds");
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(seconds, 1e6) * 1000));
}

class Group {
public:
    Group(std::shared_ptr<Runtime> rt, const std::string& placement, const std::string& binding,
          std::uint32_t cpus_per_proc, bool restart, std::uint32_t max_restarts, const std::string& pmi,
          bool pmi_port, bool outlive_owner)
        : rt_(std::move(rt)) {
        client::GroupOptions o;
        o.placement = placement;
        o.binding = binding;
        o.cpus_per_proc = cpus_per_proc;
        o.restart = restart;
        o.max_restarts = max_restarts;
        o.pmi = to_pmi(pmi);
        o.pmi_port = pmi_port;
        o.outlive_owner = outlive_owner;
        rt_->with_session([&](client::Session& s) {
            pg_.emplace(s, o);
            return 0;
        });
    }

    ~Group() {
        if (!pg_) return;
        if (rt_->forked()) {
            leak();
            return;
        }
        // A running group is killed and waited for by the C++ destructor.
        if (Py_IsInitialized() != 0 && PyGILState_Check() != 0) {
            rt_->with_session([&](client::Session&) {
                pg_.reset();
                return 0;
            });
        } else {
            pg_.reset();
        }
    }

    /// Drops the C++ group now (a running one is killed and waited for);
    /// later calls raise. Python references (tracebacks) may outlive it.
    void release() {
        if (!pg_) return;
        if (rt_->forked()) return leak();
        rt_->with_session([&](client::Session&) {
            pg_.reset();
            return 0;
        });
    }

    void add(std::vector<std::string> argv, std::string cwd, std::vector<std::string> env,
             const std::string& stdin_kind, const std::string& stdin_path, const std::string& stdout_kind,
             const std::string& stdout_path, const std::string& stderr_kind, const std::string& stderr_path,
             std::uint32_t count, std::int32_t node, std::string host, std::vector<std::uint32_t> cpus, bool fast_start) {
        if (argv.empty()) throw py::value_error("a process needs a program (argv is empty)");
        if (count == 0) throw py::value_error("nproc must be at least 1");
        client::ProcessTemplate t;
        t.argv = std::move(argv);
        t.cwd = std::move(cwd);
        t.env = std::move(env);
        t.stdin_redirect = to_redirect(stdin_kind, stdin_path, "stdin");
        if (t.stdin_redirect.kind == client::Redirect::Kind::inherit)
            throw py::value_error("stdin: 'inherit' is not allowed (use discard, pipe or file)");
        t.stdout_redirect = to_redirect(stdout_kind, stdout_path, "stdout");
        t.stderr_redirect = to_redirect(stderr_kind, stderr_path, "stderr");
        if (node < -1) throw py::value_error("node must be a node id (>= 0), or -1 for any");
        t.node = node;
        t.host = std::move(host);
        t.cpus = std::move(cpus);
        t.fast_start = fast_start;
        pg().add(std::move(t), count);
    }

    void start() {
        ok_or_raise(rt_->with_session([&](client::Session&) { return pg().start(); }));
    }

    py::list plan() {
        auto members = value_or_raise(rt_->with_session([&](client::Session&) { return pg().plan(); }));
        return members_list(members);
    }

    /// True when done, False on timeout.
    bool join(std::optional<double> timeout) {
        rt_->check_not_forked("the group");
        auto r = sliced(to_timeout(timeout), 200ms, [&](Timeout t) -> Result<bool> {
            std::lock_guard lk(rt_->mutex());
            auto done = pg().join(t == channels::kForever ? std::nullopt
                                                          : std::optional(std::chrono::duration_cast<std::chrono::milliseconds>(t)));
            if (!done) return std::move(done).error();
            if (!*done) return Error(Errc::timeout, "timed out");
            return true;
        });
        if (!r && r.error().code() == Errc::timeout) return false;
        return value_or_raise(std::move(r));
    }

    void send_signal(int sig) {
        ok_or_raise(rt_->with_session([&](client::Session&) { return pg().send_signal(sig); }));
    }
    void stop(double patience) {
        const auto p = to_ms(patience);
        ok_or_raise(rt_->with_session([&](client::Session&) { return pg().request_stop(p, false); }));
        join(std::nullopt);
    }
    void kill() {
        ok_or_raise(rt_->with_session([&](client::Session&) { return pg().request_stop(p0(), true); }));
        join(std::nullopt);
    }
    void close() {
        ok_or_raise(rt_->with_session([&](client::Session&) { return pg().close(); }));
    }

    bool started() const { return pg_ && pg_->started(); }
    std::uint64_t id() const { return pg_ ? pg_->id() : 0; }
    std::uint32_t size() const { return pg_ ? pg_->size() : 0; }
    py::list members() const { return members_list(pg().members()); }
    std::vector<std::string> warnings() const { return pg().warnings(); }

    py::object outcome() {
        // The session's event map is written by whichever thread pumps: read it locked.
        auto o = rt_->with_session([&](client::Session&) { return pg().outcome(); });
        if (!o) return py::none();
        py::dict d;
        d["outcome"] = msg::name_of(o->outcome);
        d["fail_rank"] = o->fail_rank;
        d["fail_puid"] = o->fail_puid;
        d["fail_exit_code"] = o->fail_status.exit_code;
        d["fail_signal"] = o->fail_status.signal;
        d["fail_errno"] = o->fail_errno;
        d["fail_error"] = to_str(o->fail_error);
        d["fail_kind"] = msg::name_of(o->fail_kind);
        d["rank0_exit_code"] = o->rank0_status.exit_code;
        d["rank0_signal"] = o->rank0_status.signal;
        d["restarts"] = o->restarts;
        return d;
    }

    py::dict info() {
        auto gi = value_or_raise(rt_->with_session([&](client::Session&) { return pg().info(); }));
        py::dict d;
        d["state"] = msg::name_of(gi.state);
        d["restarts"] = gi.restarts;
        py::list procs;
        for (const auto& p : gi.processes) {
            py::dict e = placed(p);
            e["state"] = msg::name_of(p.state);
            e["exit_code"] = p.status.exit_code;
            e["signal"] = p.status.signal;
            py::list runs;
            for (const auto& r : p.runs)
                runs.append(py::make_tuple(r.puid, r.pid, r.exited, r.status.exit_code, r.status.signal));
            e["runs"] = runs;
            procs.append(e);
        }
        d["processes"] = procs;
        return d;
    }

    /// Bytes of `stream` ("out"/"err") of `rank` since the last read; b"" once
    /// the group is done and all was read. Timeout: DragonTimeoutError.
    py::bytes read_output(std::uint32_t rank, const std::string& stream, std::optional<double> timeout) {
        if (stream != "out" && stream != "err") throw py::value_error("stream must be 'out' or 'err'");
        rt_->check_not_forked("the group");
        const auto which = stream == "out" ? msg::Stream::out : msg::Stream::err;
        auto r = sliced(to_timeout(timeout), 200ms, [&](Timeout t) -> Result<std::string> {
            std::lock_guard lk(rt_->mutex());
            auto got = pg().read_output(rank, which,
                                        t == channels::kForever
                                            ? std::nullopt
                                            : std::optional(std::chrono::duration_cast<std::chrono::milliseconds>(t)));
            if (!got) return got;
            // Nothing yet while the group runs: the slice ran out, not the stream.
            if (got->empty() && !pg().outcome()) return Error(Errc::timeout, "no output within the timeout");
            return got;
        });
        return py::bytes(value_or_raise(std::move(r)));
    }

    /// Writes in pieces; while 1 MiB is unacknowledged it waits in slices
    /// (Ctrl-C is seen), and gives up once the group has ended.
    void write_stdin(std::uint32_t rank, const py::bytes& data, bool eof) {
        rt_->check_not_forked("the group");
        const std::string_view all = data;
        const auto& ms = pg().members();
        if (rank >= ms.size()) throw py::value_error("write_stdin: the group has no rank " + std::to_string(rank));
        const Puid puid = ms[rank].puid;
        constexpr std::size_t kPiece = 64 * 1024;
        std::size_t off = 0;
        do {
            auto room = sliced(channels::kForever, 200ms, [&](Timeout t) -> Status {
                std::lock_guard lk(rt_->mutex());
                auto& s = *rt_->session();
                for (;;) {
                    if (s.stdin_unacked(puid) < msg::kStdinWindow) return ok();
                    if (pg().outcome() || s.events(pg().id()).done)
                        return make_error(Errc::closed, "write_stdin: group {} has ended", pg().id());
                    auto got = s.pump(client::Clock::now() + t);
                    if (!got) return std::move(got).error();
                    if (!*got && s.stdin_unacked(puid) >= msg::kStdinWindow)
                        return Error(Errc::timeout, "stdin window full");
                }
            });
            ok_or_raise(room);
            const auto piece = all.substr(off, kPiece);
            off += piece.size();
            const bool last = off >= all.size();
            ok_or_raise(rt_->with_session([&](client::Session&) { return pg().write_stdin(rank, piece, eof && last); }));
        } while (off < all.size());
    }

private:
    /// In a forked child: the group is the parent's; forget it without a word to the agent.
    void leak() {
        new client::ProcessGroup(std::move(*pg_));
        pg_.reset();
    }

    client::ProcessGroup& pg() const {
        rt_->check_not_forked("the group");
        if (!pg_) raise(Error(Errc::closed, "the group was released"));
        return const_cast<client::ProcessGroup&>(*pg_);
    }

    /// Where a member runs: the fields a group member and a process's info share.
    template <class M>
    static py::dict placed(const M& m) {
        py::dict d;
        d["rank"] = m.rank;
        d["puid"] = m.puid;
        d["pid"] = m.pid;
        d["node"] = m.node_id;
        d["local_rank"] = m.local_rank;
        d["cpus"] = m.cpus;
        return d;
    }

    static py::list members_list(const std::vector<msg::GroupMember>& ms) {
        py::list out;
        for (const auto& m : ms) out.append(placed(m));
        return out;
    }

    std::shared_ptr<Runtime> rt_;
    std::optional<client::ProcessGroup> pg_;
};

// ---- channels ------------------------------------------------------------------

/// A received message as a read-only buffer, without a copy: a large one
/// stays in its pool block, freed when the last view of it goes.
struct MessageView {
    channels::Message msg;
};

class PyChannel {
public:
    PyChannel(std::shared_ptr<Runtime> rt, client::ChannelRef ref, std::optional<channels::Channel> owned)
        : rt_(std::move(rt)), ref_(std::move(ref)), owned_(std::move(owned)) {}

    static std::shared_ptr<PyChannel> create(const std::shared_ptr<Runtime>& rt, std::uint32_t capacity,
                                             std::uint32_t block_size, std::uint64_t max_queued_bytes) {
        if (capacity == 0) throw py::value_error("capacity must be at least 1");
        auto gw = rt->gateway();
        channels::ChannelAttrs a;
        a.capacity = capacity;
        a.block_size = block_size;
        a.max_queued_bytes = max_queued_bytes;
        auto ch = [&] {
            py::gil_scoped_release nogil;
            return channels::Channel::create(gw->pool(), a, 1s);
        }();
        auto c = value_or_raise(std::move(ch));
        auto ref = value_or_raise(client::ChannelRef::open(gw, c.descriptor()));
        return std::make_shared<PyChannel>(rt, std::move(ref), std::move(c));
    }

    static std::shared_ptr<PyChannel> attach(const std::shared_ptr<Runtime>& rt, const std::string& hex) {
        auto d = value_or_raise(channels::ChannelDescriptor::from_hex(hex));
        auto gw = rt->gateway();
        auto ref = [&] {
            py::gil_scoped_release nogil;
            return client::ChannelRef::open(gw, d);
        }();
        return std::make_shared<PyChannel>(rt, value_or_raise(std::move(ref)), std::nullopt);
    }

    std::string descriptor() const { return ref_.descriptor().to_hex(); }
    std::uint32_t node_id() const { return ref_.descriptor().node_id; }
    bool is_local() const { return ref_.is_local(); }
    bool owned() const { return owned_.has_value(); }

    void send(const py::buffer& b, std::optional<double> timeout) {
        usable("send");
        py::buffer_info info = b.request();
        if (PyBuffer_IsContiguous(info.view(), 'C') == 0)
            throw py::value_error("send: the buffer is not C-contiguous (copy it, e.g. bytes(view))");
        const std::span<const std::byte> bytes(static_cast<const std::byte*>(info.ptr),
                                               static_cast<std::size_t>(info.size * info.itemsize));
        const auto t = to_timeout(timeout);
        Status st;
        if (!ref_.is_local() && t == channels::kForever) {
            // On its way once it returns (Gateway::send): no slices, which would
            // turn it into timed sends that wait for the remote channel.
            py::gil_scoped_release nogil;
            std::shared_lock lk(life_);
            st = destroyed_ ? gone() : ref_.send(bytes, t);
        } else {
            st = sliced(t, ref_.is_local() ? Timeout(200ms) : Timeout(1s), [&](Timeout s) {
                std::shared_lock lk(life_);
                return destroyed_ ? gone() : ref_.send(bytes, s);
            });
        }
        ok_or_raise(st);
    }

    /// Sends the buffers of `items` in order, each as send(item) without a
    /// timeout would, with the GIL released for the whole batch (a queue's
    /// feeder thread: one GIL hand-off per batch, not per message). Returns
    /// how many were sent; raises the first item's error if none could be.
    std::size_t send_many(const py::list& items) {
        usable("send");
        std::vector<py::buffer_info> infos;
        infos.reserve(items.size());
        for (const auto& it : items) {
            infos.push_back(py::reinterpret_borrow<py::buffer>(it).request());
            if (PyBuffer_IsContiguous(infos.back().view(), 'C') == 0)
                throw py::value_error("send_many: a buffer is not C-contiguous");
        }
        std::size_t sent = 0;
        Status st;
        {
            py::gil_scoped_release nogil;
            const bool local = ref_.is_local();
            for (const auto& info : infos) {
                const std::span<const std::byte> bytes(static_cast<const std::byte*>(info.ptr),
                                                       static_cast<std::size_t>(info.size * info.itemsize));
                for (;;) {
                    std::shared_lock lk(life_);
                    if (destroyed_) {
                        st = gone();
                        break;
                    }
                    // Remote: on its way once it returns (see send). Local: in
                    // slices, so that destroy() is never held up for long.
                    st = local ? ref_.send(bytes, Timeout(200ms)) : ref_.send(bytes, channels::kForever);
                    if (st || (st.error().code() != Errc::timeout && st.error().code() != Errc::would_block)) break;
                }
                if (!st) break;
                ++sent;
            }
        }
        if (sent == 0 && !st) raise(st.error());
        return sent;
    }

    py::bytes recv(std::optional<double> timeout) {
        usable("recv");
        const auto t = to_timeout(timeout);
        if (auto* local = ref_.local_channel()) {
            auto m = sliced(t, 200ms, [&](Timeout s) -> Result<channels::Message> {
                std::shared_lock lk(life_);
                if (destroyed_) return gone();
                return local->recv_message(s);
            });
            auto msg = value_or_raise(std::move(m));
            const auto d = msg.data();
            return {reinterpret_cast<const char*>(d.data()), d.size()};
        }
        std::vector<std::byte> out;
        auto st = sliced(t, 1s, [&](Timeout s) {
            std::shared_lock lk(life_);
            return destroyed_ ? gone() : ref_.recv(out, s);
        });
        ok_or_raise(st);
        return {reinterpret_cast<const char*>(out.data()), out.size()};
    }

    /// As recv, without the copy into a bytes object: a MessageView (a
    /// read-only buffer). For a receiver that copies it once anyway (unpickling).
    /// A message under kViewFrom bytes comes as bytes: copying that little
    /// costs less than making and releasing the view (a Queue.get of a small
    /// object: ~0.5 us less).
    py::object recv_view(std::optional<double> timeout) {
        static constexpr std::size_t kViewFrom = 4096;
        usable("recv");
        const auto t = to_timeout(timeout);
        auto m = sliced(t, ref_.is_local() ? Timeout(200ms) : Timeout(1s), [&](Timeout s) -> Result<channels::Message> {
            std::shared_lock lk(life_);
            if (destroyed_) return gone();
            return ref_.recv_message(s);
        });
        auto msg = value_or_raise(std::move(m));
        if (msg.size() < kViewFrom) {
            const auto d = msg.data();
            return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
        }
        return py::cast(MessageView{std::move(msg)});
    }

    /// Waits until every send without a timeout to channels of other nodes
    /// has arrived; raises the first failure not yet reported.
    void flush(std::optional<double> timeout) {
        auto gw = rt_->gateway();
        auto st = [&] {
            py::gil_scoped_release nogil;
            return gw->flush(to_timeout(timeout));
        }();
        ok_or_raise(st);
    }

    /// Messages queued now; another node's channel is asked over the lane
    /// (this process's sends still on their way to it are not counted).
    std::size_t queued() {
        usable("queued");
        std::shared_lock lk(life_);
        if (destroyed_) raise(gone());
        if (auto* c = ref_.local_channel()) return c->queued();
        auto n = [&] {
            py::gil_scoped_release nogil;
            return ref_.queued();
        }();
        if (!n) raise(std::move(n).error());
        return *n;
    }
    std::uint32_t capacity() {
        usable("capacity");
        std::shared_lock lk(life_);
        if (destroyed_) raise(gone());
        return local_or_raise("capacity")->capacity();
    }

    /// Frees the channel; waits (GIL released) for this process's operations
    /// on it in other threads to end, and refuses later ones.
    void destroy() {
        if (!owned_) throw py::value_error("destroy: only the process that created a channel destroys it");
        Status st;
        {
            py::gil_scoped_release nogil;
            std::unique_lock lk(life_);
            st = owned_->destroy();
            destroyed_ = true;
        }
        owned_.reset();
        ok_or_raise(st);
    }

    channels::Channel* local_or_raise(const char* what) {
        auto* c = ref_.local_channel();
        if (c == nullptr)
            raise(make_error(Errc::unsupported, "{}: channel {} is on node {}; only this node's channels can be {}",
                             what, ref_.descriptor().channel_id, ref_.descriptor().node_id,
                             std::string(what) == "poll" ? "polled" : "inspected"));
        return c;
    }

    std::shared_mutex& life() { return life_; }
    [[nodiscard]] bool destroyed() const { return destroyed_; }
    void usable(const char* what) const {
        if (destroyed_) raise(gone());
        // Shared memory works after a fork; the parent's agent connection does not.
        if (!ref_.is_local()) rt_->check_not_forked(what);
    }

private:
    Error gone() const {
        return make_error(Errc::closed, "channel {} was destroyed", ref_.descriptor().channel_id);
    }

    std::shared_ptr<Runtime> rt_;
    client::ChannelRef ref_;
    std::optional<channels::Channel> owned_;  // we created it: destroy() frees it
    std::shared_mutex life_;                  // shared: an operation; exclusive: destroy()
    bool destroyed_ = false;
};

/// [(channel, events)] -> [revents], empty on timeout.
std::vector<int> poll(const std::vector<std::pair<std::shared_ptr<PyChannel>, int>>& items, std::optional<double> timeout) {
    if (items.empty()) throw py::value_error("poll: no channels");
    std::vector<channels::PollItem> pi;
    pi.reserve(items.size());
    for (const auto& [ch, ev] : items) {
        if (!ch) throw py::value_error("poll: None is not a channel");
        pi.push_back({ch->local_or_raise("poll"), static_cast<std::uint8_t>(ev & 3), 0});
    }
    auto r = sliced(to_timeout(timeout), 200ms, [&](Timeout t) -> Result<std::size_t> {
        std::vector<std::shared_lock<std::shared_mutex>> locks;
        locks.reserve(items.size());
        for (const auto& it : items) {
            locks.emplace_back(it.first->life());
            if (it.first->destroyed()) return Error(Errc::closed, "poll: a channel was destroyed");
        }
        for (auto& p : pi) p.revents = 0;
        return channels::poll(pi, t);
    });
    std::vector<int> out(pi.size(), 0);
    if (!r && (r.error().code() == Errc::timeout || r.error().code() == Errc::would_block)) return out;
    value_or_raise(std::move(r));
    for (std::size_t i = 0; i < pi.size(); ++i) out[i] = pi[i].revents;
    return out;
}


// ---- sync blocks (the dragon context's locks, Value and Array) ------------------

/// A channels::SyncBlock of this node's pool, or of another node's pool on
/// the same host (a virtual cluster): attached straight by the pool's name.
class PySync {
public:
    PySync(std::shared_ptr<Runtime> rt, channels::SyncBlock b, std::uint32_t node)
        : rt_(std::move(rt)), b_(std::move(b)), node_(node) {}

    static std::shared_ptr<PySync> create(const std::shared_ptr<Runtime>& rt, std::int32_t value,
                                          std::int32_t maximum, std::size_t data_bytes) {
        auto gw = rt->gateway();
        auto b = [&] {
            py::gil_scoped_release nogil;
            return channels::SyncBlock::create(gw->pool(), value, maximum, data_bytes);
        }();
        return std::make_shared<PySync>(rt, value_or_raise(std::move(b)), gw->pool().node_id());
    }

    /// Errc::not_found when the pool is not on this host (the caller then
    /// reaches the object through its home node).
    static std::shared_ptr<PySync> attach(const std::shared_ptr<Runtime>& rt, const std::string& pool_name,
                                          std::uint64_t generation, std::uint64_t offset, std::uint64_t id) {
        auto gw = rt->gateway();
        const channels::Pool* pool = nullptr;
        static const bool through_home = [] {
            const char* v = std::getenv("DRAGON_SYNC_THROUGH_HOME");
            return v != nullptr && std::string_view(v) == "1";
        }();
        if (through_home && pool_name != gw->pool().name())
            raise(make_error(Errc::not_found, "{} is another node's pool, reached through its home node "
                                              "(DRAGON_SYNC_THROUGH_HOME=1)", pool_name));
        if (pool_name == gw->pool().name()) {
            pool = &gw->pool();
        } else {
            static std::mutex mu;
            static std::map<std::string, channels::Pool>* others = new std::map<std::string, channels::Pool>;
            std::lock_guard lk(mu);
            auto it = others->find(pool_name);
            if (it == others->end()) {
                auto p = channels::Pool::attach(pool_name);
                if (!p) raise(p.error());
                it = others->emplace(pool_name, std::move(*p)).first;
            }
            pool = &it->second;
        }
        if (pool->generation() != generation)
            raise(make_error(Errc::not_found, "{} is another incarnation of the pool (a stale object)", pool_name));
        auto b = channels::SyncBlock::attach(*pool, offset, id);
        return std::make_shared<PySync>(rt, value_or_raise(std::move(b)), pool->node_id());
    }

    /// At this process's normal exit: forget its holder records in every
    /// block it took counts of (SyncBlock::drop_mine), so they are not given back.
    static void exit_cleanly() {
        std::lock_guard lk(registry_mu());
        for (auto& [addr, b] : registry()) (void)b.drop_mine();
        registry().clear();
    }

    int reap() { return value_or_raise(b_.reap()); }

    /// A Barrier's condition: an epoch word bumped by notify_all.
    std::int32_t epoch_bump() { return value_or_raise(b_.bump()); }
    bool epoch_wait(std::int32_t seen, std::optional<double> timeout) {
        if (b_.value() != seen) return true;
        Timeout t = to_timeout(timeout);
        if (t == channels::kTryOnce) return false;
        auto st = sliced(t, 200ms, [&](Timeout s) -> Status {
            auto r = b_.wait_change(seen, s);
            if (!r) return std::move(r).error();
            if (!*r) return Error(Errc::timeout, "timed out");
            return ok();
        });
        if (!st) {
            if (st.error().code() == Errc::timeout || st.error().code() == Errc::would_block) return false;
            raise(st.error());
        }
        return true;
    }

    /// Event: the flag is the count of a block nobody acquires.
    void event_store(std::int32_t v) { ok_or_raise(b_.store(v)); }
    bool event_wait(std::optional<double> timeout) {
        if (b_.value() > 0) return true;
        Timeout t = to_timeout(timeout);
        if (t == channels::kTryOnce) return false;
        auto st = sliced(t, 200ms, [&](Timeout s) -> Status {
            auto r = b_.wait_positive(s);
            if (!r) return std::move(r).error();
            if (!*r) return Error(Errc::timeout, "timed out");
            return ok();
        });
        if (!st) {
            if (st.error().code() == Errc::timeout || st.error().code() == Errc::would_block) return false;
            raise(st.error());
        }
        return true;
    }
    std::int32_t value() const { return b_.value(); }
    std::int32_t maximum() const { return b_.maximum(); }
    py::memoryview buffer() {
        return py::memoryview::from_memory(static_cast<void*>(b_.data()), static_cast<py::ssize_t>(b_.data_size()),
                                           false);
    }
    std::size_t address() const { return reinterpret_cast<std::size_t>(b_.data()); }
    py::tuple descriptor() const {
        return py::make_tuple(b_.pool_name(), b_.pool_generation(), b_.offset(), b_.id());
    }
    std::uint32_t node_id() const { return node_; }
    channels::SyncBlock& block() { return b_; }
    /// After this process first takes a count: its records are dropped at a normal exit.
    void note_taken() {
        if (!registered_) remember();
    }

private:
    void remember() {
        std::lock_guard lk(registry_mu());
        registry().emplace(static_cast<const void*>(b_.data()), b_);
        registered_ = true;
    }
    static std::mutex& registry_mu() {
        static auto* mu = new std::mutex;
        return *mu;
    }
    static std::map<const void*, channels::SyncBlock>& registry() {
        static auto* r = new std::map<const void*, channels::SyncBlock>;
        return *r;
    }

    std::shared_ptr<Runtime> rt_;  // keeps the gateway (and its pool mapping) alive
    bool registered_ = false;
    channels::SyncBlock b_;
    std::uint32_t node_;
};

/// A sync block whose home node's pool this process cannot map (another
/// host): every operation is done by the home's agent, asked over the lane
/// to it (docs/multiprocessing.md, "Across hosts"). The same methods as Sync
/// where they make sense, plus read/write of the data area.
class PyRemoteSync {
public:
    static std::shared_ptr<PyRemoteSync> attach(const std::shared_ptr<Runtime>& rt, const std::string& pool_name,
                                                std::uint64_t generation, std::uint64_t offset, std::uint64_t id) {
        auto parts = channels::parse_pool_name(pool_name);
        if (!parts) raise(parts.error());
        auto gw = rt->gateway();
        if (parts->run_id != gw->run_id())
            raise(make_error(Errc::invalid_argument, "sync object of {} belongs to run {}, not this run ({})", pool_name,
                             parts->run_id, gw->run_id()));
        if (parts->node_id == gw->node_id())
            raise(make_error(Errc::not_found, "sync object of {}: this node's pool is {} (a stale object)", pool_name,
                             gw->pool().name()));
        auto s = std::make_shared<PyRemoteSync>();
        s->rt_ = rt;
        s->gw_ = std::move(gw);
        s->pool_ = pool_name;
        s->generation_ = generation;
        s->offset_ = offset;
        s->id_ = id;
        s->node_ = parts->node_id;
        return s;  // nothing asked yet: unpickling one costs no round trip (nor a lane)
    }

    /// One operation, GIL released; its reply's data.
    std::string op(msg::SyncOp what, std::int64_t arg = 0, std::uint64_t length = 0, Timeout timeout = channels::kTryOnce,
                   std::string data = {}) {
        auto r = [&] {
            py::gil_scoped_release nogil;
            return sync_op(what, arg, length, timeout, std::move(data));
        }();
        if (!r) raise(r.error());
        return std::move(*r);
    }

    /// A blocking operation (acquire, an Event's wait, an epoch's wait): one
    /// request per slice of at most 1 s, so Ctrl-C is seen between them.
    bool wait(msg::SyncOp what, std::int64_t arg, std::optional<double> timeout) {
        const Timeout t = to_timeout(timeout);
        auto r = sliced(t, 1s, [&](Timeout s) -> Status {
            auto a = sync_op(what, arg, 0, s, {});
            if (!a) return std::move(a).error();
            if (*a != "1") return Error(Errc::timeout, "timed out");
            return ok();
        });
        if (r) return true;
        if (r.error().code() == Errc::timeout || r.error().code() == Errc::would_block) return false;
        raise(r.error());
    }

    bool acquire(std::optional<double> timeout) {
        const bool got = wait(msg::SyncOp::acquire, 0, timeout);
        if (got) remember(gw_, pool_);
        return got;
    }
    /// invalid_argument (released too many times) raises ValueError as the standard library's.
    void release() {
        auto r = [&] {
            py::gil_scoped_release nogil;
            return sync_op(msg::SyncOp::release, 0, 0, channels::kTryOnce, {});
        }();
        if (!r && r.error().code() == Errc::invalid_argument)
            throw py::value_error("semaphore or lock released too many times");
        if (!r) raise(r.error());
    }
    std::int32_t value() { return static_cast<std::int32_t>(std::stol(op(msg::SyncOp::value))); }
    void store(std::int32_t v) { (void)op(msg::SyncOp::store, v); }
    std::int32_t bump() { return static_cast<std::int32_t>(std::stol(op(msg::SyncOp::bump))); }
    /// In pieces of at most msg::kSyncMaxBytes (one frame each).
    py::bytes read(std::uint64_t offset, std::uint64_t length) {
        std::string out;
        out.reserve(length);
        std::uint64_t done = 0;
        do {
            const std::uint64_t n = std::min<std::uint64_t>(length - done, msg::kSyncMaxBytes);
            out += op(msg::SyncOp::read, static_cast<std::int64_t>(offset + done), n);
            done += n;
        } while (done < length);
        return py::bytes(out);
    }
    void write(std::uint64_t offset, const py::bytes& data) {
        const std::string_view all(data);
        std::uint64_t done = 0;
        do {
            const std::uint64_t n = std::min<std::uint64_t>(all.size() - done, msg::kSyncMaxBytes);
            (void)op(msg::SyncOp::write, static_cast<std::int64_t>(offset + done), 0, channels::kTryOnce,
                     std::string(all.substr(done, n)));
            done += n;
        } while (done < all.size());
    }
    std::int32_t maximum() {
        learn();
        return maximum_;
    }
    std::uint64_t data_size() {
        learn();
        return data_size_;
    }
    std::uint32_t node_id() const { return node_; }
    py::tuple descriptor() const { return py::make_tuple(pool_, generation_, offset_, id_); }

    /// At a normal exit: every home this process took counts of forgets them
    /// (they were used, not lost), as SyncBlock::drop_mine does at home.
    static void exit_cleanly() {
        std::map<std::string, std::weak_ptr<client::Gateway>> homes;
        {
            std::lock_guard lk(homes_mu());
            homes.swap(homes_());
        }
        for (auto& [pool, weak] : homes) {
            auto gw = weak.lock();
            if (!gw) continue;
            msg::ChanSync req;
            req.pool_name = pool;
            req.op = static_cast<std::uint8_t>(msg::SyncOp::forget);
            req.timeout_ns = 0;
            (void)gw->sync(std::move(req));
        }
    }

private:
    /// The block's maximum and data size, asked of the home once.
    void learn() {
        if (data_size_ != kUnknown) return;
        const std::string info = op(msg::SyncOp::info);
        unsigned long long maximum = 0;
        unsigned long long size = 0;
        if (std::sscanf(info.c_str(), "%llu %llu", &maximum, &size) != 2)
            raise(make_error(Errc::protocol, "node {} described sync object {:#x} as {:?}", node_, id_, info));
        maximum_ = static_cast<std::int32_t>(maximum);
        data_size_ = size;
    }
    static constexpr std::uint64_t kUnknown = ~std::uint64_t{0};

    Result<std::string> sync_op(msg::SyncOp what, std::int64_t arg, std::uint64_t length, Timeout timeout,
                                std::string data) {
        msg::ChanSync req;
        req.pool_name = pool_;
        req.generation = generation_;
        req.offset = offset_;
        req.id = id_;
        req.op = static_cast<std::uint8_t>(what);
        req.arg = arg;
        req.length = length;
        req.timeout_ns = timeout == channels::kForever ? -1 : std::chrono::nanoseconds(timeout).count();
        req.data = std::move(data);
        return gw_->sync(std::move(req));  // (the caller released the GIL)
    }
    static void remember(const std::shared_ptr<client::Gateway>& gw, const std::string& pool) {
        std::lock_guard lk(homes_mu());
        homes_().try_emplace(pool, gw);
    }
    static std::mutex& homes_mu() {
        static auto* mu = new std::mutex;
        return *mu;
    }
    static std::map<std::string, std::weak_ptr<client::Gateway>>& homes_() {
        static auto* h = new std::map<std::string, std::weak_ptr<client::Gateway>>;
        return *h;
    }

    std::shared_ptr<Runtime> rt_;
    std::shared_ptr<client::Gateway> gw_;
    std::string pool_;
    std::uint64_t generation_ = 0;
    std::uint64_t offset_ = 0;
    std::uint64_t id_ = 0;
    std::uint32_t node_ = 0;
    std::int32_t maximum_ = 0;
    std::uint64_t data_size_ = kUnknown;
};

// ---- SemLock: the hot path of Lock, RLock, Semaphore, BoundedSemaphore --------------

/// A plain CPython extension type standing where _multiprocessing.SemLock
/// stands, over a Sync's block: acquire/release are METH_FASTCALL/NOARGS C
/// functions (no pybind11 argument conversion on the hot path, ~20 ns of
/// call overhead instead of ~120), the GIL released only to block. The
/// per-process state (count, owning thread, kind) lives here, as in the
/// standard library's SemLock; the Sync it wraps keeps the block mapped.
struct SemLockObject {
    PyObject_HEAD
    PyObject* sync;           // the _core.Sync (owns the block handle)
    PySync* ps;               // its C++ object
    channels::SyncBlock* b;   // ps->block()
    int kind;                 // 0: semaphore (Lock, Semaphore), 1: recursive mutex (RLock)
    int count;                // acquisitions held through this object
    int registered;           // ps->note_taken() done
    unsigned long last_tid;   // thread of the last acquisition
};

PyTypeObject* g_semlock_type = nullptr;

/// Sets the Python exception the pybind11 translator would for `e`.
void set_error(const Error& e) {
    PyObject* type = exception_type(e.code());
    PyObject* text = PyUnicode_DecodeUTF8(e.message().data(), static_cast<Py_ssize_t>(e.message().size()),
                                          "backslashreplace");
    if (text == nullptr) return;
    PyObject* exc = PyObject_CallOneArg(type, text);
    Py_DECREF(text);
    if (exc == nullptr) return;
    std::string code(dragon::to_string(e.code()));
    PyObject* c = PyUnicode_FromStringAndSize(code.data(), static_cast<Py_ssize_t>(code.size()));
    PyObject* n = PyLong_FromLong(e.sys_errno());
    if (c != nullptr) PyObject_SetAttrString(exc, "code", c);
    if (n != nullptr) PyObject_SetAttrString(exc, "errno", n);
    Py_XDECREF(c);
    Py_XDECREF(n);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
}

PyObject* semlock_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kw[] = {"sync", "kind", nullptr};
    PyObject* sync = nullptr;
    int kind = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|i:SemLock", const_cast<char**>(kw), &sync, &kind)) return nullptr;
    if (kind != 0 && kind != 1) {
        PyErr_Format(PyExc_ValueError, "SemLock kind must be 0 (semaphore) or 1 (recursive mutex), got %d", kind);
        return nullptr;
    }
    PySync* ps = nullptr;
    try {
        ps = py::cast<PySync*>(py::handle(sync));
    } catch (const py::cast_error&) {
        PyErr_SetString(PyExc_TypeError, "SemLock wraps a dragon._core.Sync");
        return nullptr;
    }
    auto* self = reinterpret_cast<SemLockObject*>(type->tp_alloc(type, 0));
    if (self == nullptr) return nullptr;
    Py_INCREF(sync);
    self->sync = sync;
    self->ps = ps;
    self->b = &ps->block();
    self->kind = kind;
    return reinterpret_cast<PyObject*>(self);
}

void semlock_dealloc(PyObject* o) {
    auto* self = reinterpret_cast<SemLockObject*>(o);
    PyTypeObject* tp = Py_TYPE(o);
    Py_CLEAR(self->sync);
    tp->tp_free(o);
    Py_DECREF(tp);  // a heap type: each instance holds a reference to it
}

/// The blocking part: waits in slices of 200 ms with the GIL released,
/// Ctrl-C seen between slices. 1 taken, 0 not within `timeout`, -1 error set.
int semlock_wait(SemLockObject* self, PyObject* timeout) {
    Timeout t = channels::kForever;
    if (timeout != Py_None) {
        double secs = PyFloat_AsDouble(timeout);
        if (secs == -1.0 && PyErr_Occurred()) return -1;
        if (std::isnan(secs)) {
            PyErr_SetString(PyExc_ValueError, "timeout is NaN");
            return -1;
        }
        if (secs <= 0) return 0;  // the try above was the one look
        if (secs <= 1e9) t = std::chrono::duration_cast<Timeout>(std::chrono::duration<double>(secs));
    }
    const bool forever = t == channels::kForever;
    const auto deadline = forever ? client::Clock::time_point::max() : client::Clock::now() + t;
    for (;;) {
        Timeout slice = 200ms;
        if (!forever) {
            slice = std::min<Timeout>(slice, std::max<Timeout>(Timeout::zero(), deadline - client::Clock::now()));
            if (slice == Timeout::zero()) slice = channels::kTryOnce;
        }
        Result<bool> r = false;
        Py_BEGIN_ALLOW_THREADS
        r = self->b->acquire(slice);
        Py_END_ALLOW_THREADS
        if (!r) {
            set_error(r.error());
            return -1;
        }
        if (*r) return 1;
        if (!forever && client::Clock::now() >= deadline) return 0;
        if (PyErr_CheckSignals() != 0) return -1;
    }
}

PyObject* semlock_acquire_impl(SemLockObject* self, bool block, PyObject* timeout) {
    const unsigned long me = PyThread_get_thread_ident();
    if (self->kind == 1 && self->count > 0 && self->last_tid == me) {
        ++self->count;
        Py_RETURN_TRUE;
    }
    int got = self->b->try_acquire() ? 1 : 0;
    if (got == 0 && block) {
        got = semlock_wait(self, timeout);
        if (got < 0) return nullptr;
    }
    if (got == 0) Py_RETURN_FALSE;
    ++self->count;
    self->last_tid = me;
    if (self->registered == 0) {
        try {
            self->ps->note_taken();
        } catch (const std::exception& e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
            return nullptr;
        }
        self->registered = 1;
    }
    Py_RETURN_TRUE;
}

/// acquire(block=True, timeout=None)
PyObject* semlock_acquire(PyObject* o, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    auto* self = reinterpret_cast<SemLockObject*>(o);
    PyObject* block = nullptr;
    PyObject* timeout = Py_None;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments (%zd given)", nargs);
        return nullptr;
    }
    if (nargs >= 1) block = args[0];
    if (nargs >= 2) timeout = args[1];
    if (kwnames != nullptr) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i) {
            PyObject* name = PyTuple_GET_ITEM(kwnames, i);
            PyObject* v = args[nargs + i];
            if (PyUnicode_CompareWithASCIIString(name, "block") == 0 && nargs < 1) {
                block = v;
            } else if (PyUnicode_CompareWithASCIIString(name, "timeout") == 0 && nargs < 2) {
                timeout = v;
            } else {
                PyErr_Format(PyExc_TypeError, "acquire() got an unexpected or repeated keyword argument '%U'", name);
                return nullptr;
            }
        }
    }
    int b = 1;
    if (block != nullptr && (b = PyObject_IsTrue(block)) < 0) return nullptr;
    return semlock_acquire_impl(self, b != 0, timeout);
}

PyObject* semlock_release(PyObject* o, PyObject*) {
    auto* self = reinterpret_cast<SemLockObject*>(o);
    if (self->kind == 1) {
        if (self->count == 0 || self->last_tid != PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_AssertionError, "attempt to release recursive lock not owned by thread");
            return nullptr;
        }
        if (self->count > 1) {
            --self->count;
            Py_RETURN_NONE;
        }
    }
    Status st = self->b->release();
    if (!st) {
        if (st.error().code() == Errc::invalid_argument)
            PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        else
            set_error(st.error());
        return nullptr;
    }
    if (self->count > 0) --self->count;
    Py_RETURN_NONE;
}

PyObject* semlock_enter(PyObject* o, PyObject*) {
    return semlock_acquire_impl(reinterpret_cast<SemLockObject*>(o), true, Py_None);
}
PyObject* semlock_exit(PyObject* o, PyObject* const*, Py_ssize_t) { return semlock_release(o, nullptr); }
PyObject* semlock_count(PyObject* o, PyObject*) {
    return PyLong_FromLong(reinterpret_cast<SemLockObject*>(o)->count);
}
PyObject* semlock_is_mine(PyObject* o, PyObject*) {
    auto* self = reinterpret_cast<SemLockObject*>(o);
    return PyBool_FromLong(self->count > 0 && self->last_tid == PyThread_get_thread_ident());
}
PyObject* semlock_get_value(PyObject* o, PyObject*) {
    return PyLong_FromLong(reinterpret_cast<SemLockObject*>(o)->b->value());
}
PyObject* semlock_is_zero(PyObject* o, PyObject*) {
    return PyBool_FromLong(reinterpret_cast<SemLockObject*>(o)->b->value() == 0);
}
PyObject* semlock_after_fork(PyObject* o, PyObject*) {
    reinterpret_cast<SemLockObject*>(o)->count = 0;
    Py_RETURN_NONE;
}

PyMethodDef g_semlock_methods[] = {
    {"acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(semlock_acquire)),
     METH_FASTCALL | METH_KEYWORDS, "acquire(block=True, timeout=None) -> bool"},
    {"release", semlock_release, METH_NOARGS, "release() (ValueError when released too many times)"},
    {"__enter__", semlock_enter, METH_NOARGS, "acquire()"},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(semlock_exit)), METH_FASTCALL,
     "release()"},
    {"_count", semlock_count, METH_NOARGS, "acquisitions held through this object"},
    {"_is_mine", semlock_is_mine, METH_NOARGS, "held by this thread"},
    {"_get_value", semlock_get_value, METH_NOARGS, "the count"},
    {"_is_zero", semlock_is_zero, METH_NOARGS, "the count is 0"},
    {"_after_fork", semlock_after_fork, METH_NOARGS, "forgets this object's acquisitions (a forked child)"},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* semlock_get_kind(PyObject* o, void*) { return PyLong_FromLong(reinterpret_cast<SemLockObject*>(o)->kind); }
int semlock_set_kind(PyObject* o, PyObject* v, void*) {
    if (v == nullptr) {
        PyErr_SetString(PyExc_AttributeError, "kind cannot be deleted");
        return -1;
    }
    long k = PyLong_AsLong(v);
    if (k == -1 && PyErr_Occurred()) return -1;
    if (k != 0 && k != 1) {
        PyErr_Format(PyExc_ValueError, "SemLock kind must be 0 or 1, got %ld", k);
        return -1;
    }
    reinterpret_cast<SemLockObject*>(o)->kind = static_cast<int>(k);
    return 0;
}
PyObject* semlock_get_maxvalue(PyObject* o, void*) {
    return PyLong_FromLong(reinterpret_cast<SemLockObject*>(o)->b->maximum());
}
PyObject* semlock_get_sync(PyObject* o, void*) {
    PyObject* s = reinterpret_cast<SemLockObject*>(o)->sync;
    Py_INCREF(s);
    return s;
}
PyObject* semlock_get_descriptor(PyObject* o, void*) {
    return PyObject_GetAttrString(reinterpret_cast<SemLockObject*>(o)->sync, "descriptor");
}

PyGetSetDef g_semlock_getset[] = {
    {"kind", semlock_get_kind, semlock_set_kind, "0: semaphore, 1: recursive mutex", nullptr},
    {"maxvalue", semlock_get_maxvalue, nullptr, "the maximum count", nullptr},
    {"sync", semlock_get_sync, nullptr, "the dragon._core.Sync this wraps", nullptr},
    {"descriptor", semlock_get_descriptor, nullptr, "(pool name, generation, offset, id)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot g_semlock_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(semlock_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(semlock_dealloc)},
    {Py_tp_methods, g_semlock_methods},
    {Py_tp_getset, g_semlock_getset},
    {Py_tp_doc, const_cast<char*>("SemLock(sync, kind=0): the hot path of a dragon Lock/RLock/Semaphore over a "
                                  "Sync block (stands where _multiprocessing.SemLock stands).")},
    {0, nullptr},
};

PyType_Spec g_semlock_spec = {"dragon._core.SemLock", sizeof(SemLockObject), 0, Py_TPFLAGS_DEFAULT,
                              g_semlock_slots};

// ---- a distributed dictionary manager's read mirror (docs/ddict.md) ---------------------

std::span<const std::byte> bytes_span(const py::bytes& b) {
    char* data = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(b.ptr(), &data, &n) != 0) throw py::error_already_set();
    return {reinterpret_cast<const std::byte*>(data), static_cast<std::size_t>(n)};
}

/// A KvMirror and the pool it lives in: made by a manager (the writer, which
/// unlinks the pool at destroy), attached by the clients of its node.
class PyMirror {
public:
    PyMirror(channels::KvMirror m, std::string pool_name, bool owner)
        : m_(std::move(m)), pool_name_(std::move(pool_name)), owner_(owner) {}

    static std::shared_ptr<PyMirror> create(const std::string& run_id, std::uint32_t node, const std::string& tag,
                                            std::size_t size, std::uint32_t buckets) {
        auto name = value_or_raise(channels::make_pool_name(run_id, node, tag));
        auto pool = value_or_raise(channels::Pool::create_unreserved(name, size));
        auto m = channels::KvMirror::create(std::move(pool), buckets);
        if (!m) {
            (void)channels::Pool::unlink(name);
            raise(m.error());
        }
        return std::make_shared<PyMirror>(std::move(*m), name, true);
    }
    static std::shared_ptr<PyMirror> attach(const std::string& pool_name, std::uint64_t offset) {
        auto pool = value_or_raise(channels::Pool::attach(pool_name));
        return std::make_shared<PyMirror>(value_or_raise(channels::KvMirror::attach(std::move(pool), offset)),
                                          pool_name, false);
    }
    bool put(const py::bytes& key, const py::bytes& value) { return static_cast<bool>(m_.put(bytes_span(key), bytes_span(value))); }
    void remove(const py::bytes& key) { m_.remove(bytes_span(key)); }
    void reset(std::int64_t checkpoint, bool complete) { m_.reset(checkpoint, complete); }
    void set_complete(bool complete) { m_.set_complete(complete); }
    /// bytes (a hit), False (no such key at that checkpoint) or None (ask the manager).
    py::object lookup(const py::bytes& key, std::int64_t checkpoint) {
        thread_local std::string out;
        switch (m_.lookup(bytes_span(key), checkpoint, out)) {
        case channels::MirrorLookup::hit: {
            PyObject* b = PyBytes_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size()));
            if (b == nullptr) throw py::error_already_set();
            if (out.capacity() > (1U << 16)) std::string().swap(out);  // (a big value's buffer is not kept)
            return py::reinterpret_steal<py::object>(b);
        }
        case channels::MirrorLookup::absent: return py::bool_(false);
        case channels::MirrorLookup::unknown: break;
        }
        return py::none();
    }
    std::uint32_t size() const { return m_.size(); }
    /// The writer's end: the table freed and the pool's name removed (mappings stay valid).
    void destroy() {
        if (!owner_ || destroyed_) return;
        destroyed_ = true;
        m_.destroy();
        (void)channels::Pool::unlink(pool_name_);
    }
    const std::string& pool_name() const { return pool_name_; }
    std::uint64_t offset() const { return m_.offset(); }

private:
    channels::KvMirror m_;
    std::string pool_name_;
    bool owner_ = false;
    bool destroyed_ = false;
};

}  // namespace
}  // namespace dragon::python

PYBIND11_MODULE(_core, m) {
    using namespace dragon::python;
    m.doc() = "Dragon's C++ client API (use the `dragon` package instead)";
    // The client library's messages go to stderr (or DRAGON_LOG_DIR), at
    // DRAGON_LOG_LEVEL (default warn): never to the program's stdout.
    {
        auto cfg = dragon::Config::from_env();
        (void)dragon::log::init("python", cfg ? cfg->log_level() : dragon::LogLevel::warn, cfg ? cfg->log_dir() : "");
    }

    g_error = make_exception("dragon._core.DragonError", {PyExc_Exception},
                             "An error of the Dragon runtime; the text names what failed.");
    g_timeout = make_exception("dragon._core.DragonTimeoutError", {g_error, PyExc_TimeoutError},
                               "A deadline passed, or a try-once operation found nothing to do.");
    g_connection = make_exception("dragon._core.DragonConnectionError", {g_error, PyExc_ConnectionError},
                                  "The agent, a node or a peer went away.");
    g_value = make_exception("dragon._core.DragonValueError", {g_error, PyExc_ValueError},
                             "Bad input: an argument the runtime refused.");
    g_not_found = make_exception("dragon._core.DragonNotFoundError", {g_error, PyExc_LookupError},
                                 "A program, process, file or runtime that does not exist.");
    m.attr("DragonError") = py::handle(g_error);
    m.attr("DragonTimeoutError") = py::handle(g_timeout);
    m.attr("DragonConnectionError") = py::handle(g_connection);
    m.attr("DragonValueError") = py::handle(g_value);
    m.attr("DragonNotFoundError") = py::handle(g_not_found);

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ErrorThrown& t) {
            PyObject* type = exception_type(t.e.code());
            py::object text = to_str(t.e.message());
            py::object exc = py::reinterpret_steal<py::object>(PyObject_CallOneArg(type, text.ptr()));
            if (!exc) return;  // the call set its own error
            exc.attr("code") = std::string(dragon::to_string(t.e.code()));
            exc.attr("errno") = t.e.sys_errno();
            PyErr_SetObject(type, exc.ptr());
        }
    });

    py::class_<Runtime, std::shared_ptr<Runtime>>(m, "Runtime", "A connection to this node's agent.")
        .def(py::init<std::string, std::uint64_t>(), py::arg("socket"), py::arg("puid") = 0)
        .def_property_readonly("run_id", &Runtime::run_id)
        .def_property_readonly("node_id", &Runtime::node_id)
        .def_property_readonly("agent_pid", &Runtime::agent_pid)
        .def("processes", &Runtime::processes)
        .def("machine", &Runtime::machine, "The runtime's nodes: [{node, hostname, cpus, cores}] by node id.");

    py::class_<Group>(m, "Group", "A C++ ProcessGroup (dragon.native.process_group wraps it).")
        .def(py::init<std::shared_ptr<Runtime>, std::string, std::string, std::uint32_t, bool, std::uint32_t,
                      std::string, bool, bool>(),
             py::arg("runtime"), py::arg("placement") = "block", py::arg("binding") = "none",
             py::arg("cpus_per_proc") = 1, py::arg("restart") = false, py::arg("max_restarts") = 0,
             py::arg("pmi") = "none", py::arg("pmi_port") = false, py::arg("outlive_owner") = false)
        .def("add", &Group::add, py::arg("argv"), py::arg("cwd") = "", py::arg("env") = std::vector<std::string>{},
             py::arg("stdin") = "discard", py::arg("stdin_path") = "", py::arg("stdout") = "inherit",
             py::arg("stdout_path") = "", py::arg("stderr") = "inherit", py::arg("stderr_path") = "",
             py::arg("count") = 1, py::arg("node") = -1, py::arg("host") = "",
             py::arg("cpus") = std::vector<std::uint32_t>{}, py::arg("fast_start") = false)
        .def("release", &Group::release)
        .def("start", &Group::start)
        .def("plan", &Group::plan)
        .def("join", &Group::join, py::arg("timeout") = py::none())
        .def("send_signal", &Group::send_signal, py::arg("sig"))
        .def("stop", &Group::stop, py::arg("patience") = 2.0)
        .def("kill", &Group::kill)
        .def("close", &Group::close)
        .def_property_readonly("started", &Group::started)
        .def_property_readonly("id", &Group::id)
        .def_property_readonly("size", &Group::size)
        .def_property_readonly("members", &Group::members)
        .def_property_readonly("warnings", &Group::warnings)
        .def_property_readonly("outcome", &Group::outcome)
        .def("info", &Group::info)
        .def("read_output", &Group::read_output, py::arg("rank"), py::arg("stream") = "out",
             py::arg("timeout") = py::none())
        .def("write_stdin", &Group::write_stdin, py::arg("rank"), py::arg("data"), py::arg("eof") = false);

    py::class_<MessageView>(m, "MessageView", py::buffer_protocol(),
                            "A received message as a read-only buffer (no copy; its pool block is freed with it).")
        .def_buffer([](MessageView& v) {
            static std::byte empty{};
            const auto d = v.msg.data();
            std::byte* p = d.empty() ? &empty : const_cast<std::byte*>(d.data());  // never a null buffer
            return py::buffer_info(p, 1, py::format_descriptor<std::uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(d.size())}, {1}, /*readonly=*/true);
        })
        .def("__len__", [](const MessageView& v) { return v.msg.size(); });

    py::class_<PyChannel, std::shared_ptr<PyChannel>>(m, "Channel", "A channel on any node of the runtime.")
        .def_static("create", &PyChannel::create, py::arg("runtime"), py::arg("capacity") = 256,
                    py::arg("block_size") = 496, py::arg("max_queued_bytes") = 0)
        .def_static("attach", &PyChannel::attach, py::arg("runtime"), py::arg("descriptor"))
        .def_property_readonly("descriptor", &PyChannel::descriptor)
        .def_property_readonly("node_id", &PyChannel::node_id)
        .def_property_readonly("is_local", &PyChannel::is_local)
        .def_property_readonly("owned", &PyChannel::owned)
        .def("send", &PyChannel::send, py::arg("data"), py::arg("timeout") = py::none())
        .def("send_many", &PyChannel::send_many, py::arg("items"))
        .def("recv", &PyChannel::recv, py::arg("timeout") = py::none())
        .def("recv_view", &PyChannel::recv_view, py::arg("timeout") = py::none())
        .def("flush", &PyChannel::flush, py::arg("timeout") = py::none(),
             "Waits until this process's sends without a timeout to channels of other nodes have arrived; raises "
             "the first failure not yet reported.")
        .def("queued", &PyChannel::queued)
        .def("capacity", &PyChannel::capacity)
        .def("destroy", &PyChannel::destroy);


    py::class_<PySync, std::shared_ptr<PySync>>(m, "Sync",
        "A counting semaphore with holder records and shared data in a node's pool (dragon.mpbridge.synchronize); "
        "its acquire/release hot path is SemLock.")
        .def_static("create", &PySync::create, py::arg("runtime"), py::arg("value"), py::arg("maximum") = 2147483647,
                    py::arg("data_bytes") = 0)
        .def_static("attach", &PySync::attach, py::arg("runtime"), py::arg("pool_name"), py::arg("generation"),
                    py::arg("offset"), py::arg("id"))
        .def("reap", &PySync::reap)
        .def("event_set", [](PySync& s) { s.event_store(1); })
        .def("event_clear", [](PySync& s) { s.event_store(0); })
        .def("event_wait", &PySync::event_wait, py::arg("timeout") = py::none())
        .def("epoch_bump", &PySync::epoch_bump)
        .def("epoch_wait", &PySync::epoch_wait, py::arg("seen"), py::arg("timeout") = py::none())
        .def("value", &PySync::value)
        .def("maximum", &PySync::maximum)
        .def("buffer", &PySync::buffer)
        .def("address", &PySync::address)
        .def_property_readonly("descriptor", &PySync::descriptor)
        .def_property_readonly("node_id", &PySync::node_id);
    g_semlock_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_semlock_spec));
    if (g_semlock_type == nullptr) throw py::error_already_set();
    m.attr("SemLock") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(g_semlock_type));
    py::class_<PyRemoteSync, std::shared_ptr<PyRemoteSync>>(m, "RemoteSync",
        "A sync block of another host's node, operated on by its home agent over the lane (dragon.mpbridge.synchronize).")
        .def_static("attach", &PyRemoteSync::attach, py::arg("runtime"), py::arg("pool_name"), py::arg("generation"),
                    py::arg("offset"), py::arg("id"))
        .def("acquire", &PyRemoteSync::acquire, py::arg("timeout") = py::none())
        .def("release", &PyRemoteSync::release)
        .def("event_set", [](PyRemoteSync& s) { s.store(1); })
        .def("event_clear", [](PyRemoteSync& s) { s.store(0); })
        .def("event_wait", [](PyRemoteSync& s, std::optional<double> t) { return s.wait(dragon::msg::SyncOp::wait_positive, 0, t); },
             py::arg("timeout") = py::none())
        .def("epoch_bump", &PyRemoteSync::bump)
        .def("epoch_wait", [](PyRemoteSync& s, std::int32_t seen, std::optional<double> t) {
                 return s.wait(dragon::msg::SyncOp::wait_change, seen, t);
             }, py::arg("seen"), py::arg("timeout") = py::none())
        .def("value", &PyRemoteSync::value)
        .def("maximum", &PyRemoteSync::maximum)
        .def("read", &PyRemoteSync::read, py::arg("offset"), py::arg("length"))
        .def("write", &PyRemoteSync::write, py::arg("offset"), py::arg("data"))
        .def_property_readonly("data_size", &PyRemoteSync::data_size)
        .def_property_readonly("descriptor", &PyRemoteSync::descriptor)
        .def_property_readonly("node_id", &PyRemoteSync::node_id);
    m.def("sync_exit", [] {
              py::gil_scoped_release nogil;  // (a round trip to each home of another host)
              PySync::exit_cleanly();
              PyRemoteSync::exit_cleanly();
          },
          "At a normal exit: this process's Lock/Semaphore holder records are dropped, not given back.");

    py::class_<PyMirror, std::shared_ptr<PyMirror>>(m, "Mirror",
        "A distributed dictionary manager's read mirror: a key-value table in a pool of its own that the manager "
        "writes and the clients of its node read without a message (docs/ddict.md).")
        .def_static("create", &PyMirror::create, py::arg("run_id"), py::arg("node"), py::arg("tag"), py::arg("size"),
                    py::arg("buckets"))
        .def_static("attach", &PyMirror::attach, py::arg("pool_name"), py::arg("offset"))
        .def("put", &PyMirror::put, py::arg("key"), py::arg("value"))
        .def("remove", &PyMirror::remove, py::arg("key"))
        .def("reset", &PyMirror::reset, py::arg("checkpoint"), py::arg("complete"))
        .def("set_complete", &PyMirror::set_complete, py::arg("complete"))
        .def("lookup", &PyMirror::lookup, py::arg("key"), py::arg("checkpoint"))
        .def("destroy", &PyMirror::destroy)
        .def_property_readonly("size", &PyMirror::size)
        .def_property_readonly("pool_name", &PyMirror::pool_name)
        .def_property_readonly("offset", &PyMirror::offset);
    m.def("poll", &poll, py::arg("items"), py::arg("timeout") = py::none(),
          "Waits until one of this node's channels is ready: [(channel, events)] -> [revents] (all 0 on timeout).");
    m.def(
        "check_group_options",
        [](bool restart, const std::string& pmi, bool pmi_port) {
            if (auto st = dragon::msg::check_group_options(restart, to_pmi(pmi), pmi_port); !st)
                throw py::value_error(st.error().message());
        },
        py::arg("restart"), py::arg("pmi"), py::arg("pmi_port") = false,
        "Raises ValueError when a group's options exclude each other (the runtime's own rule).");
    m.attr("READABLE") = static_cast<int>(dragon::channels::kReadable);
    m.attr("WRITABLE") = static_cast<int>(dragon::channels::kWritable);
}
