// The distributed dictionary's C++ client: wire v1 of docs/ddict.md over the
// client library's channels (ChannelRef: shared memory on this node, a lane
// to another).
#include "dragon/orchestrator/ddict.hpp"

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "dragon/channels/channel.hpp"
#include "dragon/channels/descriptor.hpp"
#include "dragon/channels/pool.hpp"
#include "dragon/orchestrator/channel.hpp"
#include "dragon/orchestrator/client.hpp"

namespace dragon::ddict {

namespace {

constexpr std::uint16_t kVersion = 1;
enum Op : std::uint8_t { kConnect = 1, kPut, kGet, kPop, kDel, kContains, kLen, kKeys, kItems, kClear, kDisconnect };
enum Status8 : std::uint8_t { kOk = 0, kNotFound, kFull, kError, kRetired };
constexpr std::uint8_t kPersist = 1;  // on a get: "do not wait for the key"
constexpr std::uint8_t kChunked = 4;
constexpr std::size_t kReqHead = 1 + 1 + 2 + 4 + 4 + 8 + 4;
constexpr std::size_t kRepHead = 1 + 1 + 2 + 4;
constexpr std::size_t kChunkAt = 1U << 20;
constexpr std::size_t kChunk = 4U << 20;
constexpr std::uint32_t kWindow = 4;
constexpr auto kSlice = std::chrono::seconds(1);

template <class T>
void put_le(Bytes& b, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) b.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
}

template <class T>
T get_le(const std::byte* p) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return static_cast<T>(v);
}

Bytes tagged_key(std::string_view key) {
    Bytes b;
    b.reserve(key.size() + 1);
    b.push_back(std::byte{'s'});
    for (char c : key) b.push_back(static_cast<std::byte>(c));
    return b;
}

std::optional<std::string> base64_decode(std::string_view in) {
    static constexpr std::string_view kAlpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
        const auto pos = kAlpha.find(c);
        if (pos == std::string_view::npos) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(pos);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return out;
}

std::string read_small_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct ManagerInfo {
    std::string desc;
    std::uint32_t node = 0;
    int pid = 0;
    std::uint64_t puid = 0;
    std::string boot;
};

}  // namespace

struct DDict::Impl {
    std::string name;
    std::vector<ManagerInfo> managers;
    std::chrono::milliseconds timeout{60000};
    std::shared_ptr<client::Gateway> gw;
    channels::Pool pool;
    std::optional<channels::Channel> reply;
    std::map<std::size_t, client::ChannelRef> refs;
    std::map<std::size_t, std::uint32_t> cids;
    std::uint32_t seq = 0;
    std::string boot;

    Impl(channels::Pool p) : pool(std::move(p)) {}

    std::string manager_name(std::size_t i) const {
        const auto& m = managers[i];
        return fmt::format("manager {} of DDict {} (node {}, pid {}, puid {})", i, name, m.node, m.pid, m.puid);
    }

    bool alive(std::size_t i) const {
        const auto& m = managers[i];
        if (m.boot.empty() || m.boot != boot) return true;  // another host: the timeout bounds the wait
        const auto stat = read_small_file(fmt::format("/proc/{}/stat", m.pid));
        const auto close = stat.rfind(')');
        if (stat.empty() || close == std::string::npos || close + 2 >= stat.size()) return false;
        const char state = stat[close + 2];
        if (state == 'Z' || state == 'X') return false;
        const auto env = read_small_file(fmt::format("/proc/{}/environ", m.pid));
        const std::string want = std::string(1, '\0') + fmt::format("DRAGON_PUID={}", m.puid) + std::string(1, '\0');
        return m.puid == 0 || (std::string(1, '\0') + env).find(want) != std::string::npos;
    }

    Status check(std::size_t i, std::chrono::steady_clock::time_point deadline, std::string_view what) const {
        if (!alive(i)) return make_error(Errc::closed, "{} is not running ({})", manager_name(i), what);
        if (std::chrono::steady_clock::now() > deadline)
            return make_error(Errc::timeout, "{}: {} within {} ms", manager_name(i), what, timeout.count());
        return ok();
    }

    Bytes header(Op op, std::uint8_t flags, std::size_t i, std::uint32_t s, std::int64_t chkpt, std::size_t klen) {
        Bytes b;
        b.reserve(kReqHead + klen + 64);
        put_le<std::uint8_t>(b, op);
        put_le<std::uint8_t>(b, flags);
        put_le<std::uint16_t>(b, kVersion);
        put_le<std::uint32_t>(b, cids.count(i) ? cids[i] : 0);
        put_le<std::uint32_t>(b, s);
        put_le<std::int64_t>(b, chkpt);
        put_le<std::uint32_t>(b, static_cast<std::uint32_t>(klen));
        return b;
    }

