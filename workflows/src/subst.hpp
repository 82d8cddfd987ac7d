// ${name} substitution in workflow fields: `$$` is a dollar, `${name}` a
// parameter or built-in, any other `$` itself.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::workflows {

/// The names referenced in `s`, in order (with repeats). Errc::invalid_argument
/// for an unterminated or empty `${`.
Result<std::vector<std::string>> references(const std::string& s);

/// `s` with every ${name} replaced from `values`; a name not there is an error.
Result<std::string> substitute(const std::string& s, const std::map<std::string, std::string>& values);

}  // namespace dragon::workflows
