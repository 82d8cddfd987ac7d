// The gateway's sync-object service: Lock/Semaphore/Event/Barrier/Value
// blocks whose home is this node, operated on for processes of other hosts
// (which cannot map this node's pool), and those processes' requests on
// their way out (docs/multiprocessing.md, "Across hosts").
//
// Every operation runs here, at the home, in one order with the local
// processes' own (the same atomics in the same block), so the object stays
// coherent. A blocking one (acquire, an Event's or a Barrier's wait) tries
// once on the loop and then waits in a worker thread, as a channel receive
// does. What a source takes is recorded here; when the source goes without
// having said it exits normally (a killed process's lane closes, a node is
// lost), it is given back, as the block itself does for a dead local process.
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "dragon/channels/pool.hpp"
#include "dragon/channels/sync.hpp"
#include "gateway.hpp"

namespace dragon::agent {

namespace {

using SyncKey = std::pair<std::uint64_t, std::uint64_t>;  // (offset, id) in this node's pool

bool known(std::uint8_t op) { return op >= 1 && op <= static_cast<std::uint8_t>(msg::SyncOp::forget); }

}  // namespace

// ---- origin: a local client's operation on another node's block ------------------

void Gateway::on_chan_sync(std::uint64_t client, wire::Frame&& f) {
    touch();
    auto conn = hooks_.client(client);
    if (!conn) return;
    std::uint64_t request_id = 0;
    auto fail = [&](Errc code, std::string why) {
        conn->send(msg::ChanReply{request_id, static_cast<std::uint16_t>(code), std::move(why), {}, 0, 0});
    };
    auto m = msg::decode_as<msg::ChanSync>(f);
    if (!m) return fail(Errc::protocol, m.error().message());
    request_id = m->request_id;
    auto parts = channels::parse_pool_name(m->pool_name);
    if (!parts) return fail(parts.error().code(), parts.error().message());
    const std::uint32_t node = parts->node_id;
    if (node == self_)
        return fail(Errc::invalid_argument,
                    fmt::format("sync object of {} is on this node ({}): attach it directly", m->pool_name, node));
    if (node >= nnodes_)
        return fail(Errc::invalid_argument,
                    fmt::format("sync object of {} names node {}, but the run has {} nodes", m->pool_name, node, nnodes_));
    transport::Link* link = hooks_.link(node);
    if (closed_ || link == nullptr)
        return fail(Errc::closed, fmt::format("node {}, the object's home, is not reachable{}", node,
                                              router_.node_lost(node) ? " (it was lost)" : ""));
    const std::uint64_t op = next_op_id_++;
    ops_[op] = Op{client, request_id, node, true};
    link->send(msg::RemoteSync{op, std::move(m->pool_name), m->generation, m->offset, m->id, m->op, m->arg, m->length,
                               m->timeout_ns, std::move(m->data)});
}

// ---- home: another node's operation on one of our blocks --------------------------

void Gateway::serve_remote_sync(std::uint32_t from, msg::RemoteSync&& m) {
    const std::uint64_t op_id = m.op_id;
    auto reply = [this, from, op_id](std::string data) {
        if (transport::Link* peer = source_peer(from)) peer->send(msg::RemoteReply{op_id, 0, {}, std::move(data)});
    };
    auto fail = [&](Error e) { send_remote_reply(from, op_id, std::move(e)); };
    if (finishing_) return fail(make_error(Errc::closed, "node {}, the object's home, is shutting down", self_));
    if (!known(m.op)) return fail(make_error(Errc::protocol, "unknown sync operation {}", m.op));
    const auto what = static_cast<msg::SyncOp>(m.op);
    if (what == msg::SyncOp::forget) {
        // A lane's process exits normally: what it took was used, not lost.
        // (Through an agent the source is a whole node: nothing to forget.)
        if (is_lane_source(from)) {
            std::erase_if(sync_binary_, [&](const auto& kv) { return kv.second == from; });
            sync_counts_.erase(from);
        }
        return reply({});
    }
    if (m.pool_name != pool_.name() || m.generation != pool_.generation())
        return fail(make_error(Errc::not_found, "sync object of {} (generation {}): not in node {}'s pool {} (a stale object)",
                               m.pool_name, m.generation, self_, pool_.name()));
    auto b = channels::SyncBlock::attach(pool_, m.offset, m.id);
    if (!b) return fail(std::move(b).error());
    const SyncKey key{m.offset, m.id};
    const bool binary = b->binary();
    auto data_range = [&]() -> Status {
        if (m.length > msg::kSyncMaxBytes)
            return make_error(Errc::invalid_argument, "{} bytes in one operation: at most {}", m.length,
                              msg::kSyncMaxBytes);
        if (m.arg < 0 || static_cast<std::uint64_t>(m.arg) > b->data_size() ||
            m.length > b->data_size() - static_cast<std::uint64_t>(m.arg))
            return make_error(Errc::invalid_argument, "bytes {}..{} are outside the object's {} bytes of data", m.arg,
                              static_cast<std::uint64_t>(m.arg) + m.length, b->data_size());
        return ok();
    };
    switch (what) {
        case msg::SyncOp::info:
            return reply(fmt::format("{} {}", b->maximum(), b->data_size()));
        case msg::SyncOp::value:
            return reply(std::to_string(b->value()));
        case msg::SyncOp::store: {
            if (m.arg < 0 || m.arg > b->maximum())
                return fail(make_error(Errc::invalid_argument, "store {}: outside 0..{}", m.arg, b->maximum()));
            if (Status st = b->store(static_cast<std::int32_t>(m.arg)); !st) return fail(std::move(st).error());
            return reply({});
        }
        case msg::SyncOp::bump: {
            auto r = b->bump();
            if (!r) return fail(std::move(r).error());
            return reply(std::to_string(*r));
        }
        case msg::SyncOp::release: {
            if (Status st = b->release(); !st) return fail(std::move(st).error());
            note_given(from, key, binary);
            return reply({});
        }
        case msg::SyncOp::read: {
            if (Status st = data_range(); !st) return fail(std::move(st).error());
            return reply(std::string(reinterpret_cast<const char*>(b->data()) + m.arg, m.length));
        }
        case msg::SyncOp::write: {
            m.length = m.data.size();
            if (Status st = data_range(); !st) return fail(std::move(st).error());
            std::memcpy(b->data() + m.arg, m.data.data(), m.data.size());
            return reply({});
        }
        default:
            break;
    }
    // acquire, wait_positive, wait_change: once here, then in a worker.
    auto blk = std::make_shared<channels::SyncBlock>(std::move(*b));
    const auto seen = static_cast<std::int32_t>(m.arg);
    auto attempt = [blk, what, seen](channels::Timeout t) -> Status {
        Result<bool> r = what == msg::SyncOp::acquire         ? blk->acquire(t)
                         : what == msg::SyncOp::wait_positive ? blk->wait_positive(t)
                                                              : blk->wait_change(seen, t);
        if (!r) return std::move(r).error();
        if (!*r) return make_error(Errc::timeout, "timed out");
        return ok();
    };
    auto finish = [this, from, op_id, key, binary, what, blk, reply](Status st) {
        if (st) {
            if (what == msg::SyncOp::acquire) {
                if (source_peer(from) == nullptr) {
                    (void)blk->release();  // taken just as its taker went: nobody holds it
                    return;
                }
                note_taken(from, key, binary);
            }
            return reply("1");
        }
        if (st.error().code() == Errc::timeout || st.error().code() == Errc::would_block) return reply("0");
        send_remote_reply(from, op_id, std::move(st));
    };
    Status once = attempt(channels::kTryOnce);
    if (once || m.timeout_ns == 0 || (once.error().code() != Errc::timeout && once.error().code() != Errc::would_block))
        return finish(std::move(once));
    wait_in_worker(from, op_id, wire_timeout(m.timeout_ns), std::move(attempt), std::move(finish), true, false);
}

void Gateway::note_taken(std::uint32_t from, SyncKey key, bool binary) {
    if (binary)
        sync_binary_[key] = from;
    else
        ++sync_counts_[from][key];
}

void Gateway::note_given(std::uint32_t from, SyncKey key, bool binary) {
    if (binary) {
        sync_binary_.erase(key);  // a Lock is released by anyone
        return;
    }
    // Off the releaser's own counts, or (a signal, a count handed over) another source's.
    auto take = [&](std::map<SyncKey, int>& counts) {
        auto it = counts.find(key);
        if (it == counts.end() || it->second <= 0) return false;
        if (--it->second == 0) counts.erase(it);
        return true;
    };
    if (auto it = sync_counts_.find(from); it != sync_counts_.end() && take(it->second)) return;
    for (auto& [src, counts] : sync_counts_)
        if (take(counts)) return;
}

void Gateway::give_back_holds(std::uint32_t from) {
    std::map<SyncKey, int> back;
    for (auto it = sync_binary_.begin(); it != sync_binary_.end();) {
        if (it->second == from) {
            back[it->first] = 1;
            it = sync_binary_.erase(it);
        } else {
            ++it;
        }
    }
    if (auto it = sync_counts_.find(from); it != sync_counts_.end()) {
        for (const auto& [key, n] : it->second) back[key] += n;
        sync_counts_.erase(it);
    }
    for (const auto& [key, n] : back) {
        auto b = channels::SyncBlock::attach(pool_, key.first, key.second);
        if (!b) continue;  // gone meanwhile
        // Never more than this agent holds: a Lock a local process released
        // and took again, a count a local release took off ours, stay theirs.
        const int owed = std::min(n, static_cast<int>(b->held_by_me()));
        int given = 0;
        while (given < owed && b->release()) ++given;
        if (given > 0)
            spdlog::info("node {}: gave back {} count(s) of sync object {:#x} held by source {}, which went", self_,
                         given, key.second, from);
    }
}

}  // namespace dragon::agent
