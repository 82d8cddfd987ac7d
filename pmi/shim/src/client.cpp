// The PMI shim's client core: connection, handshake, and every wire exchange.
#include "client.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace dragon::pmi::shim {

namespace {

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return (v != nullptr && *v != '\0') ? v : nullptr;
}

std::optional<int> env_int(const char* name) {
    const char* v = env(name);
    if (v == nullptr) return std::nullopt;
    auto n = parse_int(v);
    if (!n || *n < 0 || *n > (1 << 30)) return std::nullopt;
    return static_cast<int>(*n);
}

std::string to_str(long long v) { return std::to_string(v); }

bool rc_ok(const Message& m) {
    const std::string* rc = m.get("rc");
    if (rc == nullptr) return true;  // some answers carry no rc
    auto v = parse_int(*rc);
    return v && *v == 0;
}

bool is_true(const std::string* v) { return v != nullptr && (*v == "TRUE" || *v == "true" || *v == "1"); }

}  // namespace

Client& Client::instance() {
    static Client* c = new Client();  // leaked on purpose: see the header
    return *c;
}

int Client::wire_error(const std::string& why) {
    // The stream may now be out of step with the server: refuse further use.
    fail(why + "; the PMI connection is unusable from now on");
    broken_ = true;
    return kFail;
}

int Client::fail(const std::string& why) {
    std::fprintf(stderr, "dragon-pmi-shim[rank %d]: %s\n", rank_, why.c_str());
    return kFail;
}

// ---------------------------------------------------------------- raw I/O

bool Client::tracing() {
    static const bool on = env("DRAGON_PMI_TRACE") != nullptr;
    return on;
}

void Client::trace(const char* arrow, std::string_view bytes) const {
    // The bytes as they crossed the socket (several messages or a part of
    // one per read), cut at 300, one stderr line each.
    const std::string_view shown = bytes.substr(0, 300);
    std::fprintf(stderr, "pmi-shim[%d] %s %.*s%s", rank_, arrow, static_cast<int>(shown.size()), shown.data(),
                 shown.empty() || shown.back() != '\n' ? "\n" : "");
}

int Client::write_all(std::string_view bytes) {
    if (broken_) return kFail;
    if (tracing()) trace("->", bytes);
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) n = ::write(fd_, bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return wire_error(std::string("write to the PMI server failed: ") + std::strerror(errno));
        }
        done += static_cast<std::size_t>(n);
    }
    return kOk;
}

std::optional<Message> Client::read_message() {
    if (broken_) return std::nullopt;
    while (true) {
        auto next = dec_.next();
        if (!next) {
            wire_error(std::string("malformed ") + (dec_.v2() ? "PMI-2" : "PMI-1") + " answer: " + next.error());
            return std::nullopt;
        }
        if (*next) return std::move(**next);
        char buf[4096];
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            wire_error(n == 0 ? std::string("PMI server closed the connection")
                        : std::string("read from the PMI server failed: ") + std::strerror(errno));
            return std::nullopt;
        }
        const std::string_view got(buf, static_cast<std::size_t>(n));
        if (tracing()) trace("<-", got);
        dec_.feed(got);
    }
}

std::optional<Message> Client::pmi1_read(std::string_view expect) {
    auto m = read_message();
    if (!m) return std::nullopt;
    if (m->cmd != expect) {
        wire_error("PMI-1 answer '" + m->cmd + "' where '" + std::string(expect) + "' was expected");
        return std::nullopt;
    }
    return m;
}

std::optional<Message> Client::pmi1_call(const Message& req, std::string_view expect) {
    const std::string line = pmi_wire::format_v1(req);
    if (line.size() > pmi_wire::kMaxLine) {
        fail("PMI-1 request longer than " + to_str(static_cast<long long>(pmi_wire::kMaxLine)) + " bytes refused");
        return std::nullopt;
    }
    if (write_all(line) != kOk) return std::nullopt;
    return pmi1_read(expect);
}

