"""Every examples/cookbook script, on one node (embedded runtime) and on a
virtual cluster of 2 nodes (dragon-orchestrate run), with small sizes; the
checks read the ``RESULT {json}`` line each script prints."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ORCH, PY, env_for_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COOK = os.path.join(ROOT, "examples", "cookbook")

ONE = None
TWO = ["--launcher", "virtual", "--nodes", "2"]
SHAPES = [pytest.param(ONE, id="one-node"), pytest.param(TWO, id="two-virtual-nodes", marks=pytest.mark.system)]


def run(rel, *args, under=None, timeout=600):
    cmd = [PY, os.path.join(COOK, rel), *args]
    if under is not None:
        cmd = [ORCH, "run", *under, "--", *cmd]
    p = subprocess.run(cmd, env=env_for_scripts(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"{rel}: no RESULT line\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return json.loads(lines[-1][len("RESULT "):]), p.stdout


def nodes_of(under):
    return 1 if under is None else 2


@pytest.mark.skipif(shutil.which("mpicc.mpich") is None, reason="MPICH not installed (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("under", SHAPES)
def test_mpi_workflow(under):
    r, out = run("mpi_workflow/workflow.py", "--ranks", "4", "--cells", "2000", "--steps", "200", under=under)
    n = nodes_of(under)
    assert r["nodes"] == n
    assert r["mpi_sizes"] == [4, 4, 4, 4]          # one MPI job of 4 ranks, PMI from the agents
    assert r["mpi_nodes"] == list(range(n))        # its ranks on every node
    assert sorted(set(r["worker_nodes"])) == list(range(n))
    assert abs(r["mpi_heat"] - r["python_heat"]) <= 1e-9 * r["mpi_heat"]  # the workers read what MPI wrote
    assert r["max_err"] < 1e-9                    # and it is the exact discrete solution
    assert "rank node" in out


@pytest.mark.parametrize("under", SHAPES)
def test_pipeline(under):
    r, out = run("pipeline/pipeline.py", "--items", "300", "--depth", "8", under=under)
    n = nodes_of(under)
    assert r["nodes"] == n and r["items"] == 300
    for name in ("stdlib", "dragon"):
        assert r[name]["peaks_ok"] == 300
        assert sum(r[name]["stage2_nodes"].values()) == 300
    assert r["dragon"]["checksum"] == pytest.approx(r["stdlib"]["checksum"], rel=1e-9)
    assert "| dragon ProcessGroup + Queue" in out and "| stdlib multiprocessing (fork)" in out


@pytest.mark.parametrize("under", SHAPES)
def test_inference(under):
    r, out = run("inference/inference.py", "--workers", "1,4", "--requests", "300", "--inflight", "16",
                 under=under)
    n = nodes_of(under)
    assert r["nodes"] == n
    assert [s["workers"] for s in r["service"]] == [1, 4]
    for s in r["service"]:
        assert s["checked"] > 0 and s["requests_per_s"] > 0 and s["p99_ms"] >= s["p50_ms"] > 0
    assert sorted(set(r["service"][1]["worker_nodes"])) == list(range(n))
    assert "| inline, one at a time" in out


@pytest.mark.parametrize("under", SHAPES)
def test_ddict_store(under):
    r, out = run("ddict_store/store.py", "--items", "50", "--size", "512", under=under)
    n = nodes_of(under)
    assert r["nodes"] == n
    assert (r["producer_node"], r["consumer_node"]) == (0, n - 1)
    assert r["count"] == 50 and r["keys"] == 52 and r["match"] is True
