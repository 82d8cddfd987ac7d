// A member's stdio before it starts: pipes to the agent (forwarded or
// owner-read streams) and the files it reads or writes, opened by the agent
// so that a bad path is a clear start failure rather than the child's.
#pragma once

#include <array>
#include <cstdint>

#include "dragon/common/messages.hpp"
#include "dragon/common/sys.hpp"
#include "dragon/procgroup/io.hpp"

namespace dragon::agent {

struct MemberIo {
    std::array<sys::UniqueFd, 2> in_pipe, out_pipe, err_pipe;  // [read end, write end], when piped
    sys::UniqueFd in_file, out_file, err_file;
    bool err_to_out_file = false;  // stderr names stdout's file: one fd for both
    // The child's fds (-1: inherit /dev/null from the spawner's defaults).
    [[nodiscard]] int child_in() const { return in_pipe[0] ? in_pipe[0].get() : in_file.get(); }
    [[nodiscard]] int child_out() const { return out_pipe[1] ? out_pipe[1].get() : out_file.get(); }
    [[nodiscard]] int child_err() const;
};

/// Opens the stdio `spec` asks for, for rank `rank` (path escapes expanded
/// with `pc`). `first_run`: the rank's first start in this group, when the
/// files it owns (pg::file_owner) are emptied. A file's error names the
/// program, the stream and the file; a pipe's, the call. None is the
/// program's own fault (the member fails with 126, never 127).
Result<MemberIo> open_member_io(const msg::ProcSpec& spec, std::uint32_t rank, std::uint32_t local_rank,
                                const procgroup::PathContext& pc, bool first_run);

}  // namespace dragon::agent
