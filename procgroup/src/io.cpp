// Expansion of per-process path patterns (see io.hpp).
#include "dragon/procgroup/io.hpp"

#include <fmt/format.h>

namespace dragon::procgroup {

namespace {
constexpr std::string_view kKnown = "%r or %t rank, %p puid, %n node id, %h hostname, %g group id, %% a percent sign";
constexpr unsigned kMaxWidth = 32;
}  // namespace

Result<std::string> expand_path(std::string_view pattern, const PathContext& ctx) {
    if (pattern.empty()) return Error(Errc::invalid_argument, "empty path pattern");
    std::string out;
    out.reserve(pattern.size() + 16);
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c != '%') {
            out += c;
            continue;
        }
        const std::size_t start = i++;
        unsigned width = 0;
        while (i < pattern.size() && pattern[i] >= '0' && pattern[i] <= '9') {
            width = width * 10 + static_cast<unsigned>(pattern[i] - '0');
            if (width > kMaxWidth)
                return make_error(Errc::invalid_argument, "path pattern '{}': width at offset {} is over {}", pattern,
                                  start, kMaxWidth);
            ++i;
        }
        if (i >= pattern.size())
            return make_error(Errc::invalid_argument, "path pattern '{}' ends in an unfinished escape (known: {})",
                              pattern, kKnown);
        auto number = [&](std::uint64_t v) { out += fmt::format("{:0{}}", v, width); };
        switch (pattern[i]) {
            case 'r':
            case 't': number(ctx.rank); break;
            case 'p': number(ctx.puid); break;
            case 'n': number(ctx.node_id); break;
            case 'g': number(ctx.group_id); break;
            case 'h': out += ctx.hostname; break;
            case '%': out += '%'; break;
            default:
                return make_error(Errc::invalid_argument, "path pattern '{}': unknown escape '{}' (known: {})",
                                  pattern, pattern.substr(start, i + 1 - start), kKnown);
        }
    }
    return out;
}

Status check_path_pattern(std::string_view pattern) {
    DRAGON_CHECK(expand_path(pattern, PathContext{}));
    return ok();
}

namespace {
bool uses_escape(std::string_view pattern, std::string_view letters) {
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] != '%') continue;
        ++i;
        while (i < pattern.size() && pattern[i] >= '0' && pattern[i] <= '9') ++i;
        if (i < pattern.size() && letters.find(pattern[i]) != std::string_view::npos) return true;
    }
    return false;
}
}  // namespace

bool varies_by_process(std::string_view pattern) { return uses_escape(pattern, "rtp"); }

bool varies_by_node(std::string_view pattern) { return uses_escape(pattern, "nh"); }

FileOwner file_owner(std::string_view pattern) {
    if (varies_by_process(pattern)) return FileOwner::process;
    return varies_by_node(pattern) ? FileOwner::node : FileOwner::group;
}

}  // namespace dragon::procgroup
