// Open MPI's per-node directories for PMIx ranks (ompi_env.hpp).
#include "ompi_env.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include <fmt/format.h>

#include "dragon/common/names.hpp"
#include "dragon/common/sys.hpp"

namespace dragon::agent {

OmpiDirs ompi_dirs(const RunId& run, std::uint32_t node) {
    return OmpiDirs{fmt::format("{}/{}", names::kShmDir, names::shm_name(run, node, "ompi")),
                    names::pmix_dir(run.str(), node) + "/ompi"};
}

Status make_ompi_dirs(const OmpiDirs& dirs) {
    // The session directory's parent is the PMIx server's (it may exist already).
    const std::string parent = std::filesystem::path(dirs.session).parent_path().string();
    for (const std::string& d : {dirs.backing, parent, dirs.session}) {
        // Private to the run's user, as Open MPI's own defaults are.
        if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
            return sys::error_from_errno(fmt::format("creating Open MPI's directory {}", d));
    }
    return ok();
}

bool nodes_share_one_host(std::uint32_t nnodes,
                          const std::function<std::string(std::uint32_t)>& hostname_of) {
    if (nnodes < 2) return false;
    const std::string first = hostname_of(0);
    for (std::uint32_t n = 1; n < nnodes; ++n)
        if (hostname_of(n) != first) return false;
    return true;
}

std::vector<OmpiSetting> ompi_settings(const OmpiDirs& dirs, bool one_host) {
    std::vector<OmpiSetting> s{
        {"OMPI_MCA_btl_vader_backing_directory", dirs.backing, {"OMPI_MCA_btl_vader_backing_directory"}},
        // The session directory's base; Open MPI would take TMPDIR or /tmp.
        {"OMPI_MCA_orte_tmpdir_base", dirs.session, {"OMPI_MCA_orte_tmpdir_base"}},
    };
    if (one_host)  // Open MPI refuses if_include next to a user's if_exclude
        s.push_back({"OMPI_MCA_btl_tcp_if_include",
                     "lo",
                     {"OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_btl_tcp_if_exclude"}});
    return s;
}

std::vector<std::string> add_ompi_env(std::vector<std::string> env, const OmpiDirs& dirs, bool one_host) {
    auto is_set = [&](const std::string& key) {
        const std::string prefix = key + "=";
        return std::any_of(env.begin(), env.end(),
                           [&](const std::string& kv) { return kv.starts_with(prefix); });
    };
    for (auto& s : ompi_settings(dirs, one_host))
        if (std::none_of(s.user_keys.begin(), s.user_keys.end(), is_set))
            env.push_back(s.name + "=" + s.value);
    return env;
}

}  // namespace dragon::agent