std::optional<Message> Client::pmi2_call(const Message& req) {
    auto frame = pmi_wire::format_v2(req);
    if (!frame) {
        fail("PMI-2 request too large");
        return std::nullopt;
    }
    if (write_all(*frame) != kOk) return std::nullopt;
    auto m = read_message();
    if (!m) return std::nullopt;
    if (m->cmd != req.cmd + "-response") {
        wire_error("PMI-2 answer '" + m->cmd + "' to '" + req.cmd + "'");
        return std::nullopt;
    }
    return m;
}

// ---------------------------------------------------------------- init

int Client::connect_fd(bool pmi1_initack) {
    if (auto fd = env_int("PMI_FD")) {
        fd_ = *fd;
        return kOk;
    }
    const char* port = env("PMI_PORT");
    if (port == nullptr) return kErrInit;
    std::string hp(port);
    std::size_t colon = hp.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size())
        return fail("PMI_PORT '" + hp + "' is not host:port");
    std::string host = hp.substr(0, colon);
    std::string service = hp.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int gai = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
    if (gai != 0) return fail("cannot resolve PMI_PORT '" + hp + "': " + ::gai_strerror(gai));
    int fd = -1;
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int rc;
        do {
            rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
        } while (rc < 0 && errno == EINTR);
        if (rc == 0) break;
        ::close(fd);
        fd = -1;
    }
    ::freeaddrinfo(res);
    if (fd < 0) return fail("cannot connect to PMI_PORT '" + hp + "': " + std::strerror(errno));
    fd_ = fd;
    const char* id = env("PMI_ID");
    if (pmi1_initack && id != nullptr) {
        if (!pmi_wire::v1_value_ok(id)) return fail("PMI_ID contains white space");
        if (write_all(pmi_wire::format_v1("initack", {{"pmiid", id}})) != kOk) return kFail;
        if (!pmi1_read("initack")) return kFail;
        // `cmd=set` lines follow (size, rank, debug), debug last.
        for (int i = 0; i < 8; ++i) {
            auto m = pmi1_read("set");
            if (!m) return kFail;
            bool last = false;
            for (const auto& [k, v] : m->args) {
                auto n = parse_int(v);
                if (k == "size" && n && *n > 0 && *n <= (1 << 30)) size_ = static_cast<int>(*n);
                if (k == "rank" && n && *n >= 0 && *n < (1 << 30)) rank_ = static_cast<int>(*n);
                if (k == "debug") last = true;
            }
            if (last) return kOk;
        }
        return fail("no 'cmd=set debug=' after initack");
    }
    return kOk;
}

int Client::init_pmi1() {
    if (auto r = env_int("PMI_RANK")) rank_ = *r;
    if (auto s = env_int("PMI_SIZE")) size_ = *s;
    if (int rc = connect_fd(true); rc != kOk) return rc;
    if (env_int("PMI_RANK")) rank_ = *env_int("PMI_RANK");
    if (env_int("PMI_SIZE")) size_ = *env_int("PMI_SIZE");
    auto init = pmi1_call(Message{"init", {{"pmi_version", "1"}, {"pmi_subversion", "1"}}}, "response_to_init");
    if (!init) return kFail;
    if (!rc_ok(*init)) return fail("the PMI server refused PMI-1 init");
    auto maxes = pmi1_call(Message{"get_maxes", {}}, "maxes");
    if (!maxes) return kFail;
    auto take = [&](const char* k, int& slot) {
        if (const std::string* v = maxes->get(k)) {
            auto n = parse_int(*v);
            if (n && *n > 0 && *n <= 65536) slot = static_cast<int>(*n);
        }
    };
    take("kvsname_max", kvsname_max_);
    take("keylen_max", key_max_);
    take("vallen_max", value_max_);
    auto name = pmi1_call(Message{"get_my_kvsname", {}}, "my_kvsname");
    if (!name || name->get("kvsname") == nullptr) return kFail;
    kvsname_ = *name->get("kvsname");
    auto app = pmi1_call(Message{"get_appnum", {}}, "appnum");
    if (!app) return kFail;
    if (const std::string* v = app->get("appnum")) {
        auto n = parse_int(*v);
        if (n && *n >= 0 && *n < (1 << 30)) appnum_ = static_cast<int>(*n);
    }
    if (auto sp = env_int("PMI_SPAWNED")) spawned_ = *sp != 0;
    if (rank_ < 0 || size_ <= 0 || rank_ >= size_) return fail("rank/size from the PMI server are inconsistent");
    return kOk;
}

