// Run id generation and validation; id allocation.
#include "dragon/common/ids.hpp"

#include <sys/random.h>

#include "dragon/common/sys.hpp"

namespace dragon {

Result<RunId> RunId::generate() {
    std::uint64_t r = 0;
    auto n = DRAGON_TRY(sys::call("getrandom", [&] { return ::getrandom(&r, sizeof r, 0); }));
    if (static_cast<std::size_t>(n) != sizeof r) return Error(Errc::system, "getrandom: short read");
    return RunId(fmt::format("{:016x}", r));
}

Result<RunId> RunId::parse(std::string_view s) {
    if (s.empty() || s.size() > 32)
        return make_error(Errc::invalid_argument, "bad run id '{}' (expected 1 to 32 hex digits)", s);
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return make_error(Errc::invalid_argument, "bad run id '{}' (expected 1 to 32 hex digits)", s);
    }
    return RunId(std::string(s));
}

Result<std::uint64_t> IdAllocator::next() { return next_block(1); }

Result<std::uint64_t> IdAllocator::next_block(std::uint64_t n) {
    if (n == 0) return make_error(Errc::invalid_argument, "an id block of 0 ids");
    if (n > remaining()) return make_error(Errc::no_space, "id range exhausted: {} asked, {} left", n, remaining());
    std::uint64_t first = next_;
    next_ += n;
    return first;
}

}  // namespace dragon
