// RunSecret: hex, the 0600 file and the environment.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "dragon/transport/run_secret.hpp"

namespace dragon::transport {
namespace {

std::string temp_path(const char* tag) { return "/tmp/dragon-secret-test-" + std::to_string(::getpid()) + "-" + tag; }

TEST(RunSecret, HexRoundTrip) {
    auto s = RunSecret::generate();
    ASSERT_TRUE(s) << s.error().message();
    const std::string hex = s->to_hex();
    EXPECT_EQ(hex.size(), 64U);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos);
    auto back = RunSecret::from_hex(hex);
    ASSERT_TRUE(back);
    EXPECT_TRUE(*back == *s);
    std::string upper = hex;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto from_upper = RunSecret::from_hex(upper);
    ASSERT_TRUE(from_upper);
    EXPECT_TRUE(*from_upper == *s);
}

TEST(RunSecret, GeneratedSecretsDiffer) {
    auto a = RunSecret::generate();
    auto b = RunSecret::generate();
    ASSERT_TRUE(a && b);
    EXPECT_FALSE(*a == *b);
}

TEST(RunSecret, FromHexRefusesBadInput) {
    EXPECT_EQ(RunSecret::from_hex("").error().code(), Errc::invalid_argument);
    EXPECT_EQ(RunSecret::from_hex(std::string(63, 'a')).error().code(), Errc::invalid_argument);
    EXPECT_EQ(RunSecret::from_hex(std::string(65, 'a')).error().code(), Errc::invalid_argument);
    auto bad = RunSecret::from_hex(std::string(62, 'a') + "zz");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
    EXPECT_EQ(bad.error().message().find("zz"), std::string::npos) << "never echo a would-be secret";
}

TEST(RunSecret, FileRoundTripWithMode0600) {
    const std::string path = temp_path("ok");
    ::unlink(path.c_str());
    auto s = RunSecret::generate();
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->write_file(path));
    struct stat sb {};
    ASSERT_EQ(::stat(path.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777U, 0600U);
    auto back = RunSecret::read_file(path);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_TRUE(*back == *s);
    // write_file never overwrites.
    auto again = s->write_file(path);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), Errc::already_exists);
    ::unlink(path.c_str());
}

TEST(RunSecret, FileReadableByOthersIsRefused) {
    const std::string path = temp_path("0644");
    ::unlink(path.c_str());
    auto s = RunSecret::generate();
    ASSERT_TRUE(s && s->write_file(path));
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    auto r = RunSecret::read_file(path);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::permission_denied);
    EXPECT_NE(r.error().message().find("0644"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find(path), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("chmod 600"), std::string::npos) << r.error().message();
    ASSERT_EQ(::chmod(path.c_str(), 0640), 0);  // group-readable is refused too
    EXPECT_EQ(RunSecret::read_file(path).error().code(), Errc::permission_denied);
    ::unlink(path.c_str());
}

TEST(RunSecret, FileWithGarbageIsRefused) {
    const std::string path = temp_path("garbage");
    ::unlink(path.c_str());
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not a secret\n", f);
    std::fclose(f);
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    auto r = RunSecret::read_file(path);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    ::unlink(path.c_str());
    EXPECT_EQ(RunSecret::read_file(path).error().code(), Errc::not_found);
}

TEST(RunSecret, FromEnvironment) {
    ::unsetenv(kSecretFileEnv);
    ::unsetenv(kSecretHexEnv);
    EXPECT_EQ(RunSecret::from_env().error().code(), Errc::not_found);
    auto s = RunSecret::generate();
    ASSERT_TRUE(s);
    ::setenv(kSecretHexEnv, s->to_hex().c_str(), 1);
    auto from_hex = RunSecret::from_env();
    ASSERT_TRUE(from_hex);
    EXPECT_TRUE(*from_hex == *s);
    // The file wins over the hex.
    auto other = RunSecret::generate();
    const std::string path = temp_path("env");
    ::unlink(path.c_str());
    ASSERT_TRUE(other && other->write_file(path));
    ::setenv(kSecretFileEnv, path.c_str(), 1);
    auto from_file = RunSecret::from_env();
    ASSERT_TRUE(from_file);
    EXPECT_TRUE(*from_file == *other);
    ::unsetenv(kSecretFileEnv);
    ::unsetenv(kSecretHexEnv);
    ::unlink(path.c_str());
}

}  // namespace
}  // namespace dragon::transport
