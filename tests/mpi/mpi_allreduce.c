/* Sum of ranks (n(n-1)/2), then a 4096-element vector allreduce, element i
 * of rank r contributing r + i: the sum is n(n-1)/2 + n*i. */
#include "common.h"

#define VLEN 4096

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  long long mine = rank, sum = -1;
  MPI_OK(rank, MPI_Allreduce(&mine, &sum, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
  long long want = (long long)size * (size - 1) / 2;
  CHECK(rank, sum == want, "scalar allreduce: got %lld, want %lld", sum, want);
  static long long in[VLEN], out[VLEN];
  for (int i = 0; i < VLEN; i++) in[i] = rank + i;
  MPI_OK(rank, MPI_Allreduce(in, out, VLEN, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
  for (int i = 0; i < VLEN; i++)
    CHECK(rank, out[i] == want + (long long)size * i, "vector allreduce: element %d is %lld, want %lld", i, out[i],
          want + (long long)size * i);
  printf("allreduce rank=%d size=%d sum=%lld vector=ok\n", rank, size, sum);
  fflush(stdout);
  MPI_Finalize();
  return 0;
}
