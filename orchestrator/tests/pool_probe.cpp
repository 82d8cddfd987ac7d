// A managed process that uses its node's pool: attaches the pool the agent
// made, creates a channel in it, and has a second process (exec'd, attaching
// by descriptor alone) send it numbered messages. Prints what it checked.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dragon/channels/channel.hpp"
#include "dragon/orchestrator/client.hpp"

namespace ch = dragon::channels;

int main(int argc, char** argv) {
    constexpr int kMessages = 1000;
    if (argc == 3 && std::strcmp(argv[1], "--send") == 0) {  // the sender: attach by descriptor only
        auto d = ch::ChannelDescriptor::from_hex(argv[2]);
        if (!d) return std::fprintf(stderr, "pool_probe: %s\n", d.error().message().c_str()), 1;
        auto c = ch::Channel::attach(*d);
        if (!c) return std::fprintf(stderr, "pool_probe: %s\n", c.error().message().c_str()), 1;
        for (int i = 0; i < kMessages; ++i) {
            std::string m = "message " + std::to_string(i);
            if (!c->send(std::as_bytes(std::span(m)))) return 1;
        }
        return 0;
    }
    auto s = dragon::client::Session::connect_from_env();
    if (!s) return std::fprintf(stderr, "pool_probe: %s\n", s.error().message().c_str()), 1;
    auto pool = s->attach_pool();
    if (!pool) return std::fprintf(stderr, "pool_probe: %s\n", pool.error().message().c_str()), 1;
    auto c = ch::Channel::create(*pool);
    if (!c) return std::fprintf(stderr, "pool_probe: %s\n", c.error().message().c_str()), 1;
    const std::string hex = c->descriptor().to_hex();
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", argv[0], "--send", hex.c_str(), nullptr);
        _exit(127);
    }
    std::vector<std::byte> buf;
    for (int i = 0; i < kMessages; ++i) {
        if (auto st = c->recv(buf); !st) return std::fprintf(stderr, "pool_probe: %s\n", st.error().message().c_str()), 1;
        std::string got(reinterpret_cast<const char*>(buf.data()), buf.size());
        if (got != "message " + std::to_string(i)) return std::fprintf(stderr, "pool_probe: got '%s'\n", got.c_str()), 1;
    }
    int st = 0;
    waitpid(pid, &st, 0);
    std::printf("pool %s: %d messages in order from pid %d\n", pool->name().c_str(), kMessages, pid);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
