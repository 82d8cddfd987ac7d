// The one place where hwloc return codes become Errors, and RAII for hwloc bitmaps.
#pragma once

#include <hwloc.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>

#include "dragon/common/result.hpp"

namespace dragon::procgroup::hw {

/// An Error for a failed hwloc call: "hwloc <what>: <strerror(err)>".
Error error_from_hwloc(std::string_view what, int err);

/// Wraps an hwloc call that returns a negative int and sets errno on failure
/// (nearly all of them). Returns the call's non-negative result.
template <class F>
Result<int> call(std::string_view what, F&& f) {
    errno = 0;
    int rc = f();
    if (rc < 0) return error_from_hwloc(what, errno);
    return rc;
}

/// Move-only owner of an hwloc_bitmap_t.
struct BitmapFree {
    void operator()(hwloc_bitmap_s* b) const noexcept { hwloc_bitmap_free(b); }
};
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapFree>;

/// A new empty bitmap; Errc::no_space if hwloc cannot allocate one.
Result<Bitmap> make_bitmap();

/// Parses a cpu list such as "0-7,16" (the Linux cpulist format).
Result<Bitmap> parse_cpulist(std::string_view list);

/// Formats a bitmap as a cpu list ("0-7,16").
std::string format_cpulist(hwloc_const_bitmap_t set);

}  // namespace dragon::procgroup::hw
