// The rules a ProcessGroup's spec must meet, in one place: the CLI, the C++
// and Python client libraries and node 0's global services all ask here, so
// a user hears the same refusal wherever the group was made, and a rule
// changes in one file.
#pragma once

#include <cstdint>
#include <string_view>

#include "dragon/common/messages.hpp"
#include "dragon/common/result.hpp"

namespace dragon::msg {

/// The most processes one group may have.
inline constexpr std::uint64_t kMaxGroupSize = 1'000'000;

/// "none", "simple", "cray" or "pmix"; Errc::invalid_argument naming the value otherwise.
Result<PmiMode> pmi_mode_from(std::string_view name);
const char* name_of(PmiMode m);

/// The options that must agree with each other: restart and PMI exclude each
/// other (an MPI job cannot take a replacement rank), and a PMI port serves
/// simple or Cray PMI only. Errc::invalid_argument with the reason.
Status check_group_options(bool restart, PmiMode pmi, bool pmi_port);

/// Everything of a spec that does not depend on who asks or where it runs:
/// its options, at least one and at most kMaxGroupSize processes, and a
/// program for every entry. Errc::invalid_argument with the reason.
Status check_group_spec(const GroupSpec& spec);

}  // namespace dragon::msg
