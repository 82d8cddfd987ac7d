/* mpi_abort RANK CODE: rank RANK calls MPI_Abort(MPI_COMM_WORLD, CODE) after
 * every rank printed its pid; the others block in MPI_Barrier. The launcher
 * must end the whole job and exit CODE. */
#include "common.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  int victim = argc > 1 ? atoi(argv[1]) : 0, code = argc > 2 ? atoi(argv[2]) : 7;
  printf("abort rank=%d size=%d pid=%d\n", rank, size, (int)getpid());
  fflush(stdout);
  MPI_OK(rank, MPI_Barrier(MPI_COMM_WORLD));  /* every pid is out before anyone aborts */
  if (rank == victim) {
    printf("rank %d: calling MPI_Abort(MPI_COMM_WORLD, %d)\n", rank, code);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  MPI_Barrier(MPI_COMM_WORLD);  /* never completes */
  fprintf(stderr, "rank %d: FAIL: the barrier completed after rank %d aborted\n", rank, victim);
  return 4;
}
