// PMI-1 lines and PMI-2 frames: parsed from untrusted bytes, formatted, split from a stream.
#include "dragon/pmi_wire/codec.hpp"

#include <charconv>

namespace dragon::pmi_wire {

namespace {

// Printable for an error message: at most 60 bytes, control bytes escaped.
std::string excerpt(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (char c : s.substr(0, 60)) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7f) {
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 0x0f];
        } else {
            out += c;
        }
    }
    if (s.size() > 60) out += "...";
    return out;
}

std::string quoted(std::string_view s) { return "'" + excerpt(s) + "'"; }

// Requests and answers are told apart in messages so that a shim's log line
// does not blame a request it never sent.
const char* what_of(Sender from) { return from == Sender::client ? "request" : "answer"; }

// One key=value token into `m`; the first must name the command (`mcmd` only
// where multi-line requests exist: PMI-1). Null on success.
std::optional<Refusal> add_pair(Message& m, std::string_view token, bool first, bool allow_mcmd,
                                std::string_view whole, Sender from) {
    const auto eq = token.find('=');
    if (from == Sender::client && (eq == std::string_view::npos || eq == 0))
        return Refusal{"PMI: " + quoted(token) + " is not key=value in " + quoted(whole)};
    const std::string_view key = token.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : token.substr(eq + 1);
    if (first) {
        if (key != "cmd" && !(allow_mcmd && key == "mcmd"))
            return Refusal{std::string("PMI: a ") + what_of(from) + " starts with cmd=, not " + quoted(whole)};
        if (value.empty()) return Refusal{"PMI: empty command in " + quoted(whole)};
        m.cmd.assign(value);
        if (key == "mcmd") m.args.emplace_back("mcmd", m.cmd);
        return std::nullopt;
    }
    m.args.emplace_back(std::string(key), std::string(value));
    return std::nullopt;
}

// `s` with every ';' doubled (the PMI-2 escape).
void append_escaped(std::string& out, std::string_view s) {
    for (char ch : s) {
        out += ch;
        if (ch == ';') out += ';';
    }
}

template <class Pairs>
std::string line_of(std::string_view cmd, const Pairs& args) {
    std::string out = "cmd=";
    out.append(cmd);
    for (const auto& [k, v] : args) {
        out += ' ';
        out.append(k);
        out += '=';
        out.append(v);
    }
    out += '\n';
    return out;
}

// Whether a field starting with `key` reads back as that key: the first '='
// ends a key, and a field cannot start with ';' (";;" right after the ';'
// that ends the field before is read as an escaped ';' in that field).
bool v2_key_says(std::string_view key) {
    return !key.empty() && key.front() != ';' && key.find('=') == std::string_view::npos;
}

template <class Pairs>
std::optional<std::string> frame_of(std::string_view cmd, const Pairs& args) {
    if (cmd.empty()) return std::nullopt;
    std::string body = "cmd=";
    append_escaped(body, cmd);
    body += ';';
    for (const auto& [k, v] : args) {
        if (!v2_key_says(k)) return std::nullopt;
        append_escaped(body, k);
        body += '=';
        append_escaped(body, v);
        body += ';';
    }
    if (body.size() > kMaxReplyFrame) return std::nullopt;
    std::string out = std::to_string(body.size());
    out.resize(kLengthDigits, ' ');  // fits: at most 6 digits
    return out + body;
}

}  // namespace

const std::string* Message::get(std::string_view key) const {
    for (const auto& [k, v] : args)
        if (k == key) return &v;
    return nullptr;
}

Parsed<Message> parse_v1(std::string_view line, Sender from) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    const auto blank = [from](char c) { return c == ' ' || (from == Sender::client && (c == '\t' || c == '\r')); };
    Message m;
    bool first = true;
    std::size_t i = 0;
    while (i < line.size()) {
        if (blank(line[i])) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < line.size() && !blank(line[end])) ++end;
        if (auto bad = add_pair(m, line.substr(i, end - i), first, true, line, from)) return std::move(*bad);
        first = false;
        i = end;
    }
    if (first) return Refusal{std::string("PMI: empty ") + what_of(from) + " line"};
    return m;
}

Parsed<Message> parse_v2(std::string_view body, Sender from) {
    Message m;
    bool first = true;
    std::string token;
    std::size_t i = 0;
    while (i < body.size()) {
        const char ch = body[i];
        if (ch != ';') {
            token += ch;
            ++i;
            continue;
        }
        if (i + 1 < body.size() && body[i + 1] == ';') {  // an escaped ';'
            token += ';';
            i += 2;
            continue;
        }
        ++i;
        if (token.empty()) {
            if (from == Sender::client) return Refusal{"PMI-2: empty field in " + quoted(body)};
            continue;
        }
        if (auto bad = add_pair(m, token, first, false, body, from)) return std::move(*bad);
        first = false;
        token.clear();
    }
    // Whatever follows the last ';' (in `token`) is padding: MPICH pads some frames.
    if (first) return Refusal{"PMI-2: frame without cmd: " + quoted(body)};
    return m;
}

