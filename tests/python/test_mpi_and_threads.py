"""MPI jobs as ProcessGroups from Python (no mpirun), and the package used
from several threads at once."""
import json
import os
import shutil

import pytest

from conftest import BUILD

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRELUDE = """
import json, os, sys, threading, time
import dragon
from dragon.native.process_group import ProcessGroup
from dragon.native.process import ProcessTemplate, Popen
from dragon.infrastructure.facts import PMIBackend
from dragon.channels import Channel
"""


def last_json(stdout):
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


@pytest.mark.skipif(not os.path.exists(BUILD / "bin" / "mpi" / "mpi_allreduce"), reason="MPICH programs not built")
def test_mpich_job_with_simple_pmi(script):
    s = script(PRELUDE, f"""
    with ProcessGroup(pmi=PMIBackend.SIMPLE) as pg:
        pg.add_process(4, ProcessTemplate({str(BUILD / "bin" / "mpi" / "mpi_allreduce")!r}, stdout=Popen.PIPE))
        pg.start()
        pg.join(120)
        outs = [pg.read_output(r, "out").decode() for r in range(4)]
        print(json.dumps({{"outs": outs, "codes": [c for _, c in pg.exit_status]}}))
    """)
    out = last_json(s.run(timeout=180).stdout)
    assert out["codes"] == [0, 0, 0, 0]
    assert out["outs"] == [f"allreduce rank={r} size=4 sum=6 vector=ok\n" for r in range(4)]


@pytest.mark.skipif(shutil.which("mpirun.openmpi") is None, reason="Open MPI / mpi4py not installed")
def test_mpi4py_ranks_as_python_callables_with_pmix(script):
    s = script(PRELUDE, """
    def rank_body(rounds):
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        total = comm.allreduce(comm.Get_rank(), op=MPI.SUM)
        right = (comm.Get_rank() + 1) % comm.Get_size()
        got = comm.sendrecv(comm.Get_rank(), dest=right, source=(comm.Get_rank() - 1) % comm.Get_size())
        print(json.dumps({"rank": comm.Get_rank(), "size": comm.Get_size(), "total": total, "got": got}))

    with ProcessGroup(pmi="pmix") as pg:
        pg.add_process(4, ProcessTemplate(rank_body, args=(3,), stdout=Popen.PIPE))
        pg.start()
        pg.join(120)
        rows = [json.loads(pg.read_output(r, "out")) for r in range(4)]
    print(json.dumps({"rows": rows}))
    """)
    rows = last_json(s.run(timeout=180).stdout)["rows"]
    assert [r["rank"] for r in rows] == [0, 1, 2, 3]
    assert all(r["size"] == 4 and r["total"] == 6 for r in rows)
    assert [r["got"] for r in rows] == [3, 0, 1, 2]


def test_threads_share_the_runtime(script):
    s = script(PRELUDE, """
    ch = Channel(capacity=8)
    errors = []
    results = {}

    def groups(i):
        try:
            for k in range(3):
                with ProcessGroup(ignore_error_on_exit=True) as pg:
                    pg.add_process(3, ProcessTemplate("/bin/sh", args=("-c", f"exit {i}")))
                    pg.start()
                    pg.join(60)
                    results.setdefault(i, []).append(sorted(c for _, c in pg.exit_status))
        except Exception as e:
            errors.append(repr(e))

    def producer():
        for n in range(2000):
            ch.send(n.to_bytes(4, "little"))

    got = []
    def consumer():
        for _ in range(2000):
            got.append(int.from_bytes(ch.recv(60), "little"))

    ts = [threading.Thread(target=groups, args=(i,)) for i in range(4)]
    ts += [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in ts: t.start()
    for t in ts: t.join(120)
    print(json.dumps({"errors": errors, "results": {str(k): v for k, v in results.items()},
                      "in_order": got == list(range(2000)), "alive": [t.is_alive() for t in ts]}))
    """)
    out = last_json(s.run(timeout=180).stdout)
    assert out["errors"] == []
    assert not any(out["alive"])
    assert out["in_order"] is True
    assert out["results"] == {str(i): [[i, i, i]] * 3 for i in range(4)}
