/* Broadcasts 16 MiB from rank 0; every rank checks every byte. */
#include "common.h"
#include <stdint.h>

#define BYTES (16u << 20)

static unsigned char pattern(size_t i) { return (unsigned char)((i * 2654435761u) >> 13) ^ (unsigned char)i; }

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1;
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  unsigned char *buf = malloc(BYTES);
  CHECK(rank, buf != NULL, "malloc of %u bytes", BYTES);
  for (size_t i = 0; i < BYTES; i++) buf[i] = rank == 0 ? pattern(i) : 0;
  MPI_OK(rank, MPI_Bcast(buf, (int)BYTES, MPI_UNSIGNED_CHAR, 0, MPI_COMM_WORLD));
  for (size_t i = 0; i < BYTES; i++)
    CHECK(rank, buf[i] == pattern(i), "byte %zu is %u, want %u", i, buf[i], pattern(i));
  printf("bcast rank=%d size=%d bytes=%u ok\n", rank, size, BYTES);
  fflush(stdout);
  free(buf);
  MPI_Finalize();
  return 0;
}
