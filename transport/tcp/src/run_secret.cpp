// RunSecret: generation, hex, and the 0600 secret file.
#include "dragon/transport/run_secret.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <openssl/crypto.h>

#include "dragon/common/sys.hpp"

namespace dragon::transport {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

RunSecret::~RunSecret() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

bool RunSecret::operator==(const RunSecret& other) const {
    return CRYPTO_memcmp(bytes_.data(), other.bytes_.data(), kSize) == 0;
}

Result<RunSecret> RunSecret::generate() {
    RunSecret s;
    std::size_t got = 0;
    while (got < kSize) {
        auto n = sys::call("getrandom", [&] { return ::getrandom(s.bytes_.data() + got, kSize - got, 0); });
        if (!n) return std::move(n).error().context("generating the run secret");
        got += static_cast<std::size_t>(*n);
    }
    return s;
}

Result<RunSecret> RunSecret::from_hex(std::string_view hex) {
    if (hex.size() != 2 * kSize)
        return make_error(Errc::invalid_argument, "a run secret is {} hex digits, not {} characters", 2 * kSize,
                          hex.size());
    RunSecret s;
    for (std::size_t i = 0; i < kSize; ++i) {
        const int hi = hex_value(hex[2 * i]);
        const int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return make_error(Errc::invalid_argument, "a run secret holds hex digits only (bad character at {})",
                              hi < 0 ? 2 * i : 2 * i + 1);
        s.bytes_[i] = static_cast<std::byte>((hi << 4) | lo);
    }
    return s;
}

std::string RunSecret::to_hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out(2 * kSize, '0');
    for (std::size_t i = 0; i < kSize; ++i) {
        const auto b = std::to_integer<unsigned>(bytes_[i]);
        out[2 * i] = kDigits[b >> 4U];
        out[2 * i + 1] = kDigits[b & 0xfU];
    }
    return out;
}

Status RunSecret::write_file(const std::string& path) const {
    auto fd = sys::call("creating run secret file " + path, [&] {
        return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    });
    if (!fd) return std::move(fd).error();
    sys::UniqueFd owner(*fd);
    // The umask can only take bits away, but say what we mean.
    auto st = sys::call("chmod " + path, [&] { return ::fchmod(owner.get(), 0600); });
    std::string text = to_hex() + "\n";
    Status w = st ? sys::write_all(owner.get(), text.data(), text.size()) : Status(std::move(st).error());
    OPENSSL_cleanse(text.data(), text.size());
    if (!w) {
        ::unlink(path.c_str());
        return std::move(w).error().context("writing run secret file " + path);
    }
    return ok();
}

Result<RunSecret> RunSecret::read_file(const std::string& path) {
    auto fd = sys::call("opening run secret file " + path,
                        [&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); });
    if (!fd) return std::move(fd).error();
    sys::UniqueFd owner(*fd);
    struct stat sb {};
    DRAGON_CHECK(sys::call("stat " + path, [&] { return ::fstat(owner.get(), &sb); }));
    if (!S_ISREG(sb.st_mode))
        return make_error(Errc::permission_denied, "run secret file {} is not a regular file", path);
    if ((sb.st_mode & 077U) != 0)
        return make_error(Errc::permission_denied,
                          "run secret file {} has mode {:04o}: group or others may access it, so it is refused "
                          "(it must be 0600: chmod 600 {})",
                          path, sb.st_mode & 07777U, path);
    if (sb.st_uid != ::geteuid())
        return make_error(Errc::permission_denied, "run secret file {} is owned by uid {}, not by this user ({})",
                          path, sb.st_uid, ::geteuid());
    char buf[2 * kSize + 8];
    std::size_t len = 0;
    for (;;) {
        auto n = sys::call("reading " + path, [&] { return ::read(owner.get(), buf + len, sizeof buf - len); });
        if (!n) return std::move(n).error();
        if (*n == 0) break;
        len += static_cast<std::size_t>(*n);
        if (len == sizeof buf) break;
    }
    std::string_view text(buf, len);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
    auto s = from_hex(text);
    OPENSSL_cleanse(buf, sizeof buf);
    if (!s) return std::move(s).error().context("run secret file " + path);
    return s;
}

Result<RunSecret> RunSecret::from_env() {
    if (const char* path = std::getenv(kSecretFileEnv); path != nullptr && *path != '\0') return read_file(path);
    if (const char* hex = std::getenv(kSecretHexEnv); hex != nullptr && *hex != '\0') {
        auto s = from_hex(hex);
        if (!s) return std::move(s).error().context(fmt::format("${}", kSecretHexEnv));
        return s;
    }
    return make_error(Errc::not_found, "no run secret: set ${} (a 0600 file) or ${} (hex)", kSecretFileEnv,
                      kSecretHexEnv);
}

}  // namespace dragon::transport
