// The workflow loader and DAG expansion: any bytes are an error or a DAG, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dragon/workflows/workflow.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    auto wf = dragon::workflows::load_string(text, "fuzz.yaml", "/fuzz");
    if (!wf) return 0;
    auto dag = dragon::workflows::expand(*wf);
    if (dag) {
        (void)dragon::workflows::to_dot(*wf, *dag);
        (void)dragon::workflows::plan_text(*wf, *dag);
    }
    return 0;
}