int Client::init_pmi2() {
    if (auto r = env_int("PMI_RANK")) rank_ = *r;
    if (auto s = env_int("PMI_SIZE")) size_ = *s;
    if (int rc = connect_fd(false); rc != kOk) return rc;
    if (write_all(pmi_wire::format_v1("init", {{"pmi_version", "2"}, {"pmi_subversion", "0"}})) != kOk) return kFail;
    auto init = pmi1_read("response_to_init");
    if (!init) return kFail;
    const std::string* ver = init->get("pmi_version");
    if (!rc_ok(*init) || ver == nullptr || *ver != "2") return fail("the PMI server refused PMI-2");
    dec_.use_v2();  // frames from the next answer on
    // Servers differ in what identifies us (hydra 4.0 insists on pmirank even
    // with PMI_PORT, where only PMI_ID is set): send every identity we have.
    Message full{"fullinit", {}};
    const char* id = env("PMI_ID");
    if (id != nullptr) full.args.emplace_back("pmiid", id);
    if (const char* job = env("PMI_JOBID")) full.args.emplace_back("pmijobid", job);
    if (env("PMI_RANK") == nullptr && id != nullptr) {
        if (auto n = parse_int(id); n && *n >= 0 && *n < (1 << 30)) rank_ = static_cast<int>(*n);
    }
    full.args.emplace_back("pmirank", to_str(rank_));
    full.args.emplace_back("threaded", "FALSE");
    auto resp = pmi2_call(full);
    if (!resp) return kFail;
    if (!rc_ok(*resp)) return fail("the PMI server refused fullinit");
    auto num = [&](const char* k, int& slot) {
        if (const std::string* v = resp->get(k)) {
            auto n = parse_int(*v);
            if (n && *n >= 0 && *n <= (1 << 30)) slot = static_cast<int>(*n);
        }
    };
    num("rank", rank_);
    num("size", size_);
    num("appnum", appnum_);
    if (const std::string* sp = resp->get("spawner-jobid")) spawned_ = !sp->empty();
    auto jid = pmi2_call(Message{"job-getid", {}});
    if (!jid || !rc_ok(*jid) || jid->get("jobid") == nullptr) return fail("job-getid failed");
    kvsname_ = *jid->get("jobid");
    kvsname_max_ = 256;
    key_max_ = 64;
    value_max_ = 1024;
    if (rank_ < 0 || size_ <= 0 || rank_ >= size_) return fail("rank/size from the PMI server are inconsistent");
    return kOk;
}

int Client::init(Proto wanted) {
    std::lock_guard lock(mu_);
    if (proto_ != Proto::none) return finalized_ ? kErrInit : kOk;
    rank_ = 0;
    size_ = 1;
    broken_ = false;
    int rc = wanted == Proto::pmi2 ? init_pmi2() : init_pmi1();
    if (rc == kErrInit && fd_ < 0) {
        // No server named in the environment: a singleton, as MPICH allows.
        proto_ = Proto::singleton;
        rank_ = 0;
        size_ = 1;
        kvsname_ = "singleton_kvs";
        return kOk;
    }
    if (rc != kOk) {
        if (fd_ > 2 && env("PMI_FD") == nullptr) ::close(fd_);
        fd_ = -1;
        dec_ = pmi_wire::Decoder(pmi_wire::Sender::server);
        return kFail;
    }
    proto_ = wanted;
    return kOk;
}

bool Client::initialized() {
    std::lock_guard lock(mu_);
    return proto_ != Proto::none && !finalized_;
}

