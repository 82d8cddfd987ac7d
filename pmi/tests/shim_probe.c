/* shim_probe: exercises every function the Cray-PMI shim exports and checks
 * what a rank can check by itself; prints one machine-readable line per rank.
 *
 * usage: shim_probe pmi1|pmi2 [abort]
 *   pmi1/pmi2  which init is called first (fixes the wire protocol)
 *   abort      after init, rank size-1 calls PMI_Abort(7) (PMI2_Abort in
 *              pmi2 mode); the launcher must end the job with that status.
 * Exit 0 when every check passed; otherwise 1 and a message naming the check. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmi.h"
#include "pmi2.h"

static int g_rank = -1;

static void failf(const char *check, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "shim_probe rank %d: FAILED check '%s': ", g_rank, check);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

#define CHECK_RC(check, call)                                                   \
    do {                                                                        \
        int rc_ = (call);                                                       \
        if (rc_ != PMI_SUCCESS) failf(check, "%s returned %d", #call, rc_);     \
    } while (0)

#define CHECK(check, cond, ...)                                                 \
    do {                                                                        \
        if (!(cond)) failf(check, __VA_ARGS__);                                 \
    } while (0)

static unsigned char pattern(int rank, size_t i) { return (unsigned char)((rank * 31 + (int)i * 7 + 3) & 0xff); }

/* Several threads share the one connection: each gets other ranks' keys. */
struct getter {
    int size, rank, thread, bad;
    const char *kvsname, *mode;
};

