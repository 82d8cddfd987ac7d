// Topology: loading, exporting and restricting hwloc topologies.
#include "dragon/procgroup/topology.hpp"

#include <hwloc.h>

#include <cstdlib>
#include <fstream>
#include <utility>

#include "hwloc_wrap.hpp"

namespace dragon::procgroup {
namespace {

// Owns a topology during construction so every error path destroys it.
struct Pending {
    Pending() = default;
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    Pending(Pending&&) = delete;
    Pending& operator=(Pending&&) = delete;
    hwloc_topology_t t = nullptr;
    ~Pending() {
        if (t != nullptr) hwloc_topology_destroy(t);
    }
    hwloc_topology_t release() { return std::exchange(t, nullptr); }
};

Result<int> init(Pending& p) {
    return hw::call("topology_init", [&] { return hwloc_topology_init(&p.t); });
}

}  // namespace

Topology::Topology(Topology&& o) noexcept : topo_(std::exchange(o.topo_, nullptr)) {}

Topology& Topology::operator=(Topology&& o) noexcept {
    if (this != &o) {
        if (topo_ != nullptr) hwloc_topology_destroy(topo_);
        topo_ = std::exchange(o.topo_, nullptr);
    }
    return *this;
}

Topology::~Topology() {
    if (topo_ != nullptr) hwloc_topology_destroy(topo_);
}

Result<Topology> Topology::discover() {
    Pending p;
    DRAGON_CHECK(init(p));
    // The cgroup restriction is hwloc's default; the affinity mask is not.
    DRAGON_CHECK(hw::call("topology_set_flags", [&] {
        return hwloc_topology_set_flags(
            p.t, HWLOC_TOPOLOGY_FLAG_IS_THISSYSTEM | HWLOC_TOPOLOGY_FLAG_RESTRICT_TO_CPUBINDING);
    }));
    DRAGON_CHECK(hw::call("topology_load (this machine)", [&] { return hwloc_topology_load(p.t); }));
    return Topology(p.release());
}

Result<Topology> Topology::synthetic(std::string_view description) {
    Pending p;
    DRAGON_CHECK(init(p));
    std::string desc(description);
    auto set =
        hw::call("topology_set_synthetic", [&] { return hwloc_topology_set_synthetic(p.t, desc.c_str()); });
    if (!set)
        return make_error(Errc::invalid_argument,
                          "invalid synthetic topology '{}' (expected e.g. 'pack:2 numa:2 core:16 pu:2'): {}",
                          description, set.error().message());
    DRAGON_CHECK(hw::call(fmt::format("topology_load (synthetic '{}')", description),
                          [&] { return hwloc_topology_load(p.t); }));
    return Topology(p.release());
}

Result<Topology> Topology::from_xml_string(std::string_view xml) {
    Pending p;
    DRAGON_CHECK(init(p));
    if (xml.empty()) return make_error(Errc::invalid_argument, "empty topology XML");
    if (xml.size() > static_cast<std::size_t>(INT32_MAX))
        return make_error(Errc::too_large, "topology XML of {} bytes is too large", xml.size());
    // hwloc wants the length including the terminating NUL.
    std::string buf(xml);
    auto set = hw::call("topology_set_xmlbuffer", [&] {
        return hwloc_topology_set_xmlbuffer(p.t, buf.c_str(), static_cast<int>(buf.size() + 1));
    });
    if (!set)
        return make_error(Errc::invalid_argument, "invalid topology XML ({} bytes): {}", xml.size(),
                          set.error().message());
    auto load = hw::call("topology_load (XML)", [&] { return hwloc_topology_load(p.t); });
    if (!load)
        return make_error(Errc::invalid_argument, "invalid topology XML ({} bytes): {}", xml.size(),
                          load.error().message());
    return Topology(p.release());
}

Result<Topology> Topology::from_xml_file(const std::string& path) {
    // Read it ourselves: hwloc's file loader reports a missing file and a bad
    // file alike, and may print to stderr.
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(Errc::not_found, "cannot open topology XML file '{}'", path);
    std::string xml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return make_error(Errc::system, "error reading topology XML file '{}'", path);
    auto t = from_xml_string(xml);
    if (!t) return std::move(t).error().context(fmt::format("loading '{}'", path));
    return t;
}

Result<std::string> Topology::to_xml() const {
    char* buf = nullptr;
    int len = 0;
    DRAGON_CHECK(hw::call("topology_export_xmlbuffer",
                          [&] { return hwloc_topology_export_xmlbuffer(topo_, &buf, &len, 0); }));
    std::string out(buf, len > 0 ? static_cast<std::size_t>(len - 1) : 0U);  // len counts the NUL
    hwloc_free_xmlbuffer(topo_, buf);
    return out;
}

Status Topology::restrict_to(std::string_view cpulist) {
    auto want = DRAGON_TRY(hw::parse_cpulist(cpulist));
    hwloc_const_cpuset_t have = hwloc_topology_get_topology_cpuset(topo_);
    if (hwloc_bitmap_isincluded(want.get(), have) == 0) {
        auto extra = DRAGON_TRY(hw::make_bitmap());
        hwloc_bitmap_andnot(extra.get(), want.get(), have);
        return make_error(Errc::invalid_argument,
                          "cannot restrict to cpus '{}': the topology has no PUs {} (it has {})", cpulist,
                          hw::format_cpulist(extra.get()), hw::format_cpulist(have));
    }
    DRAGON_CHECK(hw::call(fmt::format("topology_restrict to '{}'", cpulist),
                          [&] { return hwloc_topology_restrict(topo_, want.get(), 0); }));
    return ok();
}

std::string Topology::cpulist() const {
    return hw::format_cpulist(hwloc_topology_get_topology_cpuset(topo_));
}

std::uint32_t Topology::pu_count() const {
    int n = hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_PU);
    return n > 0 ? static_cast<std::uint32_t>(n) : 0U;
}

}  // namespace dragon::procgroup
