// Formatting and parsing of run-scoped resource names.
#include "dragon/common/names.hpp"

#include <charconv>

namespace dragon::names {

std::string shm_name(const RunId& run, std::uint32_t node, std::string_view what) {
    return fmt::format("{}{}-n{}-{}", kPrefix, run.str(), node, what);
}

std::optional<ShmNameParts> parse_shm_name(std::string_view name) {
    if (!name.starts_with(kPrefix)) return std::nullopt;
    name.remove_prefix(kPrefix.size());
    auto dash = name.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    auto run = RunId::parse(name.substr(0, dash));
    if (!run) return std::nullopt;
    name.remove_prefix(dash + 1);
    if (!name.starts_with('n')) return std::nullopt;
    name.remove_prefix(1);
    if (name.size() > 1 && name[0] == '0' && name[1] != '-') return std::nullopt;  // canonical only: n1, not n01
    std::uint32_t node = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), node);
    if (ec != std::errc{} || p == name.data() || p == name.data() + name.size() || *p != '-')
        return std::nullopt;
    std::string_view what(p + 1, static_cast<std::size_t>(name.data() + name.size() - (p + 1)));
    if (what.empty()) return std::nullopt;
    for (char c : what) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return std::nullopt;
    }
    return ShmNameParts{run->str(), node, std::string(what)};
}

std::string agent_socket_name(const RunId& run, std::uint32_t node) {
    return fmt::format("dragon-{}-n{}-agent", run.str(), node);
}

std::string pmix_dir(std::string_view run, std::uint32_t node) {
    return fmt::format("/tmp/dragon-{}-n{}-pmix", run, node);
}

}  // namespace dragon::names
