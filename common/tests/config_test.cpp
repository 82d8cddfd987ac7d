// The configuration table: defaults, environment overrides, validation.
#include <gtest/gtest.h>

#include <map>

#include "dragon/common/config.hpp"

namespace dragon {
namespace {

auto env_of(std::map<std::string, std::string> m) {
    return [m = std::move(m)](const char* k) -> const char* {
        auto it = m.find(k);
        return it == m.end() ? nullptr : it->second.c_str();
    };
}

TEST(Config, DefaultsComeFromTheTable) {
    auto c = Config::from_env(env_of({}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->log_level(), LogLevel::warn);
    EXPECT_EQ(c->log_dir(), "");
    EXPECT_EQ(c->patience_ms(), 2000U);
}

TEST(Config, EnvironmentOverridesDefaults) {
    auto c = Config::from_env(env_of({{"DRAGON_LOG_LEVEL", "debug"}, {"DRAGON_PATIENCE", "0.25"}}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->log_level(), LogLevel::debug);
    EXPECT_EQ(c->patience_ms(), 250U);
}

TEST(Config, BadEnvironmentValueNamesVariableAndValue) {
    auto c = Config::from_env(env_of({{"DRAGON_LOG_LEVEL", "loud"}}));
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().message(),
              "DRAGON_LOG_LEVEL: bad log level 'loud' (expected error, warn, info, debug, trace or off)");
}

TEST(Config, SetValidatesAndRejectsUnknownNames) {
    auto c = Config::from_env(env_of({}));
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->set("log-level", "trace"));
    EXPECT_EQ(c->log_level(), LogLevel::trace);
    EXPECT_FALSE(c->set("patience", "-1"));
    EXPECT_FALSE(c->set("patience", "1s"));
    EXPECT_FALSE(c->set("patience", "nan"));
    EXPECT_EQ(c->patience_ms(), 2000U);  // unchanged by the failed sets
    auto st = c->set("colour", "blue");
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().message(), "unknown option 'colour'");
}

TEST(Config, ToEnvRoundTrips) {
    auto c = Config::from_env(env_of({{"DRAGON_LOG_DIR", "/tmp/x"}}));
    ASSERT_TRUE(c);
    std::map<std::string, std::string> m;
    for (const auto& kv : c->to_env()) {
        auto eq = kv.find('=');
        m[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    auto back = Config::from_env(env_of(m));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->log_dir(), "/tmp/x");
    EXPECT_EQ(m.size(), config_table().size());
}

TEST(Config, SizesTakeBinaryUnits) {
    EXPECT_EQ(*parse_size("65536"), 65536U);
    EXPECT_EQ(*parse_size("4K"), 4096U);
    EXPECT_EQ(*parse_size("256M"), 256U << 20);
    EXPECT_EQ(*parse_size("2GiB"), 2ULL << 30);
    EXPECT_EQ(*parse_size("1T"), 1ULL << 40);
    for (const char* bad : {"", "M", "-1", "1.5G", "12Q", "99999999999T"}) {
        auto r = parse_size(bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_NE(r.error().message().find("bad size"), std::string::npos);
    }
    auto c = Config::from_env(env_of({{"DRAGON_POOL_SIZE", "64M"}}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->pool_size(), 64U << 20);
}

TEST(LogLevel, ParsesEveryNameAndOnlyThose) {
    for (auto l : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error,
                   LogLevel::off}) {
        auto r = parse_log_level(to_string(l));
        ASSERT_TRUE(r);
        EXPECT_EQ(*r, l);
    }
    EXPECT_FALSE(parse_log_level("WARN"));
    EXPECT_FALSE(parse_log_level(""));
}

}  // namespace
}  // namespace dragon