Proto Client::proto() {
    std::lock_guard lock(mu_);
    return finalized_ ? Proto::none : proto_;
}

int Client::finalize() {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    int rc = kOk;
    if (proto_ == Proto::pmi1) {
        if (!pmi1_call(Message{"finalize", {}}, "finalize_ack")) rc = kFail;
    } else if (proto_ == Proto::pmi2) {
        auto m = pmi2_call(Message{"finalize", {}});
        if (!m || !rc_ok(*m)) rc = kFail;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    finalized_ = true;
    return rc;
}

void Client::abort(int code, bool whole_job, const char* msg) {
    {
        std::lock_guard lock(mu_);
        std::fprintf(stderr, "PMI_Abort(%d): %s\n", code, msg != nullptr ? msg : "");
        std::fflush(stderr);
        if (!finalized_ && proto_ == Proto::pmi1) {
            (void)write_all(pmi_wire::format_v1("abort", {{"exitcode", to_str(code)}}));
        } else if (!finalized_ && proto_ == Proto::pmi2) {
            Message m{"abort", {{"isworldabort", whole_job ? "TRUE" : "FALSE"}, {"msg", msg != nullptr ? msg : ""}}};
            if (auto frame = pmi_wire::format_v2(m)) (void)write_all(*frame);
        }
    }
    std::exit(code);
}

// ---------------------------------------------------------------- accessors

int Client::rank() { std::lock_guard lock(mu_); return rank_; }
int Client::size() { std::lock_guard lock(mu_); return size_; }
int Client::appnum() { std::lock_guard lock(mu_); return appnum_; }
bool Client::spawned() { std::lock_guard lock(mu_); return spawned_; }
std::string Client::kvsname() { std::lock_guard lock(mu_); return kvsname_; }
int Client::kvsname_max() { std::lock_guard lock(mu_); return kvsname_max_; }
int Client::key_max() { std::lock_guard lock(mu_); return key_max_; }
int Client::value_max() { std::lock_guard lock(mu_); return value_max_; }

int Client::universe_size(int* out) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::pmi1) {
        auto m = pmi1_call(Message{"get_universe_size", {}}, "universe_size");
        if (!m) return kFail;
        const std::string* v = m->get("size");
        auto n = v != nullptr ? parse_int(*v) : std::nullopt;
        if (!n || *n > (1 << 30)) return fail("bad universe_size answer");
        *out = *n > 0 ? static_cast<int>(*n) : size_;  // hydra answers -1 when no universe was given
        return kOk;
    }
    if (proto_ == Proto::pmi2) {
        std::string v;
        bool found = false;
        if (do_job_attr("universeSize", &v, &found) == kOk && found) {
            auto n = parse_int(v);
            if (n && *n >= 0 && *n <= (1 << 30)) {
                *out = static_cast<int>(*n);
                return kOk;
            }
        }
    }
    *out = size_;
    return kOk;
}

// ---------------------------------------------------------------- KVS

int Client::put(std::string_view kvs, std::string_view key, std::string_view value) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    if (key.size() > static_cast<std::size_t>(key_max_)) return kErrInvalidKeyLength;
    if (value.size() > static_cast<std::size_t>(value_max_)) return kErrInvalidValLength;
    return do_put(kvs, key, value);
}

int Client::do_put(std::string_view kvs, std::string_view key, std::string_view value) {
    switch (proto_) {
    case Proto::singleton:
        local_kvs_[std::string(key)] = std::string(value);
        return kOk;
    case Proto::pmi1: {
        if (!pmi_wire::v1_key_ok(key)) return kErrInvalidKey;
        if (!pmi_wire::v1_value_ok(value)) return kErrInvalidVal;
        std::string name = kvs.empty() ? kvsname_ : std::string(kvs);
        if (!pmi_wire::v1_value_ok(name)) return kErrInvalidArg;
        auto m = pmi1_call(Message{"put", {{"kvsname", name}, {"key", std::string(key)}, {"value", std::string(value)}}},
                           "put_result");
        if (!m) return kFail;
        return rc_ok(*m) ? kOk : kFail;
    }
    case Proto::pmi2: {
        if (!pmi_wire::v2_key_ok(key)) return kErrInvalidKey;
        auto m = pmi2_call(Message{"kvs-put", {{"key", std::string(key)}, {"value", std::string(value)}}});
        if (!m) return kFail;
        return rc_ok(*m) ? kOk : kFail;
    }
    case Proto::none:
        break;
    }
    return kErrInit;
}

