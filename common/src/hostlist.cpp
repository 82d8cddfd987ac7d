// Hostlist expressions: a strict parser (sizes checked before anything is
// built, since the input may come from a user or a fuzzer) and the compressor.
#include "dragon/common/hostlist.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include <fmt/format.h>

namespace dragon {
namespace {

constexpr std::size_t kMaxDigits = 18;  // every bound fits a uint64 with room for hi - lo + 1

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// Host names never hold these; in an expression they are a typo or garbage.
bool is_space_or_control(char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
}

std::size_t decimal_digits(std::uint64_t v) {
    std::size_t n = 1;
    while (v >= 10) {
        v /= 10;
        ++n;
    }
    return n;
}

void append_padded(std::string& out, std::uint64_t v, std::size_t width) {
    fmt::format_to(std::back_inserter(out), "{:0{}}", v, width);
}

// lo..hi, each printed with at least `width` digits (the lower bound's).
struct Range {
    std::uint64_t lo = 0;
    std::uint64_t hi = 0;
    std::size_t width = 1;
};

// `prefix` then one number of `ranges`.
struct Piece {
    std::string prefix;
    std::vector<Range> ranges;
};

// One comma-separated group: its names are the cartesian product of its pieces.
struct Group {
    std::vector<Piece> pieces;
    std::string tail;
};

class Parser {
public:
    Parser(std::string_view expr, std::size_t max_hosts) : expr_(expr), max_hosts_(max_hosts) {}

    Result<std::vector<std::string>> run() {
        if (expr_.empty()) return fail(0, "empty hostlist");
        for (std::size_t i = 0; i < expr_.size(); ++i) {
            if (is_space_or_control(expr_[i])) {
                return fail(
                    i, fmt::format("unexpected character 0x{:02x}", static_cast<unsigned char>(expr_[i])));
            }
        }
        std::vector<Group> groups;
        std::size_t total = 0;
        for (;;) {
            std::size_t start = pos_;
            Group g = DRAGON_TRY(parse_group());
            if (pos_ == start) return fail(start, "empty name");
            std::size_t count = DRAGON_TRY(check_group(g, start, total));
            total += count;
            groups.push_back(std::move(g));
            if (pos_ == expr_.size()) break;
            ++pos_;  // the ','
            if (pos_ == expr_.size()) return fail(pos_, "empty name");
        }
        std::vector<std::string> out;
        out.reserve(total);
        for (const Group& g : groups) emit(g, out);
        return out;
    }

private:
    [[nodiscard]] Error fail(std::size_t pos, std::string_view what) const {
        constexpr std::size_t kShown = 64;  // a fuzzer's megabyte is not worth quoting
        std::string shown(expr_.substr(0, kShown));
        if (expr_.size() > kShown) shown += "...";
        return make_error(Errc::invalid_argument, "hostlist \"{}\": {} at position {}", shown, what, pos);
    }

    [[nodiscard]] Error too_many(std::size_t pos) const {
        return fail(pos, fmt::format("expands to more than {} hosts", max_hosts_));
    }

    // Up to the next top-level ',' or the end.
    Result<Group> parse_group() {
        Group g;
        std::string text;
        while (pos_ < expr_.size() && expr_[pos_] != ',') {
            char c = expr_[pos_];
            if (c == '[') {
                // Not inside the braces: DRAGON_TRY's early return from an
                // aggregate half built would skip the prefix's destructor.
                std::vector<Range> ranges = DRAGON_TRY(parse_bracket());
                g.pieces.push_back(Piece{std::move(text), std::move(ranges)});
                text.clear();
            } else if (c == ']') {
                return fail(pos_, "']' without '['");
            } else {
                text += c;
                ++pos_;
            }
        }
        g.tail = std::move(text);
        return g;
    }

