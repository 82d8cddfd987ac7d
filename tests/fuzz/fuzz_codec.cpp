// libFuzzer target: arbitrary bytes through the frame splitter, the payload
// decoder and every message decoder. Must never crash, hang, or trip ASan/UBSan.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "dragon/common/framing.hpp"
#include "dragon/common/messages.hpp"
#include "dragon/common/payload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);

    // 1. As a stream of frames, fed in two pieces to exercise reassembly.
    dragon::wire::FrameDecoder dec(1U << 16);
    dec.feed(bytes.substr(0, size / 2));
    dec.feed(bytes.substr(size / 2));
    for (;;) {
        auto f = dec.next();
        if (!f || !*f) break;
        (void)dragon::msg::validate(**f);
    }

    // 2. As frames and payload messages (what a lane or a transport peer
    //    reads), fed in reads of the decoder's choosing; odd payloads go into
    //    a destination, even ones come out in pieces.
    {
        dragon::wire::PayloadDecoder pd(dragon::wire::PayloadDecoder::Options{.max_frame_body = 1U << 16, .read_size = 64});
        std::vector<std::byte> dest;
        std::string_view rest = bytes;
        for (bool more = true; more;) {
            auto ev = pd.next();
            if (!ev) break;
            if (ev->kind == dragon::wire::PayloadDecoder::Kind::payload_begin && (ev->size & 1U) && ev->size < (1U << 20)) {
                dest.assign(ev->size, std::byte{0});
                if (!pd.set_destination(dest)) break;
            }
            if (ev->kind != dragon::wire::PayloadDecoder::Kind::need_more) continue;
            if (rest.empty()) break;
            auto sp = pd.read_space();
            std::size_t n = std::min(rest.size(), sp.direct.size());
            if (n > 0) std::memcpy(sp.direct.data(), rest.data(), n);
            const std::size_t m = std::min(rest.size() - n, sp.buffer.size());
            if (m > 0) std::memcpy(sp.buffer.data(), rest.data() + n, m);
            rest.remove_prefix(n + m);
            pd.commit(n + m);
            more = n + m > 0;
        }
    }

    // 3. As the body of each message type, so every decoder sees raw bytes
    //    without needing a valid header first.
    if (size >= 1) {
        std::apply([&](auto... m) {
            std::size_t i = 0;
            ((i++ == data[0] % std::tuple_size_v<dragon::msg::AllMessages>
                  ? (void)dragon::wire::decode_exact<decltype(m)>(bytes.substr(1))
                  : void()),
             ...);
        }, dragon::msg::AllMessages{});
    }
    return 0;
}
