/* A 1-D heat diffusion over MPI ranks (MPICH, simple PMI under Dragon):
 * each rank owns a slab, exchanges halo cells with its neighbours every
 * step, and writes its slab to <outdir>/slab-<rank>.txt; rank 0 prints the
 * total heat, which the Allreduce checks is conserved. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char* outdir = argc > 1 ? argv[1] : ".";
    const int n = argc > 2 ? atoi(argv[2]) : 1000; /* cells per rank */
    const int steps = argc > 3 ? atoi(argv[3]) : 500;
    double* u = calloc((size_t)n + 2, sizeof *u);
    double* v = calloc((size_t)n + 2, sizeof *v);
    if (rank == 0) u[1] = 1000.0 * size; /* a hot spot at the left end */
    const int left = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    const int right = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
    for (int s = 0; s < steps; ++s) {
        MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 0, &u[n + 1], 1, MPI_DOUBLE, right, 0, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[n], 1, MPI_DOUBLE, right, 1, &u[0], 1, MPI_DOUBLE, left, 1, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        if (left == MPI_PROC_NULL) u[0] = u[1]; /* insulated ends */
        if (right == MPI_PROC_NULL) u[n + 1] = u[n];
        for (int i = 1; i <= n; ++i) v[i] = u[i] + 0.25 * (u[i - 1] - 2 * u[i] + u[i + 1]);
        double* t = u;
        u = v;
        v = t;
    }
    double local = 0, total = 0;
    for (int i = 1; i <= n; ++i) local += u[i];
    MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    char path[4096];
    snprintf(path, sizeof path, "%s/slab-%d.txt", outdir, rank);
    FILE* f = fopen(path, "w");
    if (!f) {
        perror(path);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    for (int i = 1; i <= n; ++i) fprintf(f, "%.9g\n", u[i]);
    fclose(f);
    if (rank == 0) printf("ranks %d cells %d steps %d total heat %.6f\n", size, n * size, steps, total);
    free(u);
    free(v);
    MPI_Finalize();
    return 0;
}
