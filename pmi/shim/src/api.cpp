// The exported C API of the shim (PMI-1, Cray extensions, PMI-2) on top of
// the client core. Only these symbols leave the library.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "client.hpp"

// Everything declared in the public headers is exported; the rest is hidden
// by -fvisibility=hidden and the version script.
#pragma GCC visibility push(default)
#include "pmi.h"
#include "pmi2.h"
#pragma GCC visibility pop

using dragon::pmi::shim::Client;
using dragon::pmi::shim::Proto;
namespace rc = dragon::pmi::shim;

namespace {

Client& client() { return Client::instance(); }

bool ready() { return client().initialized(); }

// Copies `s` into a C buffer of `cap` bytes, NUL-terminated; false when it
// does not fit (the buffer then holds a truncated copy).
bool copy_out(const std::string& s, char* dst, int cap) {
    if (dst == nullptr || cap <= 0) return false;
    auto n = std::min(s.size(), static_cast<std::size_t>(cap - 1));
    std::memcpy(dst, s.data(), n);
    dst[n] = '\0';
    return s.size() < static_cast<std::size_t>(cap);
}

// The sorted ranks that share `node`.
int ranks_on_node(int node, std::vector<int>* out) {
    const std::vector<int>* layout = nullptr;
    if (int r = client().layout(&layout); r != rc::kOk) return r;
    out->clear();
    for (std::size_t i = 0; i < layout->size(); ++i) {
        if ((*layout)[i] == node) out->push_back(static_cast<int>(i));
    }
    return rc::kOk;
}

int my_node(int* node) {
    const std::vector<int>* layout = nullptr;
    if (int r = client().layout(&layout); r != rc::kOk) return r;
    auto me = static_cast<std::size_t>(client().rank());
    if (me >= layout->size()) return rc::kFail;
    *node = (*layout)[me];
    return rc::kOk;
}

int local_count(int* num) {
    if (num == nullptr) return rc::kErrInvalidArg;
    if (!ready()) return rc::kErrInit;
    int node = 0;
    if (int r = my_node(&node); r != rc::kOk) return r;
    std::vector<int> local;
    if (int r = ranks_on_node(node, &local); r != rc::kOk) return r;
    *num = static_cast<int>(local.size());
    return rc::kOk;
}

// Fills `pes` with up to `num` local ranks; PMI_ERR_INVALID_LENGTH when
// `num` is not the local count (what was filled is still valid).
int local_ranks(int* pes, int num) {
    if (pes == nullptr || num < 0) return rc::kErrInvalidArg;
    if (!ready()) return rc::kErrInit;
    int node = 0;
    if (int r = my_node(&node); r != rc::kOk) return r;
    std::vector<int> local;
    if (int r = ranks_on_node(node, &local); r != rc::kOk) return r;
    std::size_t n = std::min(local.size(), static_cast<std::size_t>(num));
    std::copy_n(local.begin(), n, pes);
    return local.size() <= static_cast<std::size_t>(num) ? rc::kOk : rc::kErrInvalidLength;
}

int out_int(int* dst, int value) {
    if (dst == nullptr) return rc::kErrInvalidArg;
    if (!ready()) return rc::kErrInit;
    *dst = value;
    return rc::kOk;
}

}  // namespace

