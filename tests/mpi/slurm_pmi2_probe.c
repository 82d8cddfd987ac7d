/* slurm_pmi2_probe: a plain C program (no MPI) that uses Slurm's real PMI-2
 * client library (libpmi2-0-dev, Slurm 22.05 contribs/pmi2), the peer a
 * PMI-2 server has to satisfy. One line per rank; a failed check prints
 * "FAIL: <check>" and exits non-zero.
 *
 * What that client reads from the environment (contribs/pmi2/pmi2_api.c):
 *   PMI_FD       the connected socket (atoi); taken first.
 *   PMI_PORT     "host:port", only when PMI_FD is unset: it connects and goes
 *                straight to "cmd=init pmi_version=2 pmi_subversion=0" (no
 *                PMI-1 initack handshake, unlike MPICH's PMI-1 client).
 *   neither      singleton: size 1, rank 0, no server at all (this probe
 *                fails then, it wants a server).
 *   PMI_JOBID    optional, sent as pmijobid=... in fullinit.
 *   PMI_ID       optional, sent as srcid=... in fullinit; if unset,
 *   PMI_RANK     is sent as pmirank=... and is also what PMI2_Job_GetRank
 *                returns (the library keeps PMI_RANK, not the server's rank).
 *   PMI2_DEBUG, PMI2_CONNECT_TO_SERVER + PMI2_SUN_PATH (Slurm's stepd
 *                reconnect) are optional.
 * It does NOT read PMI_SIZE or PMI_SPAWNED: size, rank, appnum come from
 * fullinit-response (rank, size, appnum, pmi-version, pmi-subversion and rc
 * are required there; "spawned" is true iff spawner-jobid is present).
 * Every response frame must carry rc=...; kvs-get-response and
 * info-getjobattr-response need found=TRUE|FALSE (+ value= when TRUE), and
 * job-getid-response needs jobid=. The client links statically here so
 * that an LD_LIBRARY_PATH pointing at another libpmi2.so.0 (a shim) cannot
 * replace Slurm's client.
 */
#include <slurm/pmi2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1;

#define CHECK(cond, ...)                                     \
  do {                                                       \
    if (!(cond)) {                                           \
      fprintf(stderr, "slurm_pmi2_probe rank %d: FAIL: ", g_rank); \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, "\n");                                 \
      fflush(stderr);                                        \
      _exit(3);                                              \
    }                                                        \
  } while (0)

/* Parses "(vector,(first,count,ppn),...)" into node_of[0..size) the way
 * MPICH reads it: blocks in order, and when the blocks cover fewer ranks
 * than size the vector repeats (hydra answers (vector,(0,1,1)) for 4 ranks
 * on one host with one slot). Returns the ranks one pass of the vector
 * covers, or -1 when malformed. */