    // From '[' to past its ']'.
    Result<std::vector<Range>> parse_bracket() {
        std::size_t open = pos_++;
        std::vector<Range> ranges;
        for (;;) {
            std::size_t start = pos_;
            while (pos_ < expr_.size() && expr_[pos_] != ',' && expr_[pos_] != ']') {
                if (expr_[pos_] == '[') return fail(pos_, "nested '['");
                ++pos_;
            }
            if (pos_ == expr_.size()) return fail(open, "'[' without ']'");
            ranges.push_back(DRAGON_TRY(parse_range(start, pos_)));
            if (expr_[pos_++] == ']') return ranges;
        }
    }

    Result<Range> parse_range(std::size_t begin, std::size_t end) const {
        std::string_view tok = expr_.substr(begin, end - begin);
        if (tok.empty()) return fail(begin, "empty range");
        std::size_t dash = tok.find('-');
        std::string_view lo_s = tok.substr(0, dash);
        std::string_view hi_s = dash == std::string_view::npos ? lo_s : tok.substr(dash + 1);
        if (lo_s.empty() || hi_s.empty()) return fail(begin, fmt::format("incomplete range '{}'", tok));
        Range r;
        r.lo = DRAGON_TRY(parse_bound(lo_s, tok, begin));
        r.hi = DRAGON_TRY(parse_bound(hi_s, tok, begin));
        r.width = lo_s.size();
        if (r.lo > r.hi) return fail(begin, fmt::format("descending range '{}'", tok));
        return r;
    }

    Result<std::uint64_t> parse_bound(std::string_view s, std::string_view tok, std::size_t pos) const {
        if (!std::all_of(s.begin(), s.end(), is_digit)) {
            return fail(pos, fmt::format("non-numeric range '{}'", tok));
        }
        if (s.size() > kMaxDigits) {
            return fail(pos, fmt::format("range '{}' has a bound of more than {} digits", tok, kMaxDigits));
        }
        std::uint64_t v = 0;
        for (char c : s) v = v * 10 + static_cast<std::uint64_t>(c - '0');
        return v;
    }

    // The group's host count, and its longest name within bounds.
    Result<std::size_t> check_group(const Group& g, std::size_t start, std::size_t total) const {
        std::size_t count = 1;
        std::size_t longest = g.tail.size();
        for (const Piece& p : g.pieces) {
            std::size_t size = 0;
            std::size_t widest = 0;
            for (const Range& r : p.ranges) {
                std::uint64_t n = r.hi - r.lo + 1;  // no overflow: bounds have <= 18 digits
                if (n > max_hosts_ || size > max_hosts_ - n) return too_many(start);
                size += static_cast<std::size_t>(n);
                widest = std::max({widest, r.width, decimal_digits(r.hi)});
            }
            if (count > max_hosts_ / size) return too_many(start);
            count *= size;
            longest += p.prefix.size() + widest;
        }
        if (count > max_hosts_ - total) return too_many(start);
        if (longest > kHostlistMaxNameLength) {
            return fail(start, fmt::format("names longer than {} characters", kHostlistMaxNameLength));
        }
        return count;
    }

    // Slurm's order (its hostlist.c recurses on the last bracket before the
    // final one): the final bracket varies fastest, then the first, the
    // second, ..., the one before the final slowest. With two brackets that is
    // plain odometer order.
    static void emit(const Group& g, std::vector<std::string>& out) {
        const std::size_t k = g.pieces.size();
        if (k == 0) {
            out.push_back(g.tail);
            return;
        }
        std::vector<std::size_t> slow_to_fast;
        for (std::size_t i = k - 1; i-- > 0;) slow_to_fast.push_back(i);
        slow_to_fast.push_back(k - 1);

        struct Cursor {
            std::size_t range = 0;
            std::uint64_t value = 0;
        };
        std::vector<Cursor> at(k);
        for (std::size_t i = 0; i < k; ++i) at[i].value = g.pieces[i].ranges.front().lo;
        std::string name;
        for (;;) {
            name.clear();
            for (std::size_t i = 0; i < k; ++i) {
                const Piece& p = g.pieces[i];
                name += p.prefix;
                append_padded(name, at[i].value, p.ranges[at[i].range].width);
            }
            name += g.tail;
            out.push_back(name);
            // Advance the fastest cursor; carry into slower ones.
            std::size_t d = k;
            for (; d > 0; --d) {
                std::size_t i = slow_to_fast[d - 1];
                const std::vector<Range>& rs = g.pieces[i].ranges;
                Cursor& c = at[i];
                if (c.value < rs[c.range].hi) {
                    ++c.value;
                    break;
                }
                if (c.range + 1 < rs.size()) {
                    c.value = rs[++c.range].lo;
                    break;
                }
                c = Cursor{0, rs.front().lo};
            }
            if (d == 0) return;
        }
    }

