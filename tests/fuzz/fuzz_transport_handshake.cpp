// libFuzzer target: arbitrary bytes as the peer's side of a transport
// handshake (both roles) and through every transport message decoder. Must
// never crash, hang, or trip ASan/UBSan.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dragon/common/framing.hpp"
#include "dragon/transport/handshake.hpp"

namespace {

using namespace dragon;
using namespace dragon::transport;

const RunSecret& secret() {
    static const RunSecret s =
        std::move(RunSecret::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")).value();
    return s;
}

// Feeds the bytes as a stream of frames into one side, the way the socket
// layer does: header checked first (handshake limit), then the body.
void drive(Handshake& hs, std::string_view bytes) {
    (void)hs.initial_output();
    while (bytes.size() >= wire::kFrameHeaderSize) {
        auto h = parse_frame_header(bytes.data(), kHandshakeMaxBody);
        if (!h) return;
        if (bytes.size() < wire::kFrameHeaderSize + h->length) return;
        wire::Frame f{h->type, std::string(bytes.substr(wire::kFrameHeaderSize, h->length))};
        bytes.remove_prefix(wire::kFrameHeaderSize + h->length);
        auto step = hs.on_frame(f);
        if (!step) {
            (void)Handshake::reject_frame(step.error());
            return;
        }
        if (step->done) return;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);

    // 1. The peer's frames, to an acceptor (node 1) and to an initiator
    //    (node 2, expecting node 1).
    if (auto acc = Handshake::acceptor(secret(), 1)) drive(*acc, bytes);
    if (auto ini = Handshake::initiator(secret(), 2, 1)) drive(*ini, bytes);

    // 2. As the body of each transport message, without a valid header first.
    if (size >= 1) {
        const std::string_view body = bytes.substr(1);
        switch (data[0] % 5) {
            case 0: (void)wire::decode_exact<PeerChallenge>(body); break;
            case 1: (void)wire::decode_exact<PeerResponse>(body); break;
            case 2: (void)wire::decode_exact<PeerAccept>(body); break;
            case 3: (void)wire::decode_exact<PeerReject>(body); break;
            default: (void)wire::decode_exact<PayloadBegin>(body); break;
        }
    }
    return 0;
}