static int parse_mapping(const char *s, int *node_of, int size) {
  enum { MAXB = 256 };
  int first[MAXB], count[MAXB], ppn[MAXB], nb = 0, per_pass = 0;
  const char *p = strstr(s, "(vector,");
  if (!p) return -1;
  p += strlen("(vector,");
  while (*p == '(' && nb < MAXB) {
    int used;
    if (sscanf(p, "(%d,%d,%d)%n", &first[nb], &count[nb], &ppn[nb], &used) != 3) return -1;
    if (count[nb] < 1 || ppn[nb] < 1 || first[nb] < 0) return -1;
    per_pass += count[nb] * ppn[nb];
    p += used;
    nb++;
    if (*p == ',') p++;
  }
  if (*p != ')' || per_pass == 0) return -1;
  int r = 0;
  while (r < size)
    for (int b = 0; b < nb && r < size; b++)
      for (int n = 0; n < count[b] && r < size; n++)
        for (int k = 0; k < ppn[b] && r < size; k++) node_of[r++] = first[b] + n;
  return per_pass;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *env_rank = getenv("PMI_RANK");
  CHECK(getenv("PMI_FD") || getenv("PMI_PORT"), "neither PMI_FD nor PMI_PORT is set (no PMI server)");

  int spawned = -1, size = -1, rank = -1, appnum = -1;
  int rc = PMI2_Init(&spawned, &size, &rank, &appnum);
  g_rank = rank;
  CHECK(rc == PMI2_SUCCESS, "PMI2_Init returned %d", rc);
  CHECK(PMI2_Initialized(), "PMI2_Initialized is false after PMI2_Init");
  CHECK(size >= 1 && rank >= 0 && rank < size, "PMI2_Init gave rank %d size %d", rank, size);
  CHECK(spawned == 0, "PMI2_Init says spawned=%d (no spawner-jobid expected)", spawned);
  CHECK(appnum == 0, "PMI2_Init says appnum=%d", appnum);
  if (env_rank) CHECK(atoi(env_rank) == rank, "PMI_RANK=%s but fullinit-response rank=%d", env_rank, rank);
  const char *env_size = getenv("PMI_SIZE");
  if (env_size) CHECK(atoi(env_size) == size, "PMI_SIZE=%s but fullinit-response size=%d", env_size, size);

  char jobid[PMI2_MAX_VALLEN + 1] = {0};
  rc = PMI2_Job_GetId(jobid, sizeof jobid);
  CHECK(rc == PMI2_SUCCESS, "PMI2_Job_GetId returned %d", rc);
  CHECK(jobid[0] != '\0', "PMI2_Job_GetId gave an empty job id");

  char key[PMI2_MAX_KEYLEN], val[PMI2_MAX_VALLEN + 1], want[PMI2_MAX_VALLEN + 1];
  snprintf(key, sizeof key, "probe-%d", rank);
  snprintf(val, sizeof val, "value-of-%d=with=equals-%d", rank, rank * 7919);
  rc = PMI2_KVS_Put(key, val);
  CHECK(rc == PMI2_SUCCESS, "PMI2_KVS_Put(%s) returned %d", key, rc);
  rc = PMI2_KVS_Fence();
  CHECK(rc == PMI2_SUCCESS, "PMI2_KVS_Fence returned %d", rc);

  int gets = 0;
  for (int r = 0; r < size; r++) {
    if (r == rank) continue;
    snprintf(key, sizeof key, "probe-%d", r);
    snprintf(want, sizeof want, "value-of-%d=with=equals-%d", r, r * 7919);
    int len = 0;
    memset(val, 0, sizeof val);
    rc = PMI2_KVS_Get(jobid, r, key, val, sizeof val, &len);
    CHECK(rc == PMI2_SUCCESS, "PMI2_KVS_Get(%s) of rank %d returned %d", key, r, rc);
    CHECK(strcmp(val, want) == 0, "PMI2_KVS_Get(%s) gave '%s', want '%s'", key, val, want);
    CHECK(len == (int)strlen(want), "PMI2_KVS_Get(%s) length %d, want %zu", key, len, strlen(want));
    gets++;
  }

  char mapping[PMI2_MAX_ATTRVALUE + 1] = {0};
  int found = 0;
  rc = PMI2_Info_GetJobAttr("PMI_process_mapping", mapping, sizeof mapping, &found);
  CHECK(rc == PMI2_SUCCESS, "PMI2_Info_GetJobAttr(PMI_process_mapping) returned %d", rc);
  CHECK(found, "PMI_process_mapping not found");
  int *node_of = calloc((size_t)size, sizeof *node_of);
  int covered = parse_mapping(mapping, node_of, size);
  CHECK(covered > 0, "PMI_process_mapping '%s' is malformed", mapping);
  const char *env_node = getenv("DRAGON_NODE_ID");
  if (env_node) CHECK(node_of[rank] == atoi(env_node), "PMI_process_mapping '%s' puts rank %d on node %d, DRAGON_NODE_ID=%s",
                      mapping, rank, node_of[rank], env_node);

  char usize[64] = "-";
  found = 0;
  rc = PMI2_Info_GetJobAttr("universeSize", usize, sizeof usize, &found);
  if (rc != PMI2_SUCCESS || !found) strcpy(usize, "-");

  int grank = -1;
  PMI2_Job_GetRank(&grank);  /* the library's copy of PMI_RANK, 0 without it */

  printf("pmi2probe rank=%d size=%d jobid=%s appnum=%d node=%d gets=%d mapping=%s universe=%s ok\n", rank, size,
         jobid, appnum, node_of[rank], gets, mapping, usize);
  free(node_of);
  rc = PMI2_Finalize();
  CHECK(rc == PMI2_SUCCESS, "PMI2_Finalize returned %d", rc);
  return 0;
}