    std::string_view expr_;
    std::size_t max_hosts_;
    std::size_t pos_ = 0;
};

// A host name split at its trailing number, if it has one that fits a bound.
struct Split {
    std::string_view prefix;
    std::string_view digits;  // empty: no number
    std::uint64_t value = 0;
};

Split split_number(std::string_view host) {
    std::size_t j = host.size();
    while (j > 0 && is_digit(host[j - 1])) --j;
    Split s{host.substr(0, j), host.substr(j)};
    if (s.digits.size() > kMaxDigits) return Split{host, {}};
    for (char c : s.digits) s.value = s.value * 10 + static_cast<std::uint64_t>(c - '0');
    return s;
}

Status check_host(const std::vector<std::string>& hosts, std::size_t i) {
    const std::string& h = hosts[i];
    if (h.empty()) return make_error(Errc::invalid_argument, "host {} has an empty name", i);
    if (h.size() > kHostlistMaxNameLength) {
        return make_error(Errc::invalid_argument, "host {} has a name longer than {} characters", i,
                          kHostlistMaxNameLength);
    }
    for (char c : h) {
        if (c == '[' || c == ']' || c == ',' || is_space_or_control(c)) {
            return make_error(Errc::invalid_argument,
                              "host {} (\"{}\") has a character a hostlist cannot hold", i, h);
        }
    }
    return ok();
}

}  // namespace

Result<std::vector<std::string>> expand_hostlist(std::string_view expr, std::size_t max_hosts) {
    return Parser(expr, max_hosts).run();
}

Result<std::string> compress_hostlist(const std::vector<std::string>& hosts) {
    std::string out;
    for (std::size_t i = 0; i < hosts.size();) {
        DRAGON_CHECK(check_host(hosts, i));
        Split first = split_number(hosts[i]);
        // Neighbours with the same prefix and a number share one bracket.
        std::size_t j = i + 1;
        if (!first.digits.empty()) {
            while (j < hosts.size()) {
                DRAGON_CHECK(check_host(hosts, j));
                Split s = split_number(hosts[j]);
                if (s.digits.empty() || s.prefix != first.prefix) break;
                ++j;
            }
        }
        if (!out.empty()) out += ',';
        if (j == i + 1) {
            out += hosts[i];
            i = j;
            continue;
        }
        out += first.prefix;
        out += '[';
        for (std::size_t k = i; k < j;) {
            // A run: consecutive numbers that print with the width of its first.
            Split lo = split_number(hosts[k]);
            std::size_t m = k + 1;
            std::uint64_t hi = lo.value;
            std::string_view hi_digits = lo.digits;
            while (m < j) {
                Split s = split_number(hosts[m]);
                if (s.value != hi + 1 || fmt::format("{:0{}}", s.value, lo.digits.size()) != s.digits) break;
                hi = s.value;
                hi_digits = s.digits;
                ++m;
            }
            if (k != i) out += ',';
            out += lo.digits;
            if (m > k + 1) {
                out += '-';
                out += hi_digits;
            }
            k = m;
        }
        out += ']';
        i = j;
    }
    return out;
}

}  // namespace dragon