int Client::get(std::string_view kvs, std::string_view key, std::string* value, bool* found) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    if (key.size() > static_cast<std::size_t>(key_max_)) return kErrInvalidKeyLength;
    int rc = do_get(kvs, key, value, found);
    return rc == kNotFound ? kFail : rc;
}

int Client::do_get(std::string_view kvs, std::string_view key, std::string* value, bool* found) {
    *found = false;
    switch (proto_) {
    case Proto::singleton: {
        auto it = local_kvs_.find(key);
        if (it == local_kvs_.end()) return kNotFound;
        *value = it->second;
        *found = true;
        return kOk;
    }
    case Proto::pmi1: {
        if (!pmi_wire::v1_key_ok(key)) return kErrInvalidKey;
        std::string name = kvs.empty() ? kvsname_ : std::string(kvs);
        if (!pmi_wire::v1_value_ok(name)) return kErrInvalidArg;
        auto m = pmi1_call(Message{"get", {{"kvsname", name}, {"key", std::string(key)}}}, "get_result");
        if (!m) return kFail;
        if (!rc_ok(*m)) return kNotFound;  // the server answers rc=-1 for an absent key
        const std::string* v = m->get("value");
        if (v == nullptr) return fail("get_result without a value");
        *value = *v;
        *found = true;
        return kOk;
    }
    case Proto::pmi2: {
        if (!pmi_wire::v2_key_ok(key)) return kErrInvalidKey;
        Message req{"kvs-get", {}};
        if (!kvs.empty()) req.args.emplace_back("jobid", std::string(kvs));
        req.args.emplace_back("srcid", "-1");
        req.args.emplace_back("key", std::string(key));
        auto m = pmi2_call(req);
        if (!m) return kFail;
        if (!rc_ok(*m)) return kFail;
        if (!is_true(m->get("found"))) return kNotFound;
        const std::string* v = m->get("value");
        *value = v != nullptr ? *v : std::string();
        *found = true;
        return kOk;
    }
    case Proto::none:
        break;
    }
    return kErrInit;
}

int Client::fence() {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    return do_fence();
}

int Client::do_fence() {
    switch (proto_) {
    case Proto::singleton:
        return kOk;
    case Proto::pmi1:
        return pmi1_call(Message{"barrier_in", {}}, "barrier_out") ? kOk : kFail;
    case Proto::pmi2: {
        auto m = pmi2_call(Message{"kvs-fence", {}});
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    case Proto::none:
        break;
    }
    return kErrInit;
}

int Client::job_attr(std::string_view name, std::string* value, bool* found) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    return do_job_attr(name, value, found);
}

int Client::do_job_attr(std::string_view name, std::string* value, bool* found) {
    *found = false;
    if (proto_ == Proto::pmi2) {
        if (!pmi_wire::v2_key_ok(name)) return kErrInvalidKey;
        auto m = pmi2_call(Message{"info-getjobattr", {{"key", std::string(name)}}});
        if (!m) return kFail;
        if (!rc_ok(*m)) return kFail;
        if (!is_true(m->get("found"))) return kOk;
        const std::string* v = m->get("value");
        *value = v != nullptr ? *v : std::string();
        *found = true;
        return kOk;
    }
    int rc = do_get("", name, value, found);
    return rc == kNotFound ? kOk : rc;
}

