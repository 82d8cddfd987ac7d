/* mpi_sigkill RANK: after MPI_Init every rank prints its pid and passes one
 * barrier; then rank RANK kills itself with SIGKILL (no MPI_Abort, no
 * finalize, no word to the PMI server) while the others block in
 * MPI_Barrier. The launcher must notice the dead rank and end the job. */
#include <signal.h>

#include "common.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  int victim = argc > 1 ? atoi(argv[1]) : 0;
  printf("sigkill rank=%d size=%d pid=%d\n", rank, size, (int)getpid());
  fflush(stdout);
  MPI_OK(rank, MPI_Barrier(MPI_COMM_WORLD)); /* every pid is out before the kill */
  if (rank == victim) {
    printf("rank %d: kill(getpid(), SIGKILL)\n", rank);
    fflush(stdout);
    kill(getpid(), SIGKILL);
  }
  MPI_Barrier(MPI_COMM_WORLD); /* never completes */
  fprintf(stderr, "rank %d: FAIL: the barrier completed after rank %d was killed\n", rank, victim);
  return 4;
}
