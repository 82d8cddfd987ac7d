"""Real Open MPI under `dragon-orchestrate run --pmi pmix`: Debian's Open MPI
4.1.4 (its PMIx client is OpenPMIx 4.2.2), mpi4py 3.1.4 and NPopenmpi, started
directly by the agents' PMIx servers, on one node and over virtual clusters of
4 agents on this host. Also MPI_Abort and a rank killed by SIGKILL: each must
end the run promptly with a clear message and nothing left running, and no
PMIx temporary directory left behind.

The programs are the Open MPI builds of tests/mpi/*.c in build/bin/ompi/
(mpicc.openmpi: scripts/install-deps.sh mpi); without them these tests skip.

What Open MPI needs from the runtime, checked against `srun --mpi=pmix` on the
local Slurm cluster (docs/slurm.md) with every variable but PMIX_* removed:
- OMPI_MCA_schizo=^orte and OMPI_MCA_ess=pmi: without them each rank quietly
  becomes a singleton (size 1) although PMIX_NAMESPACE/PMIX_RANK are set.
- Nothing for root: only mpirun refuses root (--allow-run-as-root or
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1); directly
  launched ranks run as root as they are.
- Several "nodes" on one host: the shared-memory BTL (vader) of ranks that
  Open MPI believes are on different nodes collides and segfaults in the
  first collective. These tests give dragon-orchestrate (whose agents pass
  their environment on to the ranks) OMPI_MCA_pml=ob1 OMPI_MCA_btl=tcp,self
  OMPI_MCA_btl_tcp_if_include=lo there. One node needs nothing.
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BIN, PY, pid_alive
from test_mpi import V4, check_program, ok, per_rank, pids_of, run_job

pytestmark = pytest.mark.mpi

OMPI_BIN = BIN / "ompi"
PMIX = ["--pmi", "pmix"]
# Open MPI's own transports for ranks on different virtual nodes of one host.
LOOPBACK = {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "tcp,self", "OMPI_MCA_btl_tcp_if_include": "lo"}
NETPIPE = shutil.which("NPopenmpi")
MPI4PY_PROBE = str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "mpi" / "mpi4py_probe.py")


def prog(name):
    p = OMPI_BIN / name
    if not p.exists():
        pytest.skip(f"{p} not built (needs mpicc.openmpi: scripts/install-deps.sh mpi)")
    return str(p)


def have_mpi4py():
    return subprocess.run([PY, "-c", "import mpi4py"], capture_output=True).returncode == 0


# --- PMIx temporary directories -------------------------------------------------

def pmix_tmp_entries():
    """Entries in /tmp that a PMIx server or an Open MPI rank would make there
    (pmix-PID rendezvous files, pmix_dstor_* stores, ompi.HOST.UID session
    directories; mpirun.openmpi leaves an empty ompi.HOST.UID behind, so only
    new entries count). The agents' servers must keep theirs under their run
    directory and remove them."""
    try:
        return {e for e in os.listdir("/tmp") if re.match(r"(pmix[-_.]|ompi\.)", e)}
    except FileNotFoundError:
        return set()


@pytest.fixture
def no_pmix_tmp():
    """Fails the test if it left new PMIx/Open MPI entries in /tmp. (Another
    run on this machine making one at the same moment would be a false alarm:
    the name is in the message.)"""
    before = pmix_tmp_entries()
    yield
    left = pmix_tmp_entries() - before
    assert not left, f"PMIx / Open MPI temporary entries left in /tmp: {sorted(left)}"


# --- one node ---------------------------------------------------------------

PROGRAMS = ["mpi_hello", "mpi_allreduce", "mpi_ring", "mpi_bcast"]


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("name", PROGRAMS)
def test_open_mpi_program_on_one_node(name, n, no_pmix_tmp):
    job = ok(run_job(["run", "-n", str(n), *PMIX, "--", prog(name)], timeout=180))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():  # Open MPI sees one node of n ranks (PMIX_LOCAL_PEERS)
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (r, n), kv
            assert kv["node"] == "0", kv


# --- a virtual cluster of 4 nodes on this host --------------------------------

@pytest.mark.parametrize("placement", ["block", "cyclic"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_open_mpi_program_over_4_virtual_nodes(name, placement, no_pmix_tmp):
    n = 8
    job = ok(run_job(["run", *V4, "-n", str(n), "--placement", placement, *PMIX, "--", prog(name)],
                     timeout=180, env=LOOPBACK))
    ranks = check_program(name, job.out, n)
    if name == "mpi_hello":
        for r, kv in ranks.items():
            node, local = (r // 2, r % 2) if placement == "block" else (r % 4, r // 4)
            assert int(kv["node"]) == node, kv
            # Open MPI's own view of the layout (the servers' PMIX_LOCAL_PEERS): 2 ranks on each node
            assert (int(kv["local_rank"]), int(kv["local_size"])) == (local, 2), kv


# --- mpi4py ---------------------------------------------------------------------

@pytest.mark.skipif(not have_mpi4py(), reason="mpi4py not installed for /usr/bin/python3 (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("placement", ["block", "cyclic"])
def test_mpi4py_allreduce_and_ring_over_2_virtual_nodes(placement, no_pmix_tmp):
    job = ok(run_job(["run", "--launcher", "virtual", "--nodes", "2", "-n", "4", "--placement", placement, *PMIX,
                      "--", PY, MPI4PY_PROBE, "10"], timeout=120, env=LOOPBACK))
    ranks = per_rank(job.out, "mpi4py", 4)
    for r, kv in ranks.items():
        assert int(kv["sum"]) == 6 and kv["vendor"] == "Open_MPI", kv
        assert (int(kv["left"]), int(kv["right"])) == ((r - 1) % 4, (r + 1) % 4), kv
        assert int(kv["rounds"]) == 10, kv


# --- the environment of a rank ------------------------------------------------------

ENV_DUMP = r"""
import os
e = os.environ
keys = ["PMIX_NAMESPACE", "PMIX_RANK", "PMIX_SERVER_URI41", "PMIX_SERVER_TMPDIR", "OMPI_MCA_ess", "OMPI_MCA_schizo",
        "DRAGON_RANK", "DRAGON_NODE_ID", "OMPI_MCA_btl"]
