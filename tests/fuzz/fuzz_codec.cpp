// libFuzzer target: arbitrary bytes through the frame splitter and every
// message decoder. Must never crash, hang, or trip ASan/UBSan.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dragon/common/framing.hpp"
#include "dragon/common/messages.hpp"

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

    // 2. As the body of each message type, so every decoder sees raw bytes
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
