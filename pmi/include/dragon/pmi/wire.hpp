// The agent's side of the simple PMI wire codec (dragon::pmi_wire): requests parsed strictly, refusals as Result.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"
#include "dragon/pmi_wire/codec.hpp"

namespace dragon::pmi {

// The limits are the codec's; the agent announces the PMI-1 ones in `maxes`.
using pmi_wire::kMaxFrame;
using pmi_wire::kMaxKey;
using pmi_wire::kMaxKvsName;
using pmi_wire::kMaxLine;
using pmi_wire::kMaxSpawnLines;
using pmi_wire::kMaxValue;

/// One request or reply: the command and its key=value arguments, in order.
using Command = pmi_wire::Message;
using pmi_wire::Args;

/// Parses one PMI-1 request line without its newline: `cmd=NAME key=value ...`
/// (or `mcmd=NAME` for the first line of a multi-line request). Values carry
/// no blanks; a token without '=' or a missing cmd is an Errc::protocol error.
Result<Command> parse_v1(std::string_view line);

/// Parses one PMI-2 request body (what follows the 6-digit length):
/// `cmd=NAME;key=value;...;` where ";;" stands for a ';'. Bytes after the
/// last ';' are ignored (some clients pad frames).
Result<Command> parse_v2(std::string_view body);

/// `cmd=NAME k=v ...\n`.
std::string format_v1(std::string_view cmd, Args args = {});

/// The 6-digit length and `cmd=NAME;k=v;...;`, with ';' doubled. The
/// server's answers are bounded far below what a length can announce; one
/// that is not becomes `cmd=NAME;rc=-1;...` so the stream stays in step.
std::string format_v2(std::string_view cmd, Args args = {});

/// Splits one connection's byte stream into requests (pmi_wire::Decoder
/// reading a client): PMI-1 lines, a multi-line `mcmd=` request gathered up
/// to `endcmd`, until the owner switches it to PMI-2 frames after the `init`
/// that asks for version 2. Parses nothing ahead, so a switch applies to the
/// very next request.
class StreamDecoder {
public:
    /// Appends received bytes.
    void feed(std::string_view bytes) { dec_.feed(bytes); }

    /// The next complete request; nullopt when more bytes are needed; an error
    /// when the stream is malformed (overlong line or frame, bad syntax). After
    /// an error the stream cannot be trusted: close it.
    Result<std::optional<Command>> next();

    void use_v2() { dec_.use_v2(); }
    [[nodiscard]] bool v2() const { return dec_.v2(); }
    /// Bytes received and not yet consumed.
    [[nodiscard]] std::size_t buffered() const { return dec_.buffered(); }

private:
    pmi_wire::Decoder dec_{pmi_wire::Sender::client};
};

}  // namespace dragon::pmi
