// Logging set-up for a component (spdlog underneath). Logs go to stderr, or
// to <log_dir>/<component>.log; never to stdout, which belongs to programs.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

#include "dragon/common/config.hpp"
#include "dragon/common/result.hpp"

namespace dragon::log {

/// Makes spdlog's default logger the component's: named, at `level`, to
/// stderr or to a file in log_dir (created if missing). Errors name the file.
Status init(const std::string& component, LogLevel level, const std::string& log_dir);

}  // namespace dragon::log
