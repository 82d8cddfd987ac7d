// The transport's own messages (types 64-79) and the peer handshake as a pure
// state machine (bytes in, bytes out, no I/O), specified in docs/transport.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "dragon/common/codec.hpp"
#include "dragon/common/framing.hpp"
#include "dragon/common/payload.hpp"
#include "dragon/common/result.hpp"
#include "dragon/transport/run_secret.hpp"

namespace dragon::transport {

/// Version of the transport protocol (handshake and payload framing).
inline constexpr std::uint32_t kTransportVersion = 1;
inline constexpr std::size_t kNonceSize = 32;
inline constexpr std::size_t kMacSize = 32;
/// Frame bodies above this are refused while the peer is not yet authenticated.
inline constexpr std::size_t kHandshakeMaxBody = 256;
/// Payloads travel in chunk frames of at most this many bytes (the payload
/// framing lives in common, dragon/common/payload.hpp: lanes speak it too).
inline constexpr std::size_t kChunkSize = wire::kPayloadChunkSize;
/// Frame types 64-79 belong to the transport; applications use the others.
inline constexpr std::uint16_t kFirstTransportType = 64;
inline constexpr std::uint16_t kLastTransportType = 79;

enum class MsgType : std::uint16_t {
    peer_challenge = 64,
    peer_response = 65,
    peer_accept = 66,
    peer_reject = 67,
    payload_begin = wire::kPayloadBeginType,
    payload_chunk = wire::kPayloadChunkType,  // body: raw payload bytes, no codec
};

using wire::is_transport_type;
static_assert(is_transport_type(kFirstTransportType) && is_transport_type(kLastTransportType) &&
              !is_transport_type(kFirstTransportType - 1) && !is_transport_type(kLastTransportType + 1));

/// Both directions, first frame of each side: who I am, whom I expect, my nonce.
struct PeerChallenge {
    static constexpr MsgType kType = MsgType::peer_challenge;
    std::uint32_t version = kTransportVersion;
    std::uint32_t node_id = 0;           // the sender's node id
    std::uint32_t expected_node_id = 0;  // the node id the sender believes it talks to
    std::string nonce;                   // kNonceSize fresh random bytes
    DRAGON_WIRE_FIELDS(version, node_id, expected_node_id, nonce)
};

/// Both directions: the sender's proof, HMAC-SHA256(secret, transcript(role)).
struct PeerResponse {
    static constexpr MsgType kType = MsgType::peer_response;
    std::string mac;  // kMacSize bytes
    DRAGON_WIRE_FIELDS(mac)
};

/// Acceptor -> initiator: the initiator's proof verified; the link is up.
struct PeerAccept {
    static constexpr MsgType kType = MsgType::peer_accept;
    auto wire_fields() const { return std::tie(); }
    auto wire_fields() { return std::tie(); }
};

/// Either direction, instead of the next handshake frame: why the sender
/// refuses (a dragon::Errc value and a short reason); it closes afterwards.
struct PeerReject {
    static constexpr MsgType kType = MsgType::peer_reject;
    std::uint16_t code = 0;
    std::string reason;
    DRAGON_WIRE_FIELDS(code, reason)
};

using wire::PayloadBegin;

using HandshakeMessages = std::tuple<PeerChallenge, PeerResponse, PeerAccept, PeerReject>;

/// Who proves: the side that connected (initiator) or the side that accepted.
enum class Role : std::uint8_t { initiator = 1, acceptor = 2 };

using Nonce = std::array<std::byte, kNonceSize>;
using Mac = std::array<std::byte, kMacSize>;

/// HMAC-SHA256 keyed with the secret over the transcript of docs/transport.md:
/// "dragon/transport/tcp/v1\0", role, initiator id, acceptor id, both nonces.
Mac handshake_mac(const RunSecret& secret, Role prover, std::uint32_t initiator_id, std::uint32_t acceptor_id,
                  const Nonce& initiator_nonce, const Nonce& acceptor_nonce);

/// One side of the handshake. Feed it every frame the peer sends; send what
/// it returns. Errors end the handshake: protocol (malformed or unexpected
/// frame), permission_denied (wrong MAC: another secret), invalid_argument
/// (node ids do not match), unsupported (another transport version), or the
/// peer's own refusal. reject_frame() then gives the frame to send before
/// closing (for errors a dragon peer can act on).
class Handshake {
public:
    /// The connecting side; it sends first (initial_output()).
    static Result<Handshake> initiator(const RunSecret& secret, std::uint32_t my_node_id,
                                       std::uint32_t expected_peer_node_id);
    /// The accepting side; it learns the peer's node id from its challenge.
    static Result<Handshake> acceptor(const RunSecret& secret, std::uint32_t my_node_id);

    /// The frames to send before any input (the initiator's challenge; empty for the acceptor).
    [[nodiscard]] std::string initial_output() const;

    struct Step {
        std::string out;    // frames to send now (may be empty)
        bool done = false;  // authenticated: the next bytes on the stream are application frames
    };
    /// Consumes one frame from the peer. After done() or an error, any call is an error.
    Result<Step> on_frame(const wire::Frame& frame);

    [[nodiscard]] bool done() const { return state_ == State::done; }
    [[nodiscard]] Role role() const { return role_; }
    /// The peer's node id (the acceptor knows it after the first frame; authenticated once done()).
    [[nodiscard]] std::optional<std::uint32_t> peer_node_id() const { return peer_id_; }

    /// A peer_reject frame carrying `why` (truncated to fit the handshake frame limit).
    [[nodiscard]] static std::string reject_frame(const Error& why);

private:
    enum class State : std::uint8_t { await_challenge, await_response, await_accept, done, failed };
    Handshake(const RunSecret& secret, Role role, std::uint32_t my_id) : secret_(secret), role_(role), my_id_(my_id) {}
    Result<Step> on_challenge(const wire::Frame& frame);
    Result<Step> on_response(const wire::Frame& frame);
    [[nodiscard]] Mac mac_of(Role prover) const;

    RunSecret secret_;
    Role role_;
    State state_ = State::await_challenge;
    std::uint32_t my_id_;
    std::optional<std::uint32_t> peer_id_;
    std::uint32_t expected_peer_id_ = 0;  // initiator only
    Nonce my_nonce_{};
    Nonce peer_nonce_{};
};

using wire::FrameHeader;
using wire::parse_frame_header;

/// One complete frame carrying `msg` (transport message types).
template <class M>
std::string transport_frame(const M& msg) {
    std::string out;
    wire::append_frame_header(out, static_cast<std::uint16_t>(M::kType), 0);
    wire::Writer w(out);
    wire::encode(w, msg);
    const std::size_t len = out.size() - wire::kFrameHeaderSize;
    for (std::size_t i = 0; i < 4; ++i) out[4 + i] = static_cast<char>((len >> (8 * i)) & 0xffU);
    return out;
}

}  // namespace dragon::transport