int Client::put_node_attr(std::string_view name, std::string_view value) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    switch (proto_) {
    case Proto::singleton:
        local_nattr_[std::string(name)] = std::string(value);
        return kOk;
    case Proto::pmi2: {
        if (!pmi_wire::v2_key_ok(name)) return kErrInvalidKey;
        auto m = pmi2_call(Message{"info-putnodeattr", {{"key", std::string(name)}, {"value", std::string(value)}}});
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    case Proto::pmi1: {
        // PMI-1 has no node scope: a job key naming our node stands in.
        if (int rc = do_layout(); rc != kOk) return rc;
        std::string key = "dragon.shim.nattr." + to_str(node_of_[static_cast<std::size_t>(rank_)]) + "." + std::string(name);
        return do_put("", key, value);
    }
    case Proto::none:
        break;
    }
    return kErrInit;
}

int Client::get_node_attr(std::string_view name, std::string* value, bool* found, bool wait) {
    *found = false;
    if (proto() == Proto::pmi1) {
        // Poll without holding the lock across sleeps, so other threads proceed.
        int limit_ms = 60000;
        if (auto t = env_int("DRAGON_PMI_NODEATTR_WAIT_MS")) limit_ms = *t;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
        auto pause = std::chrono::milliseconds(1);
        while (true) {
            {
                std::lock_guard lock(mu_);
                if (int rc = do_layout(); rc != kOk) return rc;
                std::string key =
                    "dragon.shim.nattr." + to_str(node_of_[static_cast<std::size_t>(rank_)]) + "." + std::string(name);
                int rc = do_get("", key, value, found);
                if (rc != kNotFound) return rc;
                if (!wait) return kOk;
            }
            if (std::chrono::steady_clock::now() > deadline)
                return fail("node attribute '" + std::string(name) + "' did not appear in time");
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::milliseconds(100));
        }
    }
    std::lock_guard lock(mu_);
    switch (proto_) {
    case Proto::singleton: {
        auto it = local_nattr_.find(name);
        if (it != local_nattr_.end()) {
            *value = it->second;
            *found = true;
            return kOk;
        }
        return wait ? fail("waiting for a node attribute nobody can put (singleton)") : kOk;
    }
    case Proto::pmi2: {
        if (!pmi_wire::v2_key_ok(name)) return kErrInvalidKey;
        auto m = pmi2_call(Message{"info-getnodeattr", {{"key", std::string(name)}, {"wait", wait ? "TRUE" : "FALSE"}}});
        if (!m || !rc_ok(*m)) return kFail;
        if (is_true(m->get("found"))) {
            const std::string* v = m->get("value");
            *value = v != nullptr ? *v : std::string();
            *found = true;
        }
        return kOk;
    }
    default:
        break;
    }
    return kErrInit;
}

// ---------------------------------------------------------------- name service

int Client::publish(std::string_view service, std::string_view port) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::pmi1) {
        if (!pmi_wire::v1_key_ok(service) || !pmi_wire::v1_value_ok(port)) return kErrInvalidArg;
        auto m = pmi1_call(Message{"publish_name", {{"service", std::string(service)}, {"port", std::string(port)}}},
                           "publish_result");
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    if (proto_ == Proto::pmi2) {
        if (!pmi_wire::v2_key_ok(service)) return kErrInvalidArg;
        auto m = pmi2_call(Message{"name-publish", {{"name", std::string(service)}, {"port", std::string(port)}}});
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    return proto_ == Proto::singleton ? kFail : kErrInit;
}

int Client::unpublish(std::string_view service) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::pmi1) {
        if (!pmi_wire::v1_key_ok(service)) return kErrInvalidArg;
        auto m = pmi1_call(Message{"unpublish_name", {{"service", std::string(service)}}}, "unpublish_result");
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    if (proto_ == Proto::pmi2) {
        if (!pmi_wire::v2_key_ok(service)) return kErrInvalidArg;
        auto m = pmi2_call(Message{"name-unpublish", {{"name", std::string(service)}}});
        return (m && rc_ok(*m)) ? kOk : kFail;
    }
    return proto_ == Proto::singleton ? kFail : kErrInit;
}

