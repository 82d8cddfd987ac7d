// Runtime configuration as a table: each option has a name, an environment
// variable, a default, a validator and help text. The table drives the CLI's
// options, the environment overrides and the docs.
#pragma once

#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon {

enum class LogLevel { trace, debug, info, warn, error, off };

/// Parses "error|warn|info|debug|trace|off" (case-sensitive).
Result<LogLevel> parse_log_level(std::string_view s);
std::string_view to_string(LogLevel level);

/// Parses a byte size: "65536", "256M", "1G" (K/M/G/T are powers of 1024).
Result<std::uint64_t> parse_size(std::string_view s);

struct ConfigOption {
    std::string_view name;           // "log-level": the CLI spells it --log-level
    std::string_view env;            // "DRAGON_LOG_LEVEL"
    std::string_view default_value;
    std::string_view help;
    Status (*validate)(std::string_view value);
};

/// All options Dragon's components read, in a fixed order.
std::span<const ConfigOption> config_table();

/// Values for every option of config_table(); each value has passed its validator.
class Config {
public:
    /// Defaults, overridden by the environment; getenv is the lookup used.
    static Result<Config> from_env(const std::function<const char*(const char*)>& getenv_fn = nullptr);

    /// Sets one option by name, validating it. Errors name the option and value.
    Status set(std::string_view name, std::string_view value);
    [[nodiscard]] const std::string& get(std::string_view name) const;

    [[nodiscard]] LogLevel log_level() const;
    [[nodiscard]] const std::string& log_dir() const { return get("log-dir"); }
    /// Patience between teardown signals, in milliseconds.
    [[nodiscard]] std::uint32_t patience_ms() const;
    /// How long another node's agent may stay silent before it is lost, in milliseconds.
    [[nodiscard]] std::uint32_t heartbeat_timeout_ms() const;
    [[nodiscard]] std::uint32_t agent_spin_us() const;
    /// Bytes of each node's shared-memory pool.
    [[nodiscard]] std::uint64_t pool_size() const;

    /// "DRAGON_X=value" for every option, to hand the resolved config to a child.
    [[nodiscard]] std::vector<std::string> to_env() const;

private:
    std::map<std::string, std::string, std::less<>> values_;
};

}  // namespace dragon
