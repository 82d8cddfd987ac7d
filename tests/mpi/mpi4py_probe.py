"""mpi4py under a launcher: allreduce (a sum and a numpy-free buffer) and a
send/recv ring, one `mpi4py rank=R size=S ...` line per rank.

    /usr/bin/python3 tests/mpi/mpi4py_probe.py [ROUNDS]

A failed check prints FAIL on stderr and exits 3 (not MPI_Abort: the
launcher's abort handling would hide which check failed)."""
import array
import os
import sys

from mpi4py import MPI


def fail(rank, what):
    print(f"rank {rank}: FAIL: {what}", file=sys.stderr, flush=True)
    os._exit(3)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    # allreduce: a Python object and a typed buffer
    total = comm.allreduce(rank, op=MPI.SUM)
    if total != size * (size - 1) // 2:
        fail(rank, f"allreduce sum {total}")
    send = array.array("l", [rank + i for i in range(1024)])
    recv = array.array("l", [0] * 1024)
    comm.Allreduce([send, MPI.LONG], [recv, MPI.LONG], op=MPI.SUM)
    want = [size * i + size * (size - 1) // 2 for i in range(1024)]
    if list(recv) != want:
        fail(rank, "Allreduce buffer")

    # point to point: pass a token around the ring, ROUNDS times
    right, left = (rank + 1) % size, (rank - 1) % size
    token = None
    for r in range(rounds):
        if size == 1:
            token = (r, rank)
            continue
        if rank == 0:
            comm.send((r, rank), dest=right, tag=r)
            token = comm.recv(source=left, tag=r)
            if token != (r, left):
                fail(rank, f"round {r}: got {token!r} from {left}")
        else:
            token = comm.recv(source=left, tag=r)
            if token != (r, left):
                fail(rank, f"round {r}: got {token!r} from {left}")
            comm.send((r, rank), dest=right, tag=r)
    # and a nonblocking exchange with both neighbours
    reqs = [comm.isend(rank, dest=right, tag=100), comm.isend(rank, dest=left, tag=101)]
    from_left = comm.recv(source=left, tag=100)
    from_right = comm.recv(source=right, tag=101)
    MPI.Request.Waitall(reqs)
    if (from_left, from_right) != (left, right):
        fail(rank, f"neighbours {from_left},{from_right}")

    print(f"mpi4py rank={rank} size={size} sum={total} left={left} right={right} rounds={rounds} "
          f"vendor={MPI.get_vendor()[0].replace(' ', '_')} pid={os.getpid()}", flush=True)
    comm.Barrier()


if __name__ == "__main__":
    main()
