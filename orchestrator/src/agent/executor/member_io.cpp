// A member's stdio before it starts (member_io.hpp).
#include "member_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

namespace dragon::agent {
namespace pg = dragon::procgroup;

namespace {
Result<std::array<sys::UniqueFd, 2>> make_pipe() {
    int fds[2];
    DRAGON_CHECK(sys::call("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); }));
    return std::array<sys::UniqueFd, 2>{sys::UniqueFd(fds[0]), sys::UniqueFd(fds[1])};
}

bool piped(msg::OutputMode m) { return m == msg::OutputMode::forward || m == msg::OutputMode::owner; }
}  // namespace

int MemberIo::child_err() const {
    if (err_pipe[1]) return err_pipe[1].get();
    return err_to_out_file ? out_file.get() : err_file.get();
}

Result<MemberIo> open_member_io(const msg::ProcSpec& spec, std::uint32_t rank, std::uint32_t local_rank,
                                const pg::PathContext& pc, bool first_run) {
    auto open_file = [&](const std::string& pattern, bool write, const char* what) -> Result<sys::UniqueFd> {
        auto name = DRAGON_TRY(pg::expand_path(pattern, pc));
        if (!name.starts_with('/') && !spec.cwd.empty()) name = spec.cwd + "/" + name;
        int flags = O_CLOEXEC | (write ? O_WRONLY | O_CREAT | O_APPEND : O_RDONLY);
        const auto owner = pg::file_owner(pattern);
        if (write && first_run && (owner == pg::FileOwner::process || (owner == pg::FileOwner::node && local_rank == 0)))
            flags |= O_TRUNC;
        const int fd = ::open(name.c_str(), flags, 0644);
        if (fd < 0) return sys::error_from_errno(fmt::format("{}: cannot open {} file '{}'", spec.argv[0], what, name));
        return sys::UniqueFd(fd);
    };

    MemberIo io;
    auto in_mode = spec.stdin_mode;
    if (in_mode == msg::StdinMode::forward && rank != 0) in_mode = msg::StdinMode::null;  // as with mpiexec
    if (in_mode == msg::StdinMode::forward || in_mode == msg::StdinMode::owner)
        io.in_pipe = DRAGON_TRY(make_pipe());
    else if (in_mode == msg::StdinMode::file)
        io.in_file = DRAGON_TRY(open_file(spec.stdin_path, false, "stdin"));

    if (piped(spec.stdout_mode)) io.out_pipe = DRAGON_TRY(make_pipe());
    else if (spec.stdout_mode == msg::OutputMode::file) io.out_file = DRAGON_TRY(open_file(spec.stdout_path, true, "stdout"));

    const bool same_file = spec.stdout_mode == msg::OutputMode::file && spec.stderr_path == spec.stdout_path;
    if (piped(spec.stderr_mode)) io.err_pipe = DRAGON_TRY(make_pipe());
    else if (spec.stderr_mode == msg::OutputMode::file && same_file)
        io.err_to_out_file = true;
    else if (spec.stderr_mode == msg::OutputMode::file)
        io.err_file = DRAGON_TRY(open_file(spec.stderr_path, true, "stderr"));
    return io;
}

}  // namespace dragon::agent
