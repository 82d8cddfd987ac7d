// The configuration table and its validators.
#include "dragon/common/config.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace dragon {

Result<LogLevel> parse_log_level(std::string_view s) {
    if (s == "trace") return LogLevel::trace;
    if (s == "debug") return LogLevel::debug;
    if (s == "info") return LogLevel::info;
    if (s == "warn") return LogLevel::warn;
    if (s == "error") return LogLevel::error;
    if (s == "off") return LogLevel::off;
    return make_error(Errc::invalid_argument,
                      "bad log level '{}' (expected error, warn, info, debug, trace or off)", s);
}

std::string_view to_string(LogLevel level) {
    switch (level) {
        case LogLevel::trace: return "trace";
        case LogLevel::debug: return "debug";
        case LogLevel::info: return "info";
        case LogLevel::warn: return "warn";
        case LogLevel::error: return "error";
        case LogLevel::off: return "off";
    }
    return "?";
}

Result<std::uint64_t> parse_size(std::string_view s) {
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    std::string_view unit(p, static_cast<std::size_t>(s.data() + s.size() - p));
    const auto bad = [&] {
        return make_error(Errc::invalid_argument, "bad size '{}' (expected bytes, or a number with K, M, G or T)", s);
    };
    if (ec != std::errc{} || p == s.data()) return bad();
    unsigned shift = 0;
    if (unit.empty() || unit == "B") shift = 0;
    else if (unit == "K" || unit == "KiB") shift = 10;
    else if (unit == "M" || unit == "MiB") shift = 20;
    else if (unit == "G" || unit == "GiB") shift = 30;
    else if (unit == "T" || unit == "TiB") shift = 40;
    else return bad();
    if (v > (std::uint64_t{1} << (63 - shift))) return bad();
    return v << shift;
}

namespace {

Result<double> parse_seconds(std::string_view s) {
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || !std::isfinite(v) || v < 0 || v > 3600)
        return make_error(Errc::invalid_argument, "bad duration '{}' (expected seconds from 0 to 3600)", s);
    return v;
}

Status validate_size(std::string_view s) {
    DRAGON_CHECK(parse_size(s));
    return ok();
}

Status validate_topology(std::string_view s) {
    if (s.empty() || s.starts_with("synthetic:") || s.starts_with("xml:")) return ok();
    return make_error(Errc::invalid_argument,
                      "bad topology '{}' (expected empty, synthetic:<hwloc description> or xml:<file>)", s);
}

Status validate_log_level(std::string_view s) {
    DRAGON_CHECK(parse_log_level(s));
    return ok();
}
Status validate_any(std::string_view) { return ok(); }
Status validate_micros(std::string_view s) {
    unsigned long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v > 100000)
        return make_error(Errc::invalid_argument, "bad microseconds '{}' (expected 0 to 100000)", s);
    return ok();
}
Status validate_seconds(std::string_view s) {
    DRAGON_CHECK(parse_seconds(s));
    return ok();
}

constexpr ConfigOption kTable[] = {
    {"log-level", "DRAGON_LOG_LEVEL", "warn",
     "log level of the launcher and agents: error, warn, info, debug, trace, off", validate_log_level},
    {"log-dir", "DRAGON_LOG_DIR", "",
     "write per-component log files (frontend.log, agent-n<N>.log) into this folder instead of stderr",
     validate_any},
    {"patience", "DRAGON_PATIENCE", "2",
     "seconds between SIGINT, SIGTERM and SIGKILL when stopping processes", validate_seconds},
    {"pool-size", "DRAGON_POOL_SIZE", "64M",
     "size of each node's shared-memory pool (channels live in it): bytes, or with K, M, G, T", validate_size},
    {"heartbeat-timeout", "DRAGON_HEARTBEAT_TIMEOUT", "6",
     "seconds without a word from another node's agent before it is declared lost (heartbeats every quarter of it)",
     validate_seconds},
    {"agent-spin-us", "DRAGON_AGENT_SPIN_US", "200",
     "microseconds an agent keeps polling for more work after each event before it sleeps (0: never polls); "
     "cuts the latency of channel traffic between nodes",
     validate_micros},
    {"topology", "DRAGON_TOPOLOGY", "",
     "plan with this topology instead of the machine's: synthetic:<hwloc description> or xml:<file>",
     validate_topology},
};

}  // namespace

std::span<const ConfigOption> config_table() { return kTable; }

Result<Config> Config::from_env(const std::function<const char*(const char*)>& getenv_fn) {
    Config c;
    for (const auto& opt : kTable) c.values_[std::string(opt.name)] = std::string(opt.default_value);
    for (const auto& opt : kTable) {
        const std::string env(opt.env);
        const char* v = getenv_fn ? getenv_fn(env.c_str()) : std::getenv(env.c_str());
        if (v == nullptr) continue;
        if (auto st = c.set(opt.name, v); !st) return std::move(st).error().context(fmt::format("{}", env));
    }
    return c;
}

Status Config::set(std::string_view name, std::string_view value) {
    for (const auto& opt : kTable) {
        if (opt.name != name) continue;
        DRAGON_CHECK(opt.validate(value));
        values_[std::string(name)] = std::string(value);
        return ok();
    }
    return make_error(Errc::invalid_argument, "unknown option '{}'", name);
}

const std::string& Config::get(std::string_view name) const {
    auto it = values_.find(name);
    if (it == values_.end()) {
        static const std::string empty;
        return empty;
    }
    return it->second;
}

LogLevel Config::log_level() const { return parse_log_level(get("log-level")).value_or(LogLevel::warn); }

std::uint32_t Config::patience_ms() const {
    return static_cast<std::uint32_t>(std::lround(parse_seconds(get("patience")).value_or(2.0) * 1000.0));
}

std::uint32_t Config::agent_spin_us() const {
    unsigned long v = 0;
    const std::string& s = get("agent-spin-us");
    std::from_chars(s.data(), s.data() + s.size(), v);
    return static_cast<std::uint32_t>(v);
}

std::uint32_t Config::heartbeat_timeout_ms() const {
    return static_cast<std::uint32_t>(std::lround(parse_seconds(get("heartbeat-timeout")).value_or(6.0) * 1000.0));
}

std::uint64_t Config::pool_size() const { return parse_size(get("pool-size")).value_or(64U << 20); }

std::vector<std::string> Config::to_env() const {
    std::vector<std::string> out;
    for (const auto& opt : kTable) out.push_back(fmt::format("{}={}", opt.env, get(opt.name)));
    return out;
}

}  // namespace dragon
