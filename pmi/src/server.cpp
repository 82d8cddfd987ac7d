// The per-job, per-node simple PMI server: requests, key/value space, fences.
#include "dragon/pmi/server.hpp"

#include "dragon/common/framing.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <random>

namespace dragon::pmi {

namespace {

std::optional<std::uint64_t> to_uint(std::string_view s) {
    std::uint64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<std::int64_t> to_int(std::string_view s) {
    std::int64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

struct Block {
    std::uint32_t first = 0, nodes = 0, per = 0;
};

// Node of rank r under MPICH's reading of a block list: blocks in order,
// repeated until every rank is placed.
bool expands_to(const std::vector<Block>& blocks, std::size_t nblocks, const std::vector<std::uint32_t>& want) {
    std::size_t rank = 0;
    while (rank < want.size()) {
        for (std::size_t b = 0; b < nblocks; ++b)
            for (std::uint32_t n = 0; n < blocks[b].nodes; ++n)
                for (std::uint32_t k = 0; k < blocks[b].per; ++k) {
                    if (want[rank] != blocks[b].first + n) return false;
                    if (++rank == want.size()) return true;
                }
    }
    return true;
}

constexpr std::string_view kRankNodePrefix = "dragon.rank_node.";

}  // namespace

std::optional<std::string> process_mapping(const std::vector<std::uint32_t>& rank_node, std::size_t max_len) {
    if (rank_node.empty()) return std::nullopt;
    // Runs of consecutive ranks on one node, merged into blocks of
    // consecutive nodes with the same count each.
    std::vector<Block> blocks;
    std::size_t i = 0;
    while (i < rank_node.size()) {
        std::size_t j = i;
        while (j < rank_node.size() && rank_node[j] == rank_node[i]) ++j;
        const auto node = rank_node[i];
        const auto count = static_cast<std::uint32_t>(j - i);
        if (!blocks.empty() && blocks.back().per == count && blocks.back().first + blocks.back().nodes == node)
            ++blocks.back().nodes;
        else
            blocks.push_back({node, 1, count});
        i = j;
    }
    // The shortest prefix whose repetition gives the same placement.
    std::size_t n = blocks.size();
    for (std::size_t p = 1; p < blocks.size(); ++p)
        if (expands_to(blocks, p, rank_node)) {
            n = p;
            break;
        }
    std::string out = "(vector";
    for (std::size_t b = 0; b < n; ++b) {
        fmt::format_to(std::back_inserter(out), ",({},{},{})", blocks[b].first, blocks[b].nodes, blocks[b].per);
        if (out.size() + 1 > max_len) return std::nullopt;
    }
    out += ')';
    if (out.size() > max_len) return std::nullopt;
    return out;
}

Result<std::vector<std::uint32_t>> expand_process_mapping(std::string_view m, std::uint32_t size) {
    auto bad = [&](std::string_view why) {
        return make_error(Errc::invalid_argument, "process mapping '{}': {}", m.substr(0, 80), why);
    };
    std::string s;
    for (char c : m)
        if (c != ' ') s += c;
    std::string_view v = s;
    if (!v.starts_with("(vector") || !v.ends_with(")")) return bad("not (vector,...)");
    v.remove_prefix(7);
    v.remove_suffix(1);
    std::vector<Block> blocks;
    while (!v.empty()) {
        if (!v.starts_with(",(")) return bad("expected ,(");
        v.remove_prefix(2);
        const auto close = v.find(')');
        if (close == std::string_view::npos) return bad("unclosed block");
        std::string_view t = v.substr(0, close);
        v.remove_prefix(close + 1);
        std::uint64_t f[3];
        for (int k = 0; k < 3; ++k) {
            const auto comma = t.find(',');
            if ((k < 2) == (comma == std::string_view::npos)) return bad("a block has three numbers");
            auto x = to_uint(t.substr(0, comma));
            if (!x || *x > 0xffffffffU) return bad("not a number");
            f[k] = *x;
            if (k < 2) t.remove_prefix(comma + 1);
        }
        blocks.push_back({static_cast<std::uint32_t>(f[0]), static_cast<std::uint32_t>(f[1]),
                          static_cast<std::uint32_t>(f[2])});
    }
    std::uint64_t per_round = 0;
    for (const auto& b : blocks) per_round += std::uint64_t{b.nodes} * b.per;
    if (per_round == 0 && size > 0) return bad("places no rank");
    std::vector<std::uint32_t> out;
    out.reserve(size);
    while (out.size() < size)
        for (const auto& b : blocks)
            for (std::uint32_t n = 0; n < b.nodes && out.size() < size; ++n)
                for (std::uint32_t k = 0; k < b.per && out.size() < size; ++k) out.push_back(b.first + n);
    return out;
}

JobServer::JobServer(JobLayout layout, JobHost& host) : layout_(std::move(layout)), host_(host) {
    if (layout_.universe_size == 0) layout_.universe_size = static_cast<std::uint32_t>(layout_.rank_node.size());
    // The mapping MPICH reads uses the job's own node numbers (0..k-1, by
    // node id); dragon.node_ids turns them back into the runtime's ids.
    std::vector<std::uint32_t> ids(layout_.rank_node.begin(), layout_.rank_node.end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::vector<std::uint32_t> dense(layout_.rank_node.size());
    for (std::size_t r = 0; r < dense.size(); ++r) {
        dense[r] = static_cast<std::uint32_t>(std::lower_bound(ids.begin(), ids.end(), layout_.rank_node[r]) - ids.begin());
        if (layout_.rank_node[r] == layout_.node) local_[static_cast<std::uint32_t>(r)] = Rank{};
        else other_nodes_.insert(layout_.rank_node[r]);
    }
    // PMI_IDs for PMI_PORT: random, distinct, below 2^31 (clients atoi them).
    std::random_device rd;
    for (auto& [rank, r] : local_) {
        std::uint32_t id = 0;
        do id = (static_cast<std::uint32_t>(rd()) & 0x7fffffffU) | 1U;
        while (rank_of_port_id_.contains(id));
        r.port_id = id;
        rank_of_port_id_[id] = rank;
    }
    // MPICH reads replies into a 1024-byte line with ~40 bytes of framing.
    mapping_ = process_mapping(dense, kMaxValue - 64);
    node_ids_ = fmt::format("{}", fmt::join(ids, ","));
    if (node_ids_.size() > kMaxValue - 64) node_ids_.clear();
}

ConnId JobServer::connect(std::optional<std::uint32_t> rank) {
    const ConnId id = next_conn_++;
    Conn& c = conns_[id];
    if (rank) {
        c.rank = rank;
        auto it = local_.find(*rank);
        if (it != local_.end()) {
            // A new run of the rank (a restart) starts over.
            if (it->second.conn && conns_.contains(*it->second.conn)) {
                host_.close(*it->second.conn);
                conns_.erase(*it->second.conn);
            }
            const auto pid = it->second.port_id;
            it->second = Rank{};
            it->second.port_id = pid;
            it->second.conn = id;
            it->second.bound = true;
        }
    }
    return id;
}

std::uint32_t JobServer::port_id(std::uint32_t rank) const {
    auto it = local_.find(rank);
    return it == local_.end() ? 0 : it->second.port_id;
}

std::optional<ConnId> JobServer::conn_of(std::uint32_t rank) const {
    auto it = local_.find(rank);
    if (it == local_.end() || !it->second.conn || !conns_.contains(*it->second.conn)) return std::nullopt;
    return it->second.conn;
}

JobServer::Rank* JobServer::rank_of(const Conn& c) {
    if (!c.rank) return nullptr;
    auto it = local_.find(*c.rank);
    return it == local_.end() ? nullptr : &it->second;
}

void JobServer::received(ConnId id, std::string_view bytes) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = it->second;
    c.dec.feed(bytes);
    for (;;) {
        auto next = c.dec.next();
        if (!next) return fail_conn(id, next.error().message());
        if (!*next) return;
        handle(id, c, **next);
        if (!conns_.contains(id)) return;  // failed (or closed) while handling it
    }
}

void JobServer::disconnected(ConnId id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    const auto rank = it->second.rank;
    Rank* r = rank_of(it->second);
    conns_.erase(it);
    drop_waits(id);
    if (r == nullptr || r->conn != id) return;
    r->conn.reset();
    if (r->phase != Phase::initialized) return;
    // It began PMI and left without finalize: its peers would wait for it in
    // the next fence for ever.
    r->phase = Phase::failed;
    r->error = "closed its PMI connection without finalize";
    host_.rank_error(rank, r->error, false);
}

void JobServer::fail_conn(ConnId id, std::string why) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    const auto rank = it->second.rank;
    if (Rank* r = rank_of(it->second); r != nullptr && r->conn == id) {
        r->conn.reset();
        if (r->phase != Phase::finalized && r->phase != Phase::aborted) {
            r->phase = Phase::failed;
            r->protocol = true;
            r->error = why;
        }
    }
    conns_.erase(it);
    drop_waits(id);
    host_.close(id);
    host_.rank_error(rank, std::move(why), true);
}

Status JobServer::bind_rank(ConnId id, Conn& c, std::string_view text) {
    auto pid = to_uint(text);
    auto found = pid && *pid <= 0xffffffffU ? rank_of_port_id_.find(static_cast<std::uint32_t>(*pid))
                                            : rank_of_port_id_.end();
    if (found == rank_of_port_id_.end())
        return make_error(Errc::protocol, "PMI: '{}' is not the PMI_ID of a rank on this node", text.substr(0, 20));
    const std::uint32_t r = found->second;
    if (c.rank) {
        if (*c.rank != r) return make_error(Errc::protocol, "PMI: rank {} says it is rank {}", *c.rank, r);
        return ok();
    }
    Rank& rk = local_.at(r);
    if (rk.bound) return make_error(Errc::protocol, "PMI: rank {} already connected once", r);
    c.rank = r;
    rk.bound = true;
    rk.conn = id;
    return ok();
}

void JobServer::drop_waits(ConnId id) {
    for (auto it = attr_waiters_.begin(); it != attr_waiters_.end();)
        it = it->second == id ? attr_waiters_.erase(it) : std::next(it);
}

Status JobServer::put(std::string_view key, std::string_view value) {
    if (key.empty() || key.size() > kMaxKey)
        return make_error(Errc::invalid_argument, "key of {} bytes (1 to {})", key.size(), kMaxKey);
    if (value.size() > kMaxValue)
        return make_error(Errc::invalid_argument, "value of {} bytes (at most {})", value.size(), kMaxValue);
    const std::size_t bytes = key.size() + value.size() + 8;
    if (pending_bytes_ + bytes > kMaxFenceBytes)
        return make_error(Errc::no_space, "more than {} bytes put on this node since the last fence", kMaxFenceBytes);
    if (kvs_bytes_ + pending_bytes_ + bytes > kMaxJobBytes)
        return make_error(Errc::no_space, "the job holds more than {} bytes of keys", kMaxJobBytes);
    pending_bytes_ += bytes;
    pending_.push_back({std::string(key), std::string(value)});
    return ok();
}

std::optional<std::string> JobServer::job_attr(std::string_view key) const {
    if (key == "PMI_process_mapping") return mapping_;
    if (key == "universeSize") return std::to_string(layout_.universe_size);
    if (key == "dragon.node_ids") return node_ids_.empty() ? std::nullopt : std::optional<std::string>(node_ids_);
    if (key.starts_with(kRankNodePrefix)) {
        auto r = to_uint(key.substr(kRankNodePrefix.size()));
        if (r && *r < layout_.rank_node.size()) return std::to_string(layout_.rank_node[*r]);
    }
    return std::nullopt;
}

std::optional<std::string> JobServer::lookup(std::string_view key) const {
    if (auto it = kvs_.find(std::string(key)); it != kvs_.end()) return it->second;
    return job_attr(key);
}

void JobServer::handle(ConnId id, Conn& c, const Command& cmd) {
    if (c.version == 2) return handle_v2(id, c, cmd);
    handle_v1(id, c, cmd);
}

void JobServer::handle_v1(ConnId id, Conn& c, const Command& cmd) {
    auto reply = [&](std::string_view name, Args args) { host_.send(id, format_v1(name, args)); };
    auto need = [&](std::string_view key) -> const std::string* {
        const std::string* v = cmd.get(key);
        if (v == nullptr) fail_conn(id, fmt::format("PMI: {} without {}=", cmd.cmd, key));
        return v;
    };
    const std::string& name = cmd.cmd;
    if (name == "init") {
        const std::string* ver = cmd.get("pmi_version");
        if (ver != nullptr && *ver == "2") {
            reply("response_to_init", {{"pmi_version", "2"}, {"pmi_subversion", "0"}, {"rc", "0"}});
            c.version = 2;
            c.dec.use_v2();
            return;
        }
        if (ver != nullptr && *ver != "1") {
            reply("response_to_init", {{"pmi_version", "1"}, {"pmi_subversion", "1"}, {"rc", "-1"}});
            return;
        }
        if (Rank* r = rank_of(c); r != nullptr && r->phase == Phase::idle) r->phase = Phase::initialized;
        reply("response_to_init", {{"pmi_version", "1"}, {"pmi_subversion", "1"}, {"rc", "0"}});
    } else if (name == "initack") {
        const std::string* pmiid = need("pmiid");
        if (pmiid == nullptr) return;
        if (auto st = bind_rank(id, c, *pmiid); !st) return fail_conn(id, st.error().message());
        const auto size = std::to_string(layout_.rank_node.size());
        const auto rank = std::to_string(*c.rank);
        reply("initack", {});
        reply("set", {{"size", size}});
        reply("set", {{"rank", rank}});
        reply("set", {{"debug", "0"}});
    } else if (name == "get_maxes") {
        reply("maxes", {{"kvsname_max", std::to_string(kMaxKvsName)},
                        {"keylen_max", std::to_string(kMaxKey)},
                        {"vallen_max", std::to_string(kMaxValue)}});
    } else if (name == "get_appnum") {
        reply("appnum", {{"appnum", "0"}});
    } else if (name == "get_my_kvsname") {
        reply("my_kvsname", {{"kvsname", layout_.kvsname}});
    } else if (name == "get_universe_size") {
        reply("universe_size", {{"size", std::to_string(layout_.universe_size)}});
    } else if (name == "put") {
        if (!c.rank) return fail_conn(id, "PMI: put before the rank is known (initack)");
        const std::string* key = need("key");
        if (key == nullptr) return;
        const std::string* value = need("value");
        if (value == nullptr) return;
        const std::string* kvs = cmd.get("kvsname");
        if (kvs != nullptr && *kvs != layout_.kvsname) {
            reply("put_result", {{"rc", "-1"}, {"msg", "unknown_kvsname"}});
            return;
        }
        auto st = put(*key, *value);
        if (!st) {
            reply("put_result", {{"rc", "-1"}, {"msg", st.error().code() == Errc::no_space ? "too_many_keys"
                                                                                           : "key_or_value_too_long"}});
            return;
        }
        reply("put_result", {{"rc", "0"}, {"msg", "success"}});
    } else if (name == "get") {
        if (!c.rank) return fail_conn(id, "PMI: get before the rank is known (initack)");
        const std::string* key = need("key");
        if (key == nullptr) return;
        auto v = lookup(*key);
        if (v) reply("get_result", {{"rc", "0"}, {"msg", "success"}, {"value", *v}});
        else reply("get_result", {{"rc", "-1"}, {"msg", "key_not_found"}, {"value", "unknown"}});
    } else if (name == "barrier_in") {
        Rank* r = rank_of(c);
        if (r == nullptr) return fail_conn(id, "PMI: barrier_in before the rank is known (initack)");
        if (r->in_fence) return fail_conn(id, fmt::format("PMI: rank {} entered the barrier twice", *c.rank));
        enter_fence(*r);
    } else if (name == "finalize") {
        if (Rank* r = rank_of(c); r != nullptr) r->phase = Phase::finalized;
        reply("finalize_ack", {});
    } else if (name == "abort") {
        Rank* r = rank_of(c);
        if (r == nullptr) return fail_conn(id, "PMI: abort before the rank is known (initack)");
        const std::string* code = cmd.get("exitcode");
        const auto parsed = code != nullptr ? to_int(*code) : std::nullopt;
        const std::string* text = cmd.get("msg") != nullptr ? cmd.get("msg") : cmd.get("message");
        r->phase = Phase::aborted;
        const auto exit_code = parsed ? std::clamp<std::int64_t>(*parsed, std::numeric_limits<int>::min(),
                                                            std::numeric_limits<int>::max())
                                 : 1;
        host_.abort(*c.rank, static_cast<int>(exit_code), text != nullptr ? *text : std::string());
    } else if (name == "publish_name") {
        reply("publish_result", {{"rc", "-1"}, {"msg", "name_service_not_supported"}});
    } else if (name == "unpublish_name") {
        reply("unpublish_result", {{"rc", "-1"}, {"msg", "name_service_not_supported"}});
    } else if (name == "lookup_name") {
        reply("lookup_result", {{"rc", "-1"}, {"msg", "name_service_not_supported"}});
    } else if (name == "spawn") {
        // MPI_Comm_spawn_multiple sends one block per command and reads one answer.
        const std::string* total = cmd.get("totspawns");
        const std::string* sofar = cmd.get("spawnssofar");
        if (total == nullptr || sofar == nullptr || *total == *sofar)
            reply("spawn_result", {{"rc", "-1"}, {"msg", "spawn_not_supported"}});
    } else {
        fail_conn(id, fmt::format("PMI: unknown command '{}'", name.substr(0, 64)));
    }
}

void JobServer::handle_v2(ConnId id, Conn& c, const Command& cmd) {
    auto reply = [&](std::string_view name, Args args) { host_.send(id, format_v2(name, args)); };
    const std::string& name = cmd.cmd;
    auto arg = [&](std::string_view key) -> std::string_view {
        const std::string* v = cmd.get(key);
        return v != nullptr ? std::string_view(*v) : std::string_view();
    };
    if (name == "fullinit") {
        // A PMI_PORT connection says who it is with the PMI_ID it was given.
        if (!c.rank) {
            const std::string* who = cmd.get("pmiid") != nullptr ? cmd.get("pmiid") : cmd.get("srcid");
            if (who == nullptr) return fail_conn(id, "PMI-2: fullinit on a PMI_PORT connection without pmiid=");
            if (auto st = bind_rank(id, c, *who); !st) return fail_conn(id, st.error().message());
        } else if (const std::string* pr = cmd.get("pmirank"); pr != nullptr && *pr != std::to_string(*c.rank)) {
            return fail_conn(id, fmt::format("PMI-2: rank {} says it is rank {}", *c.rank, pr->substr(0, 20)));
        }
        Rank* r = rank_of(c);
        if (r == nullptr) return fail_conn(id, "PMI-2: fullinit from a rank not on this node");
        if (r->phase == Phase::idle) r->phase = Phase::initialized;
        const auto rank = std::to_string(*c.rank);
        const auto size = std::to_string(layout_.rank_node.size());
        reply("fullinit-response", {{"rc", "0"}, {"pmi-version", "2"}, {"pmi-subversion", "0"}, {"rank", rank},
                                    {"size", size}, {"appnum", "0"}, {"debugged", "FALSE"}, {"pmiverbose", "FALSE"}});
    } else if (name == "job-getid") {
        reply("job-getid-response", {{"rc", "0"}, {"jobid", layout_.kvsname}});
    } else if (!c.rank) {
        fail_conn(id, fmt::format("PMI-2: {} before fullinit", name.substr(0, 64)));
    } else if (name == "kvs-put") {
        if (cmd.get("key") == nullptr || cmd.get("value") == nullptr)
            return fail_conn(id, "PMI-2: kvs-put needs key= and value=");
        if (auto st = put(arg("key"), arg("value")); !st) {
            reply("kvs-put-response", {{"rc", "-1"}, {"errmsg", st.error().message()}});
            return;
        }
        reply("kvs-put-response", {{"rc", "0"}});
    } else if (name == "kvs-fence") {
        Rank* r = rank_of(c);
        if (r == nullptr) return fail_conn(id, "PMI-2: kvs-fence before fullinit");
        if (r->in_fence) return fail_conn(id, fmt::format("PMI-2: rank {} entered the fence twice", *c.rank));
        enter_fence(*r);
    } else if (name == "kvs-get") {
        if (cmd.get("key") == nullptr) return fail_conn(id, "PMI-2: kvs-get needs key=");
        auto v = lookup(arg("key"));
        if (v) reply("kvs-get-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", *v}});
        else reply("kvs-get-response", {{"rc", "0"}, {"found", "FALSE"}});
    } else if (name == "info-getjobattr") {
        if (cmd.get("key") == nullptr) return fail_conn(id, "PMI-2: info-getjobattr needs key=");
        auto v = job_attr(arg("key"));
        if (v) reply("info-getjobattr-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", *v}});
        else reply("info-getjobattr-response", {{"rc", "0"}, {"found", "FALSE"}});
    } else if (name == "info-putnodeattr") {
        if (cmd.get("key") == nullptr || cmd.get("value") == nullptr)
            return fail_conn(id, "PMI-2: info-putnodeattr needs key= and value=");
        const std::string key(arg("key"));
        if (key.size() > kMaxKey || arg("value").size() > kMaxValue) {
            reply("info-putnodeattr-response", {{"rc", "-1"}, {"errmsg", "key or value too long"}});
            return;
        }
        if (node_attrs_.size() >= kMaxNodeAttrs && !node_attrs_.contains(key)) {
            reply("info-putnodeattr-response", {{"rc", "-1"}, {"errmsg", "too many node attributes"}});
            return;
        }
        node_attrs_[key] = std::string(arg("value"));
        reply("info-putnodeattr-response", {{"rc", "0"}});
        auto [lo, hi] = attr_waiters_.equal_range(key);
        std::vector<ConnId> wake;
        for (auto w = lo; w != hi; ++w) wake.push_back(w->second);
        attr_waiters_.erase(lo, hi);
        for (ConnId w : wake)
            if (conns_.contains(w))
                host_.send(w, format_v2("info-getnodeattr-response",
                                        {{"rc", "0"}, {"found", "TRUE"}, {"value", node_attrs_[key]}}));
    } else if (name == "info-getnodeattr") {
        if (cmd.get("key") == nullptr) return fail_conn(id, "PMI-2: info-getnodeattr needs key=");
        const std::string key(arg("key"));
        if (auto it = node_attrs_.find(key); it != node_attrs_.end()) {
            reply("info-getnodeattr-response", {{"rc", "0"}, {"found", "TRUE"}, {"value", it->second}});
        } else if (arg("wait") == "TRUE") {
            for (const auto& [k, w] : attr_waiters_)
                if (w == id) return fail_conn(id, "PMI-2: info-getnodeattr while one waits already");
            attr_waiters_.emplace(key, id);
        } else {
            reply("info-getnodeattr-response", {{"rc", "0"}, {"found", "FALSE"}});
        }
    } else if (name == "finalize") {
        if (Rank* r = rank_of(c); r != nullptr) r->phase = Phase::finalized;
        reply("finalize-response", {{"rc", "0"}});
    } else if (name == "abort") {
        Rank* r = rank_of(c);
        if (r == nullptr) return fail_conn(id, "PMI-2: abort before fullinit");
        r->phase = Phase::aborted;
        // PMI-2 carries no exit code: the job ends with 1.
        host_.abort(*c.rank, 1, std::string(arg("msg")));
    } else if (name == "name-publish" || name == "name-unpublish" || name == "name-lookup" || name == "spawn") {
        reply(name + "-response", {{"rc", "-1"}, {"errmsg", "not supported by dragon"}});
    } else {
        fail_conn(id, fmt::format("PMI-2: unknown command '{}'", name.substr(0, 64)));
    }
}

