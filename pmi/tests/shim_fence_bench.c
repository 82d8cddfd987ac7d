/* shim_fence_bench: the cost of a PMI fence through the shim. Every rank puts
 * one key, then K times puts a key and runs PMI_Barrier; rank 0 prints
 * `fence_us median=<x> min=<y>` (microseconds) and nothing else on stdout.
 * usage: shim_fence_bench [K=20] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pmi.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int k = argc > 1 ? atoi(argv[1]) : 20;
    if (k <= 0) k = 20;
    int spawned = 0, rank = 0;
    char kvs[256], key[64], val[64];
    if (PMI_Init(&spawned) != PMI_SUCCESS || PMI_Get_rank(&rank) != PMI_SUCCESS ||
        PMI_KVS_Get_my_name(kvs, (int)sizeof kvs) != PMI_SUCCESS) {
        fprintf(stderr, "shim_fence_bench: PMI init failed\n");
        return 1;
    }
    snprintf(key, sizeof key, "bench.init.%d", rank);
    snprintf(val, sizeof val, "%d", rank);
    if (PMI_KVS_Put(kvs, key, val) != PMI_SUCCESS || PMI_Barrier() != PMI_SUCCESS) {
        fprintf(stderr, "shim_fence_bench: first put/fence failed\n");
        return 1;
    }
    double *t = malloc(sizeof(double) * (size_t)k);
    if (t == NULL) return 1;
    for (int i = 0; i < k; ++i) {
        snprintf(key, sizeof key, "bench.%d.%d", i, rank);
        double t0 = now_us();
        if (PMI_KVS_Put(kvs, key, val) != PMI_SUCCESS || PMI_Barrier() != PMI_SUCCESS) {
            fprintf(stderr, "shim_fence_bench: fence %d failed\n", i);
            return 1;
        }
        t[i] = now_us() - t0;
    }
    qsort(t, (size_t)k, sizeof(double), cmp_double);
    if (rank == 0) printf("fence_us median=%.1f min=%.1f\n", t[k / 2], t[0]);
    free(t);
    return PMI_Finalize() == PMI_SUCCESS ? 0 : 1;
}
