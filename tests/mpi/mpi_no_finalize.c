/* mpi_no_finalize [RANK]: after MPI_Init rank RANK (default 1) leaves with
 * _exit(0), neither MPI_Finalize nor a PMI finalize; the others wait in
 * MPI_Barrier for it forever. A launcher must fail the job (a rank that
 * initialised PMI and vanished without finalize) instead of hanging. */
#include "common.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  int quitter = argc > 1 ? atoi(argv[1]) : 1;
  printf("nofinalize rank=%d size=%d pid=%d\n", rank, size, (int)getpid());
  fflush(stdout);
  if (rank == quitter) {
    printf("rank %d: _exit(0) without MPI_Finalize\n", rank);
    fflush(stdout);
    _exit(0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  fprintf(stderr, "rank %d: FAIL: the barrier completed without rank %d\n", rank, quitter);
  return 4;
}