pmi1 = [k for k in ("PMI_FD", "PMI_PORT", "PMI_ID", "PMI_SIZE", "PMI_RANK", "PMI_JOBID", "PMI_process_mapping") if k in e]
print("env", " ".join(f"{k}={e.get(k, '-').replace(' ', '_')}" for k in keys), "pmi1=" + (",".join(pmi1) or "-"),
      flush=True)
"""


def env_lines(out, n):
    lines = [dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", l)) for l in out.splitlines() if l.startswith("env ")]
    assert len(lines) == n, out
    return lines


@pytest.mark.parametrize("layout", [["-n", "4"], [*V4, "-n", "8", "--placement", "cyclic"]],
                         ids=["one-node", "4-virtual-nodes"])
def test_pmix_environment_of_each_rank(layout, no_pmix_tmp):
    n = int(layout[layout.index("-n") + 1])
    job = ok(run_job(["run", *layout, *PMIX, "--", PY, "-c", ENV_DUMP], timeout=60, env=LOOPBACK))
    namespaces, tmpdirs, uris = set(), {}, {}
    for kv in env_lines(job.out, n):
        assert kv["PMIX_RANK"] == kv["DRAGON_RANK"], kv
        assert kv["PMIX_NAMESPACE"] != "-" and kv["PMIX_SERVER_URI41"] != "-", kv
        # never both families: MPICH refuses PMI-1 variables next to PMIx ones
        assert kv["pmi1"] == "-", kv
        assert kv["OMPI_MCA_ess"] == "pmi" and kv["OMPI_MCA_schizo"] == "^orte", kv
        assert kv["OMPI_MCA_btl"] == "tcp,self", kv  # the agents pass their environment on
        namespaces.add(kv["PMIX_NAMESPACE"])
        tmpdirs.setdefault(kv["DRAGON_NODE_ID"], set()).add(kv["PMIX_SERVER_TMPDIR"])
        uris.setdefault(kv["DRAGON_NODE_ID"], set()).add(kv["PMIX_SERVER_URI41"])
    assert len(namespaces) == 1, job
    nodes = 4 if "--nodes" in layout else 1
    assert len(tmpdirs) == nodes and all(len(t) == 1 for t in tmpdirs.values()), tmpdirs
    # one server per agent, each with its own rendezvous directory (several agents share this host)
    assert len({next(iter(t)) for t in tmpdirs.values()}) == nodes, tmpdirs
    assert len({next(iter(u)) for u in uris.values()}) == nodes, uris
    for t in tmpdirs.values():
        d = next(iter(t))
        if d != "-":
            assert os.path.normpath(d) != "/tmp", d  # under the agent's run directory, not loose in /tmp
            assert not os.path.exists(d), f"the PMIx server's directory {d} outlived the run"


def test_simple_pmi_ranks_get_no_pmix_variables():
    job = ok(run_job(["run", "-n", "2", "--pmi", "simple", "--", PY, "-c", ENV_DUMP], timeout=60))
    for kv in env_lines(job.out, 2):
        assert kv["PMIX_NAMESPACE"] == "-" and kv["PMIX_SERVER_URI41"] == "-", kv
        assert kv["OMPI_MCA_ess"] == "-", kv


# --- NetPIPE ------------------------------------------------------------------

@pytest.mark.skipif(NETPIPE is None, reason="NPopenmpi not installed (scripts/install-deps.sh mpi)")
@pytest.mark.parametrize("nodes", [[], ["--launcher", "virtual", "--nodes", "2"]], ids=["one-node", "two-virtual-nodes"])
def test_netpipe_openmpi_integrity_and_timing(nodes, tmp_path, no_pmix_tmp):
    env = LOOPBACK if nodes else None
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *PMIX, "--",
                      NETPIPE, "-i", "-u", "65536", "-n", "5", "-p", "0", "-o", str(tmp_path / "i.out")],
                     timeout=120, env=env))
    progress = job.out + job.err
    passed = re.findall(r"^\s*\d+:\s+(\d+) bytes .*Integrity check passed", progress, re.M)
    assert passed and "fail" not in progress.lower(), job
    assert max(int(b) for b in passed) >= 32768, job
    out = tmp_path / "np.out"
    job = ok(run_job(["run", *nodes, "-n", "2", "--placement", "cyclic", *PMIX, "--",
                      NETPIPE, "-u", "65536", "-n", "10", "-p", "0", "-o", str(out)], timeout=120, env=env))
    rows = [line.split() for line in out.read_text().splitlines() if line.strip()]
    sizes = [int(r[0]) for r in rows]
    assert sizes and sizes[0] == 1 and max(sizes) == 65536, rows
    assert all(float(r[1]) > 0 for r in rows), rows  # Mbps


# --- failures: MPI_Abort and a rank killed ---------------------------------------

def ours(err):
    """stderr without Open MPI's own help block ("MPI_ABORT was invoked on rank
    R ...", which the rank prints itself): what is left is the runtime's."""
    return [l for l in err.splitlines() if "MPI_ABORT was invoked" not in l and not l.startswith("[")]