static void *get_many(void *arg) {
    struct getter *g = arg;
    for (int i = 0; i < 25; ++i) {
        int peer = (g->rank + g->thread + i) % g->size;
        char key[64], want[64], got[256];
        snprintf(key, sizeof key, "probe.k1.%d", peer);
        snprintf(want, sizeof want, "v1-%d-%s", peer, g->mode);
        if (PMI_KVS_Get(g->kvsname, key, got, (int)sizeof got) != PMI_SUCCESS || strcmp(got, want) != 0) g->bad++;
        int nid = -1;
        if (PMI_Get_nid(peer, &nid) != PMI_SUCCESS || nid < 0) g->bad++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "pmi1";
    int pmi2_mode = strcmp(mode, "pmi2") == 0;
    if (!pmi2_mode && strcmp(mode, "pmi1") != 0) {
        fprintf(stderr, "usage: shim_probe pmi1|pmi2 [abort]\n");
        return 2;
    }
    int do_abort = argc > 2 && strcmp(argv[2], "abort") == 0;

    /* ---- init: the mode's family first, then the other must be a no-op ---- */
    int spawned = -1, size = 0, rank = -1, appnum = -1;
    PMI_BOOL inited = PMI_TRUE;
    CHECK_RC("initialized-before", PMI_Initialized(&inited));
    CHECK("initialized-before", inited == PMI_FALSE && PMI2_Initialized() == 0, "initialised before init");
    if (pmi2_mode) {
        CHECK_RC("pmi2-init", PMI2_Init(&spawned, &size, &rank, &appnum));
        int sp1 = -1;
        CHECK_RC("pmi1-init-after-pmi2", PMI_Init(&sp1));
    } else {
        CHECK_RC("pmi1-init", PMI_Init(&spawned));
        int s2 = 0, r2 = -1, a2 = -1, sp2 = -1;
        CHECK_RC("pmi2-init-after-pmi1", PMI2_Init(&sp2, &s2, &r2, &a2));
        CHECK_RC("get-size", PMI_Get_size(&size));
        CHECK_RC("get-rank", PMI_Get_rank(&rank));
        CHECK("pmi2-init-after-pmi1", s2 == size && r2 == rank, "PMI2_Init gave %d/%d, PMI-1 %d/%d", r2, s2, rank, size);
        appnum = a2;
    }
    g_rank = rank;
    CHECK_RC("initialized", PMI_Initialized(&inited));
    CHECK("initialized", inited == PMI_TRUE && PMI2_Initialized() != 0, "not initialised after init");
    CHECK("spawned", spawned == 0, "spawned=%d", spawned);

    int s = 0, r = -1, a = -1;
    CHECK_RC("get-size", PMI_Get_size(&s));
    CHECK_RC("get-rank", PMI_Get_rank(&r));
    CHECK("rank-size", s == size && r == rank && size > 0 && rank >= 0 && rank < size, "rank %d/%d vs %d/%d", r, s, rank, size);
    CHECK_RC("pmi2-rank", PMI2_Job_GetRank(&r));
    CHECK_RC("pmi2-size", PMI2_Info_GetSize(&s));
    CHECK("pmi2-rank-size", s == size && r == rank, "PMI2 rank %d/%d", r, s);
    CHECK_RC("appnum", PMI_Get_appnum(&a));
    CHECK("appnum", a == appnum && a >= 0, "appnum %d vs %d", a, appnum);
    int universe = 0;
    CHECK_RC("universe", PMI_Get_universe_size(&universe));
    CHECK("universe", universe >= size, "universe %d < size %d", universe, size);

    if (do_abort) {
        PMI_Barrier();
        if (rank == size - 1) {
            if (pmi2_mode) PMI2_Abort(1, "shim_probe abort test");
            PMI_Abort(7, "shim_probe abort test");
            failf("abort", "PMI_Abort returned");
        }
        PMI_Barrier(); /* the others wait here until the launcher kills them */
        return 0;
    }

    /* ---- sizes, names, version ---- */
    int kvs_max = 0, key_max = 0, val_max = 0;
    CHECK_RC("maxes", PMI_KVS_Get_name_length_max(&kvs_max));
    CHECK_RC("maxes", PMI_KVS_Get_key_length_max(&key_max));
    CHECK_RC("maxes", PMI_KVS_Get_value_length_max(&val_max));
    CHECK("maxes", kvs_max > 0 && key_max >= 32 && val_max >= 256, "%d %d %d", kvs_max, key_max, val_max);
    char kvsname[1024], jobid[1024];
    CHECK_RC("kvsname", PMI_KVS_Get_my_name(kvsname, (int)sizeof kvsname));
    CHECK_RC("jobid", PMI2_Job_GetId(jobid, (int)sizeof jobid));
    CHECK("kvsname", kvsname[0] != '\0' && strcmp(kvsname, jobid) == 0, "kvsname '%s' jobid '%s'", kvsname, jobid);
    char tiny[1];
    CHECK("kvsname-too-small", PMI_KVS_Get_my_name(tiny, 1) != PMI_SUCCESS, "a 1-byte buffer was accepted");
    int maj = -1, min = -1, rev = -1;
    CHECK_RC("version", PMI_Get_version_info(&maj, &min, &rev));

    /* ---- KVS: puts of both families, visible to others after the barrier ---- */
    char key[128], val[2048];
    snprintf(key, sizeof key, "probe.k1.%d", rank);
    snprintf(val, sizeof val, "v1-%d-%s", rank, mode);
    CHECK_RC("kvs-put", PMI_KVS_Put(kvsname, key, val));
    CHECK_RC("kvs-commit", PMI_KVS_Commit(kvsname));
    /* ';' is doubled on the PMI-2 wire; MPICH 4.0's hydra truncates such a
     * value at the first ';', so SHIM_PROBE_NO_SEMICOLON=1 skips it there. */
    const char *sep = getenv("SHIM_PROBE_NO_SEMICOLON") ? "_" : ";";
    snprintf(key, sizeof key, "probe.k2.%d", rank);
    snprintf(val, sizeof val, "v2%s%d%ssemi", sep, rank, sep);
    CHECK_RC("pmi2-kvs-put", PMI2_KVS_Put(key, val));
    snprintf(key, sizeof key, "probe.ints.%d", rank);
    snprintf(val, sizeof val, "%d,%d,%d", rank, rank + 1, rank + 2);
    CHECK_RC("kvs-put-ints", PMI_KVS_Put(kvsname, key, val));
    CHECK_RC("barrier", PMI_Barrier());
    CHECK_RC("pmi2-fence", PMI2_KVS_Fence());
    for (int k = 0; k < size; ++k) {
        int peer = (rank + 1 + k) % size;
        char want[256], got[1024];
        snprintf(key, sizeof key, "probe.k1.%d", peer);
        snprintf(want, sizeof want, "v1-%d-%s", peer, mode);
        CHECK_RC("kvs-get", PMI_KVS_Get(kvsname, key, got, (int)sizeof got));
        CHECK("kvs-get", strcmp(got, want) == 0, "%s = '%s', want '%s'", key, got, want);
        snprintf(key, sizeof key, "probe.k2.%d", peer);
        snprintf(want, sizeof want, "v2%s%d%ssemi", sep, peer, sep);
        int vallen = 0;
        CHECK_RC("pmi2-kvs-get", PMI2_KVS_Get(jobid, PMI2_ID_NULL, key, got, (int)sizeof got, &vallen));
        CHECK("pmi2-kvs-get", strcmp(got, want) == 0 && vallen == (int)strlen(want), "%s = '%s' (len %d), want '%s'", key,
              got, vallen, want);
        if (k > 2) break; /* a few peers are enough at large scale */
    }
    {
        pthread_t th[4];
        struct getter gs[4];
        for (int t = 0; t < 4; ++t) {
            gs[t] = (struct getter){size, rank, t, 0, kvsname, mode};
            CHECK("threads", pthread_create(&th[t], NULL, get_many, &gs[t]) == 0, "pthread_create");
        }
        for (int t = 0; t < 4; ++t) {
            pthread_join(th[t], NULL);
            CHECK("threads", gs[t].bad == 0, "thread %d saw %d bad answers", t, gs[t].bad);
        }
    }
    CHECK("kvs-get-missing", PMI_KVS_Get(kvsname, "probe.no.such.key", val, (int)sizeof val) != PMI_SUCCESS,
          "a missing key was found");
    {
        char small[4];
        snprintf(key, sizeof key, "probe.k1.%d", rank);
        CHECK("kvs-get-small", PMI_KVS_Get(kvsname, key, small, (int)sizeof small) != PMI_SUCCESS,
              "a 4-byte buffer took a longer value");
    }

    /* ---- job attributes ---- */
    int found = 0, ints[8], nints = 0;
    char mapping[PMI2_MAX_ATTRVALUE];
    CHECK_RC("jobattr-mapping", PMI2_Info_GetJobAttr("PMI_process_mapping", mapping, (int)sizeof mapping, &found));
    int have_mapping = found;
    CHECK_RC("jobattr-missing", PMI2_Info_GetJobAttr("dragon.probe.no.such.attr", val, (int)sizeof val, &found));
    CHECK("jobattr-missing", found == 0, "a missing attribute was found");
    CHECK_RC("jobattr-intarray", PMI2_Info_GetJobAttrIntArray("dragon.probe.no.such.attr", ints, 8, &nints, &found));
    CHECK("jobattr-intarray", found == 0 && nints == 0, "missing int array found");
    if (!pmi2_mode) { /* under PMI-1 a job attribute is a KVS key */
        snprintf(key, sizeof key, "probe.ints.%d", (rank + 1) % size);
        CHECK_RC("jobattr-intarray", PMI2_Info_GetJobAttrIntArray(key, ints, 8, &nints, &found));
        int p = (rank + 1) % size;
        CHECK("jobattr-intarray", found && nints == 3 && ints[0] == p && ints[2] == p + 2, "found %d n %d", found, nints);
    }

    /* ---- node layout (Cray) ---- */
    int nid = -1, clique_size = 0, smp = 0, smp_app = 0;
    CHECK_RC("nid", PMI_Get_nid(rank, &nid));
    void *nidlist_v = NULL;
    CHECK_RC("nidlist", PMI_Get_nidlist_ptr(&nidlist_v));
    const int *nidlist = (const int *)nidlist_v;
    CHECK("nidlist", nidlist != NULL && nidlist[rank] == nid, "nidlist[rank] != nid");
    for (int q = 0; q < size; ++q) {
        int n2 = -2;
        CHECK_RC("nid-of-peer", PMI_Get_nid(q, &n2));
        CHECK("nid-of-peer", n2 == nidlist[q], "PMI_Get_nid(%d)=%d, nidlist %d", q, n2, nidlist[q]);
    }
    CHECK("nid-bad-rank", PMI_Get_nid(size, &nid) != PMI_SUCCESS, "PMI_Get_nid(size) succeeded");
    CHECK_RC("nid", PMI_Get_nid(rank, &nid));
    CHECK_RC("clique-size", PMI_Get_clique_size(&clique_size));
    CHECK_RC("numpes-on-smp", PMI_Get_numpes_on_smp(&smp));
    CHECK_RC("numpes-in-app-on-smp", PMI_Get_numpes_in_app_on_smp(&smp_app));
    CHECK("clique", clique_size >= 1 && clique_size == smp && smp == smp_app, "clique %d smp %d app %d", clique_size, smp,
          smp_app);
    int *clique = malloc(sizeof(int) * (size_t)clique_size), *pes = malloc(sizeof(int) * (size_t)clique_size),
        *pes_app = malloc(sizeof(int) * (size_t)clique_size);
    CHECK("malloc", clique && pes && pes_app, "out of memory");
    CHECK_RC("clique-ranks", PMI_Get_clique_ranks(clique, clique_size));
    CHECK_RC("pes-on-smp", PMI_Get_pes_on_smp(pes, clique_size));
    CHECK_RC("pes-in-app-on-smp", PMI_Get_pes_in_app_on_smp(pes_app, clique_size));
    int same_node = 0, me_in_clique = 0;
    for (int q = 0; q < size; ++q) same_node += nidlist[q] == nid;
    CHECK("clique-vs-nidlist", same_node == clique_size, "%d ranks share nid %d, clique %d", same_node, nid, clique_size);
    for (int i = 0; i < clique_size; ++i) {
        CHECK("clique-ranks", clique[i] == pes[i] && pes[i] == pes_app[i], "lists differ at %d", i);
        CHECK("clique-ranks", clique[i] >= 0 && clique[i] < size && nidlist[clique[i]] == nid, "rank %d not on nid %d",
              clique[i], nid);
        CHECK("clique-sorted", i == 0 || clique[i - 1] < clique[i], "not sorted");
        me_in_clique += clique[i] == rank;
    }
    CHECK("clique-ranks", me_in_clique == 1, "own rank not in clique");
    if (clique_size > 1) {
        CHECK("clique-short-buffer", PMI_Get_clique_ranks(clique, clique_size - 1) != PMI_SUCCESS, "short buffer accepted");
    }

    /* ---- application (one app per job) ---- */
    int rin = -1, base = -1, asz = -1, napps = -1;
    CHECK_RC("rank-in-app", PMI_Get_rank_in_app(&rin));
    CHECK_RC("base-rank", PMI_Get_base_rank_in_app(&base));
    CHECK_RC("app-size", PMI_Get_app_size(appnum, &asz));
    CHECK_RC("num-apps", PMI_Get_num_apps(&napps));
    CHECK("app", rin == rank && base == 0 && asz == size && napps == 1, "rin %d base %d size %d napps %d", rin, base, asz,
          napps);

    /* ---- node attributes: the node's lowest rank puts, the others wait ---- */
    char want_nattr[64], nattr[256];
    snprintf(want_nattr, sizeof want_nattr, "from-%d", clique[0]);
    if (rank == clique[0]) CHECK_RC("put-node-attr", PMI2_Info_PutNodeAttr("probe.nattr", want_nattr));
    if (!pmi2_mode) CHECK_RC("barrier", PMI_Barrier()); /* PMI-1 has no node scope: the barrier publishes it */
    CHECK_RC("get-node-attr", PMI2_Info_GetNodeAttr("probe.nattr", nattr, (int)sizeof nattr, &found, 1));
    CHECK("get-node-attr", found && strcmp(nattr, want_nattr) == 0, "found %d '%s', want '%s'", found, nattr, want_nattr);
    CHECK_RC("get-node-attr-missing", PMI2_Info_GetNodeAttr("probe.no.nattr", nattr, (int)sizeof nattr, &found, 0));
    CHECK("get-node-attr-missing", found == 0, "a missing node attribute was found");

    /* ---- Allgather (twice: sequence numbers keep calls apart) ---- */
    int *ag = malloc(sizeof(int) * 2 * (size_t)size);
    CHECK("malloc", ag != NULL, "out of memory");
    for (int round = 0; round < 2; ++round) {
        int mine[2] = {rank, rank * 7 + 1 + round};
        memset(ag, 0xff, sizeof(int) * 2 * (size_t)size);
        CHECK_RC("allgather", PMI_Allgather(mine, ag, (int)sizeof mine));
        for (int q = 0; q < size; ++q)
            CHECK("allgather", ag[2 * q] == q && ag[2 * q + 1] == q * 7 + 1 + round, "round %d slot %d = %d,%d", round, q,
                  ag[2 * q], ag[2 * q + 1]);
    }
    /* a contribution whose hex (3000 bytes) exceeds one 1024-byte value */
    const size_t big = 1500;
    unsigned char *bin = malloc(big), *bout = malloc(big * (size_t)size);
    CHECK("malloc", bin && bout, "out of memory");
    for (size_t i = 0; i < big; ++i) bin[i] = pattern(rank, i);
    CHECK_RC("allgather-big", PMI_Allgather(bin, bout, (int)big));
    for (int q = 0; q < size; ++q)
        for (size_t i = 0; i < big; ++i)
            CHECK("allgather-big", bout[(size_t)q * big + i] == pattern(q, i), "rank %d byte %zu", q, i);

    /* ---- Allgatherv: rank q gives 3 + 5*q bytes (q capped for large jobs) ---- */
    size_t total = 0;
    for (int q = 0; q < size; ++q) total += 3 + 5 * (size_t)(q % 300);
    size_t mylen = 3 + 5 * (size_t)(rank % 300);
    unsigned char *vin = malloc(mylen), *vout = malloc(total);
    int *lens = malloc(sizeof(int) * (size_t)size);
    CHECK("malloc", vin && vout && lens, "out of memory");
    for (size_t i = 0; i < mylen; ++i) vin[i] = pattern(rank + 11, i);
    CHECK_RC("allgatherv", PMI_Allgatherv(vin, (int)mylen, vout, lens));
    size_t off = 0;
    for (int q = 0; q < size; ++q) {
        size_t ql = 3 + 5 * (size_t)(q % 300);
        CHECK("allgatherv", lens[q] == (int)ql, "lens[%d] = %d, want %zu", q, lens[q], ql);
        for (size_t i = 0; i < ql; ++i)
            CHECK("allgatherv", vout[off + i] == pattern(q + 11, i), "rank %d byte %zu", q, i);
        off += ql;
    }

    /* ---- Bcast from rank 0, small and large ---- */
    unsigned char bc[2000];
    for (int round = 0; round < 2; ++round) {
        size_t n = round == 0 ? 64 : sizeof bc;
        for (size_t i = 0; i < n; ++i) bc[i] = rank == 0 ? pattern(1000 + round, i) : 0;
        CHECK_RC("bcast", PMI_Bcast(bc, (int)n));
        for (size_t i = 0; i < n; ++i) CHECK("bcast", bc[i] == pattern(1000 + round, i), "round %d byte %zu", round, i);
    }

    /* ---- PMIX_Ring ---- */
    char ring_val[64], left[64], right[64];
    int ring_rank = -1, ring_size = -1;
    snprintf(ring_val, sizeof ring_val, "ring-%d", rank);
    CHECK_RC("ring", PMIX_Ring(ring_val, &ring_rank, &ring_size, left, right, (int)sizeof left));
    char want_l[64], want_r[64];
    snprintf(want_l, sizeof want_l, "ring-%d", (rank + size - 1) % size);
    snprintf(want_r, sizeof want_r, "ring-%d", (rank + 1) % size);
    CHECK("ring", ring_rank == rank && ring_size == size && strcmp(left, want_l) == 0 && strcmp(right, want_r) == 0,
          "rank %d size %d left '%s' right '%s'", ring_rank, ring_size, left, right);

    /* ---- name service: must answer cleanly, whatever the server supports ---- */
    const char *ns = "skip";
    if (rank == 0) {
        char port[256] = "";
        int pub = PMI_Publish_name("dragon-probe-svc", "probe-port-0");
        if (pub == PMI_SUCCESS) {
            int lk = PMI_Lookup_name("dragon-probe-svc", port);
            CHECK("nameserv", lk == PMI_SUCCESS && strcmp(port, "probe-port-0") == 0, "lookup rc %d '%s'", lk, port);
            CHECK_RC("nameserv", PMI_Unpublish_name("dragon-probe-svc"));
            int p2 = PMI2_Nameserv_publish("dragon-probe-svc2", NULL, "probe-port-2");
            if (p2 == PMI2_SUCCESS) {
                CHECK_RC("nameserv2", PMI2_Nameserv_lookup("dragon-probe-svc2", NULL, port, (int)sizeof port));
                CHECK("nameserv2", strcmp(port, "probe-port-2") == 0, "lookup '%s'", port);
                CHECK_RC("nameserv2", PMI2_Nameserv_unpublish("dragon-probe-svc2", NULL));
            }
            ns = "ok";
        } else {
            CHECK("nameserv", PMI_Lookup_name("dragon-probe-svc", port) != PMI_SUCCESS, "lookup after failed publish");
            (void)PMI_Unpublish_name("dragon-probe-svc");
            (void)PMI2_Nameserv_publish("dragon-probe-svc2", NULL, "p");
            (void)PMI2_Nameserv_lookup("dragon-probe-svc2", NULL, port, (int)sizeof port);
            (void)PMI2_Nameserv_unpublish("dragon-probe-svc2", NULL);
            ns = "unsupported";
        }
    }
    int errors[1] = {0};
    CHECK("spawn", PMI_Spawn_multiple(0, NULL, NULL, NULL, NULL, NULL, 0, NULL, errors) != PMI_SUCCESS,
          "PMI_Spawn_multiple claimed success");

    /* ---- report, then finalize ---- */
    char clique_text[4096];
    size_t ct = 0;
    clique_text[0] = '\0';
    for (int i = 0; i < clique_size && ct + 16 < sizeof clique_text; ++i)
        ct += (size_t)snprintf(clique_text + ct, sizeof clique_text - ct, i ? ",%d" : "%d", clique[i]);
    printf("shim rank=%d size=%d nid=%d clique=%s smp=%d appnum=%d universe=%d kvsname=%s mode=%s mapping=%s "
           "version=%d.%d.%d kvs=ok threads=ok jobattr=ok nodeattr=ok allgather=ok allgather_big=ok allgatherv=ok bcast=ok "
           "ring=ok nameserv=%s spawn=refused\n",
           rank, size, nid, clique_text, smp, appnum, universe, kvsname, mode, have_mapping ? "found" : "absent", maj, min,
           rev, ns);
    fflush(stdout);
    CHECK_RC("barrier-final", PMI_Barrier());
    CHECK_RC("finalize", pmi2_mode ? PMI2_Finalize() : PMI_Finalize());
    CHECK_RC("initialized-after", PMI_Initialized(&inited));
    CHECK("initialized-after", inited == PMI_FALSE, "still initialised after finalize");
    free(clique);
    free(pes);
    free(pes_app);
    free(ag);
    free(bin);
    free(bout);
    free(vin);
    free(vout);
    free(lens);
    return 0;
}