    Status send_to(std::size_t i, client::ChannelRef& ch, std::span<const std::byte> msg,
                   std::chrono::steady_clock::time_point deadline) {
        if (!ch.is_local()) return ch.send(msg, channels::kForever);
        for (;;) {
            auto st = ch.send(msg, kSlice);
            if (st || (st.error().code() != Errc::timeout && st.error().code() != Errc::would_block)) return st;
            if (auto c = check(i, deadline, "its request channel stays full"); !c) return c;
        }
    }

    /// The pieces of a chunked reply, joined (without the tag).
    Result<Bytes> recv_parts(std::size_t i, std::span<const std::byte> head, std::chrono::steady_clock::time_point deadline) {
        if (head.size() < 1 + 12) return make_error(Errc::protocol, "{}: a short chunked reply", manager_name(i));
        const auto size = get_le<std::uint64_t>(head.data() + 1);
        const auto n = get_le<std::uint32_t>(head.data() + 9);
        std::string hex(reinterpret_cast<const char*>(head.data() + 13), head.size() - 13);
        auto d = channels::ChannelDescriptor::from_hex(hex);
        if (!d) return std::move(d).error();
        auto side = client::ChannelRef::open(gw, *d);
        if (!side) return std::move(side).error();
        Bytes out;
        out.reserve(size);
        Bytes piece;
        for (std::uint32_t k = 0; k < n; ++k) {
            for (;;) {
                auto st = side->recv(piece, kSlice);
                if (st) break;
                if (st.error().code() != Errc::timeout && st.error().code() != Errc::would_block) return st.error();
                if (auto c = check(i, deadline, "the pieces of a large value stopped coming"); !c) return c.error();
            }
            out.insert(out.end(), piece.begin(), piece.end());
        }
        if (out.size() != size) return make_error(Errc::protocol, "{}: a large value came short", manager_name(i));
        return out;
    }

    struct Reply {
        std::uint8_t status = 0;
        std::uint8_t flags = 0;
        Bytes payload;
    };

    Result<Reply> wait_reply(std::size_t i, std::uint32_t s, std::chrono::steady_clock::time_point deadline) {
        for (;;) {
            auto msg = reply->recv_message(kSlice);
            if (!msg) {
                if (msg.error().code() != Errc::timeout && msg.error().code() != Errc::would_block) return std::move(msg).error();
                if (auto c = check(i, deadline, "no reply"); !c) return c.error();
                continue;
            }
            const auto data = msg->data();
            if (data.size() < kRepHead) continue;
            Reply r;
            r.status = get_le<std::uint8_t>(data.data());
            r.flags = get_le<std::uint8_t>(data.data() + 1);
            const auto rseq = get_le<std::uint32_t>(data.data() + 4);
            const auto body = data.subspan(kRepHead);
            if (rseq != s) {
                if (r.flags & kChunked) (void)recv_parts(i, body, deadline);  // drain a stale large reply
                continue;
            }
            if (r.flags & kChunked) {
                auto joined = recv_parts(i, body, deadline);
                if (!joined) return std::move(joined).error();
                r.payload.reserve(joined->size() + 1);
                r.payload.push_back(body[0]);  // the tag
                r.payload.insert(r.payload.end(), joined->begin(), joined->end());
            } else {
                r.payload.assign(body.begin(), body.end());
            }
            return r;
        }
    }

    Result<client::ChannelRef*> channel(std::size_t i) {
        auto it = refs.find(i);
        if (it != refs.end()) return &it->second;
        auto d = channels::ChannelDescriptor::from_hex(managers[i].desc);
        if (!d) return std::move(d).error();
        auto ref = client::ChannelRef::open(gw, *d);
        if (!ref) return std::move(ref).error().context(manager_name(i));
        auto& ch = refs.emplace(i, std::move(*ref)).first->second;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        const auto s = ++seq;
        auto msg = header(kConnect, 0, i, s, 0, 0);
        const auto hex = reply->descriptor().to_hex();
        for (char c : hex) msg.push_back(static_cast<std::byte>(c));
        if (auto st = send_to(i, ch, msg, deadline); !st) return st.error();
        auto r = wait_reply(i, s, deadline);
        if (!r) return std::move(r).error();
        if (r->status != kOk || r->payload.size() < 4)
            return make_error(Errc::protocol, "{} refused the connection", manager_name(i));
        cids[i] = get_le<std::uint32_t>(r->payload.data());
        return &ch;
    }

