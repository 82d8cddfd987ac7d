// The run secret: 32 random bytes a run's front end makes and hands to its
// agents out of band; the key of the transport's peer authentication.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon::transport {

/// Environment variable naming a file (mode 0600) that holds the secret in hex.
inline constexpr const char* kSecretFileEnv = "DRAGON_RUN_SECRET_FILE";
/// Environment variable holding the secret itself in hex (when no file can be shared).
inline constexpr const char* kSecretHexEnv = "DRAGON_RUN_SECRET";

/// A run's shared secret. Copyable (each listener keeps its own copy); every
/// copy wipes its bytes when destroyed. It is never sent on the wire: peers
/// prove they know it with an HMAC (docs/transport.md).
class RunSecret {
public:
    static constexpr std::size_t kSize = 32;

    /// 32 fresh bytes from getrandom(2). Blocks only while the kernel's
    /// random pool is unseeded (early boot).
    static Result<RunSecret> generate();

    /// Exactly 64 hex digits, either case; anything else is invalid_argument
    /// (the message never echoes the input: it may be a secret).
    static Result<RunSecret> from_hex(std::string_view hex);

    /// Reads a file written by write_file() (64 hex digits, optional trailing
    /// newline). Refuses with permission_denied a file that group or others
    /// may access, that another user owns, or that is not a regular file;
    /// the message names the file and how to fix it.
    static Result<RunSecret> read_file(const std::string& path);

    /// From the environment: the file named by $DRAGON_RUN_SECRET_FILE when
    /// set, else the hex in $DRAGON_RUN_SECRET; not_found when neither is.
    static Result<RunSecret> from_env();

    /// 64 lowercase hex digits.
    [[nodiscard]] std::string to_hex() const;

    /// Creates `path`, which must not exist yet (O_EXCL, no symlink
    /// followed), with mode 0600, holding to_hex() and a newline.
    [[nodiscard]] Status write_file(const std::string& path) const;

    [[nodiscard]] std::span<const std::byte, kSize> bytes() const { return bytes_; }

    /// Constant-time comparison.
    [[nodiscard]] bool operator==(const RunSecret& other) const;

    RunSecret(const RunSecret&) = default;
    RunSecret& operator=(const RunSecret&) = default;
    RunSecret(RunSecret&&) = default;
    RunSecret& operator=(RunSecret&&) = default;
    ~RunSecret();

private:
    RunSecret() = default;
    std::array<std::byte, kSize> bytes_{};
};

}  // namespace dragon::transport
