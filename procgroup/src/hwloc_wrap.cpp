// The one place where hwloc return codes become Errors (see hwloc_wrap.hpp).
#include "hwloc_wrap.hpp"

#include <cctype>
#include <cstdlib>

#include "dragon/common/sys.hpp"

namespace dragon::procgroup::hw {

Error error_from_hwloc(std::string_view what, int err) {
    if (err == 0) return make_error(Errc::system, "hwloc {} failed (no errno set)", what);
    auto e = sys::error_from_errno(fmt::format("hwloc {}", what), err);
    return e;
}

Result<Bitmap> make_bitmap() {
    Bitmap b(hwloc_bitmap_alloc());
    if (!b) return make_error(Errc::no_space, "hwloc bitmap allocation failed");
    return b;
}

Result<Bitmap> parse_cpulist(std::string_view list) {
    // hwloc's list parser accepts trailing garbage and open ranges ("3-"), so
    // the syntax is checked here first: items are N or N-M with N <= M.
    std::string s(list);
    if (s.empty()) return make_error(Errc::invalid_argument, "empty cpu list");
    std::size_t i = 0;
    auto number = [&](unsigned long& out) {
        std::size_t start = i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) != 0) ++i;
        if (i == start || i - start > 6) return false;
        out = std::strtoul(s.c_str() + start, nullptr, 10);
        return true;
    };
    for (;;) {
        unsigned long a = 0;
        unsigned long b = 0;
        if (!number(a))
            return make_error(Errc::invalid_argument, "bad cpu list '{}': expected a cpu number at offset {}",
                              list, i);
        b = a;
        if (i < s.size() && s[i] == '-') {
            ++i;
            if (!number(b))
                return make_error(Errc::invalid_argument,
                                  "bad cpu list '{}': expected a cpu number at offset {}", list, i);
            if (b < a)
                return make_error(Errc::invalid_argument, "bad cpu list '{}': range {}-{} is reversed", list,
                                  a, b);
        }
        if (i == s.size()) break;
        if (s[i] != ',')
            return make_error(Errc::invalid_argument, "bad cpu list '{}': unexpected '{}' at offset {}", list,
                              s[i], i);
        ++i;
    }
    auto bm = DRAGON_TRY(make_bitmap());
    DRAGON_CHECK(call("bitmap_list_sscanf", [&] { return hwloc_bitmap_list_sscanf(bm.get(), s.c_str()); }));
    return bm;
}

std::string format_cpulist(hwloc_const_bitmap_t set) {
    char* str = nullptr;
    if (hwloc_bitmap_list_asprintf(&str, set) < 0 || str == nullptr) return "?";
    std::string out(str);
    std::free(str);  // NOLINT(cppcoreguidelines-no-malloc,cppcoreguidelines-owning-memory): hwloc allocates
                     // with malloc
    return out;
}

}  // namespace dragon::procgroup::hw
