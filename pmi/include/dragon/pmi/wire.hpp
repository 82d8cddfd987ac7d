// The simple PMI wire protocols (docs/pmi.md): PMI-1 lines and PMI-2
// length-prefixed frames, parsed from untrusted bytes and formatted.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::pmi {

// Limits. The PMI-1 ones are what the server announces in `maxes`, and what
// MPICH's simple client (a 1024-byte line buffer) can take.
inline constexpr std::size_t kMaxLine = 1024;         // a PMI-1 line, newline included
inline constexpr std::size_t kMaxKvsName = 256;
inline constexpr std::size_t kMaxKey = 64;
inline constexpr std::size_t kMaxValue = 1024;
inline constexpr std::size_t kMaxFrame = 64 * 1024;   // a PMI-2 frame body we accept
inline constexpr std::size_t kMaxSpawnLines = 1024;   // lines of one `mcmd=spawn` request

/// One request or reply: the command and its key=value arguments, in order.
struct Command {
    std::string cmd;
    std::vector<std::pair<std::string, std::string>> args;

    /// The value of the first argument named `key`, or null.
    [[nodiscard]] const std::string* get(std::string_view key) const;
};

using Args = std::initializer_list<std::pair<std::string_view, std::string_view>>;

/// Parses one PMI-1 line without its newline: `cmd=NAME key=value ...`
/// (or `mcmd=NAME` for the first line of a multi-line request). Values carry
/// no spaces; a token without '=' or a missing cmd is an error.
Result<Command> parse_v1(std::string_view line);

/// Parses one PMI-2 frame body (what follows the 6-digit length):
/// `cmd=NAME;key=value;...;` where ";;" stands for a ';' inside a value.
/// Bytes after the last ';' are ignored (some clients pad frames).
Result<Command> parse_v2(std::string_view body);

/// `cmd=NAME k=v ...\n`.
std::string format_v1(std::string_view cmd, Args args = {});

/// The 6-digit length and `cmd=NAME;k=v;...;`, with ';' in values doubled.
std::string format_v2(std::string_view cmd, Args args = {});

/// Splits one connection's byte stream into requests: PMI-1 lines (a
/// multi-line `mcmd=` request ends with `endcmd`) until the owner switches
/// it to PMI-2 frames, after the `init` that asks for version 2. Parses
/// nothing ahead, so a switch applies to the very next request.
class StreamDecoder {
public:
    /// Appends received bytes.
    void feed(std::string_view bytes) { buf_.append(bytes.data(), bytes.size()); }

    /// The next complete request; nullopt when more bytes are needed; an error
    /// when the stream is malformed (overlong line or frame, bad syntax). After
    /// an error the stream cannot be trusted: close it.
    Result<std::optional<Command>> next();

    void use_v2() { v2_ = true; }
    [[nodiscard]] bool v2() const { return v2_; }
    /// Bytes received and not yet consumed.
    [[nodiscard]] std::size_t buffered() const { return buf_.size() - pos_; }

private:
    Result<std::optional<Command>> next_v1();
    Result<std::optional<Command>> next_v2();
    void consume(std::size_t n);

    std::string buf_;
    std::size_t pos_ = 0;
    bool v2_ = false;
    std::optional<Command> multi_;  // an `mcmd=` request being gathered
    std::size_t multi_lines_ = 0;
};

}  // namespace dragon::pmi
