/* pmi2.h: the PMI-2 API (MPICH/Slurm signatures) plus Cray's PMIX_Ring, as
 * exported by Dragon's Cray-PMI-compatible shim. PMI2_Init fixes the wire
 * protocol to PMI-2 unless PMI_Init came first; then these calls map onto
 * PMI-1 commands on the same connection (docs/pmi-shim.md). Thread-safe. */
#ifndef PMI2_H_INCLUDED
#define PMI2_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

#define PMI2_MAX_KEYLEN    64
#define PMI2_MAX_VALLEN    1024
#define PMI2_MAX_ATTRVALUE 1024
#define PMI2_ID_NULL       -1

#define PMI2_SUCCESS                 0
#define PMI2_FAIL                   -1
#define PMI2_ERR_INIT                1
#define PMI2_ERR_NOMEM               2
#define PMI2_ERR_INVALID_ARG         3
#define PMI2_ERR_INVALID_KEY         4
#define PMI2_ERR_INVALID_KEY_LENGTH  5
#define PMI2_ERR_INVALID_VAL         6
#define PMI2_ERR_INVALID_VAL_LENGTH  7
#define PMI2_ERR_INVALID_LENGTH      8
#define PMI2_ERR_INVALID_NUM_ARGS    9
#define PMI2_ERR_INVALID_ARGS       10
#define PMI2_ERR_INVALID_NUM_PARSED 11
#define PMI2_ERR_INVALID_KEYVALP    12
#define PMI2_ERR_INVALID_SIZE       13
#define PMI2_ERR_OTHER              14

/* Opaque MPI info object of the name-service calls (ignored by the shim). */
struct MPID_Info;

/* Transport hooks of PMI2_Job_Connect (declared for source compatibility). */
typedef struct PMI2_Connect_comm {
    int (*read)(void *buf, int maxlen, void *ctx);
    int (*write)(const void *buf, int len, void *ctx);
    void *ctx;
    int isMaster;
} PMI2_Connect_comm_t;

/* Connects and handshakes (fullinit). Blocks. */
int PMI2_Init(int *spawned, int *size, int *rank, int *appnum);
int PMI2_Finalize(void);
/* Non-zero when initialised. */
int PMI2_Initialized(void);
/* Tells the agent to abort (the job when flag != 0), then exits with 1. */
int PMI2_Abort(int flag, const char msg[]);
int PMI2_Job_GetId(char jobid[], int jobid_size);
int PMI2_Job_GetRank(int *rank);
int PMI2_Info_GetSize(int *size);
int PMI2_KVS_Put(const char key[], const char value[]);
/* *vallen = strlen of the value, or minus the needed length when it does not
 * fit in maxvalue (the value is then truncated). PMI2_FAIL when absent. */
int PMI2_KVS_Get(const char *jobid, int src_pmi_id, const char key[], char value[], int maxvalue, int *vallen);
/* Collective over the job; blocks. */
int PMI2_KVS_Fence(void);
int PMI2_Info_GetNodeAttr(const char name[], char value[], int valuelen, int *found, int waitfor);
int PMI2_Info_PutNodeAttr(const char name[], const char value[]);
int PMI2_Info_GetJobAttr(const char name[], char value[], int valuelen, int *found);
int PMI2_Info_GetJobAttrIntArray(const char name[], int array[], int arraylen, int *outlen, int *found);
int PMI2_Nameserv_publish(const char service_name[], const struct MPID_Info *info_ptr, const char port[]);
int PMI2_Nameserv_lookup(const char service_name[], const struct MPID_Info *info_ptr, char port[], int portLen);
int PMI2_Nameserv_unpublish(const char service_name[], const struct MPID_Info *info_ptr);

/* Cray extension, collective: every rank gives `value`; returns its rank, the
 * number of ranks, and the values of its left (rank-1) and right (rank+1)
 * neighbours, cyclically. left and right hold maxvalue bytes. */
int PMIX_Ring(const char value[], int *rank, int *ranks, char left[], char right[], int maxvalue);

#ifdef __cplusplus
}
#endif

#endif /* PMI2_H_INCLUDED */
