/* pmi.h: the PMI-1 API with the Cray extensions, as exported by Dragon's
 * Cray-PMI-compatible shim (libpmi.so.0 / libpmi2.so.0). Signatures and
 * constants follow the published MPICH and Cray PMI headers; see
 * docs/pmi-shim.md for how each call maps onto the simple PMI wire protocol.
 *
 * Every function returns PMI_SUCCESS or an error code; none throws, crashes
 * on a wire error, or blocks except where noted (PMI_Init, PMI_Barrier,
 * PMI_KVS_Get, and the collectives PMI_Allgather, PMI_Allgatherv, PMI_Bcast,
 * which every rank must call in the same order). All calls are thread-safe
 * (one connection, one lock). */
#ifndef PMI_H_INCLUDED
#define PMI_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

#define PMI_SUCCESS                  0
#define PMI_FAIL                    -1
#define PMI_ERR_INIT                 1
#define PMI_ERR_NOMEM                2
#define PMI_ERR_INVALID_ARG          3
#define PMI_ERR_INVALID_KEY          4
#define PMI_ERR_INVALID_KEY_LENGTH   5
#define PMI_ERR_INVALID_VAL          6
#define PMI_ERR_INVALID_VAL_LENGTH   7
#define PMI_ERR_INVALID_LENGTH       8
#define PMI_ERR_INVALID_NUM_ARGS     9
#define PMI_ERR_INVALID_ARGS        10
#define PMI_ERR_INVALID_NUM_PARSED  11
#define PMI_ERR_INVALID_KEYVALP     12
#define PMI_ERR_INVALID_SIZE        13

typedef int PMI_BOOL;
#define PMI_TRUE  1
#define PMI_FALSE 0

/* A key/value pair of PMI_Spawn_multiple's info and preput vectors. */
typedef struct PMI_keyval_t {
    const char *key;
    char *val;
} PMI_keyval_t;

/* ---- PMI-1 ---- */

/* Connects to the node agent (PMI_FD, or PMI_PORT + PMI_ID) and fixes the
 * process's wire protocol to PMI-1 unless PMI2_Init came first. Without
 * either variable the process is a singleton (rank 0 of 1). Blocks. */
int PMI_Init(int *spawned);
int PMI_Initialized(PMI_BOOL *initialized);
int PMI_Finalize(void);
/* Tells the agent to abort the job, then exits the process with exit_code. */
int PMI_Abort(int exit_code, const char error_msg[]);
int PMI_Get_size(int *size);
int PMI_Get_rank(int *rank);
int PMI_Get_universe_size(int *size);
int PMI_Get_appnum(int *appnum);
int PMI_KVS_Get_my_name(char kvsname[], int length);
int PMI_KVS_Get_name_length_max(int *length);
int PMI_KVS_Get_key_length_max(int *length);
int PMI_KVS_Get_value_length_max(int *length);
/* Puts go to the agent at once; PMI_KVS_Commit is a no-op. A put is
 * visible to other ranks after the next PMI_Barrier. */
int PMI_KVS_Put(const char kvsname[], const char key[], const char value[]);
int PMI_KVS_Commit(const char kvsname[]);
/* PMI_FAIL when the key is absent. Blocks for the agent's answer. */
int PMI_KVS_Get(const char kvsname[], const char key[], char value[], int length);
/* Collective over the whole job; blocks. */
int PMI_Barrier(void);
/* The ranks on this node (sorted), from the node layout. */
int PMI_Get_clique_size(int *size);
int PMI_Get_clique_ranks(int ranks[], int length);
int PMI_Publish_name(const char service_name[], const char port[]);
int PMI_Unpublish_name(const char service_name[]);
int PMI_Lookup_name(const char service_name[], char port[]);
/* Not supported: returns PMI_FAIL. */
int PMI_Spawn_multiple(int count,
                       const char *cmds[],
                       const char **argvs[],
                       const int maxprocs[],
                       const int info_keyval_sizesp[],
                       const PMI_keyval_t *info_keyval_vectors[],
                       int preput_keyval_size,
                       const PMI_keyval_t preput_keyval_vector[],
                       int errors[]);

/* ---- Cray extensions ---- */

int PMI_Get_version_info(int *major, int *minor, int *revision);
/* Collective: out receives size * len bytes, rank r's in at out + r*len. */
int PMI_Allgather(void *in, void *out, int len);
/* Collective: out receives every rank's len bytes concatenated in rank
 * order; all_lens (size entries) receives each rank's len. */
int PMI_Allgatherv(void *in, int len, void *out, int *all_lens);
/* Collective: rank 0's len bytes of buf are copied to every rank's buf. */
int PMI_Bcast(void *buf, int len);
/* Node id of `rank`. */
int PMI_Get_nid(int rank, int *nid);
/* *nidlist = an int array (size entries, owned by the library, valid until
 * exit) of the node id of every rank. */
int PMI_Get_nidlist_ptr(void **nidlist);
int PMI_Get_numpes_on_smp(int *num);
int PMI_Get_pes_on_smp(int *pes, int num);
int PMI_Get_rank_in_app(int *rank);
int PMI_Get_base_rank_in_app(int *base_rank);
int PMI_Get_app_size(int appnum, int *size);
int PMI_Get_num_apps(int *num_apps);
int PMI_Get_numpes_in_app_on_smp(int *num);
int PMI_Get_pes_in_app_on_smp(int *pes, int num);

#ifdef __cplusplus
}
#endif

#endif /* PMI_H_INCLUDED */