void JobServer::enter_fence(Rank& r) {
    r.in_fence = true;
    maybe_send_local();
}

void JobServer::maybe_send_local() {
    if (local_sent_) return;
    bool anyone = remote_.contains(fence_seq_);
    for (const auto& [rank, r] : local_) {
        if (r.in_fence) anyone = true;
        else if (r.phase != Phase::gone) return;  // still computing
    }
    if (!anyone) return;  // every local rank is gone and nobody fences
    local_sent_ = true;
    if (!other_nodes_.empty()) host_.fence_out(fence_seq_, wire::body_of(pending_));
    maybe_complete_fence();
}

Status JobServer::remote_fence(std::uint32_t from, std::uint64_t seq, std::string_view batch) {
    if (!other_nodes_.contains(from))
        return make_error(Errc::protocol, "PMI fence batch from node {}, which has no rank of job {}", from,
                          layout_.job_id);
    if (seq != fence_seq_ && seq != fence_seq_ + 1)
        return make_error(Errc::protocol, "PMI fence batch {} from node {} while at fence {}", seq, from, fence_seq_);
    if (batch.size() > kMaxFenceBytes + (kMaxFenceBytes / 8) + 64)
        return make_error(Errc::protocol, "PMI fence batch of {} bytes from node {}", batch.size(), from);
    auto kvs = wire::decode_exact<std::vector<KeyValue>>(batch);
    if (!kvs) return make_error(Errc::protocol, "PMI fence batch from node {}: {}", from, kvs.error().message());
    auto& slot = remote_[seq];
    if (slot.contains(from))
        return make_error(Errc::protocol, "PMI fence batch {} from node {} came twice", seq, from);
    slot.emplace(from, std::string(batch));
    maybe_send_local();
    maybe_complete_fence();
    return ok();
}

