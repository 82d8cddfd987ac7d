/* A ring: every round each rank sends round*1000+rank to the right and
 * receives from the left (MPI_Sendrecv), and checks the neighbour's value. */
#include "common.h"

#define ROUNDS 5

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  int right = (rank + 1) % size, left = (rank + size - 1) % size;
  for (int round = 0; round < ROUNDS; round++) {
    int out[2] = {round * 1000 + rank, rank}, in[2] = {-1, -1};
    MPI_OK(rank, MPI_Sendrecv(out, 2, MPI_INT, right, round, in, 2, MPI_INT, left, round, MPI_COMM_WORLD,
                              MPI_STATUS_IGNORE));
    CHECK(rank, in[0] == round * 1000 + left && in[1] == left, "round %d: got (%d,%d) from left %d", round, in[0],
          in[1], left);
  }
  printf("ring rank=%d size=%d left=%d right=%d rounds=%d ok\n", rank, size, left, right, ROUNDS);
  fflush(stdout);
  MPI_Finalize();
  return 0;
}