LAYOUTS = [["-n", "4"], [*V4, "-n", "8", "--placement", "cyclic"]]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["4-ranks", "8-ranks-4-nodes"])
def test_mpi_abort_ends_the_run_with_its_code(layout, no_pmix_tmp):
    n = int(layout[layout.index("-n") + 1])
    victim = n - 2  # on node 2 in the cyclic 4-node layout
    job = run_job(["run", *layout, *PMIX, "--", prog("mpi_abort"), str(victim), "7"], timeout=60, env=LOOPBACK)
    assert job.returncode == 7, job
    assert not job.left, f"left running: {job.left}\n{job}"
    pids = pids_of(job.out, "abort")
    assert len(pids) == n, job  # every rank was up (past a barrier) before the abort
    assert not [p for p in pids if pid_alive(p)], job
    assert any(re.search(rf"\brank {victim}\b", line) for line in ours(job.err)), job
    assert "FAIL" not in job.err, job  # no barrier completed after the abort
    assert job.elapsed < 30, job


@pytest.mark.parametrize("layout", LAYOUTS, ids=["4-ranks", "8-ranks-4-nodes"])
def test_a_rank_killed_by_sigkill_ends_the_run_instead_of_hanging(layout, no_pmix_tmp):
    """The rank says nothing to its PMIx server: it is just gone while the
    others wait for it in MPI_Barrier. The run fails with 128+9, names it."""
    n = int(layout[layout.index("-n") + 1])
    victim = 1
    job = run_job(["run", *layout, *PMIX, "--", prog("mpi_sigkill"), str(victim)], timeout=90, env=LOOPBACK)
    assert job.returncode == 128 + 9, job
    assert not job.left, f"left running: {job.left}\n{job}"
    pids = pids_of(job.out, "sigkill")
    assert len(pids) == n, job
    assert not [p for p in pids if pid_alive(p)], job
    assert any(re.search(rf"\brank {victim}\b", line) for line in ours(job.err)), job
    assert "FAIL" not in job.err, job
    assert job.elapsed < 30, job


# --- several PMIx jobs in one runtime (the C++ API) ---------------------------------

@pytest.mark.parametrize("nodes", [[], V4], ids=["one-node", "4-virtual-nodes"])
def test_pmix_groups_at_once_and_one_after_another(nodes, no_pmix_tmp):
    """group_probe pmix_many: 2 groups of 4 ranks at once, then 3 one after
    another, all in one runtime (one PMIx server per agent, a namespace per group)."""
    probe = BIN / "group_probe"
    if not probe.exists():
        pytest.skip(f"{probe} not built")
    job = ok(run_job(["run", *nodes, "--", str(probe), "pmix_many", prog("mpi_allreduce")], timeout=180,
                     env=LOOPBACK if nodes else None))
    outcomes = re.findall(r"^pmix_many phase=(\w+) group=(\d) outcome=(\w+)", job.out, re.M)
    assert outcomes == [("together", "0", "succeeded"), ("together", "1", "succeeded"),
                        ("sequence", "0", "succeeded"), ("sequence", "1", "succeeded"),
                        ("sequence", "2", "succeeded")], job
    lines = [l for l in job.out.splitlines() if l.startswith("allreduce ")]
    assert len(lines) == 5 * 4, job  # 5 groups of 4, each a world of its own
    assert all(" size=4 sum=6 vector=ok" in l for l in lines), job
