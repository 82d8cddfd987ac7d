// The PMI service's own part: jobs by group, fence batches that come before
// their group (or after it closed here), and the end of the run. The
// flavours are in wire_job.cpp (simple PMI, Cray) and pmix_job.cpp.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "dragon/pmi/pmix.hpp"
#include "pmi.hpp"

namespace dragon::agent {

namespace {
constexpr std::size_t kMaxEarlyFenceBytes = 64U << 20;  // fence batches held for groups not started here yet
constexpr std::size_t kMaxForgotten = 4096;             // closed groups remembered (ids only grow)
}  // namespace

PmiService::PmiService(Router& router, asio::io_context& io, PmiOptions opts)
    : router_(router), io_(io), opts_(std::move(opts)) {}

PmiService::~PmiService() { stop(); }

void PmiService::bind(Dispatcher<std::uint32_t>& nodes) {
    nodes.on<msg::PmiFence>([this](std::uint32_t from, msg::PmiFence&& m) { on_fence(from, std::move(m)); });
    nodes.on<msg::PmixDmodexRequest>(
        [this](std::uint32_t from, msg::PmixDmodexRequest&& m) { on_dmodex_request(from, m); });
    nodes.on<msg::PmixDmodexReply>([this](std::uint32_t, msg::PmixDmodexReply&& m) { on_dmodex_reply(m); });
}

Result<PmiJob*> PmiService::start(const msg::ExecMembers& m) {
    if (m.spec.pmi == msg::PmiMode::none) return make_error(Errc::internal, "group {} has no PMI", m.group_id);
    if (m.rank_nodes.size() != m.nranks)
        return make_error(Errc::protocol, "PMI group {}: {} rank nodes for {} ranks", m.group_id, m.rank_nodes.size(),
                          m.nranks);
    if (jobs_.contains(m.group_id)) return make_error(Errc::internal, "PMI group {} started twice", m.group_id);
    auto job = DRAGON_TRY(m.spec.pmi == msg::PmiMode::pmix ? make_pmix_job(m) : make_wire_job(m));
    PmiJob* j = jobs_.emplace(m.group_id, std::move(job)).first->second.get();
    // Fence batches of other nodes that came before this group did.
    if (auto early = early_fences_.find(m.group_id); early != early_fences_.end()) {
        auto batches = std::move(early->second);
        early_fences_.erase(early);
        for (auto& [from, f] : batches) {
            early_fence_bytes_ -= f.batch.size();
            j->remote_fence(from, std::move(f));
        }
    }
    return j;
}

void PmiService::on_fence(std::uint32_t from, msg::PmiFence&& m) {
    if (auto it = jobs_.find(m.group_id); it != jobs_.end()) return it->second->remote_fence(from, std::move(m));
    if (forgotten_.contains(m.group_id)) return;  // it ended here while its peers were in a fence
    // Its members here are not started yet (exec_members comes over another link).
    if (early_fence_bytes_ + m.batch.size() > kMaxEarlyFenceBytes)
        return spdlog::error("PMI fence batch for unknown group {} from node {} dropped", m.group_id, from);
    early_fence_bytes_ += m.batch.size();
    early_fences_[m.group_id].emplace_back(from, std::move(m));
}

void PmiService::forget(std::uint64_t group_id) {
    jobs_.erase(group_id);
    if (auto early = early_fences_.find(group_id); early != early_fences_.end()) {
        for (const auto& [from, f] : early->second) early_fence_bytes_ -= f.batch.size();
        early_fences_.erase(early);
    }
    forgotten_.insert(group_id);
    while (forgotten_.size() > kMaxForgotten) forgotten_.erase(forgotten_.begin());
}

void PmiService::stop() {
    jobs_.clear();  // PMIx namespaces are deregistered while the server still runs
    dmodex_waiting_.clear();  // their ranks are gone with their namespaces
    pmix_.reset();
    if (!pmix_tmpdir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(pmix_tmpdir_, ec);
    }
}

const std::string& PmiService::shim_dir() {
    if (shim_dir_.empty()) {
        std::error_code fec;
        auto exe = std::filesystem::read_symlink("/proc/self/exe", fec);
        if (!fec) shim_dir_ = (exe.parent_path().parent_path() / "lib").string();
        if (shim_dir_.empty() || !std::filesystem::exists(shim_dir_ + "/libpmi.so.0"))
            spdlog::warn("--pmi cray: no libpmi.so.0 in {}; ranks use whatever libpmi they find", shim_dir_);
    }
    return shim_dir_;
}

}  // namespace dragon::agent
