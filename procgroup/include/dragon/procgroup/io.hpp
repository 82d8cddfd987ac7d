// Per-process file names for stdin/stdout/stderr: a path pattern with
// %-escapes ("out.%r.txt") expanded for each process. The escapes follow
// srun's where they overlap (%t is srun's task id, our rank).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon::procgroup {

/// What the escapes of a path pattern stand for, for one process.
struct PathContext {
    std::uint32_t rank = 0;
    std::uint64_t puid = 0;
    std::uint32_t node_id = 0;
    std::uint64_t group_id = 0;
    std::string_view hostname;
};

/// Escapes: %r and %t the rank, %p the puid, %n the node id, %h the
/// hostname, %g the group id, %% a '%'. A decimal width between '%' and the
/// letter zero-pads numbers ("%4r" -> "0007"). Errc::invalid_argument for an
/// unknown escape, a dangling '%', a width over 32 or an empty pattern; the
/// message names the pattern and the offending escape. Pure.
Result<std::string> expand_path(std::string_view pattern, const PathContext& ctx);

/// Checks a pattern's escapes without expanding it (for refusing a group
/// before anything starts).
Status check_path_pattern(std::string_view pattern);

/// True when the pattern names a different file for each process (it uses
/// %r, %t or %p); false when processes share the file it names.
bool varies_by_process(std::string_view pattern);

/// True when the pattern names a file per node (it uses %n or %h).
bool varies_by_node(std::string_view pattern);

/// Who empties an output file at a group's start. Members open output files
/// for appending (a restarted rank adds to its earlier runs), so each file is
/// emptied exactly once, before anything is written to it: a file of its own
/// by the process, at its first start; a file per node by that node's local
/// rank 0; a file the whole group shares by node 0, before any member starts.
enum class FileOwner { process, node, group };
FileOwner file_owner(std::string_view pattern);

}  // namespace dragon::procgroup
