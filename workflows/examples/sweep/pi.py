"""Computes pi by the midpoint rule over MPI ranks (mpi4py on Open MPI,
PMIx from Dragon); rank 0 writes the estimate and its error to a file."""

import math
import sys

from mpi4py import MPI

comm = MPI.COMM_WORLD
n = int(sys.argv[1])
out = sys.argv[2]
h = 1.0 / n
local = sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(comm.rank, n, comm.size)) * h
pi = comm.allreduce(local, op=MPI.SUM)
if comm.rank == 0:
    with open(out, "w") as f:
        f.write(f"{n} {comm.size} {pi:.15f} {abs(pi - math.pi):.3e}\n")
