// A C++ program of a workflow sharing a distributed dictionary with Python:
// it reads what Python wrote and writes results Python reads.
//
//     d = DDict(1, 2, 1 << 30)
//     d["input"] = b"3"
//     ProcessTemplate("dragon-ddict-example", args=(d.serialize(),))   # under Dragon
//     d["result"]  # -> b"9 (squared by C++ on node N)"
#include <cstdio>
#include <string>

#include "dragon/orchestrator/ddict.hpp"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s SERIALIZED_DDICT\n", argv[0]);
        return 2;
    }
    auto d = dragon::ddict::DDict::attach(argv[1]);
    if (!d) {
        std::fprintf(stderr, "ddict example: %s\n", d.error().message().c_str());
        return 1;
    }
    auto in = d->get("input");
    if (!in || !*in) {
        std::fprintf(stderr, "ddict example: no input: %s\n", in ? "the key 'input' is missing" : in.error().message().c_str());
        return 1;
    }
    const std::string text(reinterpret_cast<const char*>((*in)->data()), (*in)->size());
    const long x = std::stol(text);
    const char* node = std::getenv("DRAGON_NODE_ID");
    const std::string out = std::to_string(x * x) + " (squared by C++ on node " + (node ? node : "?") + ")";
    if (auto st = d->put("result", out); !st) {
        std::fprintf(stderr, "ddict example: %s\n", st.error().message().c_str());
        return 1;
    }
    // a large value both ways: 3 MiB goes in pieces through a side channel
    std::string big(3U << 20, 'z');
    if (auto st = d->put("cpp_big", big); !st) {
        std::fprintf(stderr, "ddict example: %s\n", st.error().message().c_str());
        return 1;
    }
    auto back = d->get("py_big");
    auto n = d->size();
    auto keys = d->keys();
    auto has = d->contains("result");
    auto gone = d->erase("to_erase");
    if (!back || !n || !keys || !has || !gone) {
        std::fprintf(stderr, "ddict example: a call failed\n");
        return 1;
    }
    std::printf("{\"py_big\": %zu, \"size\": %llu, \"keys\": %zu, \"contains\": %s, \"erased\": %s}\n",
                *back ? (*back)->size() : 0, static_cast<unsigned long long>(*n), keys->size(), *has ? "true" : "false",
                *gone ? "true" : "false");
    return 0;
}