int Client::lookup(std::string_view service, std::string* port) {
    std::lock_guard lock(mu_);
    std::optional<Message> m;
    if (proto_ == Proto::pmi1) {
        if (!pmi_wire::v1_key_ok(service)) return kErrInvalidArg;
        m = pmi1_call(Message{"lookup_name", {{"service", std::string(service)}}}, "lookup_result");
    } else if (proto_ == Proto::pmi2) {
        if (!pmi_wire::v2_key_ok(service)) return kErrInvalidArg;
        m = pmi2_call(Message{"name-lookup", {{"name", std::string(service)}}});
    } else {
        return proto_ == Proto::singleton ? kFail : kErrInit;
    }
    if (!m || !rc_ok(*m)) return kFail;
    const std::string* v = m->get("port");
    if (v == nullptr) v = m->get("value");
    if (v == nullptr) return kFail;
    *port = *v;
    return kOk;
}

// ---------------------------------------------------------------- layout

int Client::layout(const std::vector<int>** node_of) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    if (int rc = do_layout(); rc != kOk) return rc;
    *node_of = &node_of_;
    return kOk;
}

int Client::do_layout() {
    if (layout_done_) return kOk;
    if (proto_ == Proto::singleton) {
        node_of_.assign(1, 0);
        layout_done_ = true;
        return kOk;
    }
    std::string text;
    bool found = false;
    if (int rc = do_job_attr("PMI_process_mapping", &text, &found); rc != kOk) return rc;
    if (found) {
        if (auto m = parse_process_mapping(text, size_)) {
            node_of_ = std::move(*m);
            // The mapping numbers the job's nodes 0..k-1; under Dragon,
            // dragon.node_ids turns those into the runtime's node ids (nids).
            std::string ids;
            bool have = false;
            if (int rc = do_job_attr("dragon.node_ids", &ids, &have); rc != kOk) return rc;
            if (have) {
                std::vector<int> nid;
                std::size_t start = 0;
                while (start <= ids.size()) {
                    auto comma = ids.find(',', start);
                    if (comma == std::string::npos) comma = ids.size();
                    auto n = parse_int(std::string_view(ids).substr(start, comma - start));
                    if (!n || *n < 0 || *n > (1 << 30)) break;
                    nid.push_back(static_cast<int>(*n));
                    start = comma + 1;
                }
                bool fits = true;
                for (int n : node_of_) fits = fits && n >= 0 && static_cast<std::size_t>(n) < nid.size();
                if (fits)
                    for (int& n : node_of_) n = nid[static_cast<std::size_t>(n)];
            }
            layout_done_ = true;
            return kOk;
        }
        fail("cannot parse PMI_process_mapping '" + text.substr(0, 200) + "'; trying dragon.rank_node.*");
    }
    std::vector<int> nodes(static_cast<std::size_t>(size_), -1);
    for (int r = 0; r < size_; ++r) {
        std::string v;
        bool f = false;
        if (int rc = do_job_attr("dragon.rank_node." + to_str(r), &v, &f); rc != kOk) return rc;
        auto n = f ? parse_int(v) : std::nullopt;
        if (!n || *n < 0 || *n > (1 << 30))
            return fail("no node layout: neither PMI_process_mapping nor dragon.rank_node." + to_str(r));
        nodes[static_cast<std::size_t>(r)] = static_cast<int>(*n);
    }
    node_of_ = std::move(nodes);
    layout_done_ = true;
    return kOk;
}

// ---------------------------------------------------------------- collectives

std::size_t Client::chunk_capacity(std::string_view key) const {
    // Keep every put line and every get answer within 1024 bytes.
    std::size_t overhead = std::string_view("cmd=put kvsname= key= value=\n").size() + kvsname_.size() + key.size();
    overhead = std::max<std::size_t>(overhead, 64);
    std::size_t cap = std::min<std::size_t>(static_cast<std::size_t>(value_max_), pmi_wire::kMaxLine - overhead);
    cap &= ~static_cast<std::size_t>(1);  // whole bytes of hex
    return std::max<std::size_t>(cap, 16);
}

