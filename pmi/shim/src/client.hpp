// The PMI shim's client core: one connection to the node agent, one mutex,
// speaking the simple PMI-1 or PMI-2 wire protocol (docs/pmi-shim.md).
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec.hpp"
#include "dragon/pmi_wire/codec.hpp"

namespace dragon::pmi::shim {

using pmi_wire::Message;

/// Return codes shared by the PMI-1 and PMI-2 C APIs (the two headers use the
/// same numbers for these).
enum Rc : int {
    kOk = 0,
    kFail = -1,
    kErrInit = 1,
    kErrInvalidArg = 3,
    kErrInvalidKey = 4,
    kErrInvalidKeyLength = 5,
    kErrInvalidVal = 6,
    kErrInvalidValLength = 7,
    kErrInvalidLength = 8,
    kNotFound = 1000,  // internal only: an absent key, never returned by the C API
};

/// Which wire protocol the process speaks. The first init call fixes it;
/// `singleton` is used when the environment names no server (rank 0 of 1,
/// an in-memory KVS), as MPICH does.
enum class Proto { none, singleton, pmi1, pmi2 };

/// The process-wide client. Every public member locks the one mutex, so calls
/// from several threads are serialised on the one connection. Collectives
/// (fence, allgather, bcast, ring) must still be called by every rank in the
/// same order, as the PMI API requires.
class Client {
public:
    /// The single instance; never destroyed, so exit() from PMI_Abort or at
    /// process end cannot race a destructor.
    static Client& instance();

    /// Connects and handshakes with `wanted` (pmi1 or pmi2) unless already
    /// initialised, in which case it succeeds without touching the wire.
    /// Blocks on the server's answers.
    int init(Proto wanted);
    bool initialized();
    Proto proto();
    int finalize();
    /// Sends the abort message (no answer is expected) and exits with `code`.
    [[noreturn]] void abort(int code, bool whole_job, const char* msg);

    int rank();
    int size();
    int appnum();
    bool spawned();
    std::string kvsname();
    int kvsname_max();
    int key_max();
    int value_max();
    int universe_size(int* out);

    /// Validated put of a user key/value into the job's KVS (`kvs` may be
    /// empty: our own).
    int put(std::string_view kvs, std::string_view key, std::string_view value);
    /// Gets a key. Not found is `kFail` with `*found == false`.
    int get(std::string_view kvs, std::string_view key, std::string* value, bool* found);
    /// The collective barrier that makes every earlier put visible.
    int fence();
    /// A job attribute (PMI-2 info-getjobattr; PMI-1 get in our KVS).
    int job_attr(std::string_view name, std::string* value, bool* found);
    int put_node_attr(std::string_view name, std::string_view value);
    int get_node_attr(std::string_view name, std::string* value, bool* found, bool wait);
    int publish(std::string_view service, std::string_view port);
    int unpublish(std::string_view service);
    int lookup(std::string_view service, std::string* port);

    /// Node id of every rank (owned here, stable once computed).
    int layout(const std::vector<int>** node_of);

    /// Allgather of byte strings of any length: `blobs[r]` is rank r's input.
    int allgather(std::string_view mine, std::vector<std::string>* blobs);
    /// Rank 0's `data` to every rank; `data` is in/out.
    int bcast(std::string* data);
    /// Cray PMIX_Ring: the values of the left and right neighbours.
    int ring(std::string_view mine, std::string* left, std::string* right);

private:
    Client() = default;

    // Everything below runs with mu_ held.
    int connect_fd(bool pmi1_initack);
    int init_pmi1();
    int init_pmi2();
    int fail(const std::string& why);
    int wire_error(const std::string& why);
    static bool tracing();
    void trace(const char* arrow, std::string_view bytes) const;
    int write_all(std::string_view bytes);
    std::optional<Message> read_message();
    std::optional<Message> pmi1_call(const Message& req, std::string_view expect);
    std::optional<Message> pmi1_read(std::string_view expect);
    std::optional<Message> pmi2_call(const Message& req);
    int do_put(std::string_view kvs, std::string_view key, std::string_view value);
    int do_get(std::string_view kvs, std::string_view key, std::string* value, bool* found);
    int do_fence();
    int do_job_attr(std::string_view name, std::string* value, bool* found);
    int do_layout();
    std::size_t chunk_capacity(std::string_view key) const;
    int put_blob(const std::string& key, std::string_view bytes);
    int get_blob(const std::string& key, std::string* bytes);

    std::mutex mu_;
    Proto proto_ = Proto::none;
    bool finalized_ = false;
    int fd_ = -1;
    bool broken_ = false;  // a wire error put the stream out of step
    pmi_wire::Decoder dec_{pmi_wire::Sender::server};  // the server's answers
    int rank_ = 0;
    int size_ = 1;
    int appnum_ = 0;
    bool spawned_ = false;
    std::string kvsname_;
    int kvsname_max_ = 256;
    int key_max_ = 64;
    int value_max_ = 1024;
    unsigned long seq_ = 0;
    std::vector<int> node_of_;
    bool layout_done_ = false;
    std::map<std::string, std::string, std::less<>> local_kvs_;  // singleton mode
    std::map<std::string, std::string, std::less<>> local_nattr_;
};

}  // namespace dragon::pmi::shim
