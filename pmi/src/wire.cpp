// The one place where the PMI wire codec's refusals become Result errors (Errc::protocol).
#include "dragon/pmi/wire.hpp"

#include <utility>

namespace dragon::pmi {

namespace {

template <class T>
Result<T> to_result(pmi_wire::Parsed<T>&& p) {
    if (!p) return Error(Errc::protocol, std::move(p).error());
    return std::move(*p);
}

}  // namespace

Result<Command> parse_v1(std::string_view line) {
    return to_result(pmi_wire::parse_v1(line, pmi_wire::Sender::client));
}

Result<Command> parse_v2(std::string_view body) {
    return to_result(pmi_wire::parse_v2(body, pmi_wire::Sender::client));
}

std::string format_v1(std::string_view cmd, Args args) { return pmi_wire::format_v1(cmd, args); }

std::string format_v2(std::string_view cmd, Args args) {
    if (auto frame = pmi_wire::format_v2(cmd, args)) return std::move(*frame);
    // Out of reach today (the keys are the server's own, values at most
    // kMaxValue bytes); should it ever happen, a refusal the client can read
    // beats a frame that lies.
    return *pmi_wire::format_v2(cmd, {{"rc", "-1"}, {"errmsg", "answer_too_large"}});
}

Result<std::optional<Command>> StreamDecoder::next() { return to_result(dec_.next()); }

}  // namespace dragon::pmi
