"""MPI + Python workflow: an MPICH simulation started from Python, its
results analysed by a group of Python workers, all placed by the runtime.

    python3 workflow.py [--ranks 4] [--cells 20000] [--steps 2000]      # one node (embedded runtime)
    dragon-orchestrate run --launcher virtual --nodes 2 -- python3 workflow.py

1. heat1d.c is built with mpicc.mpich (once, beside the output).
2. A ProcessGroup with pmi=SIMPLE starts the ranks over the nodes: the
   agents serve them PMI (no mpirun); each writes its part of the rod.
3. A second ProcessGroup of Python workers (one per rank file, spread over
   the nodes) loads the files with numpy and sends a summary through a
   Queue; this process compares the summaries with what MPI computed and
   with the exact solution.

The last line is ``RESULT {json}`` (what the tests read).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from dragon.infrastructure.facts import PMIBackend
from dragon.native.machine import System
from dragon.native.process import Popen, ProcessTemplate
from dragon.native.process_group import ProcessGroup
from dragon.native.queue import Queue

HERE = os.path.dirname(os.path.abspath(__file__))


def build(outdir: str) -> str:
    cc = shutil.which("mpicc.mpich")
    if cc is None:
        sys.exit("workflow.py: mpicc.mpich not found (scripts/install-deps.sh mpi installs MPICH)")
    exe = os.path.join(outdir, "heat1d")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "heat1d.c"), "-lm"], check=True)
    return exe


def analyse(path: str, rank: int, cells: int, total_cells: int, steps: int, results) -> None:
    """One worker: a rank's cells against the exact discrete solution."""
    import numpy as np

    u = np.fromfile(path, dtype=np.float64)
    if u.size != cells:
        raise ValueError(f"{path}: {u.size} cells, expected {cells}")
    lam = 1.0 - 4 * 0.25 * math.sin(math.pi / (2 * (total_cells + 1))) ** 2
    x = (rank * cells + np.arange(1, cells + 1)) / (total_cells + 1)
    exact = lam ** steps * np.sin(np.pi * x)
    results.put({"rank": rank, "node": int(os.environ.get("DRAGON_NODE_ID", "0")), "sum": float(u.sum()),
                 "max": float(u.max()), "max_err": float(np.abs(u - exact).max())})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--cells", type=int, default=20000, help="cells per rank")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--workdir", default=None, help="a directory every node sees (default: a temporary one)")
    a = ap.parse_args()
    nodes = System().nnodes
    work = a.workdir or tempfile.mkdtemp(prefix="dragon-mpi-workflow-")
    try:
        exe = build(work)
        # The MPI job: ranks over the nodes, PMI from the agents.
        with ProcessGroup(pmi=PMIBackend.SIMPLE, name="heat1d") as pg:
            pg.add_process(a.ranks, ProcessTemplate(exe, args=(str(a.cells), str(a.steps), work), stdout=Popen.PIPE))
            pg.start()
            pg.join(600)
            mpi_rows = [json.loads(pg.read_output(r, "out")) for r in range(a.ranks)]
        mpi_nodes = sorted({m["node"] for m in mpi_rows})
        # The analysis: one Python worker per rank file, spread over the nodes.
        results = Queue()
        total_cells = a.ranks * a.cells
        with ProcessGroup(name="analyse") as pg:
            for r in range(a.ranks):
                pg.add_process(1, ProcessTemplate(analyse, args=(os.path.join(work, f"rank-{r}.bin"), r, a.cells,
                                                                 total_cells, a.steps, results)))
            pg.start()
            rows = sorted((results.get(timeout=300) for _ in range(a.ranks)), key=lambda d: d["rank"])
            pg.join(300)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    mpi_heat = mpi_rows[0]["heat"]
    py_heat = sum(r["sum"] for r in rows)
    lam = 1.0 - math.sin(math.pi / (2 * (total_cells + 1))) ** 2
    print(f"heat1d: {a.ranks} MPI ranks on nodes {mpi_nodes}, {total_cells} cells, {a.steps} steps")
    print(f"{'rank':>4} {'node':>4} {'sum':>14} {'max':>10} {'max |u - exact|':>16}")
    for r in rows:
        print(f"{r['rank']:>4} {r['node']:>4} {r['sum']:>14.6f} {r['max']:>10.6f} {r['max_err']:>16.3e}")
    print(f"heat: MPI_Allreduce {mpi_heat:.9f}, Python workers {py_heat:.9f}; peak {max(r['max'] for r in rows):.6f}, "
          f"exact {lam ** a.steps * max(math.sin(math.pi * (i + 1) / (total_cells + 1)) for i in (total_cells // 2 - 1, total_cells // 2)):.6f}")
    print("RESULT " + json.dumps({
        "nodes": nodes, "mpi_nodes": mpi_nodes, "ranks": a.ranks, "mpi_sizes": [m["size"] for m in mpi_rows],
        "worker_nodes": [r["node"] for r in rows], "mpi_heat": mpi_heat, "python_heat": py_heat,
        "max_err": max(r["max_err"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
