// Names of error codes.
#include "dragon/common/result.hpp"

namespace dragon {

std::string_view to_string(Errc code) noexcept {
    switch (code) {
        case Errc::invalid_argument: return "invalid argument";
        case Errc::not_found: return "not found";
        case Errc::permission_denied: return "permission denied";
        case Errc::already_exists: return "already exists";
        case Errc::timeout: return "timed out";
        case Errc::would_block: return "would block";
        case Errc::no_space: return "no space";
        case Errc::closed: return "closed";
        case Errc::protocol: return "protocol error";
        case Errc::too_large: return "too large";
        case Errc::unsupported: return "unsupported";
        case Errc::system: return "system error";
        case Errc::internal: return "internal error";
    }
    return "unknown error";
}

}  // namespace dragon
