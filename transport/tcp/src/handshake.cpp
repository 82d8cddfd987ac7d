// The peer handshake state machine and its HMAC transcript (docs/transport.md).
#include "dragon/transport/handshake.hpp"

#include <sys/random.h>

#include <cstring>
#include <string_view>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dragon/common/sys.hpp"

namespace dragon::transport {

namespace {

constexpr std::string_view kTranscriptTag{"dragon/transport/tcp/v1\0", 24};

Status fill_random(Nonce& n) {
    std::size_t got = 0;
    while (got < n.size()) {
        auto r = sys::call("getrandom", [&] { return ::getrandom(n.data() + got, n.size() - got, 0); });
        if (!r) return std::move(r).error().context("making a handshake nonce");
        got += static_cast<std::size_t>(*r);
    }
    return ok();
}

std::string_view as_chars(const auto& bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

template <class M>
Result<M> decode_frame(const wire::Frame& f) {
    if (f.type != static_cast<std::uint16_t>(M::kType))
        return make_error(Errc::protocol, "handshake: expected message type {}, got {}",
                          static_cast<unsigned>(M::kType), f.type);
    auto m = wire::decode_exact<M>(f.body);
    if (!m) return std::move(m).error().context("handshake");
    return m;
}

Error refusal_of(const wire::Frame& f) {
    auto r = wire::decode_exact<PeerReject>(f.body);
    if (!r) return {Errc::protocol, "handshake: malformed peer_reject: " + r.error().message()};
    auto code = static_cast<Errc>(r->code);
    if (r->code < static_cast<std::uint16_t>(Errc::invalid_argument) ||
        r->code > static_cast<std::uint16_t>(Errc::internal))
        code = Errc::protocol;
    std::string reason = r->reason;
    for (char& c : reason)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';  // log-safe
    return {code, "refused by the peer: " + reason};
}

}  // namespace

Mac handshake_mac(const RunSecret& secret, Role prover, std::uint32_t initiator_id, std::uint32_t acceptor_id,
                  const Nonce& initiator_nonce, const Nonce& acceptor_nonce) {
    std::string t;
    t.reserve(kTranscriptTag.size() + 1 + 8 + 2 * kNonceSize);
    t.append(kTranscriptTag);
    wire::Writer w(t);
    w.scalar(static_cast<std::uint8_t>(prover));
    w.scalar(initiator_id);
    w.scalar(acceptor_id);
    t.append(as_chars(initiator_nonce));
    t.append(as_chars(acceptor_nonce));
    Mac mac{};
    unsigned int len = 0;
    const auto key = secret.bytes();
    ::HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(t.data()),
           t.size(), reinterpret_cast<unsigned char*>(mac.data()), &len);
    return mac;
}

Result<Handshake> Handshake::initiator(const RunSecret& secret, std::uint32_t my_node_id,
                                       std::uint32_t expected_peer_node_id) {
    Handshake h(secret, Role::initiator, my_node_id);
    h.expected_peer_id_ = expected_peer_node_id;
    DRAGON_CHECK(fill_random(h.my_nonce_));
    return h;
}

Result<Handshake> Handshake::acceptor(const RunSecret& secret, std::uint32_t my_node_id) {
    Handshake h(secret, Role::acceptor, my_node_id);
    DRAGON_CHECK(fill_random(h.my_nonce_));
    return h;
}

std::string Handshake::initial_output() const {
    if (role_ != Role::initiator) return {};
    return transport_frame(PeerChallenge{.version = kTransportVersion,
                                         .node_id = my_id_,
                                         .expected_node_id = expected_peer_id_,
                                         .nonce = std::string(as_chars(my_nonce_))});
}

Mac Handshake::mac_of(Role prover) const {
    const bool me_initiator = role_ == Role::initiator;
    const std::uint32_t peer = peer_id_.value_or(0);
    return handshake_mac(secret_, prover, me_initiator ? my_id_ : peer, me_initiator ? peer : my_id_,
                         me_initiator ? my_nonce_ : peer_nonce_, me_initiator ? peer_nonce_ : my_nonce_);
}

Result<Handshake::Step> Handshake::on_frame(const wire::Frame& frame) {
    if (state_ == State::done || state_ == State::failed)
        return Error(Errc::protocol, "handshake: frame after the handshake ended");
    Result<Step> r = [&]() -> Result<Step> {
        if (frame.type == static_cast<std::uint16_t>(MsgType::peer_reject)) return refusal_of(frame);
        switch (state_) {
            case State::await_challenge: return on_challenge(frame);
            case State::await_response: return on_response(frame);
            case State::await_accept: {
                DRAGON_CHECK(decode_frame<PeerAccept>(frame));
                state_ = State::done;
                return Step{.out = {}, .done = true};
            }
            default: return Error(Errc::internal, "handshake: bad state");
        }
    }();
    if (!r) state_ = State::failed;
    return r;
}

Result<Handshake::Step> Handshake::on_challenge(const wire::Frame& frame) {
    auto c = DRAGON_TRY(decode_frame<PeerChallenge>(frame));
    if (c.version != kTransportVersion)
        return make_error(Errc::unsupported, "transport version {} is not supported (this side speaks {})",
                          c.version, kTransportVersion);
    if (c.nonce.size() != kNonceSize)
        return make_error(Errc::protocol, "handshake: nonce of {} bytes (must be {})", c.nonce.size(), kNonceSize);
    if (c.expected_node_id != my_id_)
        return make_error(Errc::invalid_argument, "the peer expected node {}, but this is node {}",
                          c.expected_node_id, my_id_);
    if (role_ == Role::initiator && c.node_id != expected_peer_id_)
        return make_error(Errc::invalid_argument, "expected node {}, but the peer is node {}", expected_peer_id_,
                          c.node_id);
    peer_id_ = c.node_id;
    std::memcpy(peer_nonce_.data(), c.nonce.data(), kNonceSize);
    state_ = State::await_response;
    if (role_ == Role::initiator) return Step{};
    // Acceptor: our challenge and our proof in one write.
    std::string out = transport_frame(PeerChallenge{.version = kTransportVersion,
                                                    .node_id = my_id_,
                                                    .expected_node_id = c.node_id,
                                                    .nonce = std::string(as_chars(my_nonce_))});
    out += transport_frame(PeerResponse{.mac = std::string(as_chars(mac_of(Role::acceptor)))});
    return Step{.out = std::move(out), .done = false};
}

Result<Handshake::Step> Handshake::on_response(const wire::Frame& frame) {
    auto r = DRAGON_TRY(decode_frame<PeerResponse>(frame));
    const Role prover = role_ == Role::initiator ? Role::acceptor : Role::initiator;
    const Mac want = mac_of(prover);
    if (r.mac.size() != kMacSize || CRYPTO_memcmp(r.mac.data(), want.data(), kMacSize) != 0)
        return Error(Errc::permission_denied,
                     "authentication failed: the peer's proof does not match the run secret (another run?)");
    if (role_ == Role::initiator) {
        state_ = State::await_accept;
        return Step{.out = transport_frame(PeerResponse{.mac = std::string(as_chars(mac_of(Role::initiator)))}),
                    .done = false};
    }
    state_ = State::done;
    return Step{.out = transport_frame(PeerAccept{}), .done = true};
}

std::string Handshake::reject_frame(const Error& why) {
    // Fits kHandshakeMaxBody: 2 (code) + 4 (length) + reason.
    std::string reason = why.message().substr(0, kHandshakeMaxBody - 6);
    return transport_frame(PeerReject{.code = static_cast<std::uint16_t>(why.code()), .reason = std::move(reason)});
}

}  // namespace dragon::transport
