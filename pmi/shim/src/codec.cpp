// Pure helpers of the PMI shim: hex, the process mapping, ints.
#include "codec.hpp"

#include <charconv>
#include <limits>

namespace dragon::pmi::shim {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string strip_spaces(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        if (!is_space(c)) out.push_back(c);
    }
    return out;
}

// A tiny cursor over the mapping text; every accessor is bounds-checked.
struct Cursor {
    std::string_view s;
    std::size_t pos = 0;

    bool eat(char c) {
        if (pos < s.size() && s[pos] == c) {
            ++pos;
            return true;
        }
        return false;
    }
    bool eat(std::string_view word) {
        if (s.substr(pos, word.size()) == word) {
            pos += word.size();
            return true;
        }
        return false;
    }
    std::optional<long long> number() {
        std::size_t start = pos;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
        if (pos == start || pos - start > 9) return std::nullopt;
        return parse_int(s.substr(start, pos - start));
    }
};

}  // namespace

std::string hex_encode(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    std::string out;
    out.resize(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = kHexDigits[p[i] >> 4];
        out[2 * i + 1] = kHexDigits[p[i] & 0x0f];
    }
    return out;
}

bool hex_decode(std::string_view hex, void* out) {
    if (hex.size() % 2 != 0) return false;
    auto* p = static_cast<unsigned char*>(out);
    for (std::size_t i = 0; i < hex.size() / 2; ++i) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        p[i] = static_cast<unsigned char>((hi << 4) | lo);
    }
    return true;
}

std::optional<long long> parse_int(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    if (!text.empty() && text.front() == '+') text.remove_prefix(1);
    if (text.empty()) return std::nullopt;
    long long v = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
    return v;
}

std::optional<std::vector<int>> parse_int_list(std::string_view text) {
    std::vector<int> out;
    std::string s = strip_spaces(text);
    if (s.empty()) return out;
    std::size_t start = 0;
    while (true) {
        std::size_t comma = s.find(',', start);
        std::string_view item = std::string_view(s).substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        auto v = parse_int(item);
        if (!v || *v < std::numeric_limits<int>::min() || *v > std::numeric_limits<int>::max()) return std::nullopt;
        out.push_back(static_cast<int>(*v));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

std::optional<std::vector<int>> parse_process_mapping(std::string_view text, int nranks) {
    // Bounds that keep a hostile value from making us loop or allocate much.
    constexpr long long kMaxNode = 1 << 24;
    constexpr long long kMaxRanks = 1 << 24;
    if (nranks < 0 || nranks > kMaxRanks) return std::nullopt;
    std::string compact = strip_spaces(text);
    Cursor c{compact};
    struct Block {
        long long first, count, per_node;
    };
    std::vector<Block> blocks;
    if (!c.eat('(') || !c.eat("vector")) return std::nullopt;
    while (c.eat(',')) {
        if (!c.eat('(')) return std::nullopt;
        auto first = c.number();
        if (!first || !c.eat(',')) return std::nullopt;
        auto count = c.number();
        if (!count || !c.eat(',')) return std::nullopt;
        auto per = c.number();
        if (!per || !c.eat(')')) return std::nullopt;
        if (*first > kMaxNode || *count > kMaxNode || *first + *count > kMaxNode || *per > kMaxRanks)
            return std::nullopt;
        blocks.push_back({*first, *count, *per});
    }
    if (!c.eat(')') || c.pos != compact.size()) return std::nullopt;

    long long per_pass = 0;
    for (const auto& b : blocks) per_pass += b.count * b.per_node;
    if (nranks > 0 && per_pass == 0) return std::nullopt;

    std::vector<int> node_of(static_cast<std::size_t>(nranks), -1);
    int rank = 0;
    while (rank < nranks) {
        for (const auto& b : blocks) {
            for (long long n = 0; n < b.count && rank < nranks; ++n) {
                for (long long k = 0; k < b.per_node && rank < nranks; ++k) {
                    node_of[static_cast<std::size_t>(rank++)] = static_cast<int>(b.first + n);
                }
            }
        }
    }
    return node_of;
}

}  // namespace dragon::pmi::shim
