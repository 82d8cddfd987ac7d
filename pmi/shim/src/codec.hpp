// Pure, allocation-only helpers of the PMI shim: hex codec, process-mapping
// parser, PMI-1 line and PMI-2 frame codecs. No I/O, so they are unit-tested.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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

/// A decoded wire message: the command and the other key=value pairs in order.
struct Message {
    std::string cmd;
    std::vector<std::pair<std::string, std::string>> kv;

    /// Value of the first pair named `key`, or nullptr.
    const std::string* find(std::string_view key) const;
};

/// Parses one PMI-1 line (without its newline): space-separated `key=value`
/// words; the first must be `cmd=` (or `mcmd=`). A word without `=` is kept
/// with an empty value. Returns nullopt when there is no command.
std::optional<Message> parse_pmi1_line(std::string_view line);

/// Encodes a PMI-2 frame body `cmd=X;k=v;...;` (`;` in values doubled) and
/// prefixes it with its 6-digit decimal length. Returns nullopt when the body
/// exceeds 999999 bytes.
std::optional<std::string> encode_pmi2_frame(const Message& m);

/// Parses a PMI-2 frame body (without the length prefix). `;;` inside a value
/// is a literal `;`. Trailing bytes after the last `;` are ignored (some
/// servers pad). Returns nullopt when the first pair is not `cmd`.
std::optional<Message> parse_pmi2_body(std::string_view body);

/// Parses a comma-separated list of decimal ints (`1,2,3`, whitespace
/// tolerated). Returns nullopt on any junk.
std::optional<std::vector<int>> parse_int_list(std::string_view text);

/// Parses a whole decimal int (optional sign); nullopt on junk or overflow.
std::optional<long long> parse_int(std::string_view text);

}  // namespace dragon::pmi::shim
