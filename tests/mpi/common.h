/* Shared helpers for the real-MPI test programs: every line names the rank,
 * and a failed check prints FAIL and exits non-zero (MPI_Abort would hide
 * which check failed behind the launcher's abort handling). */
#ifndef DRAGON_MPI_TEST_COMMON_H
#define DRAGON_MPI_TEST_COMMON_H

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHECK(rank, cond, ...)                                  \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "rank %d: FAIL: ", (rank));               \
      fprintf(stderr, __VA_ARGS__);                             \
      fprintf(stderr, " (%s:%d: %s)\n", __FILE__, __LINE__, #cond); \
      fflush(stderr);                                           \
      _exit(3);                                                 \
    }                                                           \
  } while (0)

#define MPI_OK(rank, call) CHECK((rank), (call) == MPI_SUCCESS, "%s failed", #call)

#endif
