// Node lock files and stale-run removal.
#include "node_lock.hpp"

#include <filesystem>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include <spdlog/spdlog.h>

#include "dragon/common/names.hpp"

namespace dragon::rt {

namespace {

std::string shm_path(std::string_view name) { return fmt::format("{}/{}", names::kShmDir, name); }

/// Entry names in /dev/shm that parse as ours, with their parts.
Result<std::vector<std::pair<std::string, names::ShmNameParts>>> list_entries() {
    std::vector<std::pair<std::string, names::ShmNameParts>> out;
    DIR* d = ::opendir(std::string(names::kShmDir).c_str());
    if (d == nullptr) return sys::error_from_errno(fmt::format("opening {}", names::kShmDir));
    while (dirent* e = ::readdir(d)) {
        if (auto parts = names::parse_shm_name(e->d_name)) out.emplace_back(e->d_name, std::move(*parts));
    }
    ::closedir(d);
    return out;
}

bool is_lock_file(const std::string& what) { return what == "lock" || what == "lock.tmp"; }

/// Removes one entry: a file, or a directory with what is in it (Open MPI's
/// backing files of a node live in one, agent/ompi_env.hpp). 0 or an errno.
int remove_entry(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return errno;
    if (!S_ISDIR(st.st_mode)) return ::unlink(path.c_str()) == 0 ? 0 : errno;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    return ec ? ec.value() : 0;
}

}  // namespace

Result<NodeLock> NodeLock::acquire(const RunId& run, std::uint32_t node) {
    const std::string final_path = shm_path(names::shm_name(run, node, "lock"));
    const std::string tmp_path = shm_path(names::shm_name(run, node, "lock.tmp"));
    int raw = DRAGON_TRY(sys::call(fmt::format("creating {}", tmp_path), [&] {
        return ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }));
    sys::UniqueFd fd(raw);
    DRAGON_CHECK(sys::call(fmt::format("locking {}", tmp_path), [&] { return ::flock(fd.get(), LOCK_EX | LOCK_NB); }));
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const std::string info = fmt::format("pid={} node={} host={}\n", ::getpid(), node, host);
    DRAGON_CHECK(sys::write_all(fd.get(), info.data(), info.size()));
    if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
        auto e = sys::error_from_errno(fmt::format("renaming {} to {}", tmp_path, final_path));
        ::unlink(tmp_path.c_str());
        return e;
    }
    return NodeLock(run, node, std::move(fd));
}

Result<std::size_t> NodeLock::remove_node_segments() {
    auto entries = DRAGON_TRY(list_entries());
    std::size_t removed = 0;
    std::string lock_name;
    for (const auto& [name, parts] : entries) {
        if (parts.run_id != run_.str() || parts.node != node_) continue;
        if (parts.what == "lock") {
            lock_name = name;
            continue;
        }
        if (const int err = remove_entry(shm_path(name)); err == 0) ++removed;
        else if (err != ENOENT) spdlog::warn("removing {}: {}", shm_path(name), std::strerror(err));
    }
    if (!lock_name.empty() && ::unlink(shm_path(lock_name).c_str()) == 0) ++removed;
    return removed;
}

Result<CleanupReport> cleanup_stale(bool dry_run, const RunId* only_run) {
    auto entries = DRAGON_TRY(list_entries());
    // Group by (run, node): each agent owns one group.
    std::map<std::pair<std::string, std::uint32_t>, std::vector<std::string>> groups;
    std::map<std::pair<std::string, std::uint32_t>, std::vector<std::string>> locks;
    const uid_t me = ::geteuid();
    for (const auto& [name, parts] : entries) {
        if (only_run != nullptr && parts.run_id != only_run->str()) continue;
        struct stat st {};
        if (::stat(shm_path(name).c_str(), &st) != 0 || st.st_uid != me) continue;  // not ours to judge
        auto key = std::make_pair(parts.run_id, parts.node);
        groups[key].push_back(name);
        if (is_lock_file(parts.what)) locks[key].push_back(name);
    }
    CleanupReport report;
    for (auto& [key, members] : groups) {
        bool alive = false;
        std::vector<sys::UniqueFd> held;  // hold the dead locks while we remove, so no agent can take them
        for (const auto& lock : locks[key]) {
            sys::UniqueFd fd(::open(shm_path(lock).c_str(), O_RDWR | O_CLOEXEC));
            if (!fd) continue;  // vanished meanwhile
            if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
                alive = true;
                break;
            }
            held.push_back(std::move(fd));
        }
        if (alive) {
            report.live_runs.push_back(fmt::format("{}-n{}", key.first, key.second));
            continue;
        }
        // Lock files last, so a crash half-way still leaves the group recognisable.
        std::stable_partition(members.begin(), members.end(), [](const std::string& n) {
            return !is_lock_file(names::parse_shm_name(n)->what);
        });
        for (const auto& name : members) {
            const int err = dry_run ? 0 : remove_entry(shm_path(name));
            if (err == 0) report.removed.push_back(name);
            else if (err != ENOENT) spdlog::warn("removing {}: {}", shm_path(name), std::strerror(err));
        }
        // The PMIx server's rendezvous directory of that agent, if it had one.
        const auto pmix_dir = names::pmix_dir(key.first, key.second);
        std::error_code ec;
        if (std::filesystem::exists(pmix_dir, ec)) {
            if (!dry_run) std::filesystem::remove_all(pmix_dir, ec);
            if (!ec) report.removed.push_back(pmix_dir);
        }
    }
    return report;
}

}  // namespace dragon::rt
