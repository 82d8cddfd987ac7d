// Slurm hostlist expressions ("n[1-4,7],login1"): expanded to host names and back.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon {

/// Expansion refuses expressions that would make more names than this.
inline constexpr std::size_t kHostlistMaxHosts = std::size_t{1} << 20;
/// ... or a name longer than this (Slurm's node names are far shorter).
inline constexpr std::size_t kHostlistMaxNameLength = 255;

/// Expands a hostlist expression, as in SLURM_JOB_NODELIST, into its names,
/// in order, duplicates kept (as `scontrol show hostnames` does):
///
///   "a,b"               -> a b           comma-separated groups
///   "n[1-3,7]"          -> n1 n2 n3 n7   ranges and single values in brackets
///   "n[08-10]"          -> n08 n09 n10   each range keeps the width of its lower bound
///   "r[1-2]-n[1-2]"     -> r1-n1 r1-n2 r2-n1 r2-n2   several brackets: cartesian
///                                        product, in Slurm's order: the last bracket
///                                        varies fastest, then the first, the second,
///                                        ..., the last but one slowest
///   "n[1-2]-ib"         -> n1-ib n2-ib   text after a bracket (22.05's scontrol
///                                        refuses this; later Slurm accepts it)
///
/// Fails with Errc::invalid_argument, naming the byte position (from 0) and
/// the problem, for: an empty expression or name (",n1", "n1,,n2"), an
/// unbalanced or nested bracket, an empty range ("n[]", "n[1,]"), a
/// descending range ("n[3-1]"), a bound that is missing or not decimal
/// digits ("n[1-]", "n[a-b]") or has more than 18 of them, whitespace or
/// control characters, a name longer than kHostlistMaxNameLength, or more
/// than `max_hosts` names in all. Stricter than Slurm, which skips empty
/// names and reads "n[1-]" as n1. Does not block; the size is checked
/// before anything is built.
Result<std::vector<std::string>> expand_hostlist(std::string_view expr,
                                                 std::size_t max_hosts = kHostlistMaxHosts);

/// The inverse, as `scontrol show hostlist` writes it: order kept, names next
/// to each other that differ only in a trailing number merge into one
/// bracket ("n1,n2,n3,n5,m1,n7" -> "n[1-3,5],m1,n7"), so expanding the result
/// gives `hosts` back exactly. Fails with Errc::invalid_argument for an empty
/// name or one that expand_hostlist would not read back (brackets, commas,
/// whitespace, control characters, too long). "" for no hosts.
Result<std::string> compress_hostlist(const std::vector<std::string>& hosts);

}  // namespace dragon
