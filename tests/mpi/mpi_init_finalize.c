/* MPI_Init, MPI_Barrier, MPI_Finalize and nothing else: the launch and wire-up
 * cost of an MPI job (bench/pmi.py). */
#include <mpi.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Finalize();
  return 0;
}