    Result<Reply> call(std::size_t i, Op op, std::uint8_t flags, std::int64_t chkpt, std::span<const std::byte> key,
                       std::span<const std::byte> value, bool has_value) {
        auto ch = channel(i);
        if (!ch) return std::move(ch).error();
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        const auto s = ++seq;
        std::optional<channels::Channel> side;
        Bytes msg;
        if (has_value && value.size() > kChunkAt) {
            auto c = channels::Channel::create(pool, {.capacity = kWindow, .block_size = 0});
            if (!c) return std::move(c).error().context("a side channel for a large value");
            side.emplace(std::move(*c));
            msg = header(op, flags | kChunked, i, s, chkpt, key.size());
            msg.insert(msg.end(), key.begin(), key.end());
            msg.push_back(std::byte{'b'});
            const auto n = static_cast<std::uint32_t>((value.size() + kChunk - 1) / kChunk);
            put_le<std::uint64_t>(msg, value.size());
            put_le<std::uint32_t>(msg, n);
            for (char c2 : side->descriptor().to_hex()) msg.push_back(static_cast<std::byte>(c2));
        } else {
            msg = header(op, flags, i, s, chkpt, key.size());
            msg.insert(msg.end(), key.begin(), key.end());
            if (has_value) {
                msg.push_back(std::byte{'b'});
                msg.insert(msg.end(), value.begin(), value.end());
            }
        }
        if (auto st = send_to(i, **ch, msg, deadline); !st) {
            if (side) (void)side->destroy();
            return st.error();
        }
        if (side) {
            for (std::size_t off = 0; off < value.size(); off += kChunk) {
                const auto piece = value.subspan(off, std::min(kChunk, value.size() - off));
                for (;;) {
                    auto st = side->send(piece, kSlice);
                    if (st) break;
                    if (auto c = check(i, deadline, "it does not take the pieces of a large value"); !c) {
                        (void)side->destroy();
                        return c.error();
                    }
                }
            }
        }
        auto r = wait_reply(i, s, deadline);
        if (side) (void)side->destroy();
        if (!r) return r;
        if (r->status == kOk || r->status == kNotFound) return r;
        std::string text(reinterpret_cast<const char*>(r->payload.data()), r->payload.size());
        const auto code = r->status == kFull ? Errc::no_space : Errc::invalid_argument;
        return Error(code, fmt::format("DDict {}: {}", name, text));
    }

    void disconnect() {
        for (auto& [i, ch] : refs) {
            auto msg = header(kDisconnect, 0, i, 0, 0, 0);
            (void)ch.send(msg, ch.is_local() ? channels::kTryOnce : channels::kForever);
        }
        refs.clear();
        if (reply) (void)reply->destroy();
        reply.reset();
    }
};

std::uint32_t DDict::manager_of(std::span<const std::byte> tagged_key, std::uint32_t n) {
    static const auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t k = 0; k < 256; ++k) {
            std::uint32_t c = k;
            for (int j = 0; j < 8; ++j) c = (c & 1U) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
            t[k] = c;
        }
        return t;
    }();
    std::uint32_t crc = 0xFFFFFFFFU;
    for (auto b : tagged_key) crc = table[(crc ^ static_cast<std::uint32_t>(b)) & 0xffU] ^ (crc >> 8);
    return (crc ^ 0xFFFFFFFFU) % n;
}

Result<DDict> DDict::attach(std::string_view serialized, std::chrono::milliseconds timeout) {
    auto text = base64_decode(serialized);
    if (!text) return make_error(Errc::invalid_argument, "DDict::attach: not a serialized DDict (bad base64)");
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("v", 0) != 1 || !j.contains("managers") ||
        !j["managers"].is_array() || j["managers"].empty())
        return make_error(Errc::invalid_argument, "DDict::attach: not a serialized version-1 DDict");
    auto gw = client::Gateway::connect_from_env();
    if (!gw) return std::move(gw).error().context("DDict::attach");
    auto session = client::Session::connect_from_env();
    if (!session) return std::move(session).error().context("DDict::attach");
    auto pool = session->attach_pool();
    if (!pool) return std::move(pool).error().context("DDict::attach: this node's pool");
    auto impl = std::make_unique<Impl>(std::move(*pool));
    impl->gw = std::move(*gw);
    impl->timeout = timeout;
    try {
        impl->name = j.value("name", std::string("?"));
        for (const auto& m : j["managers"]) {
            impl->managers.push_back({m.at("desc").get<std::string>(), m.at("node").get<std::uint32_t>(),
                                      m.at("pid").get<int>(), m.at("puid").get<std::uint64_t>(),
                                      m.value("boot", std::string())});
        }
    } catch (const nlohmann::json::exception& e) {
        return make_error(Errc::invalid_argument, "DDict::attach: a manager record is malformed: {}", e.what());
    }
    auto boot = read_small_file("/proc/sys/kernel/random/boot_id");
    impl->boot = boot.substr(0, std::min<std::size_t>(36, boot.size()));
    auto reply = channels::Channel::create(impl->pool, {.capacity = 64, .block_size = 1536});
    if (!reply) return std::move(reply).error().context("DDict::attach: the reply channel");
    impl->reply.emplace(std::move(*reply));
    return DDict(std::move(impl));
}

