// Result<T>: the one error type of Dragon (an std::expected-like value-or-Error).
#pragma once

#include <cassert>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace dragon {

/// What went wrong, coarse enough to branch on; the message says the rest.
enum class Errc : std::uint16_t {
    invalid_argument = 1,  // bad input from a caller or a user
    not_found,             // a file, program, process or key that does not exist
    permission_denied,
    already_exists,
    timeout,               // a deadline passed
    would_block,           // a try-once operation found nothing to do
    no_space,              // a pool, a queue or a disk is full
    closed,                // the peer or the object went away
    protocol,              // malformed or unexpected bytes from a peer
    too_large,             // a size over a configured limit
    unsupported,
    system,                // an OS call failed for another reason (see sys_errno)
    internal,              // a bug: an invariant did not hold
};

std::string_view to_string(Errc code) noexcept;

/// An error: a code, a human message (already naming the thing that failed),
/// and the errno behind it when an OS call failed.
class Error {
public:
    Error(Errc code, std::string message, int sys_errno = 0)
        : code_(code), message_(std::move(message)), sys_errno_(sys_errno) {}

    [[nodiscard]] Errc code() const noexcept { return code_; }
    [[nodiscard]] const std::string& message() const noexcept { return message_; }
    [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }

    /// Prepends context: "opening pool: No such file..." .
    [[nodiscard]] Error context(std::string_view what) && {
        message_ = fmt::format("{}: {}", what, message_);
        return std::move(*this);
    }

private:
    Errc code_;
    std::string message_;
    int sys_errno_;
};

template <class... Args>
[[nodiscard]] Error make_error(Errc code, fmt::format_string<Args...> f, Args&&... args) {
    return Error(code, fmt::format(f, std::forward<Args>(args)...));
}

/// Either a T or an Error. Construct from either; test with `if (r)`.
template <class T>
class [[nodiscard]] Result {
    static_assert(!std::is_same_v<std::remove_cv_t<T>, Error>, "Result<Error> is ambiguous");

public:
    using value_type = T;

    template <class U = T,
              std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                   !std::is_same_v<std::remove_cvref_t<U>, Error> &&
                                   !std::is_same_v<std::remove_cvref_t<U>, Result>,
                               int> = 0>
    Result(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}      // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { assert(has_value()); return std::get<0>(v_); }
    const T& value() const& { assert(has_value()); return std::get<0>(v_); }
    T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { assert(!has_value()); return std::get<1>(v_); }
    Error&& error() && { assert(!has_value()); return std::get<1>(std::move(v_)); }

    template <class U>
    T value_or(U&& fallback) const& { return has_value() ? value() : static_cast<T>(std::forward<U>(fallback)); }

private:
    std::variant<T, Error> v_;
};

/// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : err_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool has_value() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return !failed_; }
    void value() const { assert(!failed_); }
    const Error& error() const& { assert(failed_); return err_; }
    Error&& error() && { assert(failed_); return std::move(err_); }

private:
    Error err_{Errc::internal, {}};
    bool failed_ = false;
};

using Status = Result<void>;
inline Status ok() { return {}; }

}  // namespace dragon

// Early return of the error of a Result; evaluates to the value otherwise.
// (A GNU statement expression: g++ and clang both support it.)
#define DRAGON_TRY(expr)                                            \
    __extension__({                                                 \
        auto&& dragon_try_r_ = (expr);                              \
        if (!dragon_try_r_) return std::move(dragon_try_r_).error(); \
        std::move(dragon_try_r_).value();                           \
    })

// Early return of the error of a Result<void> (or any Result whose value is unused).
#define DRAGON_CHECK(expr)                                          \
    do {                                                            \
        auto&& dragon_chk_r_ = (expr);                              \
        if (!dragon_chk_r_) return std::move(dragon_chk_r_).error(); \
    } while (0)
