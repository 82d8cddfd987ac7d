// libFuzzer target: arbitrary bytes as a hostlist expression, and as a list
// of host names (one per line) to compress. Must never crash, hang, or trip
// ASan/UBSan, and whatever compresses must expand back to the same names.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/hostlist.hpp"

namespace {

// Small enough that a fuzzer's "n[0-999999]" costs microseconds, not memory.
constexpr std::size_t kMaxHosts = 4096;

void require(bool ok) {
    if (!ok) std::abort();
}

void round_trip(const std::vector<std::string>& names) {
    auto packed = dragon::compress_hostlist(names);
    if (!packed) return;
    if (names.empty()) {
        require(packed->empty());
        return;
    }
    auto back = dragon::expand_hostlist(*packed, names.size());
    require(back && *back == names);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);

    // 1. As an expression.
    auto names = dragon::expand_hostlist(bytes, kMaxHosts);
    if (names) {
        require(!names->empty() && names->size() <= kMaxHosts);
        for (const auto& n : *names) require(!n.empty() && n.size() <= dragon::kHostlistMaxNameLength);
        round_trip(*names);
    }

    // 2. As names, one per line.
    std::vector<std::string> lines;
    for (std::size_t start = 0; start <= bytes.size() && lines.size() < kMaxHosts;) {
        std::size_t end = bytes.find('\n', start);
        if (end == std::string_view::npos) end = bytes.size();
        lines.emplace_back(bytes.substr(start, end - start));
        start = end + 1;
    }
    round_trip(lines);
    return 0;
}
