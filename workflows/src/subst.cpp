// ${name} substitution (see subst.hpp).
#include "subst.hpp"

namespace dragon::workflows {

namespace {

// Walks `s`, handing literal text and names to the callbacks.
template <class Lit, class Ref>
Status scan(const std::string& s, Lit&& lit, Ref&& ref) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '$' || i + 1 == s.size()) {
            lit(s[i]);
            continue;
        }
        if (s[i + 1] == '$') {
            lit('$');
            ++i;
            continue;
        }
        if (s[i + 1] != '{') {
            lit('$');
            continue;
        }
        const auto end = s.find('}', i + 2);
        if (end == std::string::npos) return Error(Errc::invalid_argument, "'${' without a closing '}' (write $$ for a dollar)");
        const std::string name = s.substr(i + 2, end - i - 2);
        if (name.empty()) return Error(Errc::invalid_argument, "an empty '${}'");
        DRAGON_CHECK(ref(name));
        i = end;
    }
    return ok();
}

}  // namespace

Result<std::vector<std::string>> references(const std::string& s) {
    std::vector<std::string> out;
    DRAGON_CHECK(scan(s, [](char) {}, [&](const std::string& n) -> Status {
        out.push_back(n);
        return ok();
    }));
    return out;
}

Result<std::string> substitute(const std::string& s, const std::map<std::string, std::string>& values) {
    std::string out;
    out.reserve(s.size());
    DRAGON_CHECK(scan(s, [&](char c) { out += c; }, [&](const std::string& n) -> Status {
        auto it = values.find(n);
        if (it == values.end()) return Error(Errc::invalid_argument, "unknown parameter '${" + n + "}'");
        out += it->second;
        return ok();
    }));
    return out;
}

}  // namespace dragon::workflows
