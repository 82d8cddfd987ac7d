// The binary wire codec: little-endian scalars, length-prefixed strings and
// lists, and structs that list their fields once for both directions.
//
// Decoding never trusts the input: every read is bounds-checked, lengths are
// checked against what is left before anything is allocated, and a failed read
// leaves the Reader in a sticky failed state (later reads yield zeros).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::wire {

/// Appends encoded values to a byte string.
class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}

    template <class T>
    void scalar(T v) {
        static_assert(std::is_integral_v<T>);
        using U = std::make_unsigned_t<T>;
        auto u = static_cast<U>(v);
        char b[sizeof(U)];
        for (std::size_t i = 0; i < sizeof(U); ++i) b[i] = static_cast<char>((static_cast<std::uint64_t>(u) >> (8 * i)) & 0xffU);
        out_.append(b, sizeof(U));
    }
    void bytes(std::string_view s) {
        scalar(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }
    [[nodiscard]] std::string& out() { return out_; }

private:
    std::string& out_;
};

/// Reads encoded values from a byte range it does not own.
class Reader {
public:
    Reader(const char* data, std::size_t len) : p_(data), end_(data + len) {}
    explicit Reader(std::string_view s) : Reader(s.data(), s.size()) {}

    template <class T>
    T scalar() {
        static_assert(std::is_integral_v<T>);
        using U = std::make_unsigned_t<T>;
        if (!need(sizeof(U))) return T{};
        U u = 0;
        for (std::size_t i = 0; i < sizeof(U); ++i)
            u = static_cast<U>(u | (static_cast<U>(static_cast<unsigned char>(p_[i])) << (8 * i)));
        p_ += sizeof(U);
        return static_cast<T>(u);
    }
    /// A length-prefixed byte string (a view into the input).
    std::string_view bytes() {
        auto n = scalar<std::uint32_t>();
        if (!need(n)) return {};
        std::string_view s(p_, n);
        p_ += n;
        return s;
    }
    /// A list count, refused when `count * min_elem_size` exceeds what is left.
    std::uint32_t count(std::size_t min_elem_size) {
        auto n = scalar<std::uint32_t>();
        if (failed_) return 0;
        if (min_elem_size > 0 && n > remaining() / min_elem_size) {
            fail("list of {} elements does not fit in {} bytes", n, remaining());
            return 0;
        }
        return n;
    }

    [[nodiscard]] std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
    [[nodiscard]] bool failed() const { return failed_; }
    [[nodiscard]] const std::string& why() const { return why_; }

    template <class... Args>
    void fail(fmt::format_string<Args...> f, Args&&... args) {
        if (!failed_) why_ = fmt::format(f, std::forward<Args>(args)...);
        failed_ = true;
        p_ = end_;
    }

private:
    bool need(std::size_t n) {
        if (failed_) return false;
        if (remaining() < n) {
            fail("truncated: need {} bytes, {} left", n, remaining());
            return false;
        }
        return true;
    }
    const char* p_;
    const char* end_;
    bool failed_ = false;
    std::string why_;
};

// A struct takes part in the codec by declaring its fields once:
//   struct Foo { std::uint64_t id; std::string name; DRAGON_WIRE_FIELDS(id, name) };
#define DRAGON_WIRE_FIELDS(...)                                          \
    auto wire_fields() { return std::tie(__VA_ARGS__); }                 \
    auto wire_fields() const { return std::tie(__VA_ARGS__); }

template <class T>
concept WireStruct = requires(T t) { t.wire_fields(); };

/// An enum on the wire must say which values are valid: `bool wire_valid(E)`.
template <class E>
concept WireEnum = std::is_enum_v<E> && requires(E e) {
    { wire_valid(e) } -> std::same_as<bool>;
};

/// The least number of bytes one encoded T occupies (for list-count checks).
template <class T>
constexpr std::size_t min_wire_size() {
    if constexpr (std::is_same_v<T, bool>) return 1;
    else if constexpr (std::is_integral_v<T>) return sizeof(T);
    else if constexpr (std::is_enum_v<T>) return sizeof(std::underlying_type_t<T>);
    else if constexpr (std::is_same_v<T, std::string>) return 4;
    else return 1;  // structs and lists: at least one byte is a safe lower bound
}

template <class T> void encode(Writer& w, const T& v);
template <class T> void decode(Reader& r, T& v);

template <class T>
void encode(Writer& w, const T& v) {
    if constexpr (std::is_same_v<T, bool>) {
        w.scalar<std::uint8_t>(v ? 1 : 0);
    } else if constexpr (std::is_integral_v<T>) {
        w.scalar<T>(v);
    } else if constexpr (std::is_enum_v<T>) {
        w.scalar<std::underlying_type_t<T>>(static_cast<std::underlying_type_t<T>>(v));
    } else if constexpr (std::is_same_v<T, std::string>) {
        w.bytes(v);
    } else if constexpr (WireStruct<T>) {
        std::apply([&](const auto&... f) { (encode(w, f), ...); }, v.wire_fields());
    } else {
        // std::vector<E>
        w.scalar(static_cast<std::uint32_t>(v.size()));
        for (const auto& e : v) encode(w, e);
    }
}

template <class T>
void decode(Reader& r, T& v) {
    if constexpr (std::is_same_v<T, bool>) {
        auto b = r.scalar<std::uint8_t>();
        if (b > 1) r.fail("bool field holds {}", b);
        v = b == 1;
    } else if constexpr (std::is_integral_v<T>) {
        v = r.scalar<T>();
    } else if constexpr (std::is_enum_v<T>) {
        static_assert(WireEnum<T>, "an enum on the wire needs bool wire_valid(E)");
        auto raw = r.scalar<std::underlying_type_t<T>>();
        v = static_cast<T>(raw);
        if (!r.failed() && !wire_valid(v)) r.fail("enum field holds invalid value {}", raw);
    } else if constexpr (std::is_same_v<T, std::string>) {
        v.assign(r.bytes());
    } else if constexpr (WireStruct<T>) {
        std::apply([&](auto&... f) { (decode(r, f), ...); }, v.wire_fields());
    } else {
        using E = typename T::value_type;
        auto n = r.count(min_wire_size<E>());
        v.clear();
        v.reserve(n);
        for (std::uint32_t i = 0; i < n && !r.failed(); ++i) decode(r, v.emplace_back());
    }
}

/// Decodes exactly one T from all of `body`: trailing bytes are an error.
template <class T>
Result<T> decode_exact(std::string_view body) {
    Reader r(body);
    T v{};
    decode(r, v);
    if (r.failed()) return Error(Errc::protocol, r.why());
    if (r.remaining() != 0) return make_error(Errc::protocol, "{} unexpected trailing bytes", r.remaining());
    return v;
}

}  // namespace dragon::wire
