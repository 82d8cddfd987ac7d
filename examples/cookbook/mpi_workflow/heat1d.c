/* 1-D heat equation, explicit Jacobi steps with halo exchange (MPICH).
 *
 *   heat1d CELLS_PER_RANK STEPS OUTDIR
 *
 * The rod of N = CELLS_PER_RANK * size cells starts as sin(pi x) (ends held
 * at 0), which is an eigenmode of the discrete scheme: after STEPS steps it
 * is lambda^STEPS sin(pi x), lambda = 1 - 4 r sin^2(pi / (2 (N + 1))). Each
 * rank writes its cells to OUTDIR/rank-<r>.bin (doubles) and prints one JSON
 * line: rank, size, host, Dragon node, and the whole rod's heat (MPI_Allreduce). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc != 4) {
    if (rank == 0) fprintf(stderr, "usage: heat1d CELLS_PER_RANK STEPS OUTDIR\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const int n = atoi(argv[1]);
  const int steps = atoi(argv[2]);
  if (n < 1 || steps < 0) {
    if (rank == 0) fprintf(stderr, "heat1d: CELLS_PER_RANK must be >= 1 and STEPS >= 0\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const long total_cells = (long)n * size;
  double *u = calloc((size_t)n + 2, sizeof(double));
  double *v = calloc((size_t)n + 2, sizeof(double));
  if (!u || !v) MPI_Abort(MPI_COMM_WORLD, 3);
  for (int i = 1; i <= n; i++) {
    const double x = (double)((long)rank * n + i) / (double)(total_cells + 1);
    u[i] = sin(M_PI * x);
  }
  const double r = 0.25;
  const int left = rank > 0 ? rank - 1 : MPI_PROC_NULL;
  const int right = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
  for (int s = 0; s < steps; s++) {
    u[0] = 0.0;
    u[n + 1] = 0.0;
    MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 0, &u[n + 1], 1, MPI_DOUBLE, right, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    MPI_Sendrecv(&u[n], 1, MPI_DOUBLE, right, 1, &u[0], 1, MPI_DOUBLE, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    for (int i = 1; i <= n; i++) v[i] = u[i] + r * (u[i - 1] - 2.0 * u[i] + u[i + 1]);
    double *t = u;
    u = v;
    v = t;
  }
  double local = 0.0, heat = 0.0;
  for (int i = 1; i <= n; i++) local += u[i];
  MPI_Allreduce(&local, &heat, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  char path[4096];
  snprintf(path, sizeof path, "%s/rank-%d.bin", argv[3], rank);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(&u[1], sizeof(double), (size_t)n, f) != (size_t)n || fclose(f) != 0) {
    fprintf(stderr, "heat1d: rank %d cannot write %s\n", rank, path);
    MPI_Abort(MPI_COMM_WORLD, 4);
  }
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const char *node = getenv("DRAGON_NODE_ID"); /* set by the runtime for every process it starts */
  printf("{\"rank\": %d, \"size\": %d, \"host\": \"%s\", \"node\": %s, \"heat\": %.17g}\n", rank, size, host,
         node && *node ? node : "-1", heat);
  fflush(stdout);
  free(u);
  free(v);
  MPI_Finalize();
  return 0;
}
