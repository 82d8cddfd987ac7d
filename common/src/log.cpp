// Logger construction for the launcher, the agents and clients.
#include "dragon/common/log.hpp"

#include <sys/stat.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "dragon/common/sys.hpp"

namespace dragon::log {

namespace {
spdlog::level::level_enum to_spd(LogLevel l) {
    switch (l) {
        case LogLevel::trace: return spdlog::level::trace;
        case LogLevel::debug: return spdlog::level::debug;
        case LogLevel::info: return spdlog::level::info;
        case LogLevel::warn: return spdlog::level::warn;
        case LogLevel::error: return spdlog::level::err;
        case LogLevel::off: return spdlog::level::off;
    }
    return spdlog::level::warn;
}
}  // namespace

Status init(const std::string& component, LogLevel level, const std::string& log_dir) {
    std::shared_ptr<spdlog::logger> logger;
    if (log_dir.empty()) {
        logger = std::make_shared<spdlog::logger>(component, std::make_shared<spdlog::sinks::stderr_sink_mt>());
        logger->set_pattern("%H:%M:%S.%e %n %^%l%$: %v");
    } else {
        if (::mkdir(log_dir.c_str(), 0755) != 0 && errno != EEXIST)
            return sys::error_from_errno(fmt::format("creating log folder {}", log_dir));
        const std::string path = log_dir + "/" + component + ".log";
        try {
            logger = std::make_shared<spdlog::logger>(
                component, std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false));
        } catch (const spdlog::spdlog_ex& e) {
            return make_error(Errc::system, "opening log file {}: {}", path, e.what());
        }
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%f [%P] %n %l: %v");
        logger->flush_on(spdlog::level::trace);
    }
    logger->set_level(to_spd(level));
    spdlog::set_default_logger(std::move(logger));
    return ok();
}

}  // namespace dragon::log
