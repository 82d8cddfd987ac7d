// Cpu lists as people read them: "0-3,8,10-11".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dragon {

/// Sorted, duplicates dropped, consecutive runs as ranges; "" for none.
std::string format_cpulist(std::vector<std::uint32_t> cpus);

}  // namespace dragon
