// The simple PMI-1/PMI-2 wire codec, one for the agent's server and the ranks' shim (libc and the C++ library only).
#pragma once

// Why no dragon::common here: the shim (libpmi.so.0) is loaded into arbitrary
// MPI programs and may depend on libc alone, so this library cannot use fmt,
// spdlog or dragon::Result. Its refusals are a plain message (Refusal); the
// agent's adapter (dragon/pmi/wire.hpp) is the one place that turns them into
// Result errors (Errc::protocol), as a wrapper does for errno.

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace dragon::pmi_wire {

// Limits. The PMI-1 ones are what the agent announces in `maxes` and what
// MPICH's simple client (a 1024-byte line buffer) can take.
inline constexpr std::size_t kMaxLine = 1024;          // a PMI-1 request line, newline included
inline constexpr std::size_t kMaxReplyLine = 4096;     // a PMI-1 answer: a full value after its own words
inline constexpr std::size_t kMaxKvsName = 256;
inline constexpr std::size_t kMaxKey = 64;
inline constexpr std::size_t kMaxValue = 1024;
inline constexpr std::size_t kMaxFrame = 64 * 1024;    // a PMI-2 request body the agent accepts
inline constexpr std::size_t kMaxReplyFrame = 999999;  // a PMI-2 body: the most a 6-digit length can announce
inline constexpr std::size_t kLengthDigits = 6;        // the PMI-2 length prefix
inline constexpr std::size_t kMaxSpawnLines = 1024;    // lines of one `mcmd=spawn` request

/// Who wrote the bytes being parsed; it decides how forgiving the parser is.
enum class Sender : unsigned char {
    /// A rank's request, read by the agent: strict. Blanks (space, tab, CR)
    /// separate PMI-1 words; every word and PMI-2 field must be key=value
    /// with a non-empty key; a multi-line `mcmd=` request is gathered.
    client,
    /// A server's answer, read by the shim: as MPICH's own client reads one.
    /// Only spaces separate PMI-1 words (a value keeps its tabs); a word or
    /// field without '=' is kept as a key with an empty value, an empty key
    /// is kept, an empty PMI-2 field is skipped. Answers may be longer
    /// (kMaxReplyLine, kMaxReplyFrame).
    server,
};

/// One request or answer: the command and its key=value arguments, in order.
/// A PMI-1 `mcmd=NAME` line gives cmd NAME and the argument ("mcmd", NAME).
struct Message {
    std::string cmd;
    std::vector<std::pair<std::string, std::string>> args;

    /// The value of the first argument named `key`, or null (owned by this).
    [[nodiscard]] const std::string* get(std::string_view key) const;

    bool operator==(const Message&) const = default;
};

using Arg = std::pair<std::string_view, std::string_view>;
using Args = std::initializer_list<Arg>;

/// Why bytes were refused: one line for a log, control bytes escaped and the
/// bytes quoted cut at 60.
struct Refusal {
    std::string why;
};

/// A parsed T or the Refusal of the bytes. Test with `if (p)`; reading the
/// side that is not there is a bug (asserted).
template <class T>
class [[nodiscard]] Parsed {
public:
    Parsed(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Parsed(Refusal r) : v_(std::in_place_index<1>, std::move(r)) {}    // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& operator*() & { return std::get<0>(v_); }
    const T& operator*() const& { return std::get<0>(v_); }
    T&& operator*() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &std::get<0>(v_); }
    const T* operator->() const { return &std::get<0>(v_); }

    /// Why the bytes were refused.
    [[nodiscard]] const std::string& error() const& { return std::get<1>(v_).why; }
    [[nodiscard]] std::string&& error() && { return std::move(std::get<1>(v_).why); }

private:
    std::variant<T, Refusal> v_;
};

/// Parses one PMI-1 line (trailing newlines and CRs are dropped):
/// `cmd=NAME key=value ...`, or `mcmd=NAME` for the first line of a
/// multi-line request. Refuses a line without a first `cmd=`/`mcmd=` word or
/// with an empty command, and (from a client) any word that is not key=value.
/// Any other byte, NUL included, is data.
Parsed<Message> parse_v1(std::string_view line, Sender from);

/// Parses one PMI-2 frame body (what follows the length): `cmd=NAME;k=v;...;`
/// where ";;" stands for a ';' (in a key or a value). Bytes after the last
/// ';' are padding and ignored (some MPICH versions pad). Refuses a body
/// whose first field is not a non-empty `cmd=`, and (from a client) an empty
/// field or a field that is not key=value.
Parsed<Message> parse_v2(std::string_view body, Sender from);

/// The body length from a PMI-2 length prefix: exactly kLengthDigits bytes,
/// decimal digits padded with spaces on either side. Refuses anything else
/// and lengths over `max_body`.
Parsed<std::size_t> parse_v2_length(std::string_view prefix, std::size_t max_body);

/// `cmd=NAME k=v ...\n`. Nothing is escaped (PMI-1 has no escaping): the
/// caller keeps blanks and newlines out (v1_key_ok, v1_value_ok).
std::string format_v1(std::string_view cmd, Args args = {});
std::string format_v1(const Message& m);

/// The 6-character length (left-aligned, space padded, as MPICH writes it)
/// and `cmd=NAME;k=v;...;` with every ';' doubled, so that parse_v2 gives
/// the message back. Nullopt when no frame can say it: a body over
/// kMaxReplyFrame bytes (no length announces it), an empty command, or a key
/// that is empty, holds '=' or starts with ';'.
std::optional<std::string> format_v2(std::string_view cmd, Args args = {});
std::optional<std::string> format_v2(const Message& m);

/// Whether `s` can travel as a PMI-1 value or name: no blank or newline,
/// which would split or end the line.
bool v1_value_ok(std::string_view s);
/// ... as a PMI-1 key: a non-empty v1 value without '='.
bool v1_key_ok(std::string_view s);
/// ... as a PMI-2 key: non-empty, no ';', '=' or newline (other servers do
/// not undo ";;" in keys).
bool v2_key_ok(std::string_view s);

/// Splits one connection's byte stream into messages: PMI-1 lines until the
/// owner switches it to PMI-2 frames (after the `init` that asks for version
/// 2). Parses nothing ahead, so a switch applies to the very next message.
/// Holds at most one incomplete message plus the last bytes fed: an
/// incomplete line or frame over the limit is refused as soon as it is seen.
class Decoder {
public:
    /// Reads what `from` writes: its strictness and limits (see Sender).
    explicit Decoder(Sender from) noexcept : from_(from) {}

    /// Appends received bytes (copied).
    void feed(std::string_view bytes) { buf_.append(bytes.data(), bytes.size()); }

    /// The next complete message; nullopt when more bytes are needed; a
    /// Refusal when the stream is malformed (overlong line or frame, bad
    /// length, bad syntax). After a refusal the stream is out of step:
    /// close it.
    Parsed<std::optional<Message>> next();

    void use_v2() noexcept { v2_ = true; }
    [[nodiscard]] bool v2() const noexcept { return v2_; }
    /// Bytes received and not yet consumed.
    [[nodiscard]] std::size_t buffered() const noexcept { return buf_.size() - pos_; }

private:
    Parsed<std::optional<Message>> next_v1();
    Parsed<std::optional<Message>> next_v2();
    void consume(std::size_t n);

    Sender from_;
    std::string buf_;
    std::size_t pos_ = 0;
    bool v2_ = false;
    std::optional<Message> multi_;  // an `mcmd=` request being gathered
    std::size_t multi_lines_ = 0;
};

}  // namespace dragon::pmi_wire