Parsed<std::size_t> parse_v2_length(std::string_view prefix, std::size_t max_body) {
    const auto bad = [&] { return Refusal{"PMI-2: bad frame length " + quoted(prefix)}; };
    if (prefix.size() != kLengthDigits) return bad();
    std::size_t k = 0;
    while (k < prefix.size() && prefix[k] == ' ') ++k;  // a length may be padded on either side
    std::size_t end = k;
    while (end < prefix.size() && prefix[end] >= '0' && prefix[end] <= '9') ++end;
    if (end == k) return bad();
    for (std::size_t j = end; j < prefix.size(); ++j)
        if (prefix[j] != ' ') return bad();
    std::size_t len = 0;
    (void)std::from_chars(prefix.data() + k, prefix.data() + end, len);  // at most 6 digits: no overflow
    if (len > max_body)
        return Refusal{"PMI-2: a frame of " + std::to_string(len) + " bytes (at most " + std::to_string(max_body) + ")"};
    return len;
}

std::string format_v1(std::string_view cmd, Args args) { return line_of(cmd, args); }
std::string format_v1(const Message& m) { return line_of(m.cmd, m.args); }

std::optional<std::string> format_v2(std::string_view cmd, Args args) { return frame_of(cmd, args); }
std::optional<std::string> format_v2(const Message& m) { return frame_of(m.cmd, m.args); }

bool v1_value_ok(std::string_view s) { return s.find_first_of(" \t\r\n") == std::string_view::npos; }

bool v1_key_ok(std::string_view s) { return !s.empty() && v1_value_ok(s) && s.find('=') == std::string_view::npos; }

bool v2_key_ok(std::string_view s) { return !s.empty() && s.find_first_of(";=\n") == std::string_view::npos; }

void Decoder::consume(std::size_t n) {
    pos_ += n;
    if (pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    } else if (pos_ > 64 * 1024) {  // drop what was read now and then, not on every message
        buf_.erase(0, pos_);
        pos_ = 0;
    }
}

Parsed<std::optional<Message>> Decoder::next() { return v2_ ? next_v2() : next_v1(); }

Parsed<std::optional<Message>> Decoder::next_v1() {
    const std::size_t max_line = from_ == Sender::client ? kMaxLine : kMaxReplyLine;
    for (;;) {
        const std::string_view rest(buf_.data() + pos_, buf_.size() - pos_);
        const auto nl = rest.find('\n');
        if (nl == std::string_view::npos ? rest.size() >= max_line : nl + 1 > max_line)
            return Refusal{"PMI: a line longer than " + std::to_string(max_line) + " bytes: " + quoted(rest)};
        if (nl == std::string_view::npos) return std::optional<Message>{};
        const std::string_view line = rest.substr(0, nl);
        if (multi_) {
            // The body of an mcmd request: key=value lines up to `endcmd`.
            std::string_view l = line;
            while (!l.empty() && (l.back() == '\r' || l.back() == ' ')) l.remove_suffix(1);
            if (l == "endcmd") {
                consume(nl + 1);
                std::optional<Message> done = std::move(multi_);
                multi_.reset();
                return done;
            }
            if (++multi_lines_ > kMaxSpawnLines)
                return Refusal{"PMI: an mcmd=" + multi_->cmd + " request of more than " +
                               std::to_string(kMaxSpawnLines) + " lines"};
            // One key=value per line; a value may hold spaces (arguments).
            const auto eq = l.find('=');
            if (eq == std::string_view::npos || eq == 0)
                return Refusal{"PMI: " + quoted(l) + " in an mcmd=" + multi_->cmd + " request is not key=value"};
            multi_->args.emplace_back(std::string(l.substr(0, eq)), std::string(l.substr(eq + 1)));
            consume(nl + 1);
            continue;
        }
        auto m = parse_v1(line, from_);
        consume(nl + 1);
        if (!m) return Refusal{std::move(m).error()};
        // Only requests come in several lines (spawn); an answer is one line.
        if (from_ == Sender::client && m->get("mcmd") != nullptr) {
            multi_ = std::move(*m);
            multi_lines_ = 0;
            continue;
        }
        return std::optional<Message>(std::move(*m));
    }
}

Parsed<std::optional<Message>> Decoder::next_v2() {
    const std::string_view rest(buf_.data() + pos_, buf_.size() - pos_);
    if (rest.size() < kLengthDigits) return std::optional<Message>{};
    auto len = parse_v2_length(rest.substr(0, kLengthDigits), from_ == Sender::client ? kMaxFrame : kMaxReplyFrame);
    if (!len) return Refusal{std::move(len).error()};
    if (rest.size() - kLengthDigits < *len) return std::optional<Message>{};
    auto m = parse_v2(rest.substr(kLengthDigits, *len), from_);
    consume(kLengthDigits + *len);
    if (!m) return Refusal{std::move(m).error()};
    return std::optional<Message>(std::move(*m));
}

}  // namespace dragon::pmi_wire
