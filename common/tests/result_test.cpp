// Result<T>, Error and the errno wrapper.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>

#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon {
namespace {

Result<int> parse_positive(int v) {
    if (v <= 0) return make_error(Errc::invalid_argument, "value {} is not positive", v);
    return v;
}

Result<int> twice_positive(int v) {
    int x = DRAGON_TRY(parse_positive(v));
    return 2 * x;
}

Status check_positive(int v) {
    DRAGON_CHECK(parse_positive(v));
    return ok();
}

TEST(Result, HoldsValueOrError) {
    auto good = parse_positive(3);
    ASSERT_TRUE(good);
    EXPECT_EQ(*good, 3);
    auto bad = parse_positive(-1);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
    EXPECT_EQ(bad.error().message(), "value -1 is not positive");
    EXPECT_EQ(bad.value_or(7), 7);
}

TEST(Result, TryPropagatesTheFirstError) {
    EXPECT_EQ(*twice_positive(4), 8);
    auto r = twice_positive(0);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message(), "value 0 is not positive");
    EXPECT_TRUE(check_positive(1));
    EXPECT_FALSE(check_positive(0));
}

TEST(Result, MoveOnlyValues) {
    Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
    ASSERT_TRUE(r);
    auto p = std::move(r).value();
    EXPECT_EQ(*p, 5);
}

TEST(Result, ContextPrefixesTheMessage) {
    Error e = Error(Errc::not_found, "no such thing").context("opening pool");
    EXPECT_EQ(e.message(), "opening pool: no such thing");
}

TEST(Sys, ErrnoBecomesANamedError) {
    auto r = sys::call("open /nonexistent/x", [] { return ::open("/nonexistent/x", O_RDONLY); });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::not_found);
    EXPECT_EQ(r.error().sys_errno(), ENOENT);
    EXPECT_EQ(r.error().message(), "open /nonexistent/x: No such file or directory");
}

TEST(Sys, UniqueFdClosesAndMoves) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    int raw = fds[0];
    {
        sys::UniqueFd a(fds[0]);
        sys::UniqueFd b(std::move(a));
        EXPECT_FALSE(a.valid());
        EXPECT_EQ(b.get(), raw);
    }
    EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed by b's destructor
    EXPECT_EQ(errno, EBADF);
    ::close(fds[1]);
}

TEST(Sys, WriteAllWaitsOnANonBlockingFd) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ASSERT_TRUE(sys::set_nonblocking(w.get(), true));
    const std::string big(1 << 20, 'x');  // far more than a pipe holds
    std::thread reader([&] {
        std::string got;
        char buf[65536];
        while (got.size() < big.size()) {
            ssize_t n = ::read(r.get(), buf, sizeof buf);
            if (n <= 0) break;
            got.append(buf, static_cast<std::size_t>(n));
        }
        EXPECT_EQ(got.size(), big.size());
    });
    EXPECT_TRUE(sys::write_all(w.get(), big.data(), big.size()));
    reader.join();
}

TEST(Sys, ReadExactReportsEarlyEof) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    sys::UniqueFd r(fds[0]), w(fds[1]);
    ASSERT_TRUE(sys::write_all(w.get(), "abc", 3));
    w.reset();
    char buf[8];
    auto st = sys::read_exact(r.get(), buf, 4);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code(), Errc::closed);
}

}  // namespace
}  // namespace dragon