void JobServer::maybe_complete_fence() {
    if (!local_sent_) return;
    auto it = remote_.find(fence_seq_);
    const std::size_t have = it == remote_.end() ? 0 : it->second.size();
    if (have != other_nodes_.size()) return;
    // Merge in node order, so a key put on two nodes resolves the same everywhere.
    bool own_done = false;
    auto store = [&](KeyValue&& kv) {
        auto [slot, fresh] = kvs_.try_emplace(std::move(kv.key));
        kvs_bytes_ -= fresh ? 0 : slot->first.size() + slot->second.size() + 8;
        kvs_bytes_ += slot->first.size() + kv.value.size() + 8;
        slot->second = std::move(kv.value);
    };
    auto apply_own = [&] {
        for (auto& kv : pending_) store(std::move(kv));
        own_done = true;
    };
    if (it != remote_.end()) {
        for (auto& [node, batch] : it->second) {
            if (!own_done && node > layout_.node) apply_own();
            auto kvs = wire::decode_exact<std::vector<KeyValue>>(batch);  // checked on arrival
            if (kvs)
                for (auto& kv : *kvs) store(std::move(kv));
        }
        remote_.erase(it);
    }
    if (!own_done) apply_own();
    pending_.clear();
    pending_bytes_ = 0;
    ++fence_seq_;
    local_sent_ = false;
    for (auto& [rank, r] : local_) {
        if (!r.in_fence) continue;
        r.in_fence = false;
        if (!r.conn) continue;
        auto c = conns_.find(*r.conn);
        if (c == conns_.end()) continue;
        host_.send(*r.conn, c->second.version == 2 ? format_v2("kvs-fence-response", {{"rc", "0"}})
                                                   : format_v1("barrier_out"));
    }
    // Another node may already be in the next fence, with every rank here gone.
    maybe_send_local();
}

std::string JobServer::rank_exited(std::uint32_t rank, bool clean) {
    auto it = local_.find(rank);
    if (it == local_.end()) return {};
    Rank& r = it->second;
    if (r.conn) {
        if (conns_.contains(*r.conn)) {
            host_.close(*r.conn);
            conns_.erase(*r.conn);
            drop_waits(*r.conn);
        }
        r.conn.reset();
    }
    std::string why;
    switch (r.phase) {
        case Phase::idle:
            r.phase = Phase::gone;
            maybe_send_local();
            break;
        case Phase::initialized:
            if (clean)
                why = r.in_fence ? "exited inside a PMI fence, without PMI finalize"
                                 : "exited after PMI init without PMI finalize";
            r.phase = Phase::failed;
            break;
        case Phase::failed:
            if (r.protocol) why = fmt::format("PMI protocol error: {}", r.error);
            else if (clean) why = r.error;
            break;
        case Phase::finalized:
        case Phase::aborted:
        case Phase::gone: break;
    }
    return why;
}

}  // namespace dragon::pmi