extern "C" {

// ---------------------------------------------------------------- PMI-1

int PMI_Init(int* spawned) {
    int r = client().init(Proto::pmi1);
    if (r == rc::kOk && spawned != nullptr) *spawned = client().spawned() ? PMI_TRUE : PMI_FALSE;
    return r;
}

int PMI_Initialized(PMI_BOOL* initialized) {
    if (initialized == nullptr) return PMI_ERR_INVALID_ARG;
    *initialized = ready() ? PMI_TRUE : PMI_FALSE;
    return PMI_SUCCESS;
}

int PMI_Finalize(void) { return client().finalize(); }

int PMI_Abort(int exit_code, const char error_msg[]) { client().abort(exit_code, true, error_msg); }

int PMI_Get_size(int* size) { return out_int(size, ready() ? client().size() : 0); }
int PMI_Get_rank(int* rank) { return out_int(rank, ready() ? client().rank() : 0); }

int PMI_Get_universe_size(int* size) {
    if (size == nullptr) return PMI_ERR_INVALID_ARG;
    if (!ready()) return PMI_ERR_INIT;
    return client().universe_size(size);
}

int PMI_Get_appnum(int* appnum) { return out_int(appnum, ready() ? client().appnum() : 0); }

int PMI_KVS_Get_my_name(char kvsname[], int length) {
    if (kvsname == nullptr || length <= 0) return PMI_ERR_INVALID_ARG;
    if (!ready()) return PMI_ERR_INIT;
    return copy_out(client().kvsname(), kvsname, length) ? PMI_SUCCESS : PMI_ERR_INVALID_LENGTH;
}

int PMI_KVS_Get_name_length_max(int* length) { return out_int(length, ready() ? client().kvsname_max() : 0); }
int PMI_KVS_Get_key_length_max(int* length) { return out_int(length, ready() ? client().key_max() : 0); }
int PMI_KVS_Get_value_length_max(int* length) { return out_int(length, ready() ? client().value_max() : 0); }

int PMI_KVS_Put(const char kvsname[], const char key[], const char value[]) {
    if (key == nullptr) return PMI_ERR_INVALID_KEY;
    if (value == nullptr) return PMI_ERR_INVALID_VAL;
    return client().put(kvsname != nullptr ? kvsname : "", key, value);
}

int PMI_KVS_Commit(const char kvsname[]) {
    (void)kvsname;  // puts reach the agent at once
    return ready() ? PMI_SUCCESS : PMI_ERR_INIT;
}

int PMI_KVS_Get(const char kvsname[], const char key[], char value[], int length) {
    if (key == nullptr) return PMI_ERR_INVALID_KEY;
    if (value == nullptr || length <= 0) return PMI_ERR_INVALID_ARG;
    std::string v;
    bool found = false;
    int r = client().get(kvsname != nullptr ? kvsname : "", key, &v, &found);
    if (r != PMI_SUCCESS) return r;
    return copy_out(v, value, length) ? PMI_SUCCESS : PMI_ERR_INVALID_VAL_LENGTH;
}

int PMI_Barrier(void) { return client().fence(); }

int PMI_Get_clique_size(int* size) { return local_count(size); }
int PMI_Get_clique_ranks(int ranks[], int length) { return local_ranks(ranks, length); }

int PMI_Publish_name(const char service_name[], const char port[]) {
    if (service_name == nullptr || port == nullptr) return PMI_ERR_INVALID_ARG;
    return client().publish(service_name, port);
}

int PMI_Unpublish_name(const char service_name[]) {
    if (service_name == nullptr) return PMI_ERR_INVALID_ARG;
    return client().unpublish(service_name);
}

int PMI_Lookup_name(const char service_name[], char port[]) {
    if (service_name == nullptr || port == nullptr) return PMI_ERR_INVALID_ARG;
    std::string p;
    int r = client().lookup(service_name, &p);
    if (r != PMI_SUCCESS) return r;
    // The API gives no buffer size; MPICH's callers pass MPI_MAX_PORT_NAME (256).
    return copy_out(p, port, 256) ? PMI_SUCCESS : PMI_FAIL;
}

int PMI_Spawn_multiple(int, const char*[], const char**[], const int[], const int[], const PMI_keyval_t*[], int,
                       const PMI_keyval_t[], int[]) {
    return ready() ? PMI_FAIL : PMI_ERR_INIT;  // Dragon jobs do not spawn through PMI
}

// ---------------------------------------------------------------- Cray extensions

int PMI_Get_version_info(int* major, int* minor, int* revision) {
    if (major == nullptr || minor == nullptr || revision == nullptr) return PMI_ERR_INVALID_ARG;
    *major = 5;  // the Cray PMI generation whose API this library follows
    *minor = 0;
    *revision = 0;
    return PMI_SUCCESS;
}

int PMI_Allgather(void* in, void* out, int len) {
    if (len < 0 || (len > 0 && (in == nullptr || out == nullptr))) return PMI_ERR_INVALID_ARG;
    std::vector<std::string> blobs;
    int r = client().allgather(std::string_view(static_cast<const char*>(in), static_cast<std::size_t>(len)), &blobs);
    if (r != PMI_SUCCESS) return r;
    auto* dst = static_cast<char*>(out);
    for (const auto& b : blobs) {
        if (b.size() != static_cast<std::size_t>(len)) return PMI_ERR_INVALID_LENGTH;
    }
    for (std::size_t i = 0; i < blobs.size(); ++i) std::memcpy(dst + i * static_cast<std::size_t>(len), blobs[i].data(), blobs[i].size());
    return PMI_SUCCESS;
}

int PMI_Allgatherv(void* in, int len, void* out, int* all_lens) {
    if (len < 0 || (len > 0 && in == nullptr) || out == nullptr || all_lens == nullptr) return PMI_ERR_INVALID_ARG;
    std::vector<std::string> blobs;
    int r = client().allgather(std::string_view(static_cast<const char*>(in), static_cast<std::size_t>(len)), &blobs);
    if (r != PMI_SUCCESS) return r;
    auto* dst = static_cast<char*>(out);
    std::size_t off = 0;
    for (std::size_t i = 0; i < blobs.size(); ++i) {
        all_lens[i] = static_cast<int>(blobs[i].size());
        std::memcpy(dst + off, blobs[i].data(), blobs[i].size());
        off += blobs[i].size();
    }
    return PMI_SUCCESS;
}

int PMI_Bcast(void* buf, int len) {
    if (len < 0 || (len > 0 && buf == nullptr)) return PMI_ERR_INVALID_ARG;
    std::string data(static_cast<const char*>(buf), static_cast<std::size_t>(len));
    int r = client().bcast(&data);
    if (r != PMI_SUCCESS) return r;
    if (data.size() != static_cast<std::size_t>(len)) return PMI_ERR_INVALID_LENGTH;
    std::memcpy(buf, data.data(), data.size());
    return PMI_SUCCESS;
}

int PMI_Get_nid(int rank, int* nid) {
    if (nid == nullptr) return PMI_ERR_INVALID_ARG;
    if (!ready()) return PMI_ERR_INIT;
    const std::vector<int>* layout = nullptr;
    if (int r = client().layout(&layout); r != PMI_SUCCESS) return r;
    if (rank < 0 || static_cast<std::size_t>(rank) >= layout->size()) return PMI_ERR_INVALID_ARG;
    *nid = (*layout)[static_cast<std::size_t>(rank)];
    return PMI_SUCCESS;
}

int PMI_Get_nidlist_ptr(void** nidlist) {
    if (nidlist == nullptr) return PMI_ERR_INVALID_ARG;
    if (!ready()) return PMI_ERR_INIT;
    const std::vector<int>* layout = nullptr;
    if (int r = client().layout(&layout); r != PMI_SUCCESS) return r;
    *nidlist = const_cast<int*>(layout->data());  // owned by the library; callers only read it
    return PMI_SUCCESS;
}

int PMI_Get_numpes_on_smp(int* num) { return local_count(num); }
int PMI_Get_pes_on_smp(int* pes, int num) { return local_ranks(pes, num); }

// One application per job: app-relative values are the job's.
int PMI_Get_rank_in_app(int* rank) { return out_int(rank, ready() ? client().rank() : 0); }
int PMI_Get_base_rank_in_app(int* base_rank) { return out_int(base_rank, 0); }

int PMI_Get_app_size(int appnum, int* size) {
    if (size == nullptr) return PMI_ERR_INVALID_ARG;
    if (!ready()) return PMI_ERR_INIT;
    if (appnum != client().appnum()) return PMI_ERR_INVALID_ARG;
    *size = client().size();
    return PMI_SUCCESS;
}

int PMI_Get_num_apps(int* num_apps) { return out_int(num_apps, 1); }
int PMI_Get_numpes_in_app_on_smp(int* num) { return local_count(num); }
int PMI_Get_pes_in_app_on_smp(int* pes, int num) { return local_ranks(pes, num); }

// ---------------------------------------------------------------- PMI-2

int PMI2_Init(int* spawned, int* size, int* rank, int* appnum) {
    int r = client().init(Proto::pmi2);
    if (r != PMI2_SUCCESS) return r;
    if (spawned != nullptr) *spawned = client().spawned() ? 1 : 0;
    if (size != nullptr) *size = client().size();
    if (rank != nullptr) *rank = client().rank();
    if (appnum != nullptr) *appnum = client().appnum();
    return PMI2_SUCCESS;
}

int PMI2_Finalize(void) { return client().finalize(); }
int PMI2_Initialized(void) { return ready() ? 1 : 0; }
int PMI2_Abort(int flag, const char msg[]) { client().abort(1, flag != 0, msg); }

int PMI2_Job_GetId(char jobid[], int jobid_size) {
    if (jobid == nullptr || jobid_size <= 0) return PMI2_ERR_INVALID_ARG;
    if (!ready()) return PMI2_ERR_INIT;
    return copy_out(client().kvsname(), jobid, jobid_size) ? PMI2_SUCCESS : PMI2_ERR_INVALID_LENGTH;
}

int PMI2_Job_GetRank(int* rank) { return out_int(rank, ready() ? client().rank() : 0); }
int PMI2_Info_GetSize(int* size) { return out_int(size, ready() ? client().size() : 0); }

int PMI2_KVS_Put(const char key[], const char value[]) {
    if (key == nullptr) return PMI2_ERR_INVALID_KEY;
    if (value == nullptr) return PMI2_ERR_INVALID_VAL;
    return client().put("", key, value);
}

int PMI2_KVS_Get(const char* jobid, int src_pmi_id, const char key[], char value[], int maxvalue, int* vallen) {
    (void)src_pmi_id;  // a hint the wire does not need
    if (key == nullptr) return PMI2_ERR_INVALID_KEY;
    if (value == nullptr || maxvalue <= 0) return PMI2_ERR_INVALID_ARG;
    std::string v;
    bool found = false;
    int r = client().get(jobid != nullptr ? jobid : "", key, &v, &found);
    if (r != PMI2_SUCCESS) return r;
    bool fits = copy_out(v, value, maxvalue);
    if (vallen != nullptr) *vallen = fits ? static_cast<int>(v.size()) : -static_cast<int>(v.size() + 1);
    return PMI2_SUCCESS;
}

int PMI2_KVS_Fence(void) { return client().fence(); }

int PMI2_Info_GetNodeAttr(const char name[], char value[], int valuelen, int* found, int waitfor) {
    if (name == nullptr || value == nullptr || valuelen <= 0 || found == nullptr) return PMI2_ERR_INVALID_ARG;
    if (!ready()) return PMI2_ERR_INIT;
    std::string v;
    bool f = false;
    int r = client().get_node_attr(name, &v, &f, waitfor != 0);
    if (r != PMI2_SUCCESS) return r;
    *found = f ? 1 : 0;
    if (f && !copy_out(v, value, valuelen)) return PMI2_ERR_INVALID_VAL_LENGTH;
    return PMI2_SUCCESS;
}

int PMI2_Info_PutNodeAttr(const char name[], const char value[]) {
    if (name == nullptr || value == nullptr) return PMI2_ERR_INVALID_ARG;
    if (!ready()) return PMI2_ERR_INIT;
    return client().put_node_attr(name, value);
}

int PMI2_Info_GetJobAttr(const char name[], char value[], int valuelen, int* found) {
    if (name == nullptr || value == nullptr || valuelen <= 0 || found == nullptr) return PMI2_ERR_INVALID_ARG;
    if (!ready()) return PMI2_ERR_INIT;
    std::string v;
    bool f = false;
    int r = client().job_attr(name, &v, &f);
    if (r != PMI2_SUCCESS) return r;
    *found = f ? 1 : 0;
    if (f && !copy_out(v, value, valuelen)) return PMI2_ERR_INVALID_VAL_LENGTH;
    return PMI2_SUCCESS;
}

int PMI2_Info_GetJobAttrIntArray(const char name[], int array[], int arraylen, int* outlen, int* found) {
    if (name == nullptr || array == nullptr || arraylen < 0 || outlen == nullptr || found == nullptr)
        return PMI2_ERR_INVALID_ARG;
    if (!ready()) return PMI2_ERR_INIT;
    std::string v;
    bool f = false;
    int r = client().job_attr(name, &v, &f);
    if (r != PMI2_SUCCESS) return r;
    *found = f ? 1 : 0;
    *outlen = 0;
    if (!f) return PMI2_SUCCESS;
    auto ints = dragon::pmi::shim::parse_int_list(v);
    if (!ints) return PMI2_FAIL;
    std::size_t n = std::min(ints->size(), static_cast<std::size_t>(arraylen));
    std::copy_n(ints->begin(), n, array);
    *outlen = static_cast<int>(n);
    return PMI2_SUCCESS;
}

int PMI2_Nameserv_publish(const char service_name[], const struct MPID_Info* info_ptr, const char port[]) {
    (void)info_ptr;
    if (service_name == nullptr || port == nullptr) return PMI2_ERR_INVALID_ARG;
    return client().publish(service_name, port);
}

int PMI2_Nameserv_lookup(const char service_name[], const struct MPID_Info* info_ptr, char port[], int portLen) {
    (void)info_ptr;
    if (service_name == nullptr || port == nullptr || portLen <= 0) return PMI2_ERR_INVALID_ARG;
    std::string p;
    int r = client().lookup(service_name, &p);
    if (r != PMI2_SUCCESS) return r;
    return copy_out(p, port, portLen) ? PMI2_SUCCESS : PMI2_ERR_INVALID_LENGTH;
}

int PMI2_Nameserv_unpublish(const char service_name[], const struct MPID_Info* info_ptr) {
    (void)info_ptr;
    if (service_name == nullptr) return PMI2_ERR_INVALID_ARG;
    return client().unpublish(service_name);
}

int PMIX_Ring(const char value[], int* rank, int* ranks, char left[], char right[], int maxvalue) {
    if (value == nullptr || rank == nullptr || ranks == nullptr || left == nullptr || right == nullptr || maxvalue <= 0)
        return PMI2_ERR_INVALID_ARG;
    std::string l;
    std::string r;
    int rcode = client().ring(value, &l, &r);
    if (rcode != PMI2_SUCCESS) return rcode;
    *rank = client().rank();
    *ranks = client().size();
    bool ok = copy_out(l, left, maxvalue);
    ok = copy_out(r, right, maxvalue) && ok;
    return ok ? PMI2_SUCCESS : PMI2_ERR_INVALID_VAL_LENGTH;
}

}  // extern "C"
