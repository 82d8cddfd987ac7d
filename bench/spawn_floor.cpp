// The floor for launching N processes on one node: posix_spawn N copies of a
// program back to back, then wait for all. What any launcher must at least pay.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

extern char** environ;

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s N PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    const long n = std::strtol(argv[1], nullptr, 10);
    std::vector<pid_t> pids;
    pids.reserve(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) {
        pid_t pid = 0;
        if (posix_spawn(&pid, argv[2], nullptr, nullptr, argv + 2, environ) != 0) {
            std::perror("posix_spawn");
            return 1;
        }
        pids.push_back(pid);
    }
    int failed = 0;
    for (pid_t pid : pids) {
        int st = 0;
        waitpid(pid, &st, 0);
        failed += (WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : 1;
    }
    return failed == 0 ? 0 : 1;
}
