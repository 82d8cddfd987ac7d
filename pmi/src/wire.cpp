// PMI-1 line and PMI-2 frame parsing and formatting.
#include "dragon/pmi/wire.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace dragon::pmi {

namespace {

// Printable for an error message: at most 60 bytes, control bytes escaped.
std::string excerpt(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 60)) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7f) out += fmt::format("\\x{:02x}", u);
        else out += c;
    }
    if (s.size() > 60) out += "...";
    return out;
}

Status add_pair(Command& c, std::string_view token, bool first, std::string_view line) {
    const auto eq = token.find('=');
    if (eq == std::string_view::npos || eq == 0)
        return make_error(Errc::protocol, "PMI: '{}' is not key=value in '{}'", excerpt(token), excerpt(line));
    std::string key(token.substr(0, eq));
    std::string value(token.substr(eq + 1));
    if (first) {
        if (key != "cmd" && key != "mcmd")
            return make_error(Errc::protocol, "PMI: a request starts with cmd=, not '{}'", excerpt(line));
        if (value.empty()) return make_error(Errc::protocol, "PMI: empty command in '{}'", excerpt(line));
        c.cmd = std::move(value);
        if (key == "mcmd") c.args.emplace_back("mcmd", c.cmd);
        return ok();
    }
    c.args.emplace_back(std::move(key), std::move(value));
    return ok();
}

}  // namespace

const std::string* Command::get(std::string_view key) const {
    for (const auto& [k, v] : args)
        if (k == key) return &v;
    return nullptr;
}

Result<Command> parse_v1(std::string_view line) {
    Command c;
    bool first = true;
    std::size_t i = 0;
    while (i < line.size()) {
        if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < line.size() && line[end] != ' ' && line[end] != '\t' && line[end] != '\r') ++end;
        DRAGON_CHECK(add_pair(c, line.substr(i, end - i), first, line));
        first = false;
        i = end;
    }
    if (first) return Error(Errc::protocol, "PMI: empty request line");
    return c;
}

Result<Command> parse_v2(std::string_view body) {
    Command c;
    bool first = true;
    std::string token;
    std::size_t i = 0;
    while (i < body.size()) {
        const char ch = body[i];
        if (ch == ';') {
            if (i + 1 < body.size() && body[i + 1] == ';') {  // an escaped ';'
                token += ';';
                i += 2;
                continue;
            }
            if (token.empty()) return make_error(Errc::protocol, "PMI-2: empty field in '{}'", excerpt(body));
            DRAGON_CHECK(add_pair(c, token, first, body));
            first = false;
            token.clear();
            ++i;
            continue;
        }
        token += ch;
        ++i;
    }
    // Whatever follows the last ';' (in `token`) is padding: MPICH pads some frames.
    if (first) return make_error(Errc::protocol, "PMI-2: frame without cmd: '{}'", excerpt(body));
    return c;
}

std::string format_v1(std::string_view cmd, Args args) {
    std::string out = fmt::format("cmd={}", cmd);
    for (const auto& [k, v] : args) fmt::format_to(std::back_inserter(out), " {}={}", k, v);
    out += '\n';
    return out;
}

std::string format_v2(std::string_view cmd, Args args) {
    std::string body = fmt::format("cmd={};", cmd);
    for (const auto& [k, v] : args) {
        body.append(k);
        body += '=';
        for (char ch : v) {
            body += ch;
            if (ch == ';') body += ';';
        }
        body += ';';
    }
    return fmt::format("{:<6}", body.size()) + body;
}

void StreamDecoder::consume(std::size_t n) {
    pos_ += n;
    if (pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    } else if (pos_ > 64 * 1024) {
        buf_.erase(0, pos_);
        pos_ = 0;
    }
}

Result<std::optional<Command>> StreamDecoder::next() { return v2_ ? next_v2() : next_v1(); }

Result<std::optional<Command>> StreamDecoder::next_v1() {
    for (;;) {
        const std::string_view rest(buf_.data() + pos_, buf_.size() - pos_);
        const auto nl = rest.find('\n');
        if (nl == std::string_view::npos) {
            if (rest.size() >= kMaxLine)
                return make_error(Errc::protocol, "PMI: a line longer than {} bytes: '{}'", kMaxLine, excerpt(rest));
            return std::optional<Command>{};
        }
        if (nl + 1 > kMaxLine)
            return make_error(Errc::protocol, "PMI: a line longer than {} bytes: '{}'", kMaxLine, excerpt(rest));
        const std::string_view line = rest.substr(0, nl);
        if (multi_) {
            // The body of an mcmd request: key=value lines up to `endcmd`.
            std::string_view l = line;
            while (!l.empty() && (l.back() == '\r' || l.back() == ' ')) l.remove_suffix(1);
            if (l == "endcmd") {
                consume(nl + 1);
                auto done = std::move(*multi_);
                multi_.reset();
                return std::optional<Command>(std::move(done));
            }
            if (++multi_lines_ > kMaxSpawnLines)
                return make_error(Errc::protocol, "PMI: an mcmd={} request of more than {} lines", multi_->cmd,
                                  kMaxSpawnLines);
            // One key=value per line; a value may hold spaces (arguments).
            const auto eq = l.find('=');
            if (eq == std::string_view::npos || eq == 0)
                return make_error(Errc::protocol, "PMI: '{}' in an mcmd={} request is not key=value", excerpt(l),
                                  multi_->cmd);
            multi_->args.emplace_back(std::string(l.substr(0, eq)), std::string(l.substr(eq + 1)));
            consume(nl + 1);
            continue;
        }
        auto c = parse_v1(line);
        consume(nl + 1);
        if (!c) return std::move(c).error();
        if (c->get("mcmd") != nullptr) {  // gather the rest of it
            multi_ = std::move(*c);
            multi_lines_ = 0;
            continue;
        }
        return std::optional<Command>(std::move(*c));
    }
}

Result<std::optional<Command>> StreamDecoder::next_v2() {
    const std::string_view rest(buf_.data() + pos_, buf_.size() - pos_);
    if (rest.size() < 6) return std::optional<Command>{};
    std::size_t len = 0;
    const std::string_view digits = rest.substr(0, 6);
    std::size_t k = 0;
    while (k < 6 && digits[k] == ' ') ++k;  // a length may be padded on either side
    std::size_t end = k;
    while (end < 6 && digits[end] >= '0' && digits[end] <= '9') ++end;
    for (std::size_t j = end; j < 6; ++j)
        if (digits[j] != ' ')
            return make_error(Errc::protocol, "PMI-2: bad frame length '{}'", excerpt(digits));
    if (end == k) return make_error(Errc::protocol, "PMI-2: bad frame length '{}'", excerpt(digits));
    std::from_chars(digits.data() + k, digits.data() + end, len);
    if (len > kMaxFrame)
        return make_error(Errc::protocol, "PMI-2: a frame of {} bytes (at most {})", len, kMaxFrame);
    if (rest.size() < 6 + len) return std::optional<Command>{};
    auto c = parse_v2(rest.substr(6, len));
    consume(6 + len);
    if (!c) return std::move(c).error();
    return std::optional<Command>(std::move(*c));
}

}  // namespace dragon::pmi
