// Starting one child process: vfork + exec with the child in its own process
// group, a parent-death signal, default signal dispositions and the given
// stdin/stdout/stderr. Exec failures come back as an Error, never as a
// mystery exit code 127.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "dragon/common/result.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::rt {

struct ChildSpec {
    std::string path;               // resolved program path (see resolve_program)
    std::vector<std::string> argv;  // argv[0] included
    std::vector<std::string> envp;  // the complete environment, "K=V"
    std::string cwd;                // empty: inherit
    int stdin_fd = -1;              // fds to install as 0, 1, 2 in the child (-1: /dev/null)
    int stdout_fd = -1;
    int stderr_fd = -1;
    std::vector<unsigned> cpus;     // OS cpu (PU) indices to bind to before exec; empty: inherit
    int extra_fd = -1;              // one more fd for the child (a PMI socket), as fd number extra_fd_number()
};

/// The fd number a ChildSpec's extra_fd has in the child: the same for every
/// child of this process (a low number above the agent's reserved slots).
Result<int> extra_fd_number();

/// Starts the child; returns its pid once it has exec'd. The fds in `spec` stay
/// owned by the caller. Errors name the program and the reason (errno kept).
Result<pid_t> spawn_child(const ChildSpec& spec);

/// Finds `program` the way execvp would (PATH search when it has no '/'),
/// using the PATH given (the child's). Errc::not_found / permission_denied
/// with a message naming the program.
Result<std::string> resolve_program(const std::string& program, const std::string& path_env);

/// Merges `additions` ("K=V") into `base`, later entries replacing earlier
/// ones with the same name.
std::vector<std::string> merge_env(std::vector<std::string> base, const std::vector<std::string>& additions);

}  // namespace dragon::rt
