// The rules a ProcessGroup's spec must meet (group_rules.hpp).
#include "dragon/common/group_rules.hpp"

namespace dragon::msg {

Result<PmiMode> pmi_mode_from(std::string_view name) {
    for (auto m : {PmiMode::none, PmiMode::simple, PmiMode::cray, PmiMode::pmix})
        if (name == name_of(m)) return m;
    if (name.empty()) return PmiMode::none;
    return make_error(Errc::invalid_argument, "pmi: unknown '{}' (none, simple, cray, pmix)", name);
}

const char* name_of(PmiMode m) {
    switch (m) {
        case PmiMode::none: return "none";
        case PmiMode::simple: return "simple";
        case PmiMode::cray: return "cray";
        case PmiMode::pmix: return "pmix";
    }
    return "?";
}

Status check_group_options(bool restart, PmiMode pmi, bool pmi_port) {
    if (restart && pmi != PmiMode::none)
        return Error(Errc::invalid_argument,
                     "restart cannot be combined with PMI: an MPI job cannot take a replacement rank");
    if (pmi_port && pmi != PmiMode::simple && pmi != PmiMode::cray)
        return make_error(Errc::invalid_argument, "a PMI port needs simple or cray PMI, not {}", name_of(pmi));
    return ok();
}

Status check_group_spec(const GroupSpec& spec) {
    std::uint64_t total = 0;
    for (const auto& e : spec.entries) total += e.count;
    if (total == 0) return Error(Errc::invalid_argument, "a group needs at least one process");
    if (total > kMaxGroupSize)
        return make_error(Errc::invalid_argument, "a group of {} processes is too large (at most {})", total,
                          kMaxGroupSize);
    for (const auto& e : spec.entries)
        if (e.count > 0 && e.proc.argv.empty()) return Error(Errc::invalid_argument, "a group entry has an empty argv");
    return check_group_options(spec.restart, spec.pmi, spec.pmi_port);
}

}  // namespace dragon::msg