// A blob is `<nbytes>:<hex>` under `key`, continued in `key.1`, `key.2`, ...
int Client::put_blob(const std::string& key, std::string_view bytes) {
    std::string hex = to_str(static_cast<long long>(bytes.size())) + ":" + hex_encode(bytes.data(), bytes.size());
    std::size_t cap = chunk_capacity(key + ".999999");
    std::size_t off = 0;
    for (int c = 0; off < hex.size() || c == 0; ++c) {
        std::string k = c == 0 ? key : key + "." + to_str(c);
        std::size_t n = std::min(cap, hex.size() - off);
        if (int rc = do_put("", k, std::string_view(hex).substr(off, n)); rc != kOk) return rc;
        off += n;
    }
    return kOk;
}

int Client::get_blob(const std::string& key, std::string* bytes) {
    std::string first;
    bool found = false;
    if (int rc = do_get("", key, &first, &found); rc != kOk)
        return rc == kNotFound ? fail("collective key '" + key + "' missing") : kFail;
    std::size_t colon = first.find(':');
    auto n = colon == std::string::npos ? std::nullopt : parse_int(std::string_view(first).substr(0, colon));
    if (!n || *n < 0 || *n > (1 << 30)) return fail("collective key '" + key + "' is malformed");
    std::string hex = first.substr(colon + 1);
    std::size_t want = 2 * static_cast<std::size_t>(*n);
    for (int c = 1; hex.size() < want; ++c) {
        std::string more;
        if (do_get("", key + "." + to_str(c), &more, &found) != kOk || more.empty())
            return fail("collective key '" + key + "." + to_str(c) + "' missing");
        hex += more;
    }
    if (hex.size() != want) return fail("collective key '" + key + "' has the wrong length");
    bytes->resize(static_cast<std::size_t>(*n));
    if (!hex_decode(hex, bytes->data())) return fail("collective key '" + key + "' is not hex");
    return kOk;
}

int Client::allgather(std::string_view mine, std::vector<std::string>* blobs) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    std::string prefix = "dragon.shim.ag." + to_str(static_cast<long long>(++seq_)) + ".";
    if (int rc = put_blob(prefix + to_str(rank_), mine); rc != kOk) return rc;
    if (int rc = do_fence(); rc != kOk) return rc;
    blobs->assign(static_cast<std::size_t>(size_), std::string());
    for (int r = 0; r < size_; ++r) {
        auto& slot = (*blobs)[static_cast<std::size_t>(r)];
        if (r == rank_) {
            slot.assign(mine);
        } else if (int rc = get_blob(prefix + to_str(r), &slot); rc != kOk) {
            return rc;
        }
    }
    return kOk;
}

int Client::bcast(std::string* data) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    std::string key = "dragon.shim.bc." + to_str(static_cast<long long>(++seq_));
    if (rank_ == 0) {
        if (int rc = put_blob(key, *data); rc != kOk) return rc;
    }
    if (int rc = do_fence(); rc != kOk) return rc;
    if (rank_ == 0) return kOk;
    return get_blob(key, data);
}

int Client::ring(std::string_view mine, std::string* left, std::string* right) {
    std::lock_guard lock(mu_);
    if (proto_ == Proto::none || finalized_) return kErrInit;
    std::string prefix = "dragon.shim.ring." + to_str(static_cast<long long>(++seq_)) + ".";
    if (int rc = put_blob(prefix + to_str(rank_), mine); rc != kOk) return rc;
    if (int rc = do_fence(); rc != kOk) return rc;
    int l = (rank_ + size_ - 1) % size_;
    int r = (rank_ + 1) % size_;
    if (l == rank_) {
        left->assign(mine);
    } else if (int rc = get_blob(prefix + to_str(l), left); rc != kOk) {
        return rc;
    }
    if (r == rank_) {
        right->assign(mine);
    } else if (int rc = get_blob(prefix + to_str(r), right); rc != kOk) {
        return rc;
    }
    return kOk;
}

}  // namespace dragon::pmi::shim