DDict::DDict(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DDict::DDict(DDict&&) noexcept = default;
DDict& DDict::operator=(DDict&&) noexcept = default;
DDict::~DDict() {
    if (impl_) impl_->disconnect();
}

std::size_t DDict::num_managers() const { return impl_->managers.size(); }
const std::string& DDict::name() const { return impl_->name; }

Status DDict::put(std::string_view key, std::span<const std::byte> value) {
    const auto kb = tagged_key(key);
    const auto i = manager_of(kb, static_cast<std::uint32_t>(impl_->managers.size()));
    auto r = impl_->call(i, kPut, 0, chkpt_, kb, value, true);
    if (!r) return std::move(r).error();
    return ok();
}

Status DDict::put(std::string_view key, std::string_view value) {
    return put(key, std::span<const std::byte>(reinterpret_cast<const std::byte*>(value.data()), value.size()));
}

Result<std::optional<Bytes>> DDict::get(std::string_view key) {
    const auto kb = tagged_key(key);
    const auto i = manager_of(kb, static_cast<std::uint32_t>(impl_->managers.size()));
    auto r = impl_->call(i, kGet, kPersist, chkpt_, kb, {}, false);
    if (!r) return std::move(r).error();
    if (r->status == kNotFound) return std::optional<Bytes>{};
    if (r->payload.empty() || r->payload[0] != std::byte{'b'})
        return make_error(Errc::unsupported, "DDict {}: the value of '{}' is a pickled Python object, not bytes",
                          impl_->name, key);
    return std::optional<Bytes>(Bytes(r->payload.begin() + 1, r->payload.end()));
}

Result<bool> DDict::erase(std::string_view key) {
    const auto kb = tagged_key(key);
    const auto i = manager_of(kb, static_cast<std::uint32_t>(impl_->managers.size()));
    auto r = impl_->call(i, kDel, 0, chkpt_, kb, {}, false);
    if (!r) return std::move(r).error();
    return r->status == kOk;
}

Result<bool> DDict::contains(std::string_view key) {
    const auto kb = tagged_key(key);
    const auto i = manager_of(kb, static_cast<std::uint32_t>(impl_->managers.size()));
    auto r = impl_->call(i, kContains, 0, chkpt_, kb, {}, false);
    if (!r) return std::move(r).error();
    return r->status == kOk;
}

Result<std::uint64_t> DDict::size() {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < impl_->managers.size(); ++i) {
        auto r = impl_->call(i, kLen, 0, chkpt_, {}, {}, false);
        if (!r) return std::move(r).error();
        if (r->payload.size() < 8) return make_error(Errc::protocol, "{}: a short len reply", impl_->manager_name(i));
        n += get_le<std::uint64_t>(r->payload.data());
    }
    return n;
}

Result<std::vector<std::string>> DDict::keys() {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < impl_->managers.size(); ++i) {
        auto r = impl_->call(i, kKeys, 0, chkpt_, {}, {}, false);
        if (!r) return std::move(r).error();
        const auto& p = r->payload;
        if (p.size() < 4) return make_error(Errc::protocol, "{}: a short keys reply", impl_->manager_name(i));
        const auto n = get_le<std::uint32_t>(p.data());
        std::size_t off = 4;
        for (std::uint32_t k = 0; k < n; ++k) {
            if (off + 4 > p.size()) return make_error(Errc::protocol, "{}: a keys reply is cut short", impl_->manager_name(i));
            const auto len = get_le<std::uint32_t>(p.data() + off);
            off += 4;
            if (off + len > p.size()) return make_error(Errc::protocol, "{}: a keys reply is cut short", impl_->manager_name(i));
            if (len >= 1 && p[off] == std::byte{'s'}) out.emplace_back(reinterpret_cast<const char*>(p.data() + off + 1), len - 1);
            off += len;
        }
    }
    return out;
}

}  // namespace dragon::ddict
