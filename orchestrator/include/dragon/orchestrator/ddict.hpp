// dragon::ddict: the distributed dictionary's C++ client, on the same wire as
// the Python one (docs/ddict.md), so a C++ or MPI program of a workflow reads
// what Python wrote and the other way round.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dragon/common/result.hpp"

namespace dragon::ddict {

using Bytes = std::vector<std::byte>;

/// A client of a dictionary some process created (Python's `DDict`) and
/// handed over as `DDict.serialize()` text. Keys are strings (Python `str`
/// keys); values are bytes (Python `bytes` values; a pickled Python value
/// is refused by get with Errc::unsupported, naming the key). Move-only; one
/// thread at a time. Every call blocks for one round trip to the key's
/// manager (on this node through shared memory, on another over a lane)
/// and fails with Errc::closed, naming the manager, if it stops answering
/// and is found dead, or Errc::timeout after `timeout`.
class DDict {
public:
    /// Joins the dictionary (needs DRAGON_AGENT_SOCKET: a process of the
    /// runtime). Errc::invalid_argument if `serialized` is not one.
    static Result<DDict> attach(std::string_view serialized,
                                std::chrono::milliseconds timeout = std::chrono::milliseconds{60000});

    DDict(DDict&&) noexcept;
    DDict& operator=(DDict&&) noexcept;
    DDict(const DDict&) = delete;
    DDict& operator=(const DDict&) = delete;
    /// Detaches (says goodbye to the managers, frees the reply channel).
    ~DDict();

    /// Stores `value` under `key`. Errc::no_space (the manager's message:
    /// which manager, its use and size) if it does not fit; nothing stored
    /// is lost then.
    Status put(std::string_view key, std::span<const std::byte> value);
    Status put(std::string_view key, std::string_view value);
    /// The value of `key`, or nullopt if there is none.
    Result<std::optional<Bytes>> get(std::string_view key);
    /// Removes `key`; whether it was there.
    Result<bool> erase(std::string_view key);
    Result<bool> contains(std::string_view key);
    /// Keys in the whole dictionary (every manager).
    Result<std::uint64_t> size();
    /// Every string key (keys of other kinds are skipped).
    Result<std::vector<std::string>> keys();

    /// Checkpoint of this client's requests (docs/ddict.md, "Checkpoints").
    void set_checkpoint(std::int64_t id) { chkpt_ = id; }
    [[nodiscard]] std::int64_t checkpoint() const { return chkpt_; }
    [[nodiscard]] std::size_t num_managers() const;
    [[nodiscard]] const std::string& name() const;

    /// The manager of tagged key bytes among n (crc32, as Python's zlib.crc32).
    static std::uint32_t manager_of(std::span<const std::byte> tagged_key, std::uint32_t n);

    struct Impl;

private:
    explicit DDict(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::int64_t chkpt_ = 0;
};

}  // namespace dragon::ddict
