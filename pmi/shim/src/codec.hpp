// Pure helpers of the PMI shim for what values hold: hex, the process mapping, ints (the wire is dragon::pmi_wire).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dragon::pmi::shim {

/// Lower-case hex of `n` bytes at `data` (2*n characters).
std::string hex_encode(const void* data, std::size_t n);

/// Decodes `hex` (either case) into `out` (which must hold hex.size()/2
/// bytes). Returns false on an odd length or a non-hex digit; `out` is then
/// partly written.
bool hex_decode(std::string_view hex, void* out);

/// Node id of every rank, from the MPICH `PMI_process_mapping` value
/// `(vector,(first_node,node_count,ranks_per_node),...)`. The block list is
/// applied in order and repeated until all `nranks` ranks have a node (MPICH's
/// reading: `(vector,(0,2,1))` is cyclic over two nodes). Whitespace is
/// ignored. Returns nullopt on any syntax error, a negative or absurd number,
/// or a list that assigns no rank per pass.
std::optional<std::vector<int>> parse_process_mapping(std::string_view text, int nranks);

/// Parses a comma-separated list of decimal ints (`1,2,3`, whitespace
/// tolerated). Returns nullopt on any junk.
std::optional<std::vector<int>> parse_int_list(std::string_view text);

/// Parses a whole decimal int (optional sign); nullopt on junk or overflow.
std::optional<long long> parse_int(std::string_view text);

}  // namespace dragon::pmi::shim
